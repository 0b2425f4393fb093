"""``PerceiveAnything``: the one user-facing, stateful entry point.

In the spirit of segment-anything's ``SamPredictor``: it wraps a :class:`PamModel`, a tokenizer
and generation settings, encodes an image once and answers any number of region prompts on it.
Many regions of one image go through the mask decoder and the LLM as one batch.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from ._heap import release_freed_memory
from .config import PamConfig
from .generation import GenerationSettings
from .modeling.language import pad_token_rows
from .modeling.pam import PamModel
from .processing import text as text_proc
from .processing.image import load_image, preprocess_image
from .processing.prompts import to_sam_points
from .processing.regions import Region, parse_regions
from .processing.video import Frame, Sampling, VideoError, llm_frame_positions, open_video
from .results import (
    CaptionEvent,
    ImageResult,
    RegionResult,
    TaskOutput,
    Timings,
    TrackedObjectResult,
    VideoResult,
    mask_to_bbox,
)

_GENERATION_FIELDS = frozenset(f.name for f in dataclasses.fields(GenerationSettings))
IMAGE_TASKS = tuple(name for name, t in text_proc.TASKS.items() if t.media != "video")
_FIELDS = ("label", "definition", "caption", "answer")

TokenCallback = Callable[[int, str, str], None]
"""Called as ``on_token(region_index, task, text_piece)`` while tokens are generated."""

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


# Regions that go through the SAM heads and the perceiver together. Their temporaries grow with the
# batch (a (R, 4096, 256) map per step of the two-way transformers at 1024 px) and their matrix
# products are already large for one region: 16 boxes on the parity fixture, one core, took
# 2.6-2.9 s with batches of 1, 2 or 4 regions, 3.4-3.8 s with 8 or 16, peak RSS 750-830 MB vs
# 880-1,150 MB (docs/speed.md).
REGION_BATCH = 4


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        # Official inference is bf16 on CUDA; CPU bf16 matmuls are slow and not what fixtures use.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16") from None


def resolve_device(device: str | torch.device | None, what: str = "device") -> torch.device:
    """``device`` as a ``torch.device``; None / "auto" picks CUDA, then MPS, then the CPU. A name that
    is no device, or a device this machine lacks, is a ``ValueError`` naming ``what`` (the option or
    argument the caller took it from) before any tensor is moved there."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"{what} {device!r} is not a device name (cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{what} {device!r} requested but CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{what} {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{what} {device!r} requested but MPS is not available on this machine")
    return dev


@dataclass
class EncodedImage:
    """An image after the SAM 2 image encoder; reusable for any number of prompts."""

    image: Image.Image
    width: int
    height: int
    features: Any  # segmenter.ImageFeatures
    seconds: float


class PerceiveAnything:
    """Segment and describe regions of images (and videos) with a PAM model.

    >>> pam = PerceiveAnything.from_pretrained()            # the embedded tiny model
    >>> res = pam.perceive("photo.jpg", [[10, 20, 200, 240]], task=["label", "brief_caption"])
    >>> res[0].label, res[0].caption, res[0].mask.shape
    """

    def __init__(
        self,
        model: PamModel,
        tokenizer,
        generation: GenerationSettings | None = None,
        name: str = "pam",
        flush_denormal: bool = True,
    ):
        if flush_denormal:
            # Tiny activations (< 1e-38) make x86 CPUs up to 10x slower (measured on SAM 2's encoder with
            # real images); flushing them to zero changes no result at any meaningful precision.
            torch.set_flush_denormal(True)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.generation = generation or GenerationSettings()
        self.name = name
        self._encoded: EncodedImage | None = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | None = None,
        *,
        sam2: str | Path | None = None,
        sam2_config: str | Path | None = None,
        device: str | torch.device | None = "cpu",
        dtype: str | torch.dtype | None = None,
        progress: bool = False,
    ) -> PerceiveAnything:
        """Load a model: our own folder, an official PAM folder (+ ``sam2`` .pt), a hub id, or None for the embedded default."""
        from .checkpoints import load_pretrained

        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        loaded = load_pretrained(model, sam2=sam2, sam2_config=sam2_config, progress=progress)
        pam = loaded.model.cast(device=dev, dtype=dt)
        return cls(pam, loaded.tokenizer, loaded.generation, name=loaded.name)

    @property
    def config(self) -> PamConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    # ------------------------------------------------------------------ image
    @torch.inference_mode()
    def encode(self, image: str | Path | Image.Image | np.ndarray) -> EncodedImage:
        """Run the SAM 2 image encoder once; :meth:`perceive` reuses the result for the same image object."""
        t0 = time.perf_counter()
        img = load_image(image)
        pixels = preprocess_image(img, self.config.segmenter.image_size).to(self.device, self.dtype)
        feats = self.model.segmenter.encode_image(pixels)
        enc = EncodedImage(img, img.width, img.height, feats, time.perf_counter() - t0)
        self._encoded = enc
        return enc

    def _settings(self, generation: GenerationSettings | None, overrides: dict[str, Any]) -> GenerationSettings:
        base = generation or self.generation
        preset = overrides.pop("preset", None)
        unknown = sorted(set(overrides) - _GENERATION_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown generation setting(s) {', '.join(map(repr, unknown))}; valid: "
                f"{', '.join(sorted(_GENERATION_FIELDS | {'preset'}))}"
            )
        if preset == "official":
            base = base.official_notebook()
        elif preset not in (None, "greedy"):
            raise ValueError(f"unknown generation preset {preset!r}; use 'official' or 'greedy'")
        return base.replace(**overrides) if overrides else base

    @torch.inference_mode()
    def perceive(
        self,
        image: str | Path | Image.Image | np.ndarray | EncodedImage,
        regions: Any,
        task: str | Sequence[str] = "detailed_caption",
        lang: str = "en",
        *,
        question: str | None = None,
        generation: GenerationSettings | None = None,
        on_token: TokenCallback | None = None,
        return_mask_logits: bool = False,
        max_batch: int = 32,
        region_batch: int = REGION_BATCH,
        **generation_overrides: Any,
    ) -> ImageResult:
        """Segment and describe ``regions`` of ``image``.

        Args:
            image: path, PIL image, HxWx3 uint8 array, or the result of :meth:`encode`.
            regions: one prompt or a list: ``box(...)``, ``points(...)``, ``mask(...)``, dicts with
                ``box``/``points``/``labels``/``mask``, or flat ``[x1, y1, x2, y2]`` boxes (pixels).
            task: ``label``, ``definition``, ``brief_caption``, ``detailed_caption``, ``question``,
                or a list of them (each region gets every task).
            lang: ``en`` or ``zh``.
            question: the free question for ``task="question"``.
            on_token: streaming callback ``(region_index, task, text_piece)``.
            return_mask_logits: keep float logits at image size in each result (memory heavy).
            max_batch: LLM rows (region x task) per generate call.
            region_batch: regions through the SAM heads and the perceiver at a time (their
                temporaries grow with the batch; larger batches were not faster on a CPU).
            **generation_overrides: e.g. ``max_new_tokens=64``, ``temperature=0.1``, ``seed=0``.
        """
        t_start = time.perf_counter()
        if int(region_batch) < 1:
            raise ValueError(f"region_batch must be at least 1, got {region_batch}")
        region_batch = int(region_batch)
        tasks = [task] if isinstance(task, str) else list(task)
        if not tasks:
            raise ValueError("task list is empty; choose from " + ", ".join(IMAGE_TASKS))
        for t in tasks:
            if text_proc.get_task(t).media == "video":
                raise ValueError(f"task {t!r} is a video task; image tasks are {', '.join(IMAGE_TASKS)}")
        prompts = text_proc.build_prompts(tasks, lang, question=question)
        settings = self._settings(generation, dict(generation_overrides))

        enc = image if isinstance(image, EncodedImage) else self.encode(image)
        parsed = parse_regions(regions, enc.width, enc.height)
        timings = Timings(encode=enc.seconds)

        # a few regions at a time through the heads and the perceiver; only their masks, scores and
        # visual blocks are kept (not the 4 MB of SAM features per region at 1024 px)
        parts, block_parts = [], []
        timings.segment = timings.perceive = 0.0
        for start in range(0, len(parsed), region_batch):
            t0 = time.perf_counter()
            part = self._segment(enc, parsed[start : start + region_batch])
            t1 = time.perf_counter()
            block_parts.append(self.model.language.image_visual_block(part.mid_image_embed, part.mid_mask_tokens))
            timings.segment += t1 - t0
            timings.perceive += time.perf_counter() - t1
            parts.append(part.without_features())
        seg = _Segments.join(parts)
        blocks = torch.cat(block_parts) if len(block_parts) > 1 else block_parts[0]  # (R, Nv, H)

        t0 = time.perf_counter()
        texts = self._generate_texts(blocks, tasks, prompts, settings, on_token, max_batch)
        timings.generate = time.perf_counter() - t0

        outputs = [[_task_output(t, lang, *texts[(r, ti)]) for ti, t in enumerate(tasks)] for r in range(len(parsed))]
        results = self._region_results(enc, parsed, seg, outputs, return_mask_logits)
        timings.total = time.perf_counter() - t_start
        return ImageResult(image_size=(enc.width, enc.height), regions=results, timings=timings, model=self.name)

    @torch.inference_mode()
    def segment(
        self,
        image: str | Path | Image.Image | np.ndarray | EncodedImage,
        regions: Any,
        *,
        return_mask_logits: bool = False,
    ) -> ImageResult:
        """Masks and SAM 2 scores of ``regions`` without running the LLM (what an interactive click
        needs at once); the regions' ``outputs`` are empty. Same inputs and checks as :meth:`perceive`."""
        t_start = time.perf_counter()
        enc = image if isinstance(image, EncodedImage) else self.encode(image)
        parsed = parse_regions(regions, enc.width, enc.height)
        timings = Timings(encode=enc.seconds)
        t0 = time.perf_counter()
        seg = _Segments.join([self._segment(enc, parsed[i : i + REGION_BATCH]).without_features()
                              for i in range(0, len(parsed), REGION_BATCH)])
        results = self._region_results(enc, parsed, seg, [[] for _ in parsed], return_mask_logits)
        timings.segment = time.perf_counter() - t0
        timings.total = time.perf_counter() - t_start
        return ImageResult(image_size=(enc.width, enc.height), regions=results, timings=timings, model=self.name)

    def _region_results(self, enc: EncodedImage, parsed: list[Region], seg, outputs: list[list[TaskOutput]],
                        return_mask_logits: bool) -> list[RegionResult]:
        """Masks at the image size, scores and the given task outputs of each segmented region."""
        results = []
        for r, region in enumerate(parsed):
            logits = self.model.segmenter.postprocess_masks(seg.low_res_logits[r : r + 1], (enc.height, enc.width))
            logits = logits[0, 0].float()
            results.append(
                RegionResult(
                    index=r,
                    prompt=region.describe(),
                    mask=(logits > 0).cpu().numpy(),
                    object_score=float(seg.object_score_logits[r, 0]),
                    iou=float(seg.iou_pred[r, 0]),
                    outputs=outputs[r],
                    mask_logits=logits.cpu().numpy() if return_mask_logits else None,
                )
            )
        return results

    def describe_everything(
        self,
        image: str | Path | Image.Image | np.ndarray | EncodedImage,
        *,
        points_per_side: int | None = None,
        points_per_batch: int | None = None,
        pred_iou_thresh: float | None = None,
        stability_score_thresh: float | None = None,
        box_nms_thresh: float | None = None,
        contained_thresh: float | None = None,
        min_area: int | None = None,
        max_regions: int | None = None,
        crop_layers: int | None = None,
        tasks: str | Sequence[str] = ("label", "brief_caption"),
        lang: str = "en",
        config=None,
        **generation_overrides: Any,
    ) -> ImageResult:
        """Find and describe every object: grid-click mask proposals, filtered and de-duplicated,
        each described by PAM. Settings left None take ``config`` (an
        :class:`~perceive_anything.everything.EverythingConfig`) or its defaults; see
        :mod:`perceive_anything.everything`."""
        from .everything import EverythingConfig, describe_everything

        given = dict(points_per_side=points_per_side, points_per_batch=points_per_batch,
                     pred_iou_thresh=pred_iou_thresh, stability_score_thresh=stability_score_thresh,
                     box_nms_thresh=box_nms_thresh, contained_thresh=contained_thresh, min_area=min_area,
                     max_regions=max_regions, crop_layers=crop_layers)
        cfg = replace(config or EverythingConfig(), **{k: v for k, v in given.items() if v is not None})
        return describe_everything(self, image, cfg, tasks=tasks, lang=lang, **generation_overrides)

    # ------------------------------------------------------------------ video
    def _region_prompt(self, region: Region, wh: tuple[int, int]) -> dict[str, torch.Tensor]:
        """A checked region as the segmenter's tracking prompt (SAM input coordinates or a mask)."""
        if region.mask is not None:
            return {"mask": torch.from_numpy(region.mask).float().to(self.device, self.dtype)}
        xy, lab = region.sam_points()
        coords, labels = to_sam_points(xy, lab, wh, self.config.segmenter.image_size, self.dtype)
        return {"point_coords": coords.to(self.device), "point_labels": labels.to(self.device)}

    def _track(
        self,
        frames: Sequence[Frame] | Any,
        num_frames: int,
        prompts: dict[int, tuple[int, dict]],
        wh: tuple[int, int],
        llm_frames: dict[int, set[bool]],
        reverse: bool = False,
        session=None,
        on_frame: Callable[[int, Frame, dict], None] | None = None,
        start: int = 0,
    ) -> tuple[dict[int, dict[int, Any]], dict[int, list], Any]:
        """Track objects through ``frames`` (processed one at a time, in order).

        ``prompts``: obj_id -> (position in ``frames`` of its prompt, prompt tensors). ``llm_frames``:
        position -> the shuffles the LLM reads it with (``True``: as the first LLM frame; see
        :func:`_llm_frame_needs`). Returns (tokens: obj -> {position: {first: (image, sem) projected
        tokens}}, per-object list of (position, rle, score), the session). Only what is asked for is
        kept: each LLM frame's SAM features become its (much smaller) LLM tokens at once, the session
        prunes its memory bank, frames are dropped after use.
        """
        from .results import mask_to_rle

        seg = self.model.segmenter
        size = self.config.segmenter.image_size
        if session is None:
            session = seg.new_tracking_session(num_frames=num_frames, reverse=reverse)
        for obj_id, (pos, prompt) in prompts.items():
            seg.add_prompt(session, pos, obj_id, **prompt)
        lang = self.model.language
        mids: dict[int, dict[int, Any]] = {o: {} for o in prompts}
        tracks: dict[int, list] = {o: [] for o in prompts}
        order = range(num_frames - 1, start - 1, -1) if reverse else range(start, num_frames)
        w, h = wh
        for pos, frame in zip(order, frames):
            features = seg.encode_image(preprocess_image(frame.image, size).to(self.device, self.dtype))
            if self.device.type == "cpu":
                # the encoder's freed temporaries leave the resident size before the memory attention
                # allocates its own, so the frame's peak is the larger of the two, not their sum
                release_freed_memory()
            outs = seg.track_frame(session, pos, features=features)
            del features
            per_frame = {}
            for obj_id, out in outs.items():
                logits = seg.postprocess_masks(out.low_res_logits.float(), (h, w))[0, 0]
                m = (logits > 0).cpu().numpy()
                tracks.setdefault(obj_id, []).append((pos, mask_to_rle(m), float(out.object_score_logits.float()[0, 0])))
                per_frame[obj_id] = m
                if pos in llm_frames:
                    mids.setdefault(obj_id, {})[pos] = {
                        first: lang.video_frame_tokens(out.mid_image_embed, out.mid_mask_tokens, first, pos)
                        for first in llm_frames[pos]}
            if on_frame is not None:
                on_frame(pos, frame, per_frame)
            if self.device.type == "cpu":
                release_freed_memory()  # the frame's temporaries leave the resident size (_heap.py)
        return mids, tracks, session

    def _describe_objects(
        self,
        mids: dict[int, dict[int, Any]],
        positions: list[int],
        prompts_text: list[str],
        settings: GenerationSettings,
        on_token=None,
        tasks: Sequence[str] | None = None,
    ) -> dict[int, list[tuple[str, list[int]]]]:
        """One LLM row per (object, prompt) over the frames at ``positions`` (first one at 1/2 scale);
        ``mids``: the frame tokens that :meth:`_track` kept."""
        lang_model = self.model.language
        objs = sorted(mids)
        blocks = {o: lang_model.assemble_block([mids[o][p][i == 0] for i, p in enumerate(positions)], video=True)
                  for o in objs}
        ids = [text_proc.tokenize_with_placeholder(self.tokenizer, p) for p in prompts_text]
        rows = [(o, k) for o in objs for k in range(len(prompts_text))]
        pad_id = settings.pad_token_id if settings.pad_token_id is not None else (settings.eos_token_id or [0])[0]
        input_ids, attn = pad_token_rows([ids[k] for _, k in rows], pad_id, side="left")
        callback = None
        if on_token is not None:
            callback = self._token_callback(on_token, rows, list(tasks or prompts_text))
        out = lang_model.generate(input_ids.to(self.device), [blocks[o] for o in objs], settings,
                                  attention_mask=attn.to(self.device), on_token=callback,
                                  block_index=[objs.index(o) for o, _ in rows])
        result: dict[int, list[tuple[str, list[int]]]] = {o: [] for o in objs}
        for row, (o, _) in enumerate(rows):
            toks = out.row_tokens(row)
            result[o].append((text_proc.decode(self.tokenizer, toks), toks))
        return result

    @torch.inference_mode()
    def perceive_video(
        self,
        video: Any,
        regions: Any,
        frame: int = 0,
        task: str | Sequence[str] = "video_caption",
        lang: str = "en",
        *,
        num_frames: int | None = None,
        stride: int = 1,
        fps: float | None = None,
        history: str | None = None,
        generation: GenerationSettings | None = None,
        on_token: TokenCallback | None = None,
        on_frame: Callable[[int, Frame, dict], None] | None = None,
        **generation_overrides: Any,
    ) -> VideoResult:
        """Track ``regions`` (prompted on processed frame ``frame``) through a video and describe each object.

        Args:
            video: a video file (mp4, mov, mkv, webm...), a folder of frames, a list of images/arrays,
                or a :class:`~perceive_anything.processing.video.VideoSource`.
            regions: prompts as for :meth:`perceive`, in the pixel coordinates of the video, given on
                ``frame`` (an index into the processed frames); one object per region.
            num_frames / stride / fps: frame sampling (``num_frames`` spreads that many frames evenly,
                like the official notebooks' 32).
            history: the previous caption for ``video_caption`` (official offline default: "None").

        Objects are tracked forward from ``frame``; when ``frame > 0`` a second, backward pass covers the
        earlier frames (those frames are held in memory, resized to the model's input size). The LLM
        sees 16 frames chosen by the official rule (the first at 1024 tokens); shorter videos repeat
        frames to fill them (see :func:`~perceive_anything.processing.video.llm_frame_positions`).
        """
        t_start = time.perf_counter()
        tasks = [task] if isinstance(task, str) else list(task)
        for t in tasks:
            if text_proc.get_task(t).media == "image":
                raise ValueError(f"task {t!r} is an image task; video tasks are video_caption and question")
        question = generation_overrides.pop("question", None)
        prompts_text = text_proc.build_prompts(tasks, lang, history=history, question=question)
        settings = self._settings(generation, dict(generation_overrides))
        source = open_video(video)
        if source.info.live:
            raise ValueError("perceive_video needs a finite video; use perceive_stream for live sources")
        sampling = Sampling(stride=stride, fps=fps, count=num_frames)
        kept = source.sampled_indices(sampling)
        n = len(kept)
        if n == 0:
            raise VideoError(f"{source.name}: no frame left after sampling")
        if not 0 <= frame < n:
            raise ValueError(f"prompt frame {frame} is outside the {n} processed frames")
        w, h = source.info.width, source.info.height
        parsed = parse_regions(regions, w, h)
        prompts = {i + 1: self._region_prompt(r, (w, h)) for i, r in enumerate(parsed)}
        positions = llm_frame_positions(n, self.config.video_llm_frames)
        wanted = _llm_frame_needs(positions)
        timings = Timings()
        size = self.config.segmenter.image_size

        t0 = time.perf_counter()
        times: dict[int, tuple[int, float]] = {}
        earlier: list[Frame] = []  # frames before the prompt, at the model's input size, for the backward pass

        def forward_frames():
            for pos, f in enumerate(source.frames(sampling)):
                times[pos] = (f.index, f.time)
                if pos <= frame and frame > 0:
                    earlier.append(Frame(f.index, f.time, _model_input_image(f.image, size)))
                if pos >= frame:
                    yield f

        def shifted(callback, offset):
            return (lambda pos, fr, m: callback(pos + offset, fr, m)) if callback else None

        mids_f, tracks_f, _ = self._track(
            forward_frames(), n - frame, {o: (0, pr) for o, pr in prompts.items()}, (w, h),
            {p - frame: f for p, f in wanted.items() if p >= frame}, on_frame=shifted(on_frame, frame),
        )
        mids = {o: {p + frame: v for p, v in d.items()} for o, d in mids_f.items()}
        tracks = {o: [(p + frame, r, sc) for p, r, sc in lst] for o, lst in tracks_f.items()}
        if frame > 0:
            # Backward pass from the prompt frame (position ``frame`` of a reversed session) down to 0.
            seq = list(reversed(earlier))
            earlier.clear()
            mids_b, tracks_b, _ = self._track(
                seq, frame + 1, {o: (frame, pr) for o, pr in prompts.items()}, (w, h),
                {p: f for p, f in wanted.items() if p < frame}, reverse=True, on_frame=on_frame,
            )
            del seq
            for o in mids:
                mids[o].update({p: v for p, v in mids_b.get(o, {}).items() if p < frame})
                tracks[o] = sorted([t for t in tracks_b.get(o, []) if t[0] < frame] + tracks[o], key=lambda t: t[0])
        timings.segment = time.perf_counter() - t0

        t0 = time.perf_counter()
        texts = self._describe_objects(mids, positions, prompts_text, settings, on_token, tasks)
        timings.generate = time.perf_counter() - t0

        objects = []
        for i, region in enumerate(parsed):
            o = i + 1
            outs = []
            for k, t in enumerate(tasks):
                txt, toks = texts[o][k]
                outs.append(_task_output(t, lang, txt, toks))
            lst = tracks[o]
            objects.append(TrackedObjectResult(
                obj_id=o, prompt=region.describe(), prompt_frame=frame,
                rles=[r for _, r, _ in lst], scores=[sc for _, _, sc in lst], outputs=outs,
            ))
        timings.total = time.perf_counter() - t_start
        order = sorted(times)
        return VideoResult(
            video_size=(w, h), frame_indices=[times[p][0] for p in order], frame_times=[times[p][1] for p in order],
            llm_frames=positions, objects=objects, timings=timings, model=self.name, source=source.name,
        )

    def perceive_stream(
        self,
        source: Any,
        regions: Any,
        *,
        clip: int | float | str = 32,
        mode: str = "released",
        carry_memory: bool = False,
        stride: int = 1,
        fps: float | None = None,
        lang: str = "en",
        max_clips: int | None = None,
        generation: GenerationSettings | None = None,
        on_token: TokenCallback | None = None,
        on_frame: Callable[[int, Frame, dict], None] | None = None,
        **generation_overrides: Any,
    ) -> Iterator[CaptionEvent]:
        """Caption what each prompted object does, clip after clip, as the source plays.

        Yields one :class:`~perceive_anything.results.CaptionEvent` per object and clip as soon as the
        clip is described; nothing but the current clip's 16 LLM frames and SAM 2's pruned memory bank
        is held, so memory stays flat however long the source runs (files, folders, webcams, RTSP/HTTP).

        Args:
            regions: prompts on the first processed frame (video pixel coordinates).
            clip: frames per clip (``32`` like the released notebook), or seconds as ``"2s"`` / ``2.0``
                (converted with the sampled frame rate).
            mode: ``"released"`` — disjoint clips, each a fresh SAM 2 session prompted with the box of
                the object's last mask in the previous clip (the released notebook, with its
                ``visual_prompts`` bug fixed); ``"paper"`` — the previous clip's last frame is carried
                into the next clip as its first frame, so it gets the 1024-token (2x2) treatment.
            carry_memory: keep one SAM 2 session for the whole stream instead of re-prompting each clip
                (smoother tracking through occlusions; off by default to match the released model's
                clip-level behaviour).
            stride / fps: frame sampling of the source.
        """
        if mode not in ("released", "paper"):
            raise ValueError(f"unknown streaming mode {mode!r}; use 'released' or 'paper'")
        settings = self._settings(generation, dict(generation_overrides))
        src = open_video(source)
        info = src.info
        clip_frames = _clip_length(clip, fps or (info.fps / stride if info.fps else None))
        w, h = info.width, info.height
        parsed = parse_regions(regions, w, h)
        objects = {i + 1: r for i, r in enumerate(parsed)}
        prompts = {o: self._region_prompt(r, (w, h)) for o, r in objects.items()}
        boxes: dict[int, list[float] | None] = {o: r.describe().get("box") for o, r in objects.items()}
        history: dict[int, str | None] = {o: None for o in objects}  # the prompt then says "None", as officially
        seg = self.model.segmenter
        frames = src.frames(Sampling(stride=stride, fps=fps))
        carried: Frame | None = None
        session = seg.new_tracking_session(num_frames=None) if carry_memory else None
        global_pos = 0
        for k in itertools.count():
            if max_clips is not None and k >= max_clips:
                return
            t0 = time.perf_counter()
            new = list(itertools.islice(frames, clip_frames))
            if not new:
                return
            clip_list = ([carried] if (mode == "paper" and carried is not None) else []) + new
            n = len(clip_list)
            positions = llm_frame_positions(n, self.config.video_llm_frames)
            last_masks: dict[int, np.ndarray] = {}
            last_boxes: dict[int, list[int]] = {}

            def remember(pos, fr, masks, _lm=last_masks, _lb=last_boxes):
                for o, m in masks.items():
                    _lm[o] = m
                    b = mask_to_bbox(m)
                    if b is not None:
                        _lb[o] = b
                if on_frame is not None:
                    on_frame(pos, fr, masks)

            if carry_memory:
                clip_prompts = {o: (global_pos, pr) for o, pr in prompts.items()} if k == 0 else {}
                wanted = {global_pos + p: f for p, f in _llm_frame_needs(positions).items()}
                mids, _, session = self._track(clip_list, global_pos + n, clip_prompts, (w, h), wanted,
                                               session=session, on_frame=remember, start=global_pos)
                mids = {o: {p - global_pos: v for p, v in d.items()} for o, d in mids.items()}
                for o in objects:
                    mids.setdefault(o, {})
            else:
                mids, _, _ = self._track(clip_list, n, {o: (0, pr) for o, pr in prompts.items()}, (w, h),
                                         _llm_frame_needs(positions), on_frame=remember)
            global_pos += n
            prompts_text = {o: text_proc.build_prompt("stream_caption", lang, history=history[o]) for o in objects}
            texts = {}
            for o in objects:
                if len(mids.get(o, {})) < len(set(positions)):
                    continue  # object not tracked on this clip (cannot happen with a prompt on frame 0)
                texts[o] = self._describe_objects({o: mids[o]}, positions, [prompts_text[o]], settings,
                                                  on_token, ["stream_caption"])[o][0][0]
            first, last = clip_list[0], clip_list[-1]
            for o in objects:
                text = texts.get(o, "")
                present = bool(last_masks.get(o) is not None and last_masks[o].any())
                yield CaptionEvent(
                    clip=k, obj_id=o, start_frame=first.index, end_frame=last.index, start_time=first.time,
                    end_time=last.time, text=text, history=history[o], box=boxes[o], present=present,
                    last_box=last_boxes.get(o), seconds=time.perf_counter() - t0,
                )
                history[o] = text
                # Next clip's prompt: the box of the last mask (or of the last frame that still showed it).
                if o in last_boxes:
                    boxes[o] = [float(v) for v in last_boxes[o]]
                    prompts[o] = self._region_prompt(Region(box=tuple(boxes[o])), (w, h))
            carried = last
            del clip_list, new, mids

    def _generate_texts(
        self, blocks: torch.Tensor, tasks: Sequence[str], prompts: Sequence[str], settings: GenerationSettings,
        on_token: TokenCallback | None, max_batch: int,
    ) -> dict[tuple[int, int], tuple[str, list[int]]]:
        """LLM answers for every (region, task) of image visual ``blocks`` (R, Nv, H), ``max_batch`` rows
        per generate call. Returns (region, task index) -> (text, token ids)."""
        # One LLM row per (region, task); each region's chat header and visual block are prefilled once
        # for all its tasks (PamLanguageModel.generate, SharedPrompt).
        ids_per_task = [text_proc.tokenize_with_placeholder(self.tokenizer, p) for p in prompts]
        rows = [(r, ti) for r in range(blocks.shape[0]) for ti in range(len(tasks))]
        texts: dict[tuple[int, int], tuple[str, list[int]]] = {}
        pad_id = settings.pad_token_id if settings.pad_token_id is not None else (settings.eos_token_id or [0])[0]
        for start in range(0, len(rows), max_batch):
            chunk = rows[start : start + max_batch]
            input_ids, attn = pad_token_rows([ids_per_task[ti] for _, ti in chunk], pad_id, side="left")
            regions = sorted({r for r, _ in chunk})
            callback = self._token_callback(on_token, chunk, tasks) if on_token is not None else None
            out = self.model.language.generate(
                input_ids.to(self.device), blocks[regions], settings, attention_mask=attn.to(self.device),
                on_token=callback, block_index=[regions.index(r) for r, _ in chunk],
            )
            for row, (r, ti) in enumerate(chunk):
                token_ids = out.row_tokens(row)
                texts[(r, ti)] = (text_proc.decode(self.tokenizer, token_ids), token_ids)
        return texts

    def _token_callback(self, on_token: TokenCallback, chunk, tasks):
        """Adapt generation step events to ``on_token(region, task, text_piece)`` with UTF-8-safe deltas."""
        decoders = [text_proc.IncrementalDecoder(self.tokenizer) for _ in chunk]

        def callback(event):
            for row in event.active.nonzero().flatten().tolist():
                piece = decoders[row].push(int(event.tokens[row]))
                if piece:
                    r, ti = chunk[row]
                    on_token(r, tasks[ti], piece)

        return callback

    def _segment(self, enc: EncodedImage, regions: list[Region]):
        """Run the SAM heads for every region, batching regions whose prompts have the same shape.

        Regions with different numbers of points cannot share a batch without padding points, and a
        padding point changes SAM's output (it is a real token in the two-way transformer).
        """
        seg_model = self.model.segmenter
        size = self.config.segmenter.image_size
        groups: dict[tuple, list[int]] = {}
        for i, reg in enumerate(regions):
            key = ("mask",) if reg.mask is not None else ("points", len(reg.sam_points()[1]))
            groups.setdefault(key, []).append(i)
        parts: dict[int, Any] = {}
        for key, idx in groups.items():
            if key[0] == "mask":
                masks = torch.stack([torch.from_numpy(regions[i].mask) for i in idx])[:, None].float()
                out = seg_model.segment(enc.features, None, None, mask_inputs=masks.to(self.device, self.dtype))
            else:
                coords, labels = [], []
                for i in idx:
                    xy, lab = regions[i].sam_points()
                    c, l = to_sam_points(xy, lab, (enc.width, enc.height), size, self.dtype)
                    coords.append(c)
                    labels.append(l)
                out = seg_model.segment(
                    enc.features, torch.stack(coords).to(self.device), torch.stack(labels).to(self.device),
                    high_res=False,
                )
            for j, i in enumerate(idx):
                parts[i] = (out, j)
        return _gather_segments([parts[i] for i in range(len(regions))])


def _task_output(task: str, lang: str, text: str, token_ids) -> TaskOutput:
    """A decoded answer with the fields its task parses out of it."""
    fields = {k: v for k, v in text_proc.parse_output(task, text).items() if k in _FIELDS}
    return TaskOutput(task=task, lang=lang, text=text, token_ids=list(token_ids), **fields)


def _llm_frame_needs(positions: Sequence[int]) -> dict[int, set[bool]]:
    """Tracked position -> how the LLM reads it (``True``: as the first LLM frame, at the image shuffle;
    ``False``: at the frame shuffle). A short video repeats frames, so one position can need both."""
    needs: dict[int, set[bool]] = {}
    for i, p in enumerate(positions):
        needs.setdefault(int(p), set()).add(i == 0)
    return needs


def _clip_length(clip: int | float | str, fps: float | None) -> int:
    """Frames per clip from ``32`` (frames), ``"2s"`` / ``2.0`` (seconds at ``fps``)."""
    if isinstance(clip, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|sec|seconds|f|frames)?\s*", clip)
        if not m:
            raise ValueError(f"clip {clip!r}: use a frame count like 32 or a duration like '2s'")
        value, unit = float(m.group(1)), m.group(2) or "f"
        clip = value if unit.startswith("s") else int(value)
        if unit.startswith("f") and value != int(value):
            raise ValueError(f"clip {clip!r}: a frame count must be whole")
    if isinstance(clip, float):
        if fps is None:
            raise ValueError("clip length in seconds needs a frame rate: the source reports none; pass fps=...")
        clip = max(1, round(clip * fps))
    if int(clip) < 1:
        raise ValueError(f"clip length must be at least one frame, got {clip}")
    return int(clip)


def _model_input_image(img: Image.Image, size: int) -> Image.Image:
    """The frame as the segmenter sees it (PIL bicubic to size x size); resizing it again is exact."""
    return img.convert("RGB").resize((size, size), Image.BICUBIC)


@dataclass
class _Segments:
    low_res_logits: torch.Tensor
    object_score_logits: torch.Tensor
    iou_pred: torch.Tensor
    mid_image_embed: torch.Tensor | None
    mid_mask_tokens: torch.Tensor | None

    def without_features(self) -> "_Segments":
        """The masks and scores only (what the results need once the perceiver has run)."""
        return _Segments(self.low_res_logits, self.object_score_logits, self.iou_pred, None, None)

    @staticmethod
    def join(parts: Sequence["_Segments"]) -> "_Segments":
        """The masks and scores of consecutive region batches, in order (no features)."""
        return _Segments(*(torch.cat([getattr(p, a) for p in parts])
                           for a in ("low_res_logits", "object_score_logits", "iou_pred")), None, None)


def _gather_segments(parts) -> _Segments:
    def cat(attr):
        return torch.cat([getattr(o, attr)[j : j + 1] for o, j in parts])

    return _Segments(
        low_res_logits=cat("low_res_logits"),
        object_score_logits=cat("object_score_logits"),
        iou_pred=cat("iou_pred"),
        mid_image_embed=cat("mid_image_embed"),
        mid_mask_tokens=cat("mid_mask_tokens"),
    )
