"""Visual prompts -> SAM 2 point inputs, with the official normalisation (reference §3.3).

The official PAM code builds the prompt tensors in the model dtype: coordinates are rounded to that
dtype, divided by the int64 tensor ``[W, H]`` (type promotion rounds W and H to the dtype too; the
quotient is rounded to the dtype) and multiplied by the SAM image size. A box becomes two points
with labels 2 (top-left) and 3 (bottom-right) placed before any other point. In float32 this is
``x / W * S``; in bfloat16 it shifts prompts by up to ~2 px at 1024 scale, which we reproduce.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["BOX_TOP_LEFT", "BOX_BOTTOM_RIGHT", "box_to_points", "to_sam_points"]

BOX_TOP_LEFT = 2
BOX_BOTTOM_RIGHT = 3


def box_to_points(
    box_xyxy: Sequence[float] | np.ndarray | torch.Tensor,
    points_xy: Sequence[Sequence[float]] | np.ndarray | torch.Tensor | None = None,
    labels: Sequence[int] | np.ndarray | torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A box ``[x1, y1, x2, y2]`` (plus optional extra points) as SAM points: corners first, labels 2, 3."""
    box = np.asarray(box_xyxy, dtype=np.float64).reshape(-1)
    if box.shape != (4,):
        raise ValueError(f"a box has 4 numbers [x1, y1, x2, y2]; got {box.tolist()}")
    pts = box.reshape(2, 2)
    lab = np.array([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], dtype=np.int64)
    if points_xy is not None:
        extra = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
        extra_lab = np.asarray(labels if labels is not None else np.ones(len(extra)), dtype=np.int64).reshape(-1)
        if len(extra_lab) != len(extra):
            raise ValueError(f"{len(extra)} points but {len(extra_lab)} labels")
        pts = np.concatenate([pts, extra], axis=0)
        lab = np.concatenate([lab, extra_lab], axis=0)
    return pts, lab


def to_sam_points(
    points_xy,
    labels,
    image_wh: tuple[int, int],
    image_size: int,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points in original-image pixels (P, 2) + labels (P,) -> SAM input coords (P, 2) in ``dtype`` and int32 labels.

    ``coords = round_dtype(round_dtype(xy) / round_dtype([W, H])) * image_size`` computed exactly like the
    official predictor (``torch.tensor(points, dtype) / torch.tensor([W, H]) * image_size``).
    Labels: 1 positive, 0 negative, 2/3 box corners (use ``box_to_points``).
    """
    pts = torch.as_tensor(np.asarray(points_xy, dtype=np.float64) if not torch.is_tensor(points_xy) else points_xy)
    pts = pts.to(dtype).reshape(-1, 2)
    lab = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels).to(torch.int32).reshape(-1)
    if lab.shape[0] != pts.shape[0]:
        raise ValueError(f"{pts.shape[0]} points but {lab.shape[0]} labels")
    bad = sorted(set(lab.tolist()) - {0, 1, 2, 3})
    if bad:
        raise ValueError(f"point labels must be 0 (negative), 1 (positive), 2/3 (box corners); got {bad}")
    w, h = int(image_wh[0]), int(image_wh[1])
    if w <= 0 or h <= 0:
        raise ValueError(f"image size must be positive, got {image_wh}")
    # int64 divisor: type promotion rounds it to `dtype`, as in the official code
    coords = pts / torch.tensor([w, h], dtype=torch.int64)
    coords = coords * image_size
    return coords, lab
