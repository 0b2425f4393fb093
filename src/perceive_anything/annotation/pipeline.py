"""One model, many items: :class:`Annotator` turns an :class:`~.inputs.Item` into one JSON record.

The same class runs in the single-process loop and inside each Ray Data actor, so both paths
produce the same records.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

from .inputs import Item

RECORD_VERSION = 1


@dataclass
class Settings:
    """Everything that decides a record's content; an output folder is bound to one Settings."""

    mode: str  # "everything" | "prompts"
    tasks: list[str] = field(default_factory=lambda: ["label", "brief_caption"])
    lang: str = "en"
    model: str | None = None
    sam2: str | None = None
    dtype: str | None = None
    everything: dict[str, Any] = field(default_factory=dict)  # EverythingConfig fields
    video_frames: int = 32
    generation: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Settings:
        return cls(**d)


class Annotator:
    """Loads the model once and annotates items; never raises for a bad item (it returns an error record)."""

    def __init__(self, settings: Settings, device: str | None = "cpu", threads: int | None = None):
        import torch

        from ..everything import EverythingConfig
        from ..predictor import PerceiveAnything

        if threads:
            torch.set_num_threads(threads)
        self.settings = settings
        self.pam = PerceiveAnything.from_pretrained(settings.model, sam2=settings.sam2, device=device, dtype=settings.dtype)
        self.config = EverythingConfig(**settings.everything)

    def __call__(self, item: Item) -> dict[str, Any]:
        t0 = time.perf_counter()
        record: dict[str, Any] = {"version": RECORD_VERSION, "id": item.id, "source": item.path, "kind": item.kind,
                                  "model": self.pam.name}
        if item.coco_image_id is not None:
            record["coco_image_id"] = item.coco_image_id
        try:
            if item.error:
                raise ValueError(item.error)
            record.update(self._run(item))
            record["error"] = None
        except Exception as err:  # one bad item must not stop the run: it becomes an error record
            record["error"] = f"{type(err).__name__}: {err}".strip()
            if not isinstance(err, (ValueError, OSError)):
                record["traceback"] = traceback.format_exc(limit=5)
        record["seconds"] = round(time.perf_counter() - t0, 4)
        return record

    def _run(self, item: Item) -> dict[str, Any]:
        s = self.settings
        gen = dict(s.generation)
        if item.kind == "video":
            from ..everything import describe_everything_video

            if item.prompts:
                raise ValueError("COCO prompts are image prompts; a video item needs --everything")
            res = describe_everything_video(self.pam, item.path, self.config, num_frames=s.video_frames,
                                            lang=s.lang, **gen)
            d = res.to_dict()
        elif s.mode == "everything":
            res = self.pam.describe_everything(item.path, config=self.config, tasks=s.tasks, lang=s.lang, **gen)
            d = res.to_dict()
        else:
            if not item.prompts:
                raise ValueError("no prompts for this image (run with --everything, or give it annotations)")
            from ..results import rle_to_mask

            regions = [{"mask": rle_to_mask(p["mask_rle"])} if "mask_rle" in p else p for p in item.prompts]
            res = self.pam.perceive(item.path, regions, task=s.tasks, lang=s.lang, **gen)
            d = res.to_dict()
            for region, ann_id in zip(d["regions"], item.coco_ann_ids):
                region["coco_annotation_id"] = ann_id
        d.pop("source", None)
        d.pop("model", None)
        return d
