"""Region captioning with reference captions, scored with the coco-caption metrics (RefCOCOg, Visual Genome)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .base import (Benchmark, DataError, Item, ScoreContext, check_media, coco_polygons_to_rle, find_file,
                   generate_image_regions, read_json, reference_caption_scores, require_keys)
from .recognition import images_root


class CocoRegionCaptions(Benchmark):
    """A COCO-style json whose regions carry reference captions; PAM's ``brief_caption`` per region,
    scored corpus-level with PTB tokenization (coco-caption's COCOEvalCap convention)."""

    media = "image"
    task = "brief_caption"
    metrics = ("METEOR", "CIDEr")
    annotation_names: tuple[str, ...] = ()

    def image_path(self, base: Path, file_name: str) -> Path:
        return base / file_name

    def regions(self, data: dict) -> list[tuple[dict, dict, list[str]]]:
        """(image record, annotation, reference captions) per region."""
        raise NotImplementedError

    def load(self, root: Path) -> list[Item]:
        ann = find_file(self, root, self.annotation_names)
        data = read_json(self, ann)
        if not isinstance(data, dict):
            raise DataError(f"{self.name}: {ann} should be a COCO-style object with 'images' and 'annotations'")
        require_keys(self, data, ["images", "annotations"], ann.name)
        base = images_root(root)
        items = []
        for img, a, refs in self.regions(data):
            inputs: dict[str, Any] = {"image": str(self.image_path(base, img["file_name"]))}
            if self.prompt == "mask":
                inputs["mask_rle"] = coco_polygons_to_rle(a["segmentation"], img["height"], img["width"])
            else:
                x, y, w, h = (float(v) for v in a["bbox"])
                inputs["box"] = [x, y, x + w, y + h]
            items.append(Item(id=str(a.get("id", len(items))), inputs=inputs, reference=refs))
        check_media(self, [Path(it.inputs["image"]) for it in items])
        return items

    prompt = "box"

    def generate(self, pam, items: Sequence[Item], generation: dict[str, Any]) -> list[Any]:
        return generate_image_regions(pam, items, self.task, generation)

    def score(self, items: Sequence[Item], outputs: Sequence[Any], ctx: ScoreContext) -> dict[str, Any]:
        return reference_caption_scores(items, outputs, self.metrics)


class RefCOCOg(CocoRegionCaptions):
    name = "refcocog"
    title = "RefCOCOg region captioning"
    annotation_names = ("finetune_refcocog_val_with_mask.json",)
    prompt = "mask"
    paper_table = "the region-level image captioning table (number not checked)"
    source = ("finetune_refcocog_val_with_mask.json from Osprey's / GLaMM's RefCOCOg region-caption release; "
              "COCO train2014 images")
    layout = """DIR/
  finetune_refcocog_val_with_mask.json   COCO-style: "images": [{"id", "file_name", "height", "width",
                                         "caption"}] (one image record per referring expression),
                                         "annotations": [{"id", "image_id", "segmentation"}]
  images/000000xxxxxx.jpg                COCO train2014 images; a file_name like COCO_train2014_000000xxxxxx.jpg
                                         is looked up by its part after the last "_" (as Osprey does)"""

    def image_path(self, base: Path, file_name: str) -> Path:
        full = base / file_name
        return full if full.exists() else base / file_name.split("_")[-1]

    def regions(self, data: dict):
        by_image = {img["id"]: img for img in data["images"]}
        out = []
        for n, a in enumerate(data["annotations"]):
            require_keys(self, a, ["image_id", "segmentation"], f"annotation {n}")
            img = by_image.get(a["image_id"])
            if img is None:
                raise DataError(f"{self.name}: annotation {n} refers to image id {a['image_id']} that is not in 'images'")
            require_keys(self, img, ["file_name", "height", "width", "caption"], f"image {img['id']}")
            out.append((img, a, [img["caption"]]))
        return out


class VisualGenome(Benchmark):
    """Visual Genome region captions in the processed list format of Osprey / PixelRefer (vg_val_5000.json):
    one record per region with its image, box (xywh) and reference caption; PAM's ``brief_caption`` on
    the box, scored with PTB tokenization (COCOEvalCap)."""

    name = "vg"
    title = "Visual Genome region captioning"
    media = "image"
    task = "brief_caption"
    metrics = ("METEOR", "CIDEr")
    paper_table = RefCOCOg.paper_table
    source = ("vg_val_5000.json (huggingface.co/datasets/CircleRadon/referring_evaluation, the processed VG "
              "split that Osprey/PixelRefer evaluate on); Visual Genome images")
    layout = """DIR/
  vg_val_5000.json     list of {"image": ["<file>"], "height", "width", "caption", "boxes": [[x, y, w, h]]}
  images/<file>        the Visual Genome images ("image" paths are relative to images/, or to DIR)"""

    def load(self, root: Path) -> list[Item]:
        ann = find_file(self, root, ("vg_val_5000.json",))
        data = read_json(self, ann)
        if not isinstance(data, list):
            raise DataError(f"{self.name}: {ann} should hold a list of regions")
        base = images_root(root)
        items = []
        for n, rec in enumerate(data):
            require_keys(self, rec, ["image", "caption", "boxes"], f"{ann.name} entry {n}")
            image = rec["image"][0] if isinstance(rec["image"], list) else rec["image"]
            x, y, w, h = (float(v) for v in rec["boxes"][0])
            items.append(Item(id=str(n), inputs={"image": str(base / image), "box": [x, y, x + w, y + h]},
                              reference=[str(rec["caption"])]))
        check_media(self, [Path(it.inputs["image"]) for it in items])
        return items

    def generate(self, pam, items: Sequence[Item], generation: dict[str, Any]) -> list[Any]:
        return generate_image_regions(pam, items, self.task, generation)

    score = CocoRegionCaptions.score
