"""Can the SAM heads name a region's shape when they are *given* its silhouette?  A diagnostic for
the embedded model's label accuracy, after ``shape_probe.py`` (which isolates the trunk).

    python benchmarks/mask_prompt_probe.py --mode control|pred|gt [--steps 600] [--lr 1e-3]

Starts from the shipped ``tiny-shapes`` model. Its trunk is frozen; SAM 2's prompt encoder and mask
decoder are trained on box-prompted regions of generated scenes with SAM's losses plus the recipe's
semantic term (the prompted mask token, which PAM's perceiver receives as a query, names the
region's shape and colour against fixed prototypes). The three modes differ only in the dense
prompt added to the image embedding before the two-way transformer:

* ``control``: none (``no_mask_embed``, as PAM runs);
* ``pred``: the model's own low-resolution mask for the box (a first pass, SAM's iterative
  refinement), through the prompt encoder's mask convolutions;
* ``gt``: the ground-truth mask at the same resolution (as +-10 logits): the upper bound, a
  perfect silhouette handed to the heads.

If the silhouette made shape readable, ``gt`` (and ``pred``) would climb far above ``control``.
Held-out: 6 batches of 8 scenes (seed 777), every 100 steps: the token's shape and colour
accuracy (chance 1/16 and 1/12) and the box-mask IoU. Prints one JSON object and writes it to
``benchmarks/results/mask_prompt_probe_<mode>[_lr<lr>].json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from _report import report  # benchmarks/ is sys.path[0] when a benchmark runs as a script

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("control", "pred", "gt")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=MODES, required=True)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out")
    a = ap.parse_args(argv)

    from perceive_anything.checkpoints import load_pretrained
    from perceive_anything.modeling.segmenter import ImageFeatures
    from perceive_anything.training.segmentation import (
        ImageSegmentationTask, LossWeights, _sam_coords, mask_iou, sam_losses, semantic_class_counts, semantic_loss)

    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    seg = load_pretrained(None).model.segmenter
    size = seg.config.image_size
    low_res = seg.config.low_res_mask_size
    task = ImageSegmentationTask(size=size, regions_per_image=4, num_objects=(2, 6), prompt_probs={"box": 1.0})
    for p in seg.parameters():
        p.requires_grad_(False)
    params = [p for n, p in seg.named_parameters() if "mask_decoder" in n or "prompt_encoder" in n]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
    weights = LossWeights()

    def run(batch):
        with torch.no_grad():
            feats = seg.encode_image(batch.pixels)
        idx = torch.tensor(batch.image_index)
        f = ImageFeatures(*(x[idx] for x in (feats.image_embed, feats.image_pos, feats.feat_s0, feats.feat_s1)))
        coords = torch.stack([_sam_coords(p.points, batch.size, size) for p in batch.prompts])
        labels = torch.stack([torch.as_tensor(p.labels, dtype=torch.int32) for p in batch.prompts])
        pix = f.image_embed + seg.sam.no_memory_embedding.reshape(1, -1, 1, 1)
        dense = None
        if a.mode == "pred":
            with torch.no_grad():
                first = seg._sam_heads(pix, f.feat_s0, f.feat_s1, coords, labels, high_res=False)
            dense = first.multimask_logits[:, :1].detach()
        elif a.mode == "gt":
            dense = F.interpolate(batch.masks[:, None], size=low_res, mode="area") * 20 - 10
        out = seg._sam_heads(pix, f.feat_s0, f.feat_s1, coords, labels, mask_prompt=dense, high_res=False)
        present = batch.masks.flatten(1).any(1)
        loss, _ = sam_losses(out.multimask_logits, out.iou_pred, out.object_score_logits, batch.masks, present, weights)
        sem, metrics = semantic_loss(out.mid_mask_tokens[:, 1], batch.classes, semantic_class_counts())
        logits = F.interpolate(out.multimask_logits[:, :1], size=size, mode="bilinear")
        metrics["iou"] = float(mask_iou(logits[:, 0] > 0, batch.masks > 0.5).mean())
        return loss + sem, metrics

    held_out = [task.make_batch(s, 0, 1, 8, 777) for s in range(6)]

    def evaluate() -> dict:
        sums = {"sem_acc_0": 0.0, "sem_acc_1": 0.0, "iou": 0.0}
        with torch.no_grad():
            for b in held_out:
                _, m = run(b)
                for k in sums:
                    sums[k] += m[k] * len(b)
        n = sum(len(b) for b in held_out)
        return {"shape": round(sums["sem_acc_0"] / n, 3), "colour": round(sums["sem_acc_1"] / n, 3),
                "mask_iou": round(sums["iou"] / n, 3)}

    curve = [{"step": 0, **evaluate(), "seconds": 0}]
    t0 = time.time()
    for step in range(1, a.steps + 1):
        loss, _ = run(task.make_batch(step, 0, 1, 8, 123))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % a.eval_every == 0 or step == a.steps:
            curve.append({"step": step, **evaluate(), "seconds": round(time.time() - t0)})
    result = {"mode": a.mode, "steps": a.steps, "lr": a.lr, "held_out_regions": sum(len(b) for b in held_out),
              "chance": {"shape": round(1 / semantic_class_counts()[0], 3), "colour": round(1 / semantic_class_counts()[1], 3)},
              "curve": curve}
    suffix = "" if a.lr == 1e-3 else f"_lr{a.lr:g}"
    report(result, a.out or RESULTS / f"mask_prompt_probe_{a.mode}{suffix}.json")
    return result


if __name__ == "__main__":
    main()
