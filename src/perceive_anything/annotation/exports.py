"""Exports of finished records: a COCO JSON, and ``supervision`` detections read from it.

COCO (``OUT/coco.json``, loads with ``pycocotools.coco.COCO``): ``images`` (one per successful image
item; ``file_name`` is the item id, the path relative to the input folder), ``annotations`` (one per
region: RLE ``segmentation``, ``bbox`` [x, y, w, h], ``area``, ``score`` = predicted IoU,
``category_id`` of its label, and the texts ``label``, ``caption``, ``definition`` when produced,
``stability_score`` for describe-everything masks), ``categories`` (the label vocabulary, sorted;
regions without a label are ``object``). Video items are in ``records.jsonl`` only: COCO has no
tracks.

supervision: the on-disk form is that COCO file; :func:`load_detections` turns it into one
``sv.Detections`` per image (``xyxy``, ``mask``, ``confidence``, ``class_id``, and the texts in
``data["label" | "caption" | "definition"]``, ``data["class_name"]``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

UNLABELLED = "object"


def _texts(region: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for o in region.get("outputs", []):
        for key in ("label", "caption", "definition"):
            if o.get(key) and key not in out:
                out[key] = o[key]
    return out


def coco_from_records(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    images, anns, labels = [], [], set()
    kept = [r for r in records if r.get("error") is None and r.get("kind") == "image"]
    for r in kept:
        for region in r.get("regions", []):
            labels.add(_texts(region).get("label") or UNLABELLED)
    categories = [{"id": i + 1, "name": name, "supercategory": "pam"} for i, name in enumerate(sorted(labels))]
    cat_id = {c["name"]: c["id"] for c in categories}
    used_ids = {r["coco_image_id"] for r in kept if isinstance(r.get("coco_image_id"), int)}
    next_id = max(used_ids, default=0) + 1
    for r in kept:
        image_id = r.get("coco_image_id")
        if not isinstance(image_id, int):
            image_id, next_id = next_id, next_id + 1
        size = r["image_size"]
        images.append({"id": image_id, "file_name": r["id"], "width": size["width"], "height": size["height"]})
        for region in r.get("regions", []):
            x1, y1, x2, y2 = region["bbox"] or [0, 0, 0, 0]
            texts = _texts(region)
            ann = {
                "id": len(anns) + 1, "image_id": image_id,
                "category_id": cat_id[texts.get("label") or UNLABELLED],
                "segmentation": region["mask_rle"], "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": region["area"], "iscrowd": 0, "score": region["iou"], **texts,
            }
            for key in ("stability_score", "coco_annotation_id"):
                if key in region:
                    ann[key] = region[key]
            anns.append(ann)
    return {"info": {"description": "pam annotate"}, "images": images, "annotations": anns, "categories": categories}


def load_detections(coco_json: str | Path) -> dict[str, Any]:
    """file_name -> ``sv.Detections`` (needs the ``supervision`` package, extra ``annotation``)."""
    import numpy as np
    import supervision as sv

    from ..results import rle_to_mask

    coco = json.loads(Path(coco_json).read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in coco["categories"]}
    by_image: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    out = {}
    for img in coco["images"]:
        anns = by_image.get(img["id"], [])
        h, w = img["height"], img["width"]
        if not anns:
            out[img["file_name"]] = sv.Detections.empty()
            continue
        xyxy = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                         for a in anns], dtype=np.float32)
        data = {key: np.array([a.get(key, "") for a in anns], dtype=object) for key in ("label", "caption", "definition")}
        data["class_name"] = np.array([names[a["category_id"]] for a in anns], dtype=object)
        out[img["file_name"]] = sv.Detections(
            xyxy=xyxy, mask=np.stack([rle_to_mask(a["segmentation"]) for a in anns]).reshape(len(anns), h, w),
            confidence=np.array([a["score"] for a in anns], dtype=np.float32),
            class_id=np.array([a["category_id"] for a in anns], dtype=int), data=data,
        )
    return out
