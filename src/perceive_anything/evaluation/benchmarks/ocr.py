"""Scene-text recognition of a region: COCO-Text (v2) and Total-Text, scored by word accuracy.

PAM reads the text of the prompted region with its ``label`` task (its recognition output); the accuracy
definition is in :func:`perceive_anything.evaluation.metrics.ocr_accuracy`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from ..metrics import ocr_accuracy, ocr_normalize
from .base import Benchmark, DataError, Item, ScoreContext, check_media, coco_polygons_to_rle, find_file, \
    generate_image_regions, load_sphinxv_boxes, read_json
from .recognition import images_root


class OcrBenchmark(Benchmark):
    media = "image"
    task = "label"
    metrics = ("accuracy",)
    paper_table = "the region recognition table: LVIS, PACO, COCO-Text, Total-Text (number not checked)"

    def generate(self, pam, items: Sequence[Item], generation: dict[str, Any]) -> list[Any]:
        return generate_image_regions(pam, items, "label", generation)

    def score(self, items: Sequence[Item], outputs: Sequence[Any], ctx: ScoreContext) -> dict[str, Any]:
        scores: dict[str, Any] = ocr_accuracy(list(outputs), [it.reference for it in items])
        scores["regions"] = len(items)
        return scores


class CocoText(OcrBenchmark):
    name = "coco-text"
    title = "COCO-Text word recognition (legible words of the val split)"
    source = ("COCOText_box.json of SPHINX-V's regional OCR evaluation (huggingface.co/datasets/Afeng-x/"
              "Draw-and-Understand, eval_dataset/Regional_OCR) with COCO 2017 images; or the full COCO-Text v2 "
              "release (cocotext.v2.json, bgshih.github.io/cocotext) with COCO train2014 images")
    layout = """DIR/  (either file; COCOText_box.json is used when both are there)
  COCOText_box.json  list of {"image_name", "question_id", "bbox": [[x, y, w, h], ...],
                      "gt_answers": "Region 1: WORD\nRegion 2: WORD ..."}   (one word per box, in order)
  cocotext.v2.json   {"imgs": {id: {"file_name", "set": "train"|"val", ...}},
                      "anns": {id: {"image_id", "bbox": [x, y, w, h], "utf8_string", "legibility", ...}}}
                     regions used: val split, legibility "legible", a transcription with a letter or digit
  images/<file>      the images the annotations name"""

    def load(self, root: Path) -> list[Item]:
        if (root / "COCOText_box.json").is_file():
            return load_sphinxv_boxes(self, root, root / "COCOText_box.json", images_root(root))
        ann = find_file(self, root, ("COCOText_box.json", "cocotext.v2.json"))
        data = read_json(self, ann)
        if not isinstance(data, dict) or "anns" not in data or "imgs" not in data:
            raise DataError(f"{self.name}: {ann} should have 'imgs' and 'anns' (the COCO-Text v2 format)")
        base = images_root(root)
        items = []
        for aid, a in sorted(data["anns"].items(), key=lambda kv: int(kv[0])):
            img = data["imgs"].get(str(a["image_id"]))
            if img is None:
                raise DataError(f"{self.name}: annotation {aid} refers to image {a['image_id']} that is not in 'imgs'")
            text = a.get("utf8_string", "")
            if img.get("set") != "val" or a.get("legibility") != "legible" or not ocr_normalize(text):
                continue
            x, y, w, h = (float(v) for v in a["bbox"])
            if w <= 0 or h <= 0:
                continue
            items.append(Item(id=str(aid), inputs={"image": str(base / img["file_name"]), "box": [x, y, x + w, y + h]},
                              reference=text))
        check_media(self, [Path(it.inputs["image"]) for it in items])
        return items



_TT_LINE = re.compile(r"x:\s*\[\[([^\]]*)\]\],\s*y:\s*\[\[([^\]]*)\]\],\s*ornt:\s*\[[^\]]*\],\s*"
                      r"transcriptions:\s*\[u?['\"](.*)['\"]\]\s*$")


def parse_total_text(line: str) -> tuple[list[float], list[float], str] | None:
    """One line of a Total-Text polygon ground-truth file: (xs, ys, transcription)."""
    m = _TT_LINE.search(line.strip())
    if not m:
        return None
    xs = [float(v) for v in m.group(1).replace(",", " ").split()]
    ys = [float(v) for v in m.group(2).replace(",", " ").split()]
    return xs, ys, m.group(3)


class TotalText(OcrBenchmark):
    name = "total-text"
    title = "Total-Text word recognition (test split, polygon regions)"
    source = "Total-Text (github.com/cs-chan/Total-Text-Dataset): test images + the legacy .txt polygon ground truth"
    layout = """DIR/
  Images/Test/img<N>.jpg                                the test images
  Groundtruth/Polygon/Test/poly_gt_img<N>.txt           one word per line:
      x: [[x1 x2 ...]], y: [[y1 y2 ...]], ornt: [u'h'], transcriptions: [u'WORD']
  Regions used: every word whose transcription is not "#" (do-not-care); the polygon is the prompt (a mask)."""

    def load(self, root: Path) -> list[Item]:
        gt_dir = root / "Groundtruth" / "Polygon" / "Test"
        if not gt_dir.is_dir():
            raise self.missing(f"{gt_dir} does not exist")
        files = sorted(gt_dir.glob("poly_gt_*.txt"))
        if not files:
            raise self.missing(f"no poly_gt_*.txt in {gt_dir}")
        from PIL import Image

        items = []
        for gt in files:
            stem = gt.stem[len("poly_gt_"):]
            image = next((p for p in (root / "Images" / "Test" / f"{stem}{ext}" for ext in (".jpg", ".JPG", ".png"))
                          if p.exists()), root / "Images" / "Test" / f"{stem}.jpg")
            check_media(self, [image])
            with Image.open(image) as im:
                w, h = im.size
            for k, line in enumerate(gt.read_text(encoding="utf-8", errors="replace").splitlines()):
                if not line.strip():
                    continue
                parsed = parse_total_text(line)
                if parsed is None:
                    raise DataError(f"{self.name}: {gt.name} line {k + 1} is not in the Total-Text format: {line[:80]}")
                xs, ys, text = parsed
                if text == "#" or not ocr_normalize(text) or len(xs) < 3:
                    continue
                poly = [v for xy in zip(xs, ys) for v in xy]
                items.append(Item(id=f"{stem}:{k}", inputs={"image": str(image),
                                                            "mask_rle": coco_polygons_to_rle([poly], h, w)},
                                  reference=text))
        return items
