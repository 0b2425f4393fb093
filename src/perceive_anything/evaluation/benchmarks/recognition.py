"""Region recognition on LVIS and PACO with Osprey's protocol (semantic similarity + semantic IoU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..metrics import semantic_scores
from .base import (Benchmark, DataError, Item, ScoreContext, check_media, coco_polygons_to_rle, find_file,
                   generate_image_regions, load_sphinxv_boxes, read_json, require_keys)


def images_root(root: Path) -> Path:
    """``DIR/images`` when it exists, else ``DIR`` itself (image paths in the annotations are relative to it)."""
    return root / "images" if (root / "images").is_dir() else root


class OspreyCategoryBenchmark(Benchmark):
    """Osprey's ``*_val_1k_category.json``: a list of images, each with parallel ``categories`` and
    ``annotations`` lists (one region each, COCO segmentation). Each region is prompted with its mask
    and PAM's ``label`` task; the label is scored against the category name."""

    media = "image"
    task = "label"
    metrics = ("semantic_similarity", "semantic_iou")
    annotation_names: tuple[str, ...] = ()
    box_file = ""  # SPHINX-V's box-prompted version of the same benchmark

    @property
    def layout(self) -> str:  # type: ignore[override]
        return (f"DIR/  (either file; {self.box_file} is used when both are there)\n"
                f"  {self.annotation_names[0]}   Osprey's masks: list of {{\"file_name\", \"height\", \"width\", "
                "\"categories\": [name, ...], \"annotations\": [{\"segmentation\": polygons|RLE}, ...]}\n"
                f"  {self.box_file}   SPHINX-V's boxes: list of {{\"image_name\", \"bbox\": [[x, y, w, h], ...], "
                "\"gt_answers\": \"Region 1: name\\nRegion 2: name ...\"}\n"
                "  images/<file>   the COCO 2017 images the annotations name")

    def load(self, root: Path) -> list[Item]:
        if (root / self.box_file).is_file():
            return load_sphinxv_boxes(self, root, root / self.box_file, images_root(root))
        ann = find_file(self, root, (*self.annotation_names, self.box_file))
        data = read_json(self, ann)
        if not isinstance(data, list):
            raise DataError(f"{self.name}: {ann} should hold a list of images (Osprey's category format)")
        base = images_root(root)
        items = []
        for n, rec in enumerate(data):
            require_keys(self, rec, ["file_name", "height", "width", "categories", "annotations"], f"{ann.name} entry {n}")
            if len(rec["categories"]) != len(rec["annotations"]):
                raise DataError(f"{self.name}: {ann.name} entry {n}: {len(rec['categories'])} categories but "
                                f"{len(rec['annotations'])} annotations")
            for i, (cat, a) in enumerate(zip(rec["categories"], rec["annotations"])):
                rle = coco_polygons_to_rle(a["segmentation"], rec["height"], rec["width"])
                items.append(Item(id=f"{n}:{i}", inputs={"image": str(base / rec["file_name"]), "mask_rle": rle},
                                  reference=str(cat)))
        check_media(self, [Path(it.inputs["image"]) for it in items])
        return items

    def generate(self, pam, items: Sequence[Item], generation: dict[str, Any]) -> list[Any]:
        return generate_image_regions(pam, items, "label", generation)

    def score(self, items: Sequence[Item], outputs: Sequence[Any], ctx: ScoreContext) -> dict[str, Any]:
        scores: dict[str, Any] = semantic_scores(list(outputs), [it.reference for it in items], ctx.embedder)
        scores["regions"] = len(items)
        scores["embedding_model"] = getattr(ctx.embedder, "source", "?")
        return scores


class LVIS(OspreyCategoryBenchmark):
    name = "lvis"
    title = "LVIS region recognition (Osprey protocol)"
    annotation_names = ("lvis_val_1k_category.json",)
    box_file = "LVIS_box.json"
    paper_table = "the region recognition table: LVIS, PACO, COCO-Text, Total-Text (number not checked)"
    source = ("lvis_val_1k_category.json from Osprey's data release (huggingface.co/datasets/sunshine-lwt/Osprey-ValData) "
              "or LVIS_box.json of SPHINX-V (huggingface.co/datasets/Afeng-x/Draw-and-Understand); COCO 2017 images")


class PACO(OspreyCategoryBenchmark):
    name = "paco"
    title = "PACO part/object recognition (Osprey protocol)"
    annotation_names = ("paco_val_1k_category.json",)
    box_file = "PACO_box.json"
    paper_table = LVIS.paper_table
    source = ("paco_val_1k_category.json from Osprey's data release (huggingface.co/datasets/sunshine-lwt/Osprey-ValData) "
              "or PACO_box.json of SPHINX-V (huggingface.co/datasets/Afeng-x/Draw-and-Understand); COCO 2017 images")
