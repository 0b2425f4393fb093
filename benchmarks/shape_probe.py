"""How fast does a vision trunk learn *what shape* a shapes-world region is?  A diagnostic for the
embedded model's label accuracy.

    python benchmarks/shape_probe.py [--trunk hiera|cnn|crop-cnn] [--steps 2000] [--hiera '{"embed_dim": 32}']

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

Both see the same generated scenes (batches of 8 scenes of 2-6 objects, up to 6 regions each) and
report held-out shape and colour accuracy every ``--eval-every`` steps (chance: 1/16 shape,
1/12 colour). Prints one JSON object and writes it to ``benchmarks/results/shape_probe_<trunk>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
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

    def forward(self, batch) -> list[torch.Tensor]:
        pooled = mask_pool(self.segmenter.encode_image(batch.pixels).image_embed, batch)
        return [head(pooled) for head in self.heads]


def mask_pool(embed: torch.Tensor, batch) -> torch.Tensor:
    """(R, C): each region's (B, C, F, F) image-embedding cells averaged, weighted by mask coverage."""
    embed = embed[torch.tensor(batch.image_index)]
    weight = F.adaptive_avg_pool2d(batch.masks[:, None].float(), embed.shape[-1])
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


class CropCnnProbe(nn.Module):
    def __init__(self, num_classes: tuple[int, ...]) -> None:
        super().__init__()

        self.body = nn.Sequential(_conv(3, 32, 1), _conv(32, 32, 2), _conv(32, 64, 1), _conv(64, 64, 2),
                                  _conv(64, 64, 1), _conv(64, 64, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.heads = nn.ModuleList(nn.Linear(64, n) for n in num_classes)

    def forward(self, batch) -> list[torch.Tensor]:
        feats = self.body(region_crops(batch))
        return [head(feats) for head in self.heads]


def run(trunk: str, steps: int, lr: float, eval_every: int, hiera: dict, seed: int) -> dict:
    from perceive_anything.training.segmentation import ImageSegmentationTask, semantic_class_counts
    from perceive_anything.training.synthetic import REGION_ATTRIBUTES

    counts = semantic_class_counts()
    torch.manual_seed(seed)
    model = {"hiera": lambda: HieraProbe(hiera, counts, seed), "cnn": lambda: CnnProbe(counts),
             "crop-cnn": lambda: CropCnnProbe(counts)}[trunk]()
    model.train()
    task = ImageSegmentationTask(regions_per_image=6, num_objects=(2, 6))
    heldout = [task.make_batch(10**6 + k, 0, 1, 8, seed + 1) for k in range(3)]
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

    curve, t0 = [], time.time()
    for step in range(steps + 1):
        if step % eval_every == 0 or step == steps:
            curve.append({"step": step, "seconds": round(time.time() - t0, 1), **evaluate()})
            print(json.dumps(curve[-1]), file=sys.stderr, flush=True)
        if step == steps:
            break
        batch = task.make_batch(step, 0, 1, 8, seed)
        loss = sum(F.cross_entropy(logits, batch.classes[:, a]) for a, logits in enumerate(model(batch)))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    return {
        "trunk": trunk, "hiera_overrides": hiera if trunk == "hiera" else None,
        # the trunk and heads: a Hiera trunk leaves the memory modules and the mask decoder untouched
        "parameters_trained": sum(p.numel() for p in params if p.grad is not None), "steps": steps, "lr": lr,
        "chance": {f"{n}_accuracy": round(1 / c, 4) for n, c in zip(names, counts)},
        "final": {k: v for k, v in curve[-1].items() if k.endswith("accuracy")},
        "seconds_per_step": round(curve[-1]["seconds"] / max(1, steps), 3), "curve": curve,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trunk", choices=("hiera", "cnn", "crop-cnn"), default="hiera")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--hiera", default="{}", help="JSON of SegmenterConfig overrides for the hiera trunk")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="JSON path (default: benchmarks/results/shape_probe_<trunk>.json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    result = run(args.trunk, args.steps, args.lr, args.eval_every, json.loads(args.hiera), args.seed)
    report(result, args.out or RESULTS / f"shape_probe_{args.trunk}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
