"""Benchmark of a tiny shapes-world PAM on freshly generated held-out data.

    python benchmarks/tiny_model.py [--model DIR] [--scenes 40] [--videos 12]

Prints ONE JSON object and writes it to ``benchmarks/results/tiny_model.json`` (``--out``):

* ``label_accuracy``: ``perceive(task="label")`` with the object's tight box, exact match with the
  ground-truth label (case/whitespace/final full stop ignored), EN; ``label_accuracy_zh`` the same in ZH.
* ``mask_iou``: mean mask IoU of box prompts on held-out scenes; ``mask_iou_point``: one click.
* ``track_miou``: tracking mIoU over (object, frame >= 1) pairs, box prompt on frame 0.
  (Both from ``training.eval_segmentation``, through the public predictor.)
* ``exit_absent_rate``: objects that leave the view (generated exits, box on frame 0): the share of
  frames after the object has gone on which it is reported absent (object score < 0) with an empty
  mask; ``exit_present_rate``: the share of frames, while it is still well inside, reported present.
* ``caption_color_accuracy``: the first colour word of the brief EN caption is the region's colour
  (``_shuffled``: the colour of another region, the same derangement as below).
* ``caption_shape_accuracy``: the first shape phrase of the brief EN caption (a class name or one of
  its caption synonyms) names the region's shape class.
* ``video_caption_shape_accuracy`` / ``video_caption_motion_accuracy``: the first shape phrase of
  the EN video caption names the object's shape; the motion the caption words (static, slide,
  bounce, rotate, grow, shrink, colour change, exit: ``synthetic.motion_kind``) is the object's
  event in the clip.
* ``caption_cider``: CIDEr-D (pycocoevalcap) of the brief EN captions against the region's
  ground-truth caption; ``caption_cider_shuffled``: the same predictions scored against captions of
  *other* regions (a derangement) — the gap shows the captions describe the prompted region rather
  than the data set's average caption. ``video_caption_cider`` (+ ``_shuffled``) for
  ``perceive_video`` captions. Strings are lower-cased and split into words before scoring
  (the official eval scores raw strings, §11.1; tokenising makes "Circle." match "circle").

Everything goes through the public :class:`perceive_anything.PerceiveAnything` API; held-out scenes
use odd generator seeds, which training never uses (``training.language.heldout_seed``).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

from _report import report  # benchmarks/ is sys.path[0] when a benchmark runs as a script

RESULTS = Path(__file__).resolve().parent / "results" / "tiny_model.json"


def _norm_label(s: str | None) -> str:
    return re.sub(r"\s+", " ", (s or "").strip().lower()).rstrip(".。").strip()


def _words(s: str) -> str:
    return " ".join(re.findall(r"\w+", s.lower()))


def cider(preds: list[str], refs: list[str]) -> float:
    from pycocoevalcap.cider.cider import Cider

    if not preds:
        return float("nan")
    gts = {i: [_words(r)] for i, r in enumerate(refs)}
    res = {i: [_words(p)] for i, p in enumerate(preds)}
    score, _ = Cider().compute_score(gts, res)
    return float(score)


def _derange(items: list, shift: int = 1) -> list:
    """A rotation: every prediction gets the reference of another region (of another scene when
    regions are listed scene by scene and scenes have fewer objects than the shift)."""
    k = shift % max(1, len(items))
    return items[k:] + items[:k]


def run(model: str | None, scenes: int, videos: int, seed: int, max_new_tokens: int) -> dict:
    from perceive_anything import PerceiveAnything
    from perceive_anything.training.language import heldout_seed
    from perceive_anything.training.synthetic import (first_color_word, first_shape_word, generate_scene,
                                                       generate_video, motion_kind)

    t0 = time.time()
    pam = PerceiveAnything.from_pretrained(model)
    result: dict = {"model": pam.name, "source": str(model) if model else "embedded"}

    correct = {"en": 0, "zh": 0}
    n_obj = 0
    cap_pred, cap_ref, cap_color, cap_shape = [], [], [], []
    for i in range(scenes):
        scene = generate_scene(heldout_seed(i, f"bench-scene-{seed}"), size=256)
        boxes = [list(o.box) for o in scene.objects]
        res_en = pam.perceive(scene.image, boxes, task=["label", "brief_caption"], lang="en",
                              max_new_tokens=max_new_tokens)
        res_zh = pam.perceive(scene.image, boxes, task="label", lang="zh", max_new_tokens=max_new_tokens)
        for obj, r_en, r_zh in zip(scene.objects, res_en.regions, res_zh.regions):
            n_obj += 1
            correct["en"] += _norm_label(r_en.label) == _norm_label(obj.label["en"])
            correct["zh"] += _norm_label(r_zh.label) == _norm_label(obj.label["zh"])
            cap_pred.append(r_en.caption or "")
            cap_ref.append(obj.brief_caption["en"])
            cap_color.append(obj.color)
            cap_shape.append(obj.shape)
    result["label_accuracy"] = correct["en"] / max(1, n_obj)
    result["label_accuracy_zh"] = correct["zh"] / max(1, n_obj)
    said = [first_color_word(p) for p in cap_pred]
    result["caption_color_accuracy"] = float(np.mean([a == b for a, b in zip(said, cap_color)])) if said else None
    result["caption_color_accuracy_shuffled"] = (
        float(np.mean([a == b for a, b in zip(said, _derange(cap_color, shift=7))])) if said else None)
    result["caption_shape_accuracy"] = (
        float(np.mean([first_shape_word(p) == t for p, t in zip(cap_pred, cap_shape)])) if cap_pred else None)
    result["caption_cider"] = cider(cap_pred, cap_ref)
    result["caption_cider_shuffled"] = cider(cap_pred, _derange(cap_ref, shift=7))
    result["n_regions"] = n_obj
    result["example_captions"] = [{"pred": p, "truth": r} for p, r in list(zip(cap_pred, cap_ref))[:3]]

    vid_pred, vid_ref, vid_shape, vid_motion = [], [], [], []
    for i in range(videos):
        video = generate_video(heldout_seed(i, f"bench-video-{seed}"), num_frames=16, size=256)
        boxes = [list(o.boxes[0]) for o in video.objects]
        vres = pam.perceive_video([np.asarray(f) for f in video.frames], boxes, task="video_caption", lang="en",
                                  max_new_tokens=max_new_tokens)
        for obj, o in zip(video.objects, vres.objects):
            vid_pred.append(o.caption or "")
            vid_ref.append(obj.events[0].caption["en"])
            vid_shape.append(obj.shape)
            vid_motion.append(obj.events[0].kind)
    if videos:
        result["video_caption_cider"] = cider(vid_pred, vid_ref)
        result["video_caption_cider_shuffled"] = cider(vid_pred, _derange(vid_ref, shift=5))
        result["video_caption_shape_accuracy"] = float(np.mean([first_shape_word(p) == t
                                                                for p, t in zip(vid_pred, vid_shape)]))
        result["video_caption_motion_accuracy"] = float(np.mean([motion_kind(p) == t
                                                                 for p, t in zip(vid_pred, vid_motion)]))
        result["video_motion_kinds"] = {k: vid_motion.count(k) for k in sorted(set(vid_motion))}
        result["n_video_objects"] = len(vid_pred)
        result["example_video_captions"] = [{"pred": p, "truth": r} for p, r in list(zip(vid_pred, vid_ref))[:3]]

    try:
        from perceive_anything.training.eval_segmentation import (evaluate_exits, evaluate_image_iou,
                                                                  evaluate_tracking_miou)
    except ImportError:  # the segmentation helpers are optional
        result["mask_iou"] = result["track_miou"] = result["exit_absent_rate"] = None
    else:
        seg = evaluate_image_iou(pam, n=scenes, seed=seed + 1)
        result["mask_iou"] = seg.get("box_iou")
        result["mask_iou_point"] = seg.get("point_iou")
        trk = evaluate_tracking_miou(pam, n_videos=max(1, videos), seed=seed + 1)
        result["track_miou"] = trk.get("miou")
        ex = evaluate_exits(pam, n_videos=max(1, videos), seed=seed + 1)
        result["exit_absent_rate"], result["exit_present_rate"] = ex["absent_rate"], ex["present_rate"]
    result["seconds"] = round(time.time() - t0, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="model folder (default: the embedded tiny model)")
    ap.add_argument("--scenes", type=int, default=40, help="held-out scenes (label, mask, caption)")
    ap.add_argument("--videos", type=int, default=12, help="held-out videos (tracking, video captions)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(RESULTS), help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = run(args.model, args.scenes, args.videos, args.seed, args.max_new_tokens)
    report(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
