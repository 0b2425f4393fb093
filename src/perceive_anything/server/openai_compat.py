"""OpenAI-compatible ``POST /v1/chat/completions`` (what Describe Anything's server speaks).

The last user message carries the image (``image_url``: a data URI, or a ``file://`` URL under an
allowed root) and the region: a ``region`` object (``box``/``points``/``mask``) in the message or the
request, else the alpha channel of a PNG (opaque pixels = region, Describe Anything's convention).
Text equal to one of PAM's task instructions (``processing/text.py``, either language) runs that
task; any other text is asked as a free question. Extra fields: ``lang`` (for free questions) and,
in the response, ``pam`` (the full ``ImageResult`` with the mask as COCO RLE).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..processing import text as text_proc
from . import inputs
from .errors import ApiError, NotFound
from .worker import Job

def task_for_text(text: str) -> tuple[str, str] | None:
    """(task, lang) whose instruction is exactly ``text`` (with or without the leading ``<image>``)."""
    body = text.strip().removeprefix(text_proc.IMAGE_TOKEN).strip()
    for name, task in text_proc.TASKS.items():
        if task.media == "image":
            for lang, prompt in task.prompts.items():
                if body == prompt.removeprefix(text_proc.IMAGE_TOKEN).strip():
                    return name, lang
    return None


def _parts(message: dict, i: int) -> list[dict]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if content is None:
        return []
    if not isinstance(content, list):
        raise ApiError(f"messages[{i}].content must be a string or a list of parts", f"messages[{i}].content")
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise ApiError(f"messages[{i}].content[{j}] must be an object with a 'type'", f"messages[{i}].content[{j}]")
    return content


def parse_chat(body: dict, settings) -> dict[str, Any]:
    """The request as (image reference, region, task, lang, question, generation settings)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError("messages must be a non-empty list", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "developer", "tool"):
            raise ApiError(f"messages[{i}] must be an object with a role (system, user, assistant)", f"messages[{i}]")
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise ApiError("no user message", "messages")
    last = users[-1]
    texts = []
    image_url = image_param = None
    region = region_param = None
    for i in users:  # an image or region given in an earlier turn still applies; later ones replace it
        for j, part in enumerate(_parts(messages[i], i)):
            kind = part["type"]
            if kind == "text" and i == last:
                if not isinstance(part.get("text"), str):
                    raise ApiError("a text part needs a string 'text'", f"messages[{i}].content[{j}].text")
                texts.append(part["text"])
            elif kind == "image_url":
                ref = part.get("image_url")
                image_url = ref.get("url") if isinstance(ref, dict) else ref
                image_param = f"messages[{i}].content[{j}].image_url"
            elif kind == "region":
                region, region_param = part.get("region"), f"messages[{i}].content[{j}].region"
            elif kind != "text":
                raise ApiError(f"unsupported content part type {kind!r} (text, image_url, region)",
                               f"messages[{i}].content[{j}].type")
        if messages[i].get("region") is not None:
            region, region_param = messages[i]["region"], f"messages[{i}].region"
    if body.get("region") is not None:
        region, region_param = body["region"], "region"
    if image_url is None:
        raise ApiError("the user message needs an image: a content part {'type': 'image_url', 'image_url': "
                       "{'url': 'data:image/png;base64,...'}}", "messages")
    text = "\n".join(t for t in texts).strip()
    lang = inputs.check_lang(body.get("lang", "en"))
    question = None
    if not text:
        task = "detailed_caption"  # an image alone: describe the region, as Describe Anything does
    else:
        found = task_for_text(text)
        if found:
            task, lang = found
        else:
            task = "question"
            question = inputs.check_question(text, ["question"], settings, f"messages[{last}].content")
    gen = {}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    param_max = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    if max_tokens is not None:
        try:
            gen.update(inputs.generation_overrides({"max_new_tokens": max_tokens}, settings))
        except ApiError as err:
            raise ApiError(err.message.replace("max_new_tokens", param_max), param_max) from None
    gen.update(inputs.generation_overrides({k: body.get(k) for k in ("temperature", "top_p", "seed")}, settings))
    if body.get("n") not in (None, 1):
        raise ApiError("only n = 1 is supported", "n")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError("stream_options must be an object", "stream_options")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError("stream must be true or false", "stream")
    return {"image_url": image_url, "image_param": image_param, "region": region, "region_param": region_param,
            "task": task, "lang": lang, "question": question, "gen": gen, "stream": stream,
            "include_usage": bool((options or {}).get("include_usage"))}


def add_chat_routes(app: FastAPI, state) -> None:
    settings = state.settings
    pam = state.pam

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        from .app import read_json

        body = await read_json(request)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError("model is required (see GET /v1/models)", "model")
        if model != state.model_id:
            raise NotFound(f"unknown model {model!r}; this server serves {state.model_id!r}", "model")
        req = parse_chat(body, settings)
        data = await run_in_threadpool(inputs.image_bytes_from_url, req["image_url"], req["image_param"], settings)
        img = await run_in_threadpool(inputs.open_image, data, req["image_param"], settings, True)
        if req["region"] is not None:
            region_items = req["region"]
            param = req["region_param"]
        elif img.mode == "RGBA" and (alpha := np.asarray(img.getchannel("A"))).min() < 255:
            region_items = {"mask": alpha > 0}
            param = req["image_param"]
        else:
            raise ApiError("no region: add a 'region' object ({'box': [x1, y1, x2, y2]}, points or mask) to the "
                           "message, or send a PNG whose alpha channel marks the region", "region")
        img = img.convert("RGB")
        if isinstance(region_items, dict) and isinstance(region_items.get("mask"), np.ndarray):
            from ..processing.regions import RegionError, parse_regions

            try:
                regions = parse_regions(region_items, img.width, img.height)
            except RegionError as err:
                raise ApiError(f"{param}: alpha channel: {str(err).split(': ', 1)[-1]}", param) from None
        else:
            regions = await run_in_threadpool(inputs.regions_from_json, region_items, img.width, img.height,
                                              settings, param)
        key = hashlib.sha256(img.tobytes() + repr(img.size).encode()).hexdigest()[:24]
        task, lang, question, gen = req["task"], req["lang"], req["question"], req["gen"]
        completion_id = "chatcmpl-" + uuid.uuid4().hex
        created = int(time.time())
        limit = gen.get("max_new_tokens", pam.generation.max_new_tokens)

        def run(job: Job, on_token):
            enc = state.encoded(key, img)
            result = pam.perceive(enc, regions, task=task, lang=lang, question=question, on_token=on_token, **gen)
            prompt = text_proc.build_prompt(task, lang, question=question)
            prompt_tokens = len(text_proc.tokenize_with_placeholder(pam.tokenizer, prompt))
            out = result[0].outputs[0]
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(out.token_ids),
                     "total_tokens": prompt_tokens + len(out.token_ids)}
            finish = "length" if len(out.token_ids) >= limit else "stop"
            return result, out, usage, finish

        if not req["stream"]:
            result, out, usage, finish = await state.run(
                request, lambda job: run(job, lambda *a: job.check()), "chat")
            return JSONResponse({
                "id": completion_id, "object": "chat.completion", "created": created, "model": state.model_id,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": out.text},
                             "logprobs": None, "finish_reason": finish}],
                "usage": usage, "pam": result.to_dict(),
            })

        def chunk(delta: dict, finish: str | None = None, **extra) -> dict:
            return {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                    "model": state.model_id, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                          "finish_reason": finish}], **extra}

        def work(job: Job, emit) -> None:
            emit("chunk", chunk({"role": "assistant", "content": ""}))

            def on_token(region: int, task_name: str, piece: str) -> None:
                job.check()
                emit("chunk", chunk({"content": piece}))

            result, _, usage, finish = run(job, on_token)
            emit("chunk", chunk({}, finish, pam=result.to_dict()))
            if req["include_usage"]:
                emit("chunk", {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                               "model": state.model_id, "choices": [], "usage": usage})

        def openai_sse(event: str, data: Any) -> str:
            # OpenAI streams bare "data:" lines; an error mid-stream is a data line holding {"error": ...}
            return "data: [DONE]\n\n" if event == "[DONE]" else f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

        return state.stream(work, "chat-stream", done_event="[DONE]", format_event=openai_sse)
