"""What ``pam annotate`` works on: a folder (recursive), a text file of paths, or a COCO JSON of prompts.

Every item gets a stable ``id`` (its path relative to the folder, its line in the text file, or
``coco:<image_id>``): resuming matches records to items by this id. Problems of a single item (a
COCO box outside its image, a broken RLE) do not refuse the run: the item carries the message and
becomes an error record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}


class InputError(ValueError):
    """The input as a whole cannot be annotated (missing, empty, not a COCO file, ...)."""


@dataclass
class Item:
    id: str
    path: str
    kind: str  # "image" | "video"
    prompts: list[dict[str, Any]] | None = None  # region dicts (box / mask RLE) from a COCO JSON
    coco_image_id: int | None = None
    coco_ann_ids: list[int] = field(default_factory=list)
    error: str | None = None  # known bad before running the model

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> Item:
        return cls(**json.loads(text))


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None


def is_coco_json(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".json"


def discover(source: str | Path, prompts: str | Path | None = None) -> list[Item]:
    """Items of ``source``: a folder (images and videos, recursive, sorted), a text file with one
    path per line (relative to the file's folder; ``#`` comments), or a COCO JSON whose boxes or masks
    are the prompts (images relative to the JSON's folder). ``prompts`` (a COCO JSON) with a folder
    ``source``: the folder is the image root of that JSON."""
    src = Path(source)
    if prompts is not None:
        if not src.is_dir():
            raise InputError(f"--prompts needs INPUT to be the image folder of the COCO file; {src} is not a folder")
        return coco_items(Path(prompts), image_root=src)
    if not src.exists():
        raise InputError(f"input not found: {src}")
    if src.is_dir():
        items = []
        for p in sorted(src.rglob("*")):
            kind = _kind(p)
            if kind and p.is_file():
                items.append(Item(id=p.relative_to(src).as_posix(), path=str(p.resolve()), kind=kind))
        if not items:
            raise InputError(f"{src}: no images or videos found (looked for {', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))})")
        return items
    if is_coco_json(src):
        return coco_items(src, image_root=src.parent)
    return list_items(src)


def list_items(path: Path) -> list[Item]:
    items, seen = [], set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file of paths (nor a folder or a COCO .json)") from None
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line)
        p = p if p.is_absolute() else path.parent / p
        kind = _kind(p)
        item_id = line
        if item_id in seen:
            continue  # the same path twice is one item
        seen.add(item_id)
        items.append(Item(id=item_id, path=str(p), kind=kind or "image",
                          error=None if kind else f"line {n}: {line}: not an image or video file name"))
    if not items:
        raise InputError(f"{path}: the list has no paths")
    return items


def coco_items(path: Path, image_root: Path) -> list[Item]:
    """One item per COCO image that has annotations; each annotation's mask (RLE or polygon) or box
    is one prompt. Boxes outside the image or broken RLEs make that image an error item."""
    if not path.is_file():
        raise InputError(f"COCO file not found: {path}")
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list) or not isinstance(coco.get("annotations"), list):
        raise InputError(f"{path}: a COCO file needs 'images' and 'annotations' lists")
    by_image: dict[Any, list[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    items = []
    for img in coco["images"]:
        anns = by_image.get(img.get("id"), [])
        if not anns:
            continue
        name = img.get("file_name")
        item = Item(id=f"coco:{img.get('id')}", path=str(image_root / str(name)), kind="image",
                    coco_image_id=img.get("id"), coco_ann_ids=[a.get("id") for a in anns])
        try:
            item.prompts = [_coco_prompt(a, img) for a in anns]
        except ValueError as err:
            item.error = f"{path.name}, image {img.get('id')} ({name}): {err}"
        items.append(item)
    if not items:
        raise InputError(f"{path}: no image has annotations to use as prompts")
    return items


def _coco_prompt(ann: dict, img: dict) -> dict[str, Any]:
    w, h = img.get("width"), img.get("height")
    seg = ann.get("segmentation")
    if isinstance(seg, dict):  # RLE
        from pycocotools import mask as mask_utils

        size = seg.get("size")
        if not (isinstance(size, list) and len(size) == 2) or "counts" not in seg:
            raise ValueError(f"annotation {ann.get('id')}: RLE needs 'size' [h, w] and 'counts'")
        if w and h and list(size) != [h, w]:
            raise ValueError(f"annotation {ann.get('id')}: RLE size {size} is not the image's [{h}, {w}]")
        rle = dict(seg)
        if isinstance(rle["counts"], list):
            rle = mask_utils.frPyObjects(rle, size[0], size[1])
        elif isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
        try:
            mask = mask_utils.decode(rle)
        except Exception as err:  # pycocotools raises bare exceptions for corrupt counts
            raise ValueError(f"annotation {ann.get('id')}: broken RLE ({err})") from None
        if int(mask.sum()) == 0 or mask.size != size[0] * size[1]:
            raise ValueError(f"annotation {ann.get('id')}: broken RLE (empty or wrong length)")
        from ..results import mask_to_rle

        # kept as RLE so that items stay JSON (they travel to Ray workers); decoded by the Annotator
        return {"mask_rle": mask_to_rle(mask.astype(bool))}
    box = ann.get("bbox")
    if not (isinstance(box, list) and len(box) == 4):
        raise ValueError(f"annotation {ann.get('id')}: neither an RLE segmentation nor a bbox [x, y, w, h]")
    x, y, bw, bh = (float(v) for v in box)
    if bw <= 0 or bh <= 0:
        raise ValueError(f"annotation {ann.get('id')}: bbox {box} has no area")
    if w and h and (x < 0 or y < 0 or x + bw > w or y + bh > h):
        raise ValueError(f"annotation {ann.get('id')}: bbox {box} lies outside the {w}x{h} image")
    return {"box": [x, y, x + bw, y + bh]}
