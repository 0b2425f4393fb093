"""``PerceiveAnything``: the one user-facing, stateful entry point.

In the spirit of segment-anything's ``SamPredictor``: it wraps a :class:`PamModel`, a tokenizer
and generation settings, encodes an image once and answers any number of region prompts on it.
Many regions of one image go through the mask decoder and the LLM as one batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from .config import PamConfig
from .generation import GenerationSettings
from .modeling.language import pad_token_rows
from .modeling.pam import PamModel
from .processing import text as text_proc
from .processing.image import load_image, preprocess_image
from .processing.prompts import to_sam_points
from .processing.regions import Region, parse_regions
from .results import ImageResult, RegionResult, TaskOutput, Timings

IMAGE_TASKS = tuple(name for name, t in text_proc.TASKS.items() if t.media != "video")
_FIELDS = ("label", "definition", "caption", "answer")

TokenCallback = Callable[[int, str, str], None]
"""Called as ``on_token(region_index, task, text_piece)`` while tokens are generated."""

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


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


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available on this machine")
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
    ):
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
            **generation_overrides: e.g. ``max_new_tokens=64``, ``temperature=0.1``, ``seed=0``.
        """
        t_start = time.perf_counter()
        tasks = [task] if isinstance(task, str) else list(task)
        if not tasks:
            raise ValueError("task list is empty; choose from " + ", ".join(IMAGE_TASKS))
        for t in tasks:
            if text_proc.get_task(t).media == "video":
                raise ValueError(f"task {t!r} is a video task; image tasks are {', '.join(IMAGE_TASKS)}")
        if "question" in tasks and not (question and question.strip()):
            raise ValueError("task 'question' needs question='...' (the free question to ask about the region)")
        prompts = [text_proc.build_prompt(t, lang, question=question) for t in tasks]
        settings = self._settings(generation, dict(generation_overrides))

        enc = image if isinstance(image, EncodedImage) else self.encode(image)
        parsed = parse_regions(regions, enc.width, enc.height)
        timings = Timings(encode=enc.seconds)

        t0 = time.perf_counter()
        seg = self._segment(enc, parsed)
        timings.segment = time.perf_counter() - t0

        t0 = time.perf_counter()
        lang_model = self.model.language
        blocks = lang_model.image_visual_block(seg.mid_image_embed, seg.mid_mask_tokens)  # (R, Nv, H)
        timings.perceive = time.perf_counter() - t0

        # One LLM row per (region, task); rows of different tasks differ in length and are left-padded.
        t0 = time.perf_counter()
        ids_per_task = [text_proc.tokenize_with_placeholder(self.tokenizer, p) for p in prompts]
        rows = [(r, ti) for r in range(len(parsed)) for ti in range(len(tasks))]
        texts: dict[tuple[int, int], tuple[str, list[int]]] = {}
        pad_id = settings.pad_token_id if settings.pad_token_id is not None else (settings.eos_token_id or [0])[0]
        for start in range(0, len(rows), max_batch):
            chunk = rows[start : start + max_batch]
            input_ids, attn = pad_token_rows([ids_per_task[ti] for _, ti in chunk], pad_id, side="left")
            vis = blocks[[r for r, _ in chunk]]
            callback = self._token_callback(on_token, chunk, tasks) if on_token is not None else None
            out = lang_model.generate(
                input_ids.to(self.device), vis, settings, attention_mask=attn.to(self.device), on_token=callback
            )
            for row, (r, ti) in enumerate(chunk):
                token_ids = out.row_tokens(row)
                texts[(r, ti)] = (text_proc.decode(self.tokenizer, token_ids), token_ids)
        timings.generate = time.perf_counter() - t0

        results = []
        for r, region in enumerate(parsed):
            logits = self.model.segmenter.postprocess_masks(seg.low_res_logits[r : r + 1], (enc.height, enc.width))
            logits = logits[0, 0].float()
            outputs = []
            for ti, t in enumerate(tasks):
                txt, token_ids = texts[(r, ti)]
                fields = {k: v for k, v in text_proc.parse_output(t, txt).items() if k in _FIELDS}
                outputs.append(TaskOutput(task=t, lang=lang, text=txt, token_ids=list(token_ids), **fields))
            results.append(
                RegionResult(
                    index=r,
                    prompt=region.describe(),
                    mask=(logits > 0).cpu().numpy(),
                    object_score=float(seg.object_score_logits[r, 0]),
                    iou=float(seg.iou_pred[r, 0]),
                    outputs=outputs,
                    mask_logits=logits.cpu().numpy() if return_mask_logits else None,
                )
            )
        timings.total = time.perf_counter() - t_start
        return ImageResult(image_size=(enc.width, enc.height), regions=results, timings=timings, model=self.name)

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
                    enc.features, torch.stack(coords).to(self.device), torch.stack(labels).to(self.device)
                )
            for j, i in enumerate(idx):
                parts[i] = (out, j)
        return _gather_segments([parts[i] for i in range(len(regions))])


@dataclass
class _Segments:
    low_res_logits: torch.Tensor
    object_score_logits: torch.Tensor
    iou_pred: torch.Tensor
    mid_image_embed: torch.Tensor
    mid_mask_tokens: torch.Tensor


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
