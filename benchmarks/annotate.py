"""Describe everything on generated shapes-world images, annotated like ``pam annotate --everything``.

Generates ``--images`` held-out scenes (PNG files), annotates them with the embedded model at the
default describe-everything settings, once in this process and once through Ray Data with
``--workers`` actors on a local Ray instance, and reports:

* ``recall``: generated objects found (a kept mask with IoU >= 0.5 with the object's visible mask);
* ``precision``: kept masks that match some object (IoU >= 0.5); a mask matching none is a false positive;
* ``items_per_s`` of each path (model loading included in neither: the clock starts at the first item);
* whether both paths wrote the same records (content, not timings);
* the run conditions (CPU count, load average before and after): the machine may be shared.

    python benchmarks/annotate.py [--images 200] [--workers 2] [--skip-ray] [--out benchmarks/results/annotate.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from _report import report  # benchmarks/ is sys.path[0] when a benchmark runs as a script


def match_stats(records: dict[str, dict], scenes: dict[str, object]) -> dict[str, float]:
    from perceive_anything.results import rle_to_mask
    from perceive_anything.training.eval_segmentation import binary_iou

    objects = found = kept = true_pos = 0
    for name, scene in scenes.items():
        masks = [rle_to_mask(r["mask_rle"]) for r in records[name].get("regions", [])]
        ious = np.array([[binary_iou(m, o.mask) for o in scene.objects] for m in masks]).reshape(
            len(masks), len(scene.objects))
        objects += len(scene.objects)
        kept += len(masks)
        if masks:
            found += int((ious.max(0) >= 0.5).sum())
            true_pos += int((ious.max(1) >= 0.5).sum())
    return {"objects": objects, "found": found, "recall": round(found / max(objects, 1), 4),
            "kept_masks": kept, "true_positives": true_pos, "precision": round(true_pos / max(kept, 1), 4)}


def _content(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in ("seconds", "timings")}


def run(args) -> dict:
    from PIL import Image

    from perceive_anything.annotation import Settings, annotate, discover
    from perceive_anything.everything import EverythingConfig
    from perceive_anything.training.language import heldout_seed
    from perceive_anything.training.synthetic import generate_scene

    tmp = Path(tempfile.mkdtemp(prefix="pam-annotate-bench-"))
    (tmp / "images").mkdir()
    scenes = {}
    for i in range(args.images):
        scene = generate_scene(heldout_seed(i, "bench-annotate"), size=256)
        name = f"scene{i:04d}.png"
        Image.fromarray(scene.image).save(tmp / "images" / name)
        scenes[name] = scene
    items = discover(tmp / "images")
    gen = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}
    settings = Settings(mode="everything", everything=asdict(EverythingConfig()), generation=gen)
    result = {
        "images": args.images, "tasks": settings.tasks, "everything": settings.everything, "generation": gen,
        "cpus": os.cpu_count(), "load_average_before": [round(v, 2) for v in os.getloadavg()],
        "threads_single": args.threads,
    }
    single = _timed_run(annotate, items, tmp / "single", settings, tmp, threads=args.threads)
    result["single"] = single["stats"]
    recs = single["records"]
    result.update(match_stats(recs, scenes))
    result["regions_per_image"] = round(result["kept_masks"] / args.images, 3)
    if not args.skip_ray:
        import ray

        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        try:
            ray_run = _timed_run(annotate, items, tmp / "ray", settings, tmp, ray="auto", num_workers=args.workers,
                                 batch_size=args.batch_size)
        finally:
            ray.shutdown()
        result["ray"] = {**ray_run["stats"], "workers": args.workers, "batch_size": args.batch_size}
        result["ray_same_records"] = all(_content(ray_run["records"][k]) == _content(v) for k, v in recs.items())
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    return result


def _timed_run(annotate, items, out, settings, tmp, **kw) -> dict:
    first: list[float] = []
    t0 = time.perf_counter()
    summary = annotate(items, str(out), settings, str(tmp / "images"), progress=True,
                       on_record=lambda r: first.append(time.perf_counter()), **kw)
    wall = time.perf_counter() - t0
    # items/s from the first record on (model loading and Ray start-up excluded), per finished item
    steady = (len(first) - 1) / (first[-1] - first[0]) if len(first) > 1 else float("nan")
    records = {json.loads(line)["id"]: json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()}
    return {"records": records, "stats": {"done": summary.done, "failed": summary.failed, "wall_s": round(wall, 2),
                                          "items_per_s": round(steady, 4),
                                          "items_per_s_with_startup": round(summary.done / wall, 4)}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--workers", type=int, default=2, help="Ray actors (one model each, one CPU each)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the single-process run (default 1)")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--skip-ray", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "annotate.json"))
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    report(run(args), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
