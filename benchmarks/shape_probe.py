"""How fast does a vision trunk learn *what shape* a shapes-world region is?  A diagnostic for the
embedded model's label accuracy.

    python benchmarks/shape_probe.py [--trunk hiera|cnn|crop-cnn] [--steps 2000] [--hiera '{"embed_dim": 32}']
        [--crop-steps N --crop-mode box|window|zoom --crop-size 64] [--dense W] [--box-readout PIXELS] [--upscale K]

``hiera``: the tiny-shapes SAM 2 image encoder (optionally with ``SegmenterConfig`` overrides),
from scratch as in the recipe, trained on nothing but region classification: each prompted region's
stride-16 image embedding (the level the perceiver reads) is averaged under its ground-truth mask
and two small heads name its shape and its colour. This is the most direct signal the perceiver's
input could get, without the segmentation losses competing for it.

``cnn``: the same readout (whole 256-pixel image, stride-16 map of the same width, averaged under
the region's mask) on a plain nine-layer 3x3 CNN instead of the Hiera: whether a trunk with
convolutional bias learns shape from the same full-image features in that many steps.

``crop-cnn``: the same regions, cropped to their box and resized to 48x48, classified by a
six-layer CNN. It shows whether the pixels make shape learnable at all in that many steps.

``--crop-steps N`` (hiera): a crop-to-scene curriculum. The first N steps train on regions cut
out of their scenes (``--crop-mode box``: the region's box resized to ``--crop-size``; ``window``: a
``--crop-size`` window at the scene's own scale; ``zoom``: from box crops at step 0 to scene-sized
windows at scene scale at step N), then on scenes. ``--dense W``: add a per-cell term (every stride-16
cell a region covers names its shape and colour), weight W. ``--box-readout PIXELS``: pool over the
region's box grown by PIXELS instead of its mask, so the background around the silhouette counts.
``--upscale K``: feed the scenes at K times their size (a larger input for the same world).

Both see the same generated scenes (batches of 8 scenes of 2-6 objects, up to 6 regions each) and
report held-out shape and colour accuracy every ``--eval-every`` steps (chance: 1/16 shape,
1/12 colour). Prints one JSON object and writes it to ``benchmarks/results/shape_probe_<trunk>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from _report import report  # benchmarks/ is sys.path[0] when a benchmark runs as a script

RESULTS = Path(__file__).resolve().parent / "results"
CROP = 48


class HieraProbe(nn.Module):
    def __init__(self, overrides: dict, num_classes: tuple[int, ...], seed: int) -> None:
        super().__init__()
        from perceive_anything.config import hiera_channel_list, pam_preset
        from perceive_anything.modeling.segmenter import PamSegmenter
        from perceive_anything.training.segmentation import init_for_training

        cfg = pam_preset("tiny-shapes").segmenter
        for key, value in overrides.items():
            if not hasattr(cfg, key):
                raise ValueError(f"SegmenterConfig has no field {key!r}")
            setattr(cfg, key, value)
        if "embed_dim" in overrides and "backbone_channel_list" not in overrides:
            cfg.backbone_channel_list = hiera_channel_list(cfg.embed_dim, len(cfg.stages))
        self.segmenter = PamSegmenter(cfg)
        init_for_training(self, seed)  # the recipe's from-scratch init
        self.segmenter.set_trainable(True)
        self.heads = pooled_heads(cfg.d_model, num_classes)

    def dense_loss(self, batch) -> torch.Tensor:
        """Every stride-16 cell that a prompted region covers at least half names that region's
        shape and colour (many more labels per step than one pooled vector per region)."""
        embed = self.segmenter.sam.vision_encoder(batch.pixels, return_dict=True).fpn_hidden_states[2]
        cover = F.adaptive_avg_pool2d(batch.masks[:, None].float(), embed.shape[-1])[:, 0]  # (R, F, F)
        cells = embed[torch.tensor(batch.image_index)].permute(0, 2, 3, 1)[cover >= 0.5]  # (N, C)
        labels = batch.classes[:, None, None, :].expand(-1, *cover.shape[1:], -1)[cover >= 0.5]
        return sum(F.cross_entropy(head(cells), labels[:, a]) for a, head in enumerate(self.heads))

    def forward(self, batch) -> list[torch.Tensor]:
        # the vision encoder directly: crops are smaller than the preset's image size (the Hiera's
        # weights do not depend on it; its absolute position embedding is interpolated)
        embed = self.segmenter.sam.vision_encoder(batch.pixels, return_dict=True).fpn_hidden_states[2]
        pooled = mask_pool(embed, batch)
        return [head(pooled) for head in self.heads]


READOUT = {"margin": 0}  # --box-readout: pool over the region's box grown by this many pixels instead


def upscaled(batch, factor: int) -> ProbeBatch:
    """The scenes at ``factor`` x their size (bilinear pixels, nearest masks): objects span ``factor``
    x as many stride-16 cells, as with a larger input size for the same world."""
    pix = F.interpolate(batch.pixels, scale_factor=factor, mode="bilinear", align_corners=False)
    msk = F.interpolate(batch.masks[:, None].float(), scale_factor=factor, mode="nearest")[:, 0]
    return ProbeBatch(pix, msk, batch.classes, list(batch.image_index))


def mask_pool(embed: torch.Tensor, batch) -> torch.Tensor:
    """(R, C): each region's (B, C, F, F) image-embedding cells averaged, weighted by mask coverage
    (or by the coverage of its box grown by ``READOUT["margin"]`` pixels, background included)."""
    embed = embed[torch.tensor(batch.image_index)]
    masks = batch.masks[:, None].float()
    if READOUT["margin"]:
        m = READOUT["margin"]
        rows, cols = masks.amax(3, keepdim=True), masks.amax(2, keepdim=True)  # (R,1,H,1), (R,1,1,W)
        grow = lambda x: F.max_pool1d(x.flatten(1)[:, None], 2 * m + 1, 1, m)[:, 0]  # noqa: E731
        rows = grow(rows).view(masks.shape[0], 1, -1, 1)
        cols = grow(cols).view(masks.shape[0], 1, 1, -1)
        masks = rows * cols
    weight = F.adaptive_avg_pool2d(masks, embed.shape[-1])
    return (embed * weight).sum((2, 3)) / weight.sum((2, 3)).clamp_min(1e-6)


def pooled_heads(width: int, num_classes: tuple[int, ...]) -> nn.ModuleList:
    """One small MLP per attribute on a region's mask-pooled embedding (the full-image probes)."""
    return nn.ModuleList(nn.Sequential(nn.Linear(width, 128), nn.GELU(), nn.Linear(128, n)) for n in num_classes)


def _conv(i: int, o: int, stride: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1), nn.GroupNorm(8, o), nn.GELU())


class CnnProbe(nn.Module):
    """Whole image -> stride-16 map as wide as the tiny-shapes image embedding, like ``HieraProbe``."""

    def __init__(self, num_classes: tuple[int, ...]) -> None:
        super().__init__()
        from perceive_anything.config import pam_preset

        cfg = pam_preset("tiny-shapes").segmenter
        width = cfg.d_model
        layers, c = [], 3
        for level in range(4):  # each level halves the resolution: stride 16 after four
            out = width // 2 if level == 0 else width
            layers += [_conv(c, out, 2), _conv(out, out, 1)]
            c = out
        self.body = nn.Sequential(*layers, _conv(width, width, 1))
        self.heads = pooled_heads(width, num_classes)

    def forward(self, batch) -> list[torch.Tensor]:
        pooled = mask_pool(self.body(batch.pixels), batch)
        return [head(pooled) for head in self.heads]


def region_crops(batch, size: int = CROP) -> torch.Tensor:
    """(R, 3, size, size): each region's box (from its mask, square, 3-pixel margin) resized."""
    out = []
    for r, img_idx in enumerate(batch.image_index):
        ys, xs = torch.nonzero(batch.masks[r] > 0.5, as_tuple=True)
        img = batch.pixels[img_idx]
        if len(ys) == 0:
            out.append(torch.zeros(3, size, size))
            continue
        cy, cx = (ys.min() + ys.max()).item() / 2, (xs.min() + xs.max()).item() / 2
        half = max(ys.max() - ys.min(), xs.max() - xs.min()).item() / 2 + 3
        pad = int(half) + 2
        padded = F.pad(img, (pad, pad, pad, pad))
        y0, x0 = int(cy - half) + pad, int(cx - half) + pad
        side = int(2 * half) + 1
        crop = padded[:, y0:y0 + side, x0:x0 + side]
        out.append(F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False)[0])
    return torch.stack(out)


@dataclass
class ProbeBatch:
    """Pixels, region masks and classes in the probe batch's interface. ``image_index`` names each
    region's image; None: one image per region (regions cut out of their scenes)."""
    pixels: torch.Tensor
    masks: torch.Tensor
    classes: torch.Tensor
    index: list[int] | None = None

    @property
    def image_index(self) -> list[int]:
        return list(range(len(self.masks))) if self.index is None else self.index

    def __len__(self) -> int:
        return len(self.masks)


def window_crops(batch, size: int, rng: torch.Generator) -> ProbeBatch:
    """Each region in a ``size`` window of its scene at the scene's own scale (no resize), its centre
    jittered by up to a quarter window: the object and some of its neighbours, as in the scene."""
    pix, msk = [], []
    for r, img_idx in enumerate(batch.image_index):
        ys, xs = torch.nonzero(batch.masks[r] > 0.5, as_tuple=True)
        cy, cx = ((ys.min() + ys.max()).item() / 2, (xs.min() + xs.max()).item() / 2) if len(ys) else (0, 0)
        jy, jx = ((torch.rand(2, generator=rng) - 0.5) * size / 2).tolist()
        y0, x0 = int(cy + jy - size / 2), int(cx + jx - size / 2)
        img = F.pad(batch.pixels[img_idx], (size, size, size, size))
        m = F.pad(batch.masks[r], (size, size, size, size))
        pix.append(img[:, y0 + size:y0 + 2 * size, x0 + size:x0 + 2 * size])
        msk.append(m[y0 + size:y0 + 2 * size, x0 + size:x0 + 2 * size])
    return ProbeBatch(torch.stack(pix), torch.stack(msk), batch.classes)


def zoom_crops(batch, t: float, rng: torch.Generator, max_regions: int = 16, full: int = 256) -> ProbeBatch:
    """Crop-to-scene curriculum at progress ``t`` in [0, 1]: each region in a square window whose
    side goes from its box (x1.1) at t=0 to a scene's side at t=1, resized to an output that grows
    from 64 to ``full`` pixels, so the scale goes from box-normalised to the scene's own; the object
    drifts off-centre as the window grows. At most ``max_regions`` regions per step."""
    out = 32 * round((64 + (full - 64) * t) / 32)
    keep = torch.randperm(len(batch.image_index), generator=rng)[:max_regions].sort().values.tolist()
    pix, msk, cls = [], [], []
    for r in keep:
        img_idx = batch.image_index[r]
        ys, xs = torch.nonzero(batch.masks[r] > 0.5, as_tuple=True)
        if not len(ys):
            continue
        cy, cx = (ys.min() + ys.max()).item() / 2, (xs.min() + xs.max()).item() / 2
        b = max(ys.max() - ys.min(), xs.max() - xs.min()).item() + 1
        side = 1.1 * b + (full - 1.1 * b) * t
        jy, jx = ((torch.rand(2, generator=rng) - 0.5) * (side - b) * t).tolist()
        y0, x0 = cy + jy - side / 2, cx + jx - side / 2
        # affine crop with zero padding outside the scene
        theta = torch.tensor([[side / full, 0.0, (x0 + side / 2) / (full / 2) - 1],
                              [0.0, side / full, (y0 + side / 2) / (full / 2) - 1]], dtype=torch.float32)
        grid = F.affine_grid(theta[None], (1, 1, out, out), align_corners=False)
        pix.append(F.grid_sample(batch.pixels[img_idx][None], grid, align_corners=False)[0])
        msk.append(F.grid_sample(batch.masks[r][None, None].float(), grid, align_corners=False)[0, 0])
        cls.append(batch.classes[r])
    return ProbeBatch(torch.stack(pix), torch.stack(msk), torch.stack(cls))


def box_crops(batch, size: int) -> ProbeBatch:
    masks = []
    for r, img_idx in enumerate(batch.image_index):  # the mask cut like the pixels (a fake one-region batch)
        one = ProbeBatch(batch.masks[r][None, None].expand(1, 3, -1, -1).float(), batch.masks[r][None], batch.classes)
        masks.append(region_crops(one, size)[0, 0])
    return ProbeBatch(region_crops(batch, size), torch.stack(masks), batch.classes)


class CropCnnProbe(nn.Module):
    def __init__(self, num_classes: tuple[int, ...]) -> None:
        super().__init__()

        self.body = nn.Sequential(_conv(3, 32, 1), _conv(32, 32, 2), _conv(32, 64, 1), _conv(64, 64, 2),
                                  _conv(64, 64, 1), _conv(64, 64, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.heads = nn.ModuleList(nn.Linear(64, n) for n in num_classes)

    def forward(self, batch) -> list[torch.Tensor]:
        feats = self.body(region_crops(batch))
        return [head(feats) for head in self.heads]


def run(trunk: str, steps: int, lr: float, eval_every: int, hiera: dict, seed: int,
        crop_steps: int = 0, crop_mode: str = "box", crop_size: int = 64, dense: float = 0.0,
        upscale: int = 1) -> dict:
    from perceive_anything.training.segmentation import ImageSegmentationTask, semantic_class_counts
    from perceive_anything.training.synthetic import REGION_ATTRIBUTES

    counts = semantic_class_counts()
    torch.manual_seed(seed)
    model = {"hiera": lambda: HieraProbe(hiera, counts, seed), "cnn": lambda: CnnProbe(counts),
             "crop-cnn": lambda: CropCnnProbe(counts)}[trunk]()
    model.train()
    task = ImageSegmentationTask(regions_per_image=6, num_objects=(2, 6))
    heldout = [task.make_batch(10**6 + k, 0, 1, 8, seed + 1) for k in range(3)]
    if upscale > 1:
        heldout = [upscaled(b, upscale) for b in heldout]
    if crop_steps >= steps and crop_mode != "zoom":  # crops only: judge the crop task itself (zoom ends at scenes)
        heldout = [box_crops(b, crop_size) if crop_mode == "box" else window_crops(b, crop_size, torch.Generator())
                   for b in heldout]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    names = list(REGION_ATTRIBUTES)

    def evaluate() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            hits, total = [0] * len(names), 0
            for b in heldout:
                for a, logits in enumerate(model(b)):
                    hits[a] += int((logits.argmax(1) == b.classes[:, a]).sum())
                total += len(b)
        model.train()
        return {f"{n}_accuracy": round(h / total, 4) for n, h in zip(names, hits)}

    gen = torch.Generator().manual_seed(seed)
    curve, t0, train_hits = [], time.time(), [0, 0]
    for step in range(steps + 1):
        if step % eval_every == 0 or step == steps:
            # the training batches' own shape accuracy since the last check (on crops during a curriculum)
            seen = {"train_shape_accuracy": round(train_hits[0] / train_hits[1], 4)} if train_hits[1] else {}
            train_hits = [0, 0]
            curve.append({"step": step, "seconds": round(time.time() - t0, 1), **evaluate(), **seen})
            print(json.dumps(curve[-1]), file=sys.stderr, flush=True)
        if step == steps:
            break
        batch = task.make_batch(step, 0, 1, 8, seed)
        if upscale > 1:
            batch = upscaled(batch, upscale)
        if step < crop_steps:  # curriculum: the trunk first sees each region cut out of its scene
            if crop_mode == "zoom":
                batch = zoom_crops(batch, step / crop_steps, gen)
            else:
                batch = box_crops(batch, crop_size) if crop_mode == "box" else window_crops(batch, crop_size, gen)
        outputs = model(batch)
        loss = sum(F.cross_entropy(logits, batch.classes[:, a]) for a, logits in enumerate(outputs))
        train_hits[0] += int((outputs[0].argmax(1) == batch.classes[:, 0]).sum())
        train_hits[1] += len(batch.classes)
        if dense:
            loss = loss + dense * model.dense_loss(batch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    return {
        "trunk": trunk, "crop_curriculum": {"steps": crop_steps, "mode": crop_mode, "size": crop_size} if crop_steps else None,
        "dense_weight": dense or None, "upscale": upscale, "hiera_overrides": hiera if trunk == "hiera" else None,
        # the trunk and heads: a Hiera trunk leaves the memory modules and the mask decoder untouched
        "parameters_trained": sum(p.numel() for p in params if p.grad is not None), "steps": steps, "lr": lr,
        "chance": {f"{n}_accuracy": round(1 / c, 4) for n, c in zip(names, counts)},
        "final": {k: v for k, v in curve[-1].items() if k.endswith("accuracy") and not k.startswith("train_")},
        "seconds_per_step": round(curve[-1]["seconds"] / max(1, steps), 3), "curve": curve,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trunk", choices=("hiera", "cnn", "crop-cnn"), default="hiera")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--hiera", default="{}", help="JSON of SegmenterConfig overrides for the hiera trunk")
    ap.add_argument("--crop-steps", type=int, default=0,
                    help="hiera: train the first N steps on regions cut out of their scenes, then on scenes")
    ap.add_argument("--crop-mode", choices=("box", "window", "zoom"), default="box",
                    help="box: the region's box resized to --crop-size; window: a --crop-size window at scene "
                         "scale; zoom: from box crops to scene-sized windows at scene scale over the crop steps")
    ap.add_argument("--crop-size", type=int, default=64)
    ap.add_argument("--dense", type=float, default=0.0,
                    help="hiera: weight of a per-cell term (every covered stride-16 cell names its region)")
    ap.add_argument("--box-readout", type=int, default=0, metavar="PIXELS",
                    help="pool each region's embedding over its box grown by PIXELS (background around the "
                         "object included) instead of over its mask")
    ap.add_argument("--upscale", type=int, default=1,
                    help="hiera: feed the scenes at this many times their size (a larger input for the same world)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="JSON path (default: benchmarks/results/shape_probe_<trunk>.json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    READOUT["margin"] = args.box_readout
    result = run(args.trunk, args.steps, args.lr, args.eval_every, json.loads(args.hiera), args.seed,
                 args.crop_steps, args.crop_mode, args.crop_size, args.dense, args.upscale)
    report(result, args.out or RESULTS / f"shape_probe_{args.trunk}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
