"""Typed results shared by every front end (Python API, CLI, server).

A result owns plain numpy / Python data only, so it can be serialised, pickled to Ray workers or
sent over HTTP without dragging tensors or the model along.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO run-length encoding (compressed counts as a UTF-8 string) of a boolean (H, W) mask."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`mask_to_rle`; returns a boolean (H, W) array."""
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    coco = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(coco).astype(bool)


def mask_to_bbox(mask: np.ndarray) -> list[int] | None:
    """Tight xyxy box (x2/y2 exclusive) of a boolean mask, or None when the mask is empty."""
    # row/column projections instead of np.nonzero: no index arrays for a 24-megapixel mask
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(cols) == 0:
        return None
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


@dataclass
class Timings:
    """Wall-clock seconds of each stage of one call."""

    load: float = 0.0
    encode: float = 0.0
    segment: float = 0.0
    perceive: float = 0.0
    generate: float = 0.0
    total: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in self.__dict__.items()}


@dataclass
class TaskOutput:
    """The text produced for one task, and the fields parsed out of it."""

    task: str
    lang: str
    text: str
    token_ids: list[int] = field(default_factory=list)
    label: str | None = None
    definition: str | None = None
    caption: str | None = None
    answer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"task": self.task, "lang": self.lang, "text": self.text}
        for k in ("label", "definition", "caption", "answer"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        return d


class _ReadsOutputs:
    """The parsed fields of a region's or object's task outputs (``self.outputs``)."""

    outputs: list[TaskOutput]

    def output(self, task: str) -> TaskOutput:
        for o in self.outputs:
            if o.task == task:
                return o
        raise KeyError(f"task {task!r} was not run for {self._what()}; ran {[o.task for o in self.outputs]}")

    def _what(self) -> str:
        return "this result"

    @property
    def label(self) -> str | None:
        return next((o.label for o in self.outputs if o.label), None)

    @property
    def definition(self) -> str | None:
        return next((o.definition for o in self.outputs if o.definition), None)

    @property
    def caption(self) -> str | None:
        return next((o.caption for o in self.outputs if o.caption), None)

    @property
    def answer(self) -> str | None:
        """The answer of the ``question`` task (an empty answer is ``""``, not ``None``)."""
        return next((o.answer for o in self.outputs if o.answer is not None), None)

    @property
    def texts(self) -> dict[str, str]:
        """Raw text of every task, by task name."""
        return {o.task: o.text for o in self.outputs}


@dataclass
class RegionResult(_ReadsOutputs):
    """Everything PAM says about one prompted region of an image.

    ``mask`` is a boolean (H, W) array at the original image size; ``mask_logits`` (float32, same
    size) is kept only when asked for because it is large.
    """

    index: int
    prompt: dict[str, Any]
    mask: np.ndarray
    object_score: float
    iou: float
    outputs: list[TaskOutput]
    mask_logits: np.ndarray | None = None
    # Set by describe_everything only: SAM's stability score of the proposal and, for a mask found
    # on a crop tile, the tile (xyxy). to_dict emits them only when set.
    stability_score: float | None = None
    crop_box: list[int] | None = None

    def _what(self) -> str:
        return f"region {self.index}"

    @property
    def present(self) -> bool:
        """SAM 2's verdict: the object score logit is positive."""
        return self.object_score > 0

    @property
    def bbox(self) -> list[int] | None:
        return mask_to_bbox(self.mask)

    @property
    def rle(self) -> dict[str, Any]:
        return mask_to_rle(self.mask)

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def to_dict(self) -> dict[str, Any]:
        d = {
            "index": self.index,
            "prompt": self.prompt,
            "bbox": self.bbox,
            "area": self.area,
            "object_score": round(float(self.object_score), 6),
            "iou": round(float(self.iou), 6),
            "present": self.present,
            "mask_rle": self.rle,
            "outputs": [o.to_dict() for o in self.outputs],
        }
        if self.stability_score is not None:
            d["stability_score"] = round(float(self.stability_score), 6)
        if self.crop_box is not None:
            d["crop_box"] = [int(v) for v in self.crop_box]
        return d


@dataclass
class ImageResult:
    """The result of :meth:`PerceiveAnything.perceive` for one image."""

    image_size: tuple[int, int]  # (width, height)
    regions: list[RegionResult]
    timings: Timings = field(default_factory=Timings)
    model: str = ""
    source: str | None = None

    def __len__(self) -> int:
        return len(self.regions)

    def __getitem__(self, i: int) -> RegionResult:
        return self.regions[i]

    def __iter__(self):
        return iter(self.regions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "model": self.model,
            "image_size": {"width": self.image_size[0], "height": self.image_size[1]},
            "regions": [r.to_dict() for r in self.regions],
            "timings": self.timings.to_dict(),
        }

    def to_json(self, **kwargs) -> str:
        kwargs.setdefault("ensure_ascii", False)
        return json.dumps(self.to_dict(), **kwargs)

    def draw(self, image, **kwargs):
        """Overlay masks, boxes and labels on ``image``; see :func:`perceive_anything.visualize.draw_regions`."""
        from .visualize import draw_regions

        return draw_regions(image, self.regions, **kwargs)


@dataclass
class TrackedObjectResult(_ReadsOutputs):
    """One object tracked through a video: a mask (as COCO RLE, to keep long videos small) and an
    object score per processed frame, and the LLM's description of what it does."""

    obj_id: int
    prompt: dict[str, Any]
    prompt_frame: int
    rles: list[dict[str, Any]]
    scores: list[float]
    outputs: list[TaskOutput] = field(default_factory=list)

    def mask(self, t: int) -> np.ndarray:
        """Boolean (H, W) mask on the t-th processed frame."""
        return rle_to_mask(self.rles[t])

    def _what(self) -> str:
        return f"object {self.obj_id}"

    def present(self, t: int) -> bool:
        return self.scores[t] > 0

    def to_dict(self, masks: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "obj_id": self.obj_id,
            "prompt": self.prompt,
            "prompt_frame": self.prompt_frame,
            "outputs": [o.to_dict() for o in self.outputs],
            "object_scores": [round(float(s), 5) for s in self.scores],
        }
        if masks:
            d["masks_rle"] = self.rles
        return d


@dataclass
class VideoResult:
    """The result of :meth:`PerceiveAnything.perceive_video`.

    ``frame_indices``/``frame_times`` give, for each processed frame, its index and time in the
    source; ``llm_frames`` are the positions (into the processed frames) that the LLM saw.
    """

    video_size: tuple[int, int]
    frame_indices: list[int]
    frame_times: list[float]
    llm_frames: list[int]
    objects: list[TrackedObjectResult]
    timings: Timings = field(default_factory=Timings)
    model: str = ""
    source: str | None = None

    @property
    def num_frames(self) -> int:
        return len(self.frame_indices)

    def __len__(self) -> int:
        return len(self.objects)

    def __getitem__(self, i: int) -> TrackedObjectResult:
        return self.objects[i]

    def __iter__(self):
        return iter(self.objects)

    def to_dict(self, masks: bool = True) -> dict[str, Any]:
        return {
            "source": self.source,
            "model": self.model,
            "video_size": {"width": self.video_size[0], "height": self.video_size[1]},
            "num_frames": self.num_frames,
            "frame_indices": self.frame_indices,
            "frame_times": [round(t, 4) for t in self.frame_times],
            "llm_frames": self.llm_frames,
            "objects": [o.to_dict(masks) for o in self.objects],
            "timings": self.timings.to_dict(),
        }

    def to_json(self, masks: bool = True, **kwargs) -> str:
        kwargs.setdefault("ensure_ascii", False)
        return json.dumps(self.to_dict(masks), **kwargs)


@dataclass
class CaptionEvent:
    """One streaming caption: what object ``obj_id`` did during clip ``clip`` (source frames
    ``start_frame``..``end_frame`` inclusive, ``start_time``..``end_time`` seconds)."""

    clip: int
    obj_id: int
    start_frame: int
    end_frame: int
    start_time: float
    end_time: float
    text: str
    history: str | None  # the previous clip's caption; None on the first clip
    box: list[float] | None
    present: bool
    last_box: list[int] | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "caption",
            "clip": self.clip,
            "obj_id": self.obj_id,
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "start_time": round(self.start_time, 4),
            "end_time": round(self.end_time, 4),
            "text": self.text,
            "history": self.history,
            "prompt_box": self.box,
            "last_box": self.last_box,
            "present": self.present,
            "seconds": round(self.seconds, 3),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)
