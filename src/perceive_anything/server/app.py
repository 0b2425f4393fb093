"""``create_app(predictor, settings)``: the FastAPI app of ``pam serve`` (API contract: README "Server").

Request handlers validate in the event loop (cheap checks; image decoding in a thread), then hand
model work to the single :class:`~.worker.ModelWorker` and await its future, so the loop keeps
answering ``/health``, uploads and frames while the model runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..processing import text as text_proc
from ..processing.video import VideoError
from . import inputs, schemas
from .cache import EncodingCache
from .errors import ApiError, NotFound, TooLarge, error_body, from_value_error
from .settings import ServerSettings
from .videos import VideoStore
from .worker import Cancelled, Job, ModelWorker

log = logging.getLogger("perceive_anything.server")

DEFAULT_IMAGE_TASKS = ["detailed_caption"]
DEFAULT_VIDEO_TASKS = ["video_caption"]


class BodyLimit:
    """Refuses bodies over the limit with 413: at once from ``Content-Length``, else while reading
    (chunked uploads), without buffering more than the limit."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(send, int(length))
        state = {"seen": 0, "over": False, "started": False}

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > self.max_bytes:
                    state["over"] = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if state["over"]:
                # Whatever the app made of the cut body, the client gets the 413.
                if message["type"] == "http.response.start" and not state["started"]:
                    state["started"] = True
                    await self._refuse(send, state["seen"])
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await self._refuse(send, state["seen"])

    async def _refuse(self, send, seen: int) -> None:
        body = json.dumps(error_body(
            f"request body is larger than the server's limit of {self.max_bytes:,} bytes "
            f"({seen:,} bytes or more); pam serve --max-upload-mb raises it", "request_too_large", "body",
        )).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def as_api_error(exc: BaseException, param: str | None = None) -> ApiError:
    """Map what a model job raised to the error the client sees."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, (ValueError, VideoError)):
        return from_value_error(exc, param)
    log.exception("model job failed", exc_info=exc)
    return ApiError(f"internal error: {type(exc).__name__}: {exc}", None, status=500, type="server_error")


async def read_json(request: Request, allowed: set[str] | None = None) -> dict:
    """The request body as a JSON object, with errors for an empty body, bad UTF-8 or bad JSON."""
    raw = await request.body()
    if not raw.strip():
        raise ApiError("empty request body; send a JSON object", "body")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ApiError(f"request body is not valid UTF-8 (byte {err.start})", "body") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as err:
        raise ApiError(f"invalid JSON: {err.msg} at line {err.lineno} column {err.colno}", "body") from None
    if not isinstance(body, dict):
        raise ApiError("the request body must be a JSON object", "body")
    if allowed is not None:
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ApiError(f"unknown field(s) {unknown}; known: {sorted(allowed)}", unknown[0])
    return body


class ServerState:
    """What the handlers share: the predictor, its worker, the encoding cache and the videos."""

    def __init__(self, predictor, settings: ServerSettings):
        self.pam = predictor
        self.settings = settings
        self.worker = ModelWorker(settings.queue_size, settings.retry_after_s)
        self.cache = EncodingCache(settings.cache_items, settings.cache_bytes)
        self.videos = VideoStore(settings)
        self.started = int(time.time())

    @property
    def model_id(self) -> str:
        return self.pam.name

    def model_card(self) -> dict:
        return {
            "id": self.model_id, "object": "model", "created": self.started, "owned_by": "perceive-anything",
            "device": str(self.pam.device), "dtype": str(self.pam.dtype).removeprefix("torch."),
            "tasks": list(text_proc.TASKS), "languages": list(text_proc.LANGUAGES),
            "embedded": self.settings.embedded,
        }

    # ---------------------------------------------------------------- images
    async def prepare_image(self, data: bytes, param: str):
        """(cache key, width, height, decoded image or None when its encoding is already cached)."""
        key = inputs.image_key(data)
        enc = self.cache.get(key)
        if enc is not None:
            return key, enc.width, enc.height, None
        img = await run_in_threadpool(inputs.open_image, data, param, self.settings)
        return key, img.width, img.height, img

    async def resolve_image(self, body: dict):
        """``image_id`` (cached) or ``image`` (data URI) -> (key, width, height, PIL image or None)."""
        if body.get("image_id") is not None:
            key = body["image_id"]
            if not isinstance(key, str):
                raise ApiError("image_id must be a string", "image_id")
            enc = self.cache.get(key)
            if enc is None:
                raise NotFound(f"unknown image_id {key!r} (upload with POST /v1/images; the cache keeps "
                               f"{self.settings.cache_items} images, least recently used dropped first)", "image_id")
            return key, enc.width, enc.height, None
        if body.get("image") is None:
            raise ApiError("give 'image' (a data URI) or 'image_id' (from POST /v1/images)", "image")
        return await self.prepare_image(inputs.decode_data_uri(body["image"], "image")[1], "image")

    def encoded(self, key: str, img):
        """Inside the worker: the cached encoding, or encode ``img`` now and cache it."""
        enc = self.cache.get(key)
        if enc is None:
            if img is None:
                raise NotFound(f"image_id {key!r} was dropped from the cache; upload it again", "image_id")
            enc = self.pam.encode(img)
            self.cache.put(key, enc)
        return enc

    async def video_request(self, request: Request, model) -> tuple[dict, Any]:
        """The JSON body of a video request (fields of ``model``) and its stored video."""
        body = await read_json(request, schemas.field_names(model))
        if body.get("video_id") is None:
            raise ApiError("video_id is required (from POST /v1/videos)", "video_id")
        return body, self.videos.get(body["video_id"])

    # ---------------------------------------------------------------- jobs
    async def run(self, request: Request, fn: Callable[[Job], Any], name: str, param: str | None = None):
        try:
            return await self.worker.run(fn, name, disconnected=request.is_disconnected)
        except Cancelled:
            raise ApiError("client disconnected", None, status=499, type="cancelled") from None
        except ApiError:
            raise
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise as_api_error(exc, param) from None

    def stream(self, fn: Callable[[Job, Callable[[str, Any], None]], None], name: str,
               done_event: str | None = "done", param: str | None = None,
               format_event: Callable[[str, Any], str] = sse) -> StreamingResponse:
        """Run ``fn(job, emit)`` in the worker and answer with its events as SSE. Queue-full is a
        429 before the stream starts; a client that leaves drops or stops the job."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def emit(event: str, data: Any) -> None:
            loop.call_soon_threadsafe(events.put_nowait, (event, data))

        def body(job: Job) -> None:
            try:
                fn(job, emit)
            except Cancelled:
                raise
            except BaseException as exc:  # noqa: BLE001 - reported in the stream
                emit("error", as_api_error(exc, param).body())
            finally:
                emit("", None)

        job = self.worker.submit(body, name)

        async def gen() -> AsyncIterator[str]:
            try:
                while True:
                    event, data = await events.get()
                    if not event:
                        break
                    yield format_event(event, data)
                if done_event:
                    yield format_event(done_event, {})
            finally:
                self.worker.cancel(job)

        return StreamingResponse(gen(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def close(self) -> None:
        self.worker.close()
        self.videos.close()


def create_app(predictor, settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    state = ServerState(predictor, settings)

    @asynccontextmanager
    async def lifespan(app):
        yield
        state.close()

    app = FastAPI(title="Perceive Anything", version="1", lifespan=lifespan,
                  description="Segment and describe any region of an image or video (PAM).")
    app.state.pam = state
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc: RequestValidationError):
        err = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "path", "query")]
        return JSONResponse(error_body(err.get("msg", "invalid request"), "invalid_request_error",
                                       ".".join(loc) or None), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind, None), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _crash(request, exc: Exception):
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}", "server_error", None), status_code=500)

    # ------------------------------------------------------------------ info
    @app.get("/health")
    async def health():
        return {"status": "ok", "model": state.model_id, "queue": state.worker.queue_state(),
                "cache": state.cache.state()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [state.model_card()]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str):
        if model_id != state.model_id:
            raise NotFound(f"unknown model {model_id!r}; this server serves {state.model_id!r}", "model")
        return state.model_card()

    # ------------------------------------------------------------------ images
    @app.post("/v1/images", openapi_extra=schemas.body(schemas.ImageUpload, multipart=True))
    async def upload_image(request: Request):
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            data, _ = await _form_file(request, "image")
            param = "file"
        else:
            body = await read_json(request, {"image"})
            if body.get("image") is None:
                raise ApiError("give 'image' (a data URI) or upload a multipart 'file'", "image")
            _, data = inputs.decode_data_uri(body["image"], "image")
            param = "image"
        key, width, height, img = await state.prepare_image(data, param)
        if img is not None:
            await state.run(request, lambda job: state.encoded(key, img), "encode")
        return {"image_id": key, "width": width, "height": height, "cached": img is None}

    @app.post("/v1/segment", openapi_extra=schemas.body(schemas.SegmentRequest))
    async def segment(request: Request):
        body = await read_json(request, {"image", "image_id", "regions"})
        key, w, h, img = await state.resolve_image(body)
        regions = await run_in_threadpool(inputs.regions_from_json, body.get("regions"), w, h, settings)
        result = await state.run(request, lambda job: predictor.segment(state.encoded(key, img), regions), "segment")
        return JSONResponse(result.to_dict())

    @app.post("/v1/perceive", openapi_extra=schemas.body(schemas.PerceiveRequest))
    async def perceive(request: Request):
        body = await read_json(request, schemas.field_names(schemas.PerceiveRequest))
        key, w, h, img = await state.resolve_image(body)
        regions = await run_in_threadpool(inputs.regions_from_json, body.get("regions"), w, h, settings)
        tasks = inputs.check_tasks(body.get("tasks", DEFAULT_IMAGE_TASKS), "image")
        lang = inputs.check_lang(body.get("lang", "en"))
        question = inputs.check_question(body.get("question"), tasks, settings)
        gen = inputs.generation_overrides(body, settings)
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise ApiError("stream must be true or false", "stream")
        kwargs = dict(task=tasks, lang=lang, question=question, **gen)
        if not stream:
            result = await state.run(
                request, lambda job: predictor.perceive(state.encoded(key, img), regions,
                                                        on_token=lambda *a: job.check(), **kwargs), "perceive")
            return JSONResponse(result.to_dict())

        def work(job: Job, emit) -> None:
            enc = state.encoded(key, img)
            emit("mask", predictor.segment(enc, regions).to_dict())

            def on_token(region: int, task: str, piece: str) -> None:
                job.check()
                emit("token", {"region": region, "task": task, "text": piece})

            emit("result", predictor.perceive(enc, regions, on_token=on_token, **kwargs).to_dict())

        return state.stream(work, "perceive-stream")

    # ------------------------------------------------------------------ video
    @app.post("/v1/videos", openapi_extra=schemas.body(None, multipart=True))
    async def upload_video(request: Request):
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            data, filename = await _form_file(request, "video")
        else:
            data, filename = await request.body(), request.headers.get("x-filename")
            if ctype.startswith("application/json"):
                raise ApiError("upload the video as multipart/form-data field 'file' (mp4, webm, mov or a zip of frames)", "file")
        video = await run_in_threadpool(state.videos.add, data, filename)
        return video.info()

    @app.get("/v1/videos/{video_id}")
    async def video_info(video_id: str):
        v = state.videos.get(video_id)
        return {**v.info(), "frame_times": [round(t, 4) for t in v.times]}

    @app.get("/v1/videos/{video_id}/frames/{t}", responses={200: {"content": {"image/jpeg": {}}}})
    async def video_frame(video_id: str, t: int):
        v = state.videos.get(video_id)
        if not 0 <= t < len(v.frames):
            raise NotFound(f"frame {t} is outside the video's {len(v.frames)} frames", "t")
        return Response(v.frames[t], media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.post("/v1/perceive_video", openapi_extra=schemas.body(schemas.PerceiveVideoRequest))
    async def perceive_video(request: Request):
        body, video = await state.video_request(request, schemas.PerceiveVideoRequest)
        tasks = inputs.check_tasks(body.get("tasks", DEFAULT_VIDEO_TASKS), "video")
        lang = inputs.check_lang(body.get("lang", "en"))
        question = inputs.check_question(body.get("question"), tasks, settings)
        gen = inputs.generation_overrides(body, settings)
        num_frames = body.get("num_frames")
        if num_frames is not None and (not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1):
            raise ApiError("num_frames must be a positive integer", "num_frames")
        objects = body.get("objects")
        if not isinstance(objects, list) or not objects:
            raise ApiError("objects must be a non-empty list of {'frame': t, 'box'|'points'|'mask': ...}", "objects")
        n = len(video.frames)
        positions = list(range(n))
        if num_frames is not None:
            positions = linspace_positions(n, num_frames)
        frames, region_items = [], []
        for i, obj in enumerate(objects):
            if not isinstance(obj, dict):
                raise ApiError(f"objects[{i}] must be an object", f"objects[{i}]")
            f = obj.get("frame", 0)
            if not isinstance(f, int) or isinstance(f, bool) or not 0 <= f < n:
                raise ApiError(f"objects[{i}].frame must be a frame index in 0..{n - 1}", f"objects[{i}].frame")
            # Prompts are drawn on source frames; with sampling, the nearest processed frame takes them.
            frames.append(min(range(len(positions)), key=lambda p: abs(positions[p] - f)))
            region_items.append({k: v for k, v in obj.items() if k != "frame"})
        regions = await run_in_threadpool(inputs.regions_from_json, region_items, video.width, video.height,
                                          settings, "objects")
        extra = dict(gen, question=question) if question is not None else gen

        def work(job: Job):
            def check(*_):
                job.check()

            return merge_video_results([
                (idx, predictor.perceive_video(
                    str(video.source), [regions[i] for i in idx], frame=frame, num_frames=num_frames, task=tasks,
                    lang=lang, on_frame=check, on_token=check, **extra))
                for frame, idx in group_by(frames).items()
            ], len(regions))

        result = await state.run(request, work, "perceive_video", "objects")
        result.source = video.video_id
        return JSONResponse(result.to_dict())

    @app.post("/v1/stream", openapi_extra=schemas.body(schemas.StreamRequest))
    async def stream(request: Request):
        body, video = await state.video_request(request, schemas.StreamRequest)
        if body.get("region") is None and body.get("regions") is None:
            raise ApiError("give 'region' (or 'regions'): the object(s) to follow, on the first frame", "region")
        param = "region" if body.get("region") is not None else "regions"
        regions = await run_in_threadpool(inputs.regions_from_json, body.get(param), video.width, video.height,
                                          settings, param)
        lang = inputs.check_lang(body.get("lang", "en"))
        mode = body.get("mode", "released")
        if mode not in ("released", "paper"):
            raise ApiError("mode must be 'released' or 'paper'", "mode")
        clip = body.get("clip", 32)
        check_clip(clip, video.fps)
        max_clips = body.get("max_clips")
        if max_clips is not None and (not isinstance(max_clips, int) or max_clips < 1):
            raise ApiError("max_clips must be a positive integer", "max_clips")
        gen = inputs.generation_overrides(body, settings)

        def work(job: Job, emit) -> None:
            def check(*_):
                job.check()

            for event in predictor.perceive_stream(str(video.source), regions, clip=clip, mode=mode, lang=lang,
                                                   max_clips=max_clips, on_frame=check, on_token=check, **gen):
                emit("caption", event.to_dict())

        return state.stream(work, "stream", param="clip")

    # ------------------------------------------------------------------ OpenAI-compatible
    from .openai_compat import add_chat_routes

    add_chat_routes(app, state)

    # web UI: the web package mounts its page and sample routes on this app here.
    from ..web import mount as mount_web_ui
    mount_web_ui(app)
    return app


async def _form_file(request: Request, what: str) -> tuple[bytes, str | None]:
    """The bytes and name of the multipart field ``file``; the form's temporary files are closed
    (and so removed) before returning."""
    form = await request.form(max_files=1, max_fields=4)
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(f"upload the {what} as the multipart field 'file'", "file")
        return await upload.read(), upload.filename
    finally:
        await form.close()


def linspace_positions(n: int, count: int) -> list[int]:
    """Source frames that ``Sampling(count=...)`` keeps (the predictor's own rule)."""
    from ..processing.video import linspace_indices

    return linspace_indices(n, count)


def group_by(frames: list[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, f in enumerate(frames):
        groups.setdefault(f, []).append(i)
    return groups


def merge_video_results(parts, num_objects: int):
    """One ``VideoResult`` from per-prompt-frame runs (the predictor prompts all objects of a call on
    one frame); objects keep the order and numbering of the request."""
    base = parts[0][1]
    objects = [None] * num_objects
    for idx, res in parts:
        for i, obj in zip(idx, res.objects):
            obj.obj_id = i + 1
            objects[i] = obj
    base.objects = objects
    base.timings.total = sum(r.timings.total for _, r in parts)
    return base


def check_clip(clip: Any, fps: float | None) -> None:
    from ..predictor import _clip_length

    if isinstance(clip, bool) or not isinstance(clip, (int, float, str)):
        raise ApiError("clip must be a frame count (32) or a duration ('2s')", "clip")
    try:
        _clip_length(clip, fps)
    except ValueError as err:
        raise ApiError(str(err), "clip") from None
