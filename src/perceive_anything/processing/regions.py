"""Visual prompts: what a user may give, checked once, with errors that name the problem.

A region is a box, a set of click points, a box plus points, or a binary mask, always in the
pixel coordinates of the original image. ``parse_regions`` accepts the forms a user naturally
writes (dataclasses, dicts, the official flat ``[x1, y1, x2, y2]``) and returns typed ``Region``s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


class RegionError(ValueError):
    """A visual prompt that cannot be used; the message names the region and the problem."""


@dataclass(frozen=True)
class Region:
    """One visual prompt.

    ``box`` is xyxy in pixels; ``points`` is (P, 2) xy in pixels with ``labels`` (P,) of 1
    (positive click) or 0 (negative click); ``mask`` is a boolean (H, W) array.
    """

    box: tuple[float, float, float, float] | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    mask: np.ndarray | None = None

    @property
    def kind(self) -> str:
        if self.mask is not None:
            return "mask"
        if self.box is not None and self.points is not None:
            return "box+points"
        return "box" if self.box is not None else "points"

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary used in results (the mask itself is summarised by its area)."""
        d: dict[str, Any] = {"kind": self.kind}
        if self.box is not None:
            d["box"] = [float(v) for v in self.box]
        if self.points is not None:
            d["points"] = self.points.tolist()
            d["labels"] = [int(v) for v in self.labels]
        if self.mask is not None:
            d["mask_area"] = int(self.mask.sum())
        return d

    def sam_points(self) -> tuple[np.ndarray, np.ndarray]:
        """Points and SAM labels for the prompt encoder: box corners first (labels 2, 3), then clicks."""
        coords, labels = [], []
        if self.box is not None:
            x1, y1, x2, y2 = self.box
            coords += [[x1, y1], [x2, y2]]
            labels += [2, 3]
        if self.points is not None:
            coords += self.points.tolist()
            labels += [int(v) for v in self.labels]
        return np.asarray(coords, dtype=np.float64).reshape(-1, 2), np.asarray(labels, dtype=np.int64)


def box(x1: float, y1: float, x2: float, y2: float) -> Region:
    return Region(box=(float(x1), float(y1), float(x2), float(y2)))


def points(xy: Sequence[Sequence[float]], labels: Sequence[int] | None = None) -> Region:
    arr = np.asarray(xy, dtype=np.float64)
    lab = np.ones(len(arr), dtype=np.int64) if labels is None else np.asarray(labels)
    return Region(points=arr, labels=lab)


def mask(m: np.ndarray) -> Region:
    return Region(mask=np.asarray(m))


def _check_box(b, width: int, height: int, where: str) -> tuple[float, float, float, float]:
    try:
        vals = [float(v) for v in b]
    except (TypeError, ValueError):
        raise RegionError(f"{where}: box must be 4 numbers x1,y1,x2,y2, got {b!r}") from None
    if len(vals) != 4 or not all(np.isfinite(vals)):
        raise RegionError(f"{where}: box must be 4 finite numbers x1,y1,x2,y2, got {b!r}")
    x1, y1, x2, y2 = vals
    if x2 <= x1 or y2 <= y1:
        raise RegionError(
            f"{where}: box {vals} has zero area or is inverted (need x1 < x2 and y1 < y2, in xyxy pixels)"
        )
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise RegionError(f"{where}: box {vals} lies outside the {width}x{height} image")
    return x1, y1, x2, y2


def _check_points(pts, labels, width: int, height: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        arr = np.asarray(pts, dtype=np.float64)
    except (TypeError, ValueError):
        raise RegionError(f"{where}: points must be a list of [x, y] pairs, got {pts!r}") from None
    if arr.ndim == 1 and arr.shape[0] == 2:
        arr = arr[None]  # a single [x, y] click; the official code crashes on this form, we accept it
    if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) == 0:
        raise RegionError(f"{where}: points must be a non-empty list of [x, y] pairs, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise RegionError(f"{where}: points must be finite numbers")
    if labels is None:
        lab = np.ones(len(arr), dtype=np.int64)
    else:
        lab_raw = np.asarray(labels).reshape(-1)
        if len(lab_raw) != len(arr):
            raise RegionError(f"{where}: {len(arr)} points but {len(lab_raw)} labels")
        bad = [v for v in lab_raw.tolist() if v not in (0, 1) or isinstance(v, float) and not float(v).is_integer()]
        if bad:
            raise RegionError(f"{where}: unknown point label(s) {bad}; use 1 for a positive and 0 for a negative click")
        lab = lab_raw.astype(np.int64)
    outside = [p.tolist() for p in arr if not (0 <= p[0] <= width and 0 <= p[1] <= height)]
    if outside:
        raise RegionError(f"{where}: point(s) {outside} lie outside the {width}x{height} image")
    if not (lab == 1).any():
        raise RegionError(f"{where}: at least one positive click (label 1) is needed")
    return arr, lab


def _check_mask(m, width: int, height: int, where: str) -> np.ndarray:
    arr = np.asarray(m)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        # (H, W, 3) is refused rather than read through one channel: which channel (or "any") holds
        # the mask is the caller's knowledge, not ours
        raise RegionError(
            f"{where}: mask must be a 2-D (H, W) array, got shape {arr.shape}"
            + ("; pick a channel (m[..., 0]) or combine them (m.any(-1))" if arr.ndim == 3 else "")
        )
    if arr.shape != (height, width):
        raise RegionError(
            f"{where}: mask is {arr.shape[1]}x{arr.shape[0]} (WxH) but the image is {width}x{height}"
        )
    if arr.dtype.kind == "f":
        # probabilities or logits thresholded at 0 would make almost every pixel foreground
        if not np.isin(arr, (0.0, 1.0)).all():
            raise RegionError(
                f"{where}: float mask holds values other than 0 and 1; threshold it yourself "
                "(e.g. probs > 0.5 or logits > 0) and pass a boolean mask"
            )
    elif arr.dtype != bool and arr.dtype.kind not in "iu":
        raise RegionError(f"{where}: mask must be boolean, integer or 0/1 float, got dtype {arr.dtype}")
    arr = arr > 0 if arr.dtype != bool else arr
    if not arr.any():
        raise RegionError(f"{where}: mask is empty (no foreground pixel)")
    return arr


def check_region(region: Region, width: int, height: int, index: int = 0) -> Region:
    where = f"region {index}"
    if region.mask is not None:
        if region.box is not None or region.points is not None:
            raise RegionError(f"{where}: give a mask alone, not together with a box or points")
        return Region(mask=_check_mask(region.mask, width, height, where))
    if region.box is None and region.points is None:
        raise RegionError(f"{where}: needs a box, points or a mask")
    b = _check_box(region.box, width, height, where) if region.box is not None else None
    p = l = None
    if region.points is not None:
        p, l = _check_points(region.points, region.labels, width, height, where)
    return Region(box=b, points=p, labels=l)


def parse_region(obj: Any, width: int, height: int, index: int = 0) -> Region:
    """Turn one user-provided prompt into a checked ``Region``."""
    where = f"region {index}"
    if isinstance(obj, Region):
        return check_region(obj, width, height, index)
    if isinstance(obj, dict):
        known = {"box", "points", "labels", "mask"}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise RegionError(f"{where}: unknown key(s) {unknown}; use 'box', 'points' (+ 'labels') or 'mask'")
        if "labels" in obj and "points" not in obj:
            raise RegionError(f"{where}: 'labels' given without 'points'")
        r = Region(
            box=obj.get("box"),
            points=None if obj.get("points") is None else obj["points"],
            labels=obj.get("labels"),
            mask=obj.get("mask"),
        )
        return check_region(r, width, height, index)
    if isinstance(obj, np.ndarray) and obj.ndim >= 2 and obj.shape[:2] == (height, width):
        return check_region(Region(mask=obj), width, height, index)
    arr = np.asarray(obj, dtype=object)
    if arr.ndim == 1 and len(arr) == 4:
        # The official convention: a flat list of four numbers is a box.
        return check_region(Region(box=tuple(obj)), width, height, index)
    raise RegionError(
        f"{where}: cannot read {type(obj).__name__} as a prompt; pass perceive_anything.box(...), "
        "points(...), mask(...), a dict with 'box'/'points'/'labels'/'mask', or [x1, y1, x2, y2]"
    )


def parse_regions(regions: Any, width: int, height: int) -> list[Region]:
    """Check a list of prompts (a single prompt is accepted too)."""
    if regions is None:
        raise RegionError("no region given: pass at least one box, set of points or mask")
    single = isinstance(regions, (Region, dict)) or (
        isinstance(regions, np.ndarray) and regions.ndim == 2 and regions.shape == (height, width)
    )
    if not single and not isinstance(regions, np.ndarray):
        seq = list(regions)
        if len(seq) == 4 and all(isinstance(v, (int, float, np.integer, np.floating)) for v in seq):
            single = True
    items = [regions] if single else list(regions)
    if not items:
        raise RegionError("the region list is empty: pass at least one box, set of points or mask")
    return [parse_region(r, width, height, i) for i, r in enumerate(items)]
