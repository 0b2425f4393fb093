"""Training the SAM 2 segmenter from scratch on the synthetic shapes world.

What is here:

* SAM-style losses (:func:`sam_losses`): focal + dice on the mask logits of token 0 (the only token
  PAM ever outputs), a min-over-3 loss on the multimask tokens 1-3 (they feed the perceiver when
  token 0 is unstable), an MSE loss on the predicted IoU of every token, a BCE loss on the object
  score (object visible on that frame or not). Weights follow SAM 2's training config
  (focal 20 : dice 1 : IoU 1 : object 1). Mask losses are computed on the *ungated* logits
  (``SegmenterOutput.multimask_logits``) and only where the object is visible, as in SAM 2.
* Prompt sampling from ground truth (:func:`sample_prompt`): jittered boxes, 1-3 positive clicks
  (+ up to 2 negative ones near the object), box + clicks, and (video only) mask prompts.
* Two task objects following the trainer's ``TrainingTask`` protocol: :class:`ImageSegmentationTask`
  (one-frame prompts, like ``PerceiveAnything.perceive``) and :class:`VideoTrackingTask` (prompt on
  frame 0, loss on every frame, gradients through the memory bank, like ``perceive_video``).
* A quick stand-alone loop (``python -m perceive_anything.training.segmentation --steps N --out DIR``):
  AdamW + warmup/cosine, image/video mix, periodic held-out evaluation, safetensors output of the
  segmenter weights (``segmenter.safetensors``, names of ``PamSegmenter.state_dict()``).

Data is generated on the fly and is a pure function of ``(seed, step, rank)`` (exact resume).
Training scene/video seeds have their top bit (2**31) clear; held-out seeds
(``eval_segmentation``) have it set, so training never sees an evaluation scene.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..processing.image import IMAGENET_MEAN, IMAGENET_STD
from ..processing.prompts import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT

__all__ = [
    "LossWeights",
    "PromptSpec",
    "ImageBatch",
    "VideoBatch",
    "ImageSegmentationTask",
    "VideoTrackingTask",
    "sigmoid_focal_loss",
    "dice_loss",
    "mask_iou",
    "sam_losses",
    "semantic_prototypes",
    "semantic_loss",
    "SEGMENTER_PARTS",
    "sample_prompt",
    "training_seed",
    "normalize_pixels",
    "segmenter_of",
    "init_for_training",
    "save_segmenter",
    "load_segmenter",
    "train_segmenter",
    "main",
]

TRAIN_SEED_MASK = 0x7FFFFFFF  # training seeds < 2**31; evaluation seeds >= 2**31 (disjoint by construction)


# ----------------------------------------------------------------------------------------------
# losses


def sigmoid_focal_loss(logits: Tensor, target: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Per-row focal loss (RetinaNet / SAM), averaged over pixels: (R, ...) -> (R,)."""
    logits = logits.float()
    target = target.float()
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(1).mean(1)


def dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """Per-row soft dice loss on sigmoid probabilities: (R, ...) -> (R,). ``eps`` smooths empty masks."""
    prob = torch.sigmoid(logits.float()).flatten(1)
    target = target.float().flatten(1)
    num = 2 * (prob * target).sum(1)
    den = prob.sum(1) + target.sum(1)
    return 1 - (num + eps) / (den + eps)


def mask_iou(pred: Tensor, target: Tensor) -> Tensor:
    """IoU of binary masks per row: (R, ...) -> (R,); two empty masks count as IoU 1."""
    pred = pred.bool().flatten(1)
    target = target.bool().flatten(1)
    inter = (pred & target).sum(1).float()
    union = (pred | target).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


@dataclass
class LossWeights:
    """SAM 2's training weights (``sam2.1_hiera_b+_MOSE_finetune.yaml``: mask 20, dice 1, iou 1, class 1).

    ``multimask`` scales the min-over-tokens-1..3 mask loss (0 disables it).
    """

    focal: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    object: float = 1.0
    multimask: float = 0.5
    # SAM's focal alpha (0.25) down-weights positive pixels; from scratch it keeps a randomly
    # initialised model in the "predict nothing" regime for hundreds of steps (measured), so the
    # default is balanced (-1: no alpha weighting); dice still balances object vs background.
    focal_alpha: float = -1.0
    # weight of the region-semantics term (:func:`semantic_loss`); 0 = SAM's losses only
    semantic: float = 0.0


_PROTOTYPE_SEED = 20250605


def semantic_prototypes(num_classes: int, dim: int, seed: int = _PROTOTYPE_SEED) -> Tensor:
    """(num_classes, dim) fixed orthonormal rows, the same for a given ``(num_classes, dim, seed)``.

    They are the class "weights" of :func:`semantic_loss`: fixed rather than learned, so the loss
    adds no parameters (a checkpoint and its exact resume stay the model's weights alone) and all
    the learning happens in the segmenter.
    """
    return _prototypes(num_classes, dim, seed).clone()


@lru_cache(maxsize=8)
def _prototypes(num_classes: int, dim: int, seed: int) -> Tensor:
    # cached: the loss runs every training step and the prototypes never change
    if num_classes > dim:
        raise ValueError(f"{num_classes} semantic classes need token dim >= {num_classes}, got {dim}")
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, num_classes, generator=g, dtype=torch.float64))
    return q.T.float().contiguous()


def semantic_loss(tokens: Tensor, classes: Tensor, num_classes: Sequence[int], temperature: float = 0.1
                  ) -> tuple[Tensor, dict[str, float]]:
    """Cross-entropy of region tokens against fixed class prototypes, one softmax per attribute.

    ``tokens`` (R, C): the prompted mask token of each region (``mid_mask_tokens[:, 1]``, which the
    perceiver receives as a query). ``classes`` (R, A): class index per attribute (e.g. shape,
    colour); ``num_classes`` (A,): classes per attribute. A pretrained SAM 2's features carry the
    semantics that PAM's perceiver reads out; a tiny SAM 2 trained only to segment learns colour
    (what separates a region from its surround) and little of shape, so the shapes recipe asks the
    token to name the region as well. Metrics: ``sem_acc_<a>`` per attribute.
    """
    total_classes = int(sum(num_classes))
    protos = _prototypes(total_classes, tokens.shape[-1], _PROTOTYPE_SEED).to(tokens.device)
    logits = F.normalize(tokens.float(), dim=-1) @ protos.T / temperature
    loss = logits.new_zeros(())
    metrics: dict[str, float] = {}
    start = 0
    for a, n in enumerate(num_classes):
        part, target = logits[:, start: start + n], classes[:, a].to(logits.device)
        loss = loss + F.cross_entropy(part, target)
        metrics[f"sem_acc_{a}"] = float((part.argmax(1) == target).float().mean())
        start += n
    metrics["loss_semantic"] = float(loss.detach())
    return loss, metrics


def sam_losses(
    multimask_logits: Tensor,
    iou_pred: Tensor,
    object_score_logits: Tensor,
    target_masks: Tensor,
    present: Tensor,
    weights: LossWeights | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """SAM losses for R predictions.

    ``multimask_logits`` (R, K, h, w) ungated logits of the K mask tokens (token 0 = PAM's output); they
    are upsampled bilinearly to the target size (like ``high_res_logits``). ``iou_pred`` (R, K),
    ``object_score_logits`` (R, 1), ``target_masks`` (R, H, W) {0, 1}, ``present`` (R,) bool: object
    visible. Mask / dice / IoU terms are averaged over present rows; the object term over all rows.
    Returns (scalar loss, metrics incl. the hard IoU of token 0 on present rows).
    """
    w = weights or LossWeights()
    r, k = multimask_logits.shape[:2]
    h, wd = target_masks.shape[-2:]
    present = present.bool()
    obj_target = present.float().reshape(r, 1)
    obj_loss = F.binary_cross_entropy_with_logits(object_score_logits.float(), obj_target)
    metrics = {"loss_object": float(obj_loss.detach())}
    total = w.object * obj_loss
    n_pres = int(present.sum())
    if n_pres:
        low = multimask_logits[present].float()  # (n, K, h, w)
        tgt = target_masks[present].float()  # (n, H, W)
        # token 0 (PAM's output) at the target resolution, through the same bilinear upsampling as
        # ``high_res_logits``: boundary errors below one low-res pixel count
        hi0 = low[:, 0]
        if hi0.shape[-2:] != (h, wd):
            hi0 = F.interpolate(low[:, :1], size=(h, wd), mode="bilinear", align_corners=False)[:, 0]
        focal0 = sigmoid_focal_loss(hi0, tgt, alpha=w.focal_alpha)
        dice0 = dice_loss(hi0, tgt)
        mask_loss = (w.focal * focal0 + w.dice * dice0).mean()
        with torch.no_grad():
            iou0 = mask_iou(hi0 > 0, tgt > 0.5)
            # tokens 1..K-1 at the logits' own resolution against the area-averaged (soft) target:
            # 16x cheaper than upsampling every token, and these tokens only feed the perceiver
            tgt_low = tgt if low.shape[-2:] == (h, wd) else F.adaptive_avg_pool2d(tgt[:, None], low.shape[-2:])[:, 0]
            true_iou = [iou0]
            for j in range(1, k):
                true_iou.append(mask_iou(low[:, j] > 0, tgt_low > 0.5))
            true_iou = torch.stack(true_iou, dim=1)  # (n, K)
        iou_loss = F.mse_loss(iou_pred[present].float(), true_iou, reduction="none").mean(1).mean()
        total = total + mask_loss + w.iou * iou_loss
        metrics.update(loss_focal=float(focal0.detach().mean()), loss_dice=float(dice0.detach().mean()),
                       loss_iou=float(iou_loss.detach()), iou=float(iou0.mean()))
        if k > 1 and w.multimask > 0:
            lk = low[:, 1:].flatten(0, 1)
            tk = tgt_low[:, None].expand(-1, k - 1, -1, -1).flatten(0, 1)
            per_token = (w.focal * sigmoid_focal_loss(lk, tk, alpha=w.focal_alpha) + w.dice * dice_loss(lk, tk))
            per_token = per_token.reshape(n_pres, k - 1)
            multi = per_token.min(dim=1).values.mean()
            total = total + w.multimask * multi
            metrics["loss_multimask"] = float(multi.detach())
    with torch.no_grad():
        pred_obj = object_score_logits.reshape(r) > 0
        metrics["object_acc"] = float((pred_obj == present).float().mean())
    metrics["loss"] = float(total.detach())
    return total, metrics


# ----------------------------------------------------------------------------------------------
# prompts and data


@dataclass
class PromptSpec:
    """A sampled prompt in image pixels: SAM points (box corners first, labels 2/3) or a mask."""

    points: np.ndarray | None = None  # (P, 2) float, xy pixels
    labels: np.ndarray | None = None  # (P,) int
    mask: np.ndarray | None = None  # (H, W) bool
    kind: str = "box"

    @property
    def group(self) -> tuple:
        """Prompts with the same group key can share a batch (same point count, or masks)."""
        return ("mask",) if self.mask is not None else ("points", len(self.labels))


def training_seed(*parts: int) -> int:
    """A scene/video seed for training data, a pure function of ``parts``, always < 2**31."""
    ss = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts])
    return int(ss.generate_state(1)[0]) & TRAIN_SEED_MASK


def _rng(*parts: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]))


def _box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _jitter_box(box, rng: np.random.Generator, size: int, noise: float, max_px: float) -> np.ndarray:
    """SAM's box noise: each side moved by N(0, noise * side length), clipped to ``max_px`` pixels."""
    x0, y0, x1, y1 = (float(v) for v in box)
    bw, bh = x1 - x0, y1 - y0
    std = np.array([bw, bh, bw, bh]) * noise
    d = np.clip(rng.normal(0.0, 1.0, 4) * std, -max_px, max_px)
    b = np.array([x0, y0, x1, y1]) + d
    b = np.clip(b, 0, size)
    # keep a valid box of at least 2 px
    if b[2] - b[0] < 2:
        b[0], b[2] = x0, x1
    if b[3] - b[1] < 2:
        b[1], b[3] = y0, y1
    return b


def _pick_pixels(region: np.ndarray, n: int, rng: np.random.Generator) -> list[list[float]]:
    ys, xs = np.nonzero(region)
    if n <= 0 or ys.size == 0:
        return []
    idx = rng.choice(ys.size, size=min(n, ys.size), replace=False)
    return [[float(xs[i]), float(ys[i])] for i in np.sort(idx)]


def _erode(mask: np.ndarray, n: int) -> np.ndarray:
    m = mask
    for _ in range(n):
        e = m.copy()
        e[1:] &= m[:-1]
        e[:-1] &= m[1:]
        e[:, 1:] &= m[:, :-1]
        e[:, :-1] &= m[:, 1:]
        m = e
    return m


def _clicks(mask: np.ndarray, rng: np.random.Generator, n_pos: int, n_neg: int, box=None) -> tuple[list, list]:
    """``n_pos`` clicks inside ``mask`` (away from its border when possible) and ``n_neg`` outside it.

    Negative clicks are taken near the object (inside its box grown by 25 %, outside the mask) when
    there is room: a click far away from the object tells the model nothing. Coordinates are pixel
    indices (the SAM encoder adds the +0.5 pixel-centre shift).
    """
    inner = mask
    for k in (3, 1):
        e = _erode(mask, k)
        if np.count_nonzero(e) >= n_pos:
            inner = e
            break
    pts = _pick_pixels(inner, n_pos, rng)
    labels = [1] * len(pts)
    if n_neg > 0:
        size = mask.shape[0]
        x0, y0, x1, y1 = box if box is not None else _box_of(mask)
        gx, gy = 0.25 * (x1 - x0) + 4, 0.25 * (y1 - y0) + 4
        near = np.zeros_like(mask)
        near[max(0, int(y0 - gy)): min(size, int(y1 + gy)), max(0, int(x0 - gx)): min(size, int(x1 + gx))] = True
        outside = ~mask
        region = near & outside
        if np.count_nonzero(region) < n_neg:
            region = outside
        neg = _pick_pixels(region, n_neg, rng)
        pts += neg
        labels += [0] * len(neg)
    return pts, labels


def sample_prompt(
    mask: np.ndarray,
    rng: np.random.Generator,
    probs: dict[str, float] | None = None,
    box_noise: float = 0.1,
    box_max_px: float = 20.0,
    max_clicks: int = 3,
) -> PromptSpec:
    """A prompt for the object ``mask`` (H, W bool, non-empty), drawn with ``rng``.

    ``probs``: kind -> probability among ``box`` (jittered tight box), ``points`` (1..max_clicks clicks,
    at least one positive, up to 2 negatives), ``box+points`` (box + 1..2 clicks) and ``mask`` (the
    ground-truth mask itself; only meaningful for tracking: on an image the mask *is* the output).
    The clean tight box is used with probability 1/4 so the exact user box is well covered.
    """
    probs = probs or {"box": 0.55, "points": 0.3, "box+points": 0.15}
    kinds = list(probs)
    p = np.array([probs[k] for k in kinds], dtype=np.float64)
    kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
    size = mask.shape[0]
    tight = _box_of(mask)
    if kind == "mask":
        return PromptSpec(mask=mask.copy(), kind=kind)
    pts: list = []
    labels: list = []
    if kind in ("box", "box+points"):
        b = np.array(tight, np.float64) if rng.random() < 0.25 else _jitter_box(tight, rng, size, box_noise, box_max_px)
        pts += [[b[0], b[1]], [b[2], b[3]]]
        labels += [BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]
    if kind in ("points", "box+points"):
        n = int(rng.integers(1, (max_clicks if kind == "points" else 2) + 1))
        n_pos = int(rng.integers(1, n + 1))
        n_neg = min(2, n - n_pos)
        cp, cl = _clicks(mask, rng, n_pos, n_neg, tight)
        pts += cp
        labels += cl
    return PromptSpec(points=np.asarray(pts, np.float64).reshape(-1, 2), labels=np.asarray(labels, np.int64), kind=kind)


def normalize_pixels(images: np.ndarray) -> Tensor:
    """(N, S, S, 3) uint8 at the model size -> (N, 3, S, S) float32, exactly ``preprocess_image``'s numbers.

    ``preprocess_image`` resizes with PIL (an exact copy at the same size), divides by 255 in float64,
    stores float32, then normalises with the ImageNet statistics in float32: the same steps here,
    without a PIL round trip per frame.
    """
    x = torch.from_numpy(np.ascontiguousarray(images) / 255.0).permute(0, 3, 1, 2).to(torch.float32)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return ((x - mean) / std).contiguous()


def _sam_coords(points: np.ndarray, size: int, image_size: int) -> Tensor:
    """Pixel points of a ``size``-pixel image -> SAM input coordinates (float32 ``to_sam_points``)."""
    t = torch.as_tensor(points, dtype=torch.float32).reshape(-1, 2)
    return t / torch.tensor([size, size], dtype=torch.int64) * image_size


def segmenter_of(model):
    """The ``PamSegmenter`` inside a ``PamModel``, a ``PerceiveAnything`` or the segmenter itself."""
    from ..modeling.segmenter import PamSegmenter

    if isinstance(model, PamSegmenter):
        return model
    inner = getattr(model, "model", None)  # PerceiveAnything
    if inner is not None and hasattr(inner, "segmenter"):
        return inner.segmenter
    if hasattr(model, "segmenter"):
        return model.segmenter
    raise TypeError(f"no segmenter in {type(model).__name__}")


def init_for_training(model, seed: int | None = None):
    """Re-initialise a segmenter for training from scratch: PyTorch's default init for every Linear /
    Conv / ConvTranspose (kaiming-uniform) and N(0, 1) for every Embedding, as the official SAM code
    does (it never calls a custom init for its heads).

    Why: transformers initialises every weight with N(0, 0.02). In a 16-64-wide SAM that makes the
    mask logits a product of two near-zero factors (hypernetwork MLP output . upscaled features) and
    training from scratch sits in the "predict nothing" saddle for hundreds of steps (measured:
    IoU 0.02 after 280 steps vs 0.9 after 50 steps on an overfit batch with this init). LayerNorms,
    the learned no-memory / no-object embeddings and the buffers keep their values.
    """
    seg = segmenter_of(model)
    if seed is not None:
        torch.manual_seed(seed)
    for m in seg.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Embedding)):
            m.reset_parameters()
    return seg


# ``train_only`` values of the segmentation tasks: a part of SAM 2 trained alone (None: all of it)
SEGMENTER_PARTS = ("object_score_head",)


def _set_segmenter_trainable(model, only: str | None = None) -> list[torch.nn.Parameter]:
    """Freeze everything, unfreeze the segmenter (or only its part ``only``, one of
    ``SEGMENTER_PARTS``); return the unfrozen parameters (the protocol's contract)."""
    seg = segmenter_of(model)
    if seg is not model and isinstance(model, torch.nn.Module):
        model.requires_grad_(False)
    if only is None:
        seg.set_trainable(True)
        return [p for p in seg.parameters() if p.requires_grad]
    seg.set_trainable(False)
    # the MLP that reads the object-score token, not the token itself: the token takes part in the
    # decoder's attention, so training it would move every mask and the perceiver's inputs
    part = {"object_score_head": seg.sam.mask_decoder.pred_obj_score_head}[only]
    part.requires_grad_(True)
    return list(part.parameters())


def _check_part(train_only: str | None) -> str | None:
    if train_only is not None and train_only not in SEGMENTER_PARTS:
        raise ValueError(f"train_only must be None or one of {SEGMENTER_PARTS}, got {train_only!r}")
    return train_only


# ----------------------------------------------------------------------------------------------
# image task


@dataclass
class ImageBatch:
    pixels: Tensor  # (N, 3, S, S)
    image_index: list[int]  # per region: which image
    prompts: list[PromptSpec]  # per region
    masks: Tensor  # (R, S, S) float targets
    size: int
    classes: Tensor | None = None  # (R, A) class index per region attribute (``region_classes``)

    def __len__(self) -> int:
        return len(self.prompts)


def region_classes(obj) -> tuple[int, ...]:
    """Class index per ``synthetic.REGION_ATTRIBUTES`` (shape, colour) of a shapes-world object."""
    from .synthetic import REGION_ATTRIBUTES

    return tuple(names.index(getattr(obj, key)) for key, names in REGION_ATTRIBUTES.items())


def semantic_class_counts() -> tuple[int, ...]:
    from .synthetic import REGION_ATTRIBUTES

    return tuple(len(names) for names in REGION_ATTRIBUTES.values())


class ImageSegmentationTask:
    """Promptable image segmentation on still shapes-world scenes (``PerceiveAnything.perceive``'s path).

    A batch is ``batch_size`` scenes with up to ``regions_per_image`` prompted objects each (the image
    encoder runs once per scene, the SAM heads once per prompt, like SAM's training). Regions whose
    prompts have the same number of points share one heads call (no padding points: a padding point
    is a real token and changes SAM's output; the predictor never pads either).
    """

    name = "sam_image"

    def __init__(
        self,
        size: int = 256,
        regions_per_image: int = 3,
        num_objects: tuple[int, int] = (1, 6),
        prompt_probs: dict[str, float] | None = None,
        weights: LossWeights | None = None,
        train_only: str | None = None,
    ):
        self.size = int(size)
        self.train_only = _check_part(train_only)
        self.regions_per_image = int(regions_per_image)
        self.num_objects = tuple(num_objects)
        self.prompt_probs = prompt_probs or {"box": 0.55, "points": 0.3, "box+points": 0.15}
        self.weights = weights or LossWeights()

    def trainable_parameters(self, model) -> list[torch.nn.Parameter]:
        return _set_segmenter_trainable(model, self.train_only)

    def make_batch(self, step: int, rank: int, world_size: int, batch_size: int, seed: int) -> ImageBatch:
        from .synthetic import generate_scene

        images, index, prompts, masks, classes = [], [], [], [], []
        for i in range(batch_size):
            scene = generate_scene(training_seed(seed, 1, step, rank, i), self.size, self.num_objects)
            rng = _rng(seed, 2, step, rank, i)
            objs = list(scene.objects)
            chosen = rng.permutation(len(objs))[: self.regions_per_image]
            images.append(scene.image)
            for j in np.sort(chosen):
                m = objs[int(j)].mask
                index.append(i)
                prompts.append(sample_prompt(m, rng, self.prompt_probs))
                masks.append(m)
                classes.append(region_classes(objs[int(j)]))
        return ImageBatch(
            pixels=normalize_pixels(np.stack(images)),
            image_index=index,
            prompts=prompts,
            masks=torch.from_numpy(np.stack(masks)).float(),
            size=self.size,
            classes=torch.tensor(classes, dtype=torch.long),
        )

    def forward(self, model, batch: ImageBatch):
        """Segmenter outputs for every region of ``batch`` (order of ``batch.prompts``)."""
        seg = segmenter_of(model)
        s = seg.config.image_size
        feats = seg.encode_image(batch.pixels.to(seg.device, seg.dtype))
        groups: dict[tuple, list[int]] = {}
        for r, pr in enumerate(batch.prompts):
            groups.setdefault(pr.group, []).append(r)
        outs: list[Any] = [None] * len(batch)
        from ..modeling.segmenter import ImageFeatures

        for key, rows in groups.items():
            idx = torch.tensor([batch.image_index[r] for r in rows])
            f = ImageFeatures(*(x[idx] for x in (feats.image_embed, feats.image_pos, feats.feat_s0, feats.feat_s1)))
            if key[0] == "mask":
                m = torch.stack([torch.from_numpy(batch.prompts[r].mask) for r in rows])[:, None].float()
                out = seg.segment(f, None, None, mask_inputs=m.to(seg.device))
            else:
                coords = torch.stack([_sam_coords(batch.prompts[r].points, batch.size, s) for r in rows])
                labels = torch.stack([torch.as_tensor(batch.prompts[r].labels, dtype=torch.int32) for r in rows])
                out = seg.segment(f, coords.to(seg.device), labels.to(seg.device))
            for j, r in enumerate(rows):
                outs[r] = (out, j)
        return outs

    def loss(self, model, batch: ImageBatch) -> tuple[Tensor, dict[str, float]]:
        outs = self.forward(model, batch)
        # regroup: mask-prompted rows have no trainable mask output (the output is the prompt)
        rows = [r for r, (o, _) in enumerate(outs) if o.multimask_logits is not None]
        if not rows:
            raise ValueError("no point/box prompt in this batch")
        logits = torch.cat([outs[r][0].multimask_logits[outs[r][1]: outs[r][1] + 1] for r in rows])
        iou = torch.cat([outs[r][0].iou_pred[outs[r][1]: outs[r][1] + 1] for r in rows])
        obj = torch.cat([outs[r][0].object_score_logits[outs[r][1]: outs[r][1] + 1] for r in rows])
        target = batch.masks[rows].to(logits.device)
        present = target.flatten(1).any(1)
        loss, metrics = sam_losses(logits, iou, obj, target, present, self.weights)
        if self.weights.semantic > 0:
            if batch.classes is None:
                raise ValueError("LossWeights.semantic > 0 needs ImageBatch.classes")
            tokens = torch.cat([outs[r][0].mid_mask_tokens[outs[r][1], 1:2] for r in rows])
            sem, sem_metrics = semantic_loss(tokens, batch.classes[rows], semantic_class_counts())
            loss = loss + self.weights.semantic * sem
            metrics.update(sem_metrics)
            metrics["loss"] = float(loss.detach())
        return loss, metrics


# ----------------------------------------------------------------------------------------------
# video task


@dataclass
class VideoBatch:
    frames: Tensor  # (B, T, 3, S, S)
    prompt: dict[str, Tensor]  # point_coords (B, P, 2) + point_labels (B, P), or mask (B, 1, S, S)
    masks: Tensor  # (B, T, S, S)
    kind: str

    @property
    def present(self) -> Tensor:
        return self.masks.flatten(2).any(2)  # (B, T)


class VideoTrackingTask:
    """Semi-supervised video object segmentation (``perceive_video``'s path): prompt one object on
    frame 0 of each clip, track it through ``num_frames`` frames, loss on every frame (object-absent
    frames included: the object score must go negative). Gradients flow through the memory
    attention, the memory encoder (tracked frames' memories come from the predicted masks) and the
    object pointers, as in SAM 2's training.

    All clips of a batch share one prompt kind and point count (they are tracked in lockstep);
    the kind is drawn per step. ``num_frames`` may be an int or an inclusive (lo, hi) range, drawn
    per step. Clips are generated with ``clip_frames`` frames and a random window of ``T`` consecutive
    frames with a random temporal stride (1-2) is used, so motion speed varies.

    ``exit_prob``: the fraction of clips whose target leaves the view inside the window (the video
    is generated with exit motions and the window is placed across the exit). Random windows on
    ordinary clips almost never show the object-score head an absent target (exits are rare and
    happen late in a clip: ~1 % of frames). Trained with the whole segmenter (0.25 for the 1000
    image+video steps) the head still said "present" after every exit and tracking mIoU fell from
    0.84 to 0.48; the shapes recipe uses it with ``train_only="object_score_head"`` instead.

    ``train_only``: train one part of SAM 2 alone (``SEGMENTER_PARTS``; None: all of it). With
    ``"object_score_head"`` (the MLP reading the object-score token) the decoder's masks and the
    perceiver's inputs are unchanged for a given input; only the present/absent decision moves (and
    with it, as in SAM 2, the emptied mask and the "no object" memory of a frame called absent).
    """

    name = "sam_video"

    def __init__(
        self,
        size: int = 256,
        num_frames: int | tuple[int, int] = (4, 8),
        num_objects: tuple[int, int] = (2, 4),
        prompt_probs: dict[str, float] | None = None,
        weights: LossWeights | None = None,
        clip_frames: int = 16,
        max_stride: int = 2,
        exit_prob: float = 0.0,
        train_only: str | None = None,
    ):
        self.size = int(size)
        self.train_only = _check_part(train_only)
        self.num_frames = num_frames
        self.num_objects = tuple(num_objects)
        self.prompt_probs = prompt_probs or {"box": 0.5, "points": 0.2, "box+points": 0.15, "mask": 0.15}
        self.weights = weights or LossWeights()
        self.clip_frames = int(clip_frames)
        self.max_stride = int(max_stride)
        if not 0.0 <= exit_prob <= 1.0:
            raise ValueError(f"exit_prob must be in [0, 1], got {exit_prob}")
        self.exit_prob = float(exit_prob)

    def trainable_parameters(self, model) -> list[torch.nn.Parameter]:
        return _set_segmenter_trainable(model, self.train_only)

    def make_batch(self, step: int, rank: int, world_size: int, batch_size: int, seed: int) -> VideoBatch:
        from .synthetic import generate_video

        srng = _rng(seed, 3, step, rank)
        if isinstance(self.num_frames, int):
            t = self.num_frames
        else:
            t = int(srng.integers(self.num_frames[0], self.num_frames[1] + 1))
        kinds = list(self.prompt_probs)
        p = np.array([self.prompt_probs[k] for k in kinds], dtype=np.float64)
        kind = kinds[int(srng.choice(len(kinds), p=p / p.sum()))]
        # one point count for the whole batch (lockstep tracking): box 2, points 1..3, box+points 3..4
        n_clicks = int(srng.integers(1, 4)) if kind == "points" else int(srng.integers(1, 3))
        frames, masks, prompts = [], [], []
        for i in range(batch_size):
            rng = _rng(seed, 4, step, rank, i)
            stride = int(rng.integers(1, self.max_stride + 1))
            span = (t - 1) * stride + 1
            n_gen = max(self.clip_frames, span)
            vseed = training_seed(seed, 5, step, rank, i)
            # no draw at exit_prob 0: the clips are then exactly those of earlier versions
            exit_clip = self.exit_prob > 0 and rng.random() < self.exit_prob
            picked = self._exit_window(vseed, n_gen, span, stride, rng) if exit_clip else None
            if picked is not None:
                video, obj, sel = picked
            else:
                video = generate_video(vseed, n_gen, self.size, self.num_objects)
                start = int(rng.integers(0, n_gen - span + 1))
                sel = np.arange(start, start + span, stride)
                # the prompted object must be visible on the window's first frame
                visible = [o for o in video.objects if o.masks[sel[0]].any()]
                if not visible:  # cannot happen at start 0 (every object is visible on frame 0)
                    sel = np.arange(0, span, stride)
                    visible = [o for o in video.objects if o.masks[0].any()]
                obj = visible[int(rng.integers(len(visible)))]
            m0 = obj.masks[sel[0]]
            frames.append(video.frames[sel])
            masks.append(obj.masks[sel])
            if kind == "mask":
                prompts.append(PromptSpec(mask=m0.copy(), kind=kind))
                continue
            box = np.array(_box_of(m0), np.float64)
            if kind in ("box", "box+points") and rng.random() >= 0.25:
                box = _jitter_box(box, rng, self.size, 0.1, 20.0)
            pts: list = []
            labels: list = []
            if kind in ("box", "box+points"):
                pts += [[box[0], box[1]], [box[2], box[3]]]
                labels += [BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]
            if kind in ("points", "box+points"):
                n_pos = int(rng.integers(1, n_clicks + 1))
                cp, cl = _clicks(m0, rng, n_pos, n_clicks - n_pos, _box_of(m0))
                # a tiny object may not offer enough distinct pixels: pad with repeated positives
                while len(cp) < n_clicks:
                    cp.append(cp[0])
                    cl.append(1)
                pts += cp
                labels += cl
            prompts.append(PromptSpec(points=np.asarray(pts, np.float64), labels=np.asarray(labels), kind=kind))
        b = len(frames)
        pix = normalize_pixels(np.concatenate(frames)).reshape(b, t, 3, self.size, self.size)
        if kind == "mask":
            prompt = {"mask": torch.stack([torch.from_numpy(p.mask) for p in prompts])[:, None].float()}
        else:
            prompt = {
                "point_coords": torch.stack([_sam_coords(p.points, self.size, self.size) for p in prompts]),
                "point_labels": torch.stack([torch.as_tensor(p.labels, dtype=torch.int32) for p in prompts]),
            }
        return VideoBatch(frames=pix, prompt=prompt, masks=torch.from_numpy(np.stack(masks)).float(), kind=kind)

    def _exit_window(self, vseed: int, n_gen: int, span: int, stride: int, rng: np.random.Generator):
        """(video, object, frame indices) of a window in which the object is visible on the first
        frame and gone on at least one later frame, or None when the generated video has no exit."""
        from .synthetic import generate_video

        video = generate_video(vseed, n_gen, self.size, self.num_objects, motions=("exit",))
        leaving = [(o, t) for o in video.objects if (t := o.first_frame_gone())]  # None, or 0: not on frame 0
        if not leaving:
            return None
        obj, t_gone = leaving[int(rng.integers(len(leaving)))]
        # the window starts while the object is visible and reaches at least one frame after it left
        lo = max(0, t_gone - span + 1)
        hi = min(t_gone - 1, n_gen - span)
        if hi < lo:
            return None
        start = int(rng.integers(lo, hi + 1))
        if not obj.masks[start].any():  # hidden behind another object at the window start
            return None
        return video, obj, np.arange(start, start + span, stride)

    def forward(self, model, batch: VideoBatch):
        seg = segmenter_of(model)
        s = seg.config.image_size
        prompt = dict(batch.prompt)
        if "point_coords" in prompt and s != self.size:
            prompt["point_coords"] = prompt["point_coords"] / self.size * s
        return seg.track_clip_for_training(batch.frames.to(seg.device, seg.dtype), **prompt)

    def loss(self, model, batch: VideoBatch) -> tuple[Tensor, dict[str, float]]:
        outs = self.forward(model, batch)
        b, t = batch.masks.shape[:2]
        present = batch.present
        rows, logits, iou, obj, tgt, pres = [], [], [], [], [], []
        for i, o in enumerate(outs):
            if o.multimask_logits is None:  # mask-prompted frame 0: the output is the prompt itself
                continue
            logits.append(o.multimask_logits)
            iou.append(o.iou_pred)
            obj.append(o.object_score_logits)
            tgt.append(batch.masks[:, i])
            pres.append(present[:, i])
        loss, metrics = sam_losses(torch.cat(logits), torch.cat(iou), torch.cat(obj),
                                   torch.cat(tgt).to(logits[0].device), torch.cat(pres), self.weights)
        metrics["frames"] = float(t)
        metrics["absent_frac"] = float((~present).float().mean())
        return loss, metrics


# ----------------------------------------------------------------------------------------------
# weights I/O


def save_segmenter(model, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write the segmenter's ``state_dict()`` (``sam.*`` names) as safetensors (config in the metadata)."""
    from safetensors.torch import save_file

    seg = segmenter_of(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in seg.state_dict().items()}
    meta = {"segmenter_config": json.dumps(seg.config.to_dict())}
    meta.update(metadata or {})
    save_file(tensors, str(path), metadata=meta)
    return path


def load_segmenter(model, path: str | Path, strict: bool = True):
    """Load weights written by :func:`save_segmenter` into ``model``'s segmenter (returns the segmenter)."""
    from safetensors.torch import load_file

    seg = segmenter_of(model)
    state = load_file(str(path), device=str(seg.device))
    seg.load_state_dict(state, strict=strict)
    return seg


# ----------------------------------------------------------------------------------------------
# quick stand-alone training loop (the shared trainer in ``training/trainer.py`` runs the same tasks)


def _lr_at(step: int, total: int, base: float, warmup: int, final_frac: float = 0.02) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def train_segmenter(
    segmenter,
    steps: int,
    out: str | Path | None = None,
    *,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    warmup: int = 100,
    image_batch: int = 8,
    video_batch: int = 2,
    video_every: int = 3,
    video_start: float = 0.3,
    num_frames: int | tuple[int, int] = (4, 8),
    seed: int = 0,
    clip_grad: float = 1.0,
    log_every: int = 20,
    eval_every: int = 0,
    eval_n: int = 32,
    time_budget_s: float | None = None,
    threads: int | None = None,
    image_task: ImageSegmentationTask | None = None,
    video_task: VideoTrackingTask | None = None,
    log=print,
) -> dict[str, Any]:
    """Train ``segmenter`` (a ``PamSegmenter``) on the shapes world; returns a summary.

    Image steps only until ``video_start`` of the schedule (the memory modules learn much faster once
    the decoder segments), then every ``video_every``-th step is a video step. ``time_budget_s``
    stops early (the cosine schedule is then cut, not rescaled: set ``steps`` to what fits).
    """
    from .eval_segmentation import evaluate_image_iou, evaluate_tracking_miou

    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    size = segmenter.config.image_size
    img_task = image_task or ImageSegmentationTask(size=size)
    vid_task = video_task or VideoTrackingTask(size=size, num_frames=num_frames)
    params = img_task.trainable_parameters(segmenter)
    vid_task.trainable_parameters(segmenter)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.999))
    out_dir = Path(out) if out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    hist: list[dict[str, float]] = []
    t0 = time.perf_counter()
    ema: dict[str, dict[str, float]] = {}
    step = 0
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, lr, warmup)
        is_video = video_every > 0 and step >= video_start * steps and step % video_every == 0
        task = vid_task if is_video else img_task
        batch = task.make_batch(step, 0, 1, video_batch if is_video else image_batch, seed)
        loss, metrics = task.loss(segmenter, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad:
            torch.nn.utils.clip_grad_norm_(params, clip_grad)
        opt.step()
        e = ema.setdefault(task.name, {})
        for k, v in metrics.items():
            e[k] = v if k not in e else 0.9 * e[k] + 0.1 * v
        elapsed = time.perf_counter() - t0
        if log_every and (step % log_every == 0 or step == steps - 1):
            parts = " ".join(f"{n}[" + " ".join(f"{k}={v:.3f}" for k, v in sorted(d.items())
                                                if k in ("loss", "iou", "object_acc")) + "]" for n, d in ema.items())
            log(f"step {step} t={elapsed:.0f}s lr={opt.param_groups[0]['lr']:.2e} {parts}")
            hist.append({"step": step, "t": elapsed, **{f"{n}.{k}": v for n, d in ema.items() for k, v in d.items()}})
        if eval_every and step and step % eval_every == 0:
            segmenter.set_trainable(False)
            ev = evaluate_image_iou(segmenter, eval_n, seed=1)
            tv = evaluate_tracking_miou(segmenter, max(4, eval_n // 4), num_frames=8, seed=1)
            log(f"  eval step {step}: image box IoU {ev['box_iou']:.3f} point IoU {ev['point_iou']:.3f} "
                f"tracking mIoU {tv['miou']:.3f}")
            segmenter.set_trainable(True)
        if time_budget_s is not None and elapsed > time_budget_s:
            log(f"time budget reached at step {step}")
            break
    train_s = time.perf_counter() - t0
    segmenter.set_trainable(False)
    summary: dict[str, Any] = {"steps_done": step + 1, "train_seconds": train_s, "history": hist}
    if out_dir:
        save_segmenter(segmenter, out_dir / "segmenter.safetensors",
                       {"steps": str(step + 1), "train_seconds": f"{train_s:.0f}"})
        (out_dir / "train_log.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    from ..config import SegmenterConfig, pam_preset
    from ..modeling.segmenter import PamSegmenter
    from .eval_segmentation import evaluate_image_iou, evaluate_tracking_miou

    ap = argparse.ArgumentParser(prog="python -m perceive_anything.training.segmentation",
                                 description="Train the tiny-shapes SAM 2 from scratch on the synthetic shapes world.")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="tiny-shapes")
    ap.add_argument("--config-json", help="a SegmenterConfig JSON overriding the preset's segmenter")
    ap.add_argument("--init", help="start from these segmenter weights (safetensors)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--image-batch", type=int, default=8)
    ap.add_argument("--video-batch", type=int, default=2)
    ap.add_argument("--video-every", type=int, default=3)
    ap.add_argument("--video-start", type=float, default=0.3)
    ap.add_argument("--frames", default="4,8", help="frames per training clip: N or LO,HI")
    ap.add_argument("--image-objects", default="1,6", help="objects per training scene: LO,HI")
    ap.add_argument("--regions", type=int, default=3, help="prompted objects per training scene")
    ap.add_argument("--image-prompts", default="box=0.55,points=0.3,box+points=0.15",
                    help="prompt-kind probabilities of the image task")
    ap.add_argument("--video-prompts", default="box=0.5,points=0.2,box+points=0.15,mask=0.15",
                    help="prompt-kind probabilities of the video task")
    ap.add_argument("--focal-weight", type=float, default=LossWeights.focal)
    ap.add_argument("--dice-weight", type=float, default=LossWeights.dice)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init-seed", type=int, default=0)
    ap.add_argument("--time-budget", type=float, default=None, help="seconds")
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--eval-images", type=int, default=200)
    ap.add_argument("--eval-videos", type=int, default=40)
    ap.add_argument("--eval-frames", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    if args.config_json:
        cfg = SegmenterConfig.from_dict(json.loads(Path(args.config_json).read_text()))
    else:
        cfg = pam_preset(args.preset).segmenter
    torch.manual_seed(args.init_seed)
    seg = PamSegmenter(cfg)
    if args.init:
        load_segmenter(seg, args.init)
    else:
        init_for_training(seg, args.init_seed)
    n_params = sum(p.numel() for p in seg.parameters())
    print(f"segmenter: {n_params / 1e6:.2f} M parameters")
    frames = tuple(int(x) for x in args.frames.split(","))
    frames = frames[0] if len(frames) == 1 else frames

    def probs(text: str) -> dict[str, float]:
        return {k: float(v) for k, v in (kv.split("=") for kv in text.split(","))}

    weights = LossWeights(focal=args.focal_weight, dice=args.dice_weight)
    image_task = ImageSegmentationTask(size=cfg.image_size, regions_per_image=args.regions,
                                       num_objects=tuple(int(x) for x in args.image_objects.split(",")),
                                       prompt_probs=probs(args.image_prompts), weights=weights)
    video_task = VideoTrackingTask(size=cfg.image_size, num_frames=frames, prompt_probs=probs(args.video_prompts),
                                   weights=weights)
    summary = train_segmenter(
        seg, args.steps, args.out, lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup,
        image_batch=args.image_batch, video_batch=args.video_batch, video_every=args.video_every,
        video_start=args.video_start, num_frames=frames, seed=args.seed,
        eval_every=args.eval_every, time_budget_s=args.time_budget, threads=args.threads,
        image_task=image_task, video_task=video_task,
    )
    t0 = time.perf_counter()
    ev = evaluate_image_iou(seg, args.eval_images, seed=0)
    tv = evaluate_tracking_miou(seg, args.eval_videos, num_frames=args.eval_frames, seed=0)
    result = {"train_seconds": summary["train_seconds"], "steps": summary["steps_done"], "image": ev, "tracking": tv,
              "eval_seconds": time.perf_counter() - t0, "params": n_params, "args": vars(args)}
    print(json.dumps({k: v for k, v in result.items() if k != "args"}, indent=1))
    Path(args.out, "eval.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
