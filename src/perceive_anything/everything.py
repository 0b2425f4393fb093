"""Describe everything: automatic mask proposals over a point grid, then PAM semantics per mask.

The field's recipe for dense annotation (SAM's automatic mask generator, used to build SA-1B) is
a grid of single-click prompts on one cached image encoding, keeping the masks the model itself is
confident in and stable about, and removing duplicates with box NMS. PAM adds a description to
every kept mask: the point-prompted segmenter run already produced the mid features that the
Semantic Perceiver reads, so the semantics cost only the LLM calls (batched over regions).

Per crop (the whole image, plus ``crop_layers`` layers of overlapping tiles for small objects):

1. ``points_per_side`` x ``points_per_side`` clicks at the centres of a regular grid, in batches of
   ``points_per_batch`` through the mask decoder on the crop's single encoding;
2. drop candidates SAM 2 calls absent (object score <= 0), with predicted IoU below
   ``pred_iou_thresh``, or with stability score below ``stability_score_thresh``; the stability
   score is SAM's: the IoU between the mask thresholded at ``+offset`` and at ``-offset`` on the
   logits (at the model's input resolution, where the logits are upsampled once);
3. on tiles, drop masks that touch a tile edge inside the image (the object continues in the next
   tile, whose own or the whole-image mask covers it);

then over all crops: box NMS at ``box_nms_thresh`` (a kept score is the predicted IoU; among
crops, a smaller tile wins ties as in SAM), optionally ``contained_thresh`` (parts inside a kept
mask), ``min_area`` and ``max_regions``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from .processing import text as text_proc
from .processing.image import load_image
from .processing.prompts import to_sam_points
from .results import ImageResult, RegionResult, Timings

if TYPE_CHECKING:  # pragma: no cover
    from .predictor import PerceiveAnything

__all__ = ["EverythingConfig", "describe_everything", "describe_everything_video", "propose_masks", "box_nms", "stability_score", "point_grid"]


@dataclass(frozen=True)
class EverythingConfig:
    """Settings of :func:`describe_everything` (SAM's automatic mask generator's names).

    Defaults are tuned on the synthetic shapes world with the embedded tiny model (input 256 px),
    see the README ("Describe everything"); SAM's own defaults for a 1024-px model are
    ``points_per_side=32, pred_iou_thresh=0.88, stability_score_thresh=0.95``.
    """

    # 16 x 16 clicks on a 256-px model: one click per stride-16 embedding cell. 32 x 32 (SAM's
    # default for 1024 px) finds no more shapes-world objects here and keeps more part masks.
    points_per_side: int = 16
    points_per_batch: int = 64
    # The tiny model's IoU head barely separates good from bad masks (kept and rejected candidates
    # have the same median, 0.84); stability is what separates them (0.78 vs 0.60 median).
    pred_iou_thresh: float = 0.5
    stability_score_thresh: float = 0.65
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    # Not in SAM: drop a mask when at least this fraction of it lies inside an already kept mask
    # (kept in predicted-IoU order). Box NMS lets a part of an object through (its box differs); on
    # the shapes world 0.8 cuts kept masks per image from 8.9 to 5.2 for 1 point of recall (README).
    contained_thresh: float | None = None
    min_area: int = 0
    max_regions: int | None = None
    crop_layers: int = 0
    crop_overlap_ratio: float = 512 / 1500
    crop_points_downscale: int = 1

    def __post_init__(self):
        if self.points_per_side < 1:
            raise ValueError(f"points_per_side must be >= 1, got {self.points_per_side}")
        if self.points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {self.points_per_batch}")
        for name in ("box_nms_thresh", "crop_overlap_ratio"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.contained_thresh is not None and not 0.0 < self.contained_thresh <= 1.0:
            raise ValueError(f"contained_thresh must be in (0, 1] (or None), got {self.contained_thresh}")
        if self.stability_score_offset <= 0:
            raise ValueError(f"stability_score_offset must be > 0, got {self.stability_score_offset}")
        if self.min_area < 0:
            raise ValueError(f"min_area must be >= 0 pixels, got {self.min_area}")
        if self.max_regions is not None and self.max_regions < 1:
            raise ValueError(f"max_regions must be >= 1 (or None for no limit), got {self.max_regions}")
        if self.crop_layers < 0:
            raise ValueError(f"crop_layers must be >= 0, got {self.crop_layers}")
        if self.crop_points_downscale < 1:
            raise ValueError(f"crop_points_downscale must be >= 1, got {self.crop_points_downscale}")


# ---------------------------------------------------------------------------------------------- pieces

def point_grid(n: int) -> np.ndarray:
    """(n*n, 2) click positions in [0, 1]: the centres of an n x n grid of cells."""
    c = (np.arange(n, dtype=np.float64) + 0.5) / n
    xs, ys = np.meshgrid(c, c)
    return np.stack([xs.reshape(-1), ys.reshape(-1)], axis=1)


def stability_score(logits: torch.Tensor, offset: float, threshold: float = 0.0) -> torch.Tensor:
    """SAM's stability: |logits > t + offset| / |logits > t - offset| per mask (1 for an empty union).

    ``logits`` (N, H, W). The first set is contained in the second, so this is their IoU.
    """
    flat = logits.flatten(1)
    inter = (flat > threshold + offset).sum(-1, dtype=torch.int64).float()
    union = (flat > threshold - offset).sum(-1, dtype=torch.int64).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes a (N, 4) and b (M, 4) -> (N, M)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thresh: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, best score first.

    A box is dropped when its IoU with an already kept, higher-scoring box exceeds ``iou_thresh``
    (torchvision's ``nms`` rule; ties in score keep the earlier box).
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.argsort(scores, descending=True, stable=True)
    ious = box_iou(boxes[order].double(), boxes[order].double())
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(int(order[i]))
        suppressed |= ious[i] > iou_thresh
    return torch.tensor(keep, dtype=torch.long)


def crop_boxes(width: int, height: int, layers: int, overlap_ratio: float) -> list[tuple[int, list[int]]]:
    """(layer, [x1, y1, x2, y2]) of the whole image (layer 0) and of 2^k x 2^k overlapping tiles per layer k."""
    out = [(0, [0, 0, width, height])]
    short = min(width, height)
    for k in range(1, layers + 1):
        n = 2 ** k
        overlap = int(overlap_ratio * short * (2 / n))
        cw = int(np.ceil((overlap * (n - 1) + width) / n))
        ch = int(np.ceil((overlap * (n - 1) + height) / n))
        for j in range(n):
            for i in range(n):
                x1, y1 = (cw - overlap) * i, (ch - overlap) * j
                out.append((k, [x1, y1, min(x1 + cw, width), min(y1 + ch, height)]))
    return out


# ---------------------------------------------------------------------------------------------- proposals

@dataclass
class Proposal:
    """A kept mask candidate before semantics: low-res logits of its crop, and where it came from."""

    point: tuple[float, float]  # the click, image pixels
    crop: list[int]  # xyxy of the crop the click was made on
    layer: int
    low_res_logits: torch.Tensor  # (1, 1, L, L), model dtype
    box: list[float]  # xyxy in image pixels (from the input-resolution mask)
    pred_iou: float
    stability: float
    object_score: float
    mid_image_embed: torch.Tensor  # (1, C, F, F)
    mid_mask_tokens: torch.Tensor  # (1, 2, C)

    def mask(self, width: int, height: int, seg_model) -> np.ndarray:
        """Boolean (H, W) mask in image pixels (the crop's mask pasted into an empty image)."""
        x1, y1, x2, y2 = self.crop
        logits = seg_model.postprocess_masks(self.low_res_logits, (y2 - y1, x2 - x1))[0, 0]
        out = np.zeros((height, width), dtype=bool)
        out[y1:y2, x1:x2] = (logits > 0).cpu().numpy()
        return out


def _boxes_of(masks: torch.Tensor) -> torch.Tensor:
    """xyxy boxes (x2/y2 exclusive) of (N, H, W) boolean masks in their own pixels; empty -> zeros."""
    n, h, w = masks.shape
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y1 = torch.where(rows, ar_h, h).min(dim=1).values
    y2 = torch.where(rows, ar_h + 1, 0).max(dim=1).values
    x1 = torch.where(cols, ar_w, w).min(dim=1).values
    x2 = torch.where(cols, ar_w + 1, 0).max(dim=1).values
    empty = ~rows.any(dim=1)
    box = torch.stack([x1, y1, x2, y2], dim=1).float()
    box[empty] = 0
    return box


@torch.inference_mode()
def _propose_on_crop(pam: PerceiveAnything, features, crop: list[int], layer: int, cfg: EverythingConfig,
                     image_wh: tuple[int, int]) -> list[Proposal]:
    seg = pam.model.segmenter
    size = pam.config.segmenter.image_size
    x1, y1, x2, y2 = crop
    cw, ch = x2 - x1, y2 - y1
    n_side = max(1, cfg.points_per_side // (cfg.crop_points_downscale ** layer))
    grid = point_grid(n_side) * np.array([cw, ch], dtype=np.float64)
    sx, sy = cw / size, ch / size
    edge_tol = 2.0  # pixels at the model's input size: a mask this close to an inner tile edge is cut by it
    inner_edges = (x1 > 0, y1 > 0, x2 < image_wh[0], y2 < image_wh[1])
    kept: list[Proposal] = []
    for start in range(0, len(grid), cfg.points_per_batch):
        pts = grid[start : start + cfg.points_per_batch]
        coords, labels = to_sam_points(pts, np.ones(len(pts), dtype=np.int64), (cw, ch), size, pam.dtype)
        out = seg.segment(features, coords[:, None, :].to(pam.device), labels[:, None].to(pam.device))
        high = out.high_res_logits[:, 0]  # (B, S, S) float32
        present = out.object_score_logits[:, 0].float() > 0
        pred_iou = out.iou_pred[:, 0].float()
        stab = stability_score(high, cfg.stability_score_offset)
        ok = present & (pred_iou >= cfg.pred_iou_thresh) & (stab >= cfg.stability_score_thresh)
        if not bool(ok.any()):
            continue
        idx = ok.nonzero().flatten()
        boxes = _boxes_of(high[idx] > 0)
        for j, i in enumerate(idx.tolist()):
            bx = boxes[j]
            if float((bx[2] - bx[0]) * (bx[3] - bx[1])) <= 0:
                continue
            if layer > 0 and (
                (inner_edges[0] and bx[0] <= edge_tol) or (inner_edges[1] and bx[1] <= edge_tol)
                or (inner_edges[2] and bx[2] >= size - edge_tol) or (inner_edges[3] and bx[3] >= size - edge_tol)
            ):
                continue
            box = [x1 + float(bx[0]) * sx, y1 + float(bx[1]) * sy, x1 + float(bx[2]) * sx, y1 + float(bx[3]) * sy]
            kept.append(Proposal(
                point=(x1 + float(pts[i, 0]), y1 + float(pts[i, 1])), crop=list(crop), layer=layer,
                low_res_logits=out.low_res_logits[i : i + 1].clone(), box=box, pred_iou=float(pred_iou[i]),
                stability=float(stab[i]), object_score=float(out.object_score_logits[i, 0]),
                mid_image_embed=out.mid_image_embed[i : i + 1].clone(),
                mid_mask_tokens=out.mid_mask_tokens[i : i + 1].clone(),
            ))
    return kept


def propose_masks(pam: PerceiveAnything, image: Any, config: EverythingConfig | None = None):
    """Mask proposals of ``image`` (kept, de-duplicated, best first) and their full-size boolean masks.

    Returns ``(encoded_image, proposals, masks)``; masks are (H, W) booleans at the image size.
    """
    from .predictor import EncodedImage

    cfg = config or EverythingConfig()
    enc = image if isinstance(image, EncodedImage) else pam.encode(image)
    w, h = enc.width, enc.height
    props: list[Proposal] = []
    for layer, crop in crop_boxes(w, h, cfg.crop_layers, cfg.crop_overlap_ratio):
        if layer == 0:
            feats = enc.features
        else:
            tile = enc.image.crop(tuple(crop))
            feats = pam.encode(tile).features
        props += _propose_on_crop(pam, feats, crop, layer, cfg, (w, h))
    if cfg.crop_layers > 0:
        pam._encoded = enc  # encode() of the tiles replaced the cached whole-image encoding
    if not props:
        return enc, [], []
    boxes = torch.tensor([p.box for p in props], dtype=torch.float64)
    # Within NMS a smaller crop wins over a bigger one at equal predicted IoU (its mask is sharper);
    # the layer enters as a tie-breaker far below any IoU difference the model resolves.
    scores = torch.tensor([p.pred_iou + 1e-6 * p.layer for p in props], dtype=torch.float64)
    order = box_nms(boxes, scores, cfg.box_nms_thresh).tolist()
    seg = pam.model.segmenter
    kept, masks = [], []
    for i in order:
        m = props[i].mask(w, h, seg)
        area = int(m.sum())
        if area == 0 or area < cfg.min_area:
            continue
        if cfg.contained_thresh is not None and any(
                int(np.logical_and(m, k).sum()) >= cfg.contained_thresh * area for k in masks):
            continue
        kept.append(props[i])
        masks.append(m)
        if cfg.max_regions is not None and len(kept) >= cfg.max_regions:
            break
    return enc, kept, masks


def describe_everything(
    pam: PerceiveAnything,
    image: Any,
    config: EverythingConfig | None = None,
    *,
    tasks: str | Sequence[str] = ("label", "brief_caption"),
    lang: str = "en",
    max_batch: int = 32,
    generation=None,
    on_token=None,
    **generation_overrides: Any,
) -> ImageResult:
    """Every object of ``image``: masks from a point grid, each described by PAM (see the module doc).

    ``tasks`` may be empty (masks only, no LLM call). Regions come best predicted IoU first; each
    has ``prompt={"points": [[x, y]], "labels": [1]}`` (the grid click that produced it), ``iou``
    (predicted IoU), ``stability_score``, ``area`` and ``bbox``.
    """
    from .predictor import REGION_BATCH, _task_output

    t_start = time.perf_counter()
    task_list = [tasks] if isinstance(tasks, str) else list(tasks)
    for t in task_list:
        if text_proc.get_task(t).media == "video":
            raise ValueError(f"task {t!r} is a video task; describe_everything runs image tasks")
        if t == "question":
            raise ValueError("describe_everything does not take task 'question' (one free question per region)")
    prompts = [text_proc.build_prompt(t, lang) for t in task_list]
    settings = pam._settings(generation, dict(generation_overrides))
    if not hasattr(image, "features"):  # not an EncodedImage: read it first, so a bad file fails here
        image = load_image(image)
    encoded_here = not hasattr(image, "features")
    t0 = time.perf_counter()
    enc, props, masks = propose_masks(pam, image, config)
    encode_s = enc.seconds if encoded_here else 0.0
    timings = Timings(encode=encode_s, segment=time.perf_counter() - t0 - encode_s)

    texts: dict = {}
    if props and task_list:
        t0 = time.perf_counter()
        with torch.inference_mode():
            chunks = [props[i : i + REGION_BATCH] for i in range(0, len(props), REGION_BATCH)]
            blocks = torch.cat([pam.model.language.image_visual_block(
                torch.cat([p.mid_image_embed for p in c]), torch.cat([p.mid_mask_tokens for p in c])) for c in chunks])
        timings.perceive = time.perf_counter() - t0
        t0 = time.perf_counter()
        with torch.inference_mode():
            texts = pam._generate_texts(blocks, task_list, prompts, settings, on_token, max_batch)
        timings.generate = time.perf_counter() - t0

    regions = []
    for r, (p, m) in enumerate(zip(props, masks)):
        outputs = [_task_output(t, lang, *texts[(r, ti)]) for ti, t in enumerate(task_list)]
        regions.append(RegionResult(
            index=r, prompt={"points": [[round(p.point[0], 2), round(p.point[1], 2)]], "labels": [1]},
            mask=m, object_score=p.object_score, iou=p.pred_iou, outputs=outputs,
            stability_score=p.stability, crop_box=p.crop if p.layer > 0 else None,
        ))
    timings.total = time.perf_counter() - t_start
    return ImageResult(image_size=(enc.width, enc.height), regions=regions, timings=timings, model=pam.name)


def describe_everything_video(
    pam: PerceiveAnything,
    video: Any,
    config: EverythingConfig | None = None,
    *,
    num_frames: int | None = 32,
    lang: str = "en",
    **kwargs: Any,
):
    """Every object of a video: masks proposed on its first processed frame (as for an image), each
    tracked through the clip from that mask and described by PAM's video caption.

    Objects that enter after the first frame are not found: proposing on later frames too would need
    matching new masks against tracked ones, which the tiny model's masks are too coarse for. Returns
    a :class:`~perceive_anything.results.VideoResult` (no objects when nothing was proposed).
    """
    from .processing.video import Sampling, VideoError, open_video
    from .results import VideoResult

    source = open_video(video)
    first = next(iter(source.frames(Sampling(count=num_frames))), None)
    if first is None:
        raise VideoError(f"{source.name}: no frame to propose objects on")
    _, _, masks = propose_masks(pam, first.image, config)
    if not masks:
        info = source.info
        return VideoResult(video_size=(info.width, info.height), frame_indices=[], frame_times=[], llm_frames=[],
                           objects=[], model=pam.name, source=source.name)
    return pam.perceive_video(open_video(video), [{"mask": m} for m in masks], frame=0, task="video_caption",
                              lang=lang, num_frames=num_frames, **kwargs)


# ---------------------------------------------------------------------------------------------- CLI options

def add_everything_args(parser) -> None:
    """The ``EverythingConfig`` settings as command-line options (``pam image --everything``, ``pam annotate``)."""
    d = EverythingConfig()
    g = parser.add_argument_group("describe everything (--everything)")
    g.add_argument("--points-per-side", type=int, help=f"grid clicks per side (default {d.points_per_side})")
    g.add_argument("--points-per-batch", type=int, help=f"clicks per mask-decoder batch (default {d.points_per_batch})")
    g.add_argument("--pred-iou-thresh", type=float, help=f"minimum predicted IoU (default {d.pred_iou_thresh})")
    g.add_argument("--stability-thresh", type=float,
                   help=f"minimum stability score (default {d.stability_score_thresh})")
    g.add_argument("--box-nms-thresh", type=float, help=f"box IoU above which the weaker mask goes (default {d.box_nms_thresh})")
    g.add_argument("--contained-thresh", type=float,
                   help="drop a mask lying at least this fraction inside a better kept one (default: off, as SAM)")
    g.add_argument("--min-area", type=int, help="drop masks smaller than this many pixels (default 0)")
    g.add_argument("--max-regions", type=int, help="keep at most this many masks, best first (default: all)")
    g.add_argument("--crop-layers", type=int, help="layers of overlapping tiles for small objects (default 0)")


def everything_config_from_args(args) -> EverythingConfig:
    """An :class:`EverythingConfig` from :func:`add_everything_args` options (ValueError names a bad one)."""
    import dataclasses
    from dataclasses import replace

    # each option is named after its field, except --stability-thresh (stability_score_thresh)
    fields = [f.name for f in dataclasses.fields(EverythingConfig)]
    options = {name: "stability_thresh" if name == "stability_score_thresh" else name for name in fields}
    given = {name: getattr(args, opt) for name, opt in options.items() if getattr(args, opt, None) is not None}
    return replace(EverythingConfig(), **given)
