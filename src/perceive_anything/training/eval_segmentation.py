"""Held-out segmentation / tracking quality of a segmenter on freshly generated shapes-world data.

Two paths, same numbers:

* given a ``PerceiveAnything`` predictor, the public API is used (``perceive`` / ``perceive_video`` with
  one generated token, whose text is ignored): what is measured is exactly what users get;
* given a ``PamModel`` or a ``PamSegmenter``, a segmenter-only fast path runs the same computation
  as the predictor (``preprocess_image`` numbers, float32 ``to_sam_points`` prompts, ``segment`` /
  ``track_frame``, ``postprocess_masks`` to the image size, ``logits > 0``) without the LLM. The
  training loop and the benchmark use it; ``tests/test_segmentation_training.py`` checks that the
  two paths agree.

Evaluation seeds are >= 2**31 and training seeds < 2**31 (``segmentation.TRAIN_SEED_MASK``): the
held-out scenes and videos are never seen in training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .segmentation import normalize_pixels, segmenter_of

__all__ = ["binary_iou", "eval_seed", "evaluate_exits", "evaluate_image_iou", "evaluate_tracking_miou"]


def eval_seed(seed: int, kind: int, index: int) -> int:
    """The held-out scene/video seed number ``index`` (always >= 2**31, disjoint from training)."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0xE7A1, int(kind), int(index)])
    return (1 << 31) | (int(ss.generate_state(1)[0]) & 0x7FFFFFFF)


def binary_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two boolean masks; two empty masks count as IoU 1."""
    union = np.count_nonzero(pred | gt)
    return 1.0 if union == 0 else np.count_nonzero(pred & gt) / union


def _is_predictor(obj) -> bool:
    return hasattr(obj, "perceive") and hasattr(obj, "perceive_video")


def _click(mask: np.ndarray, rng: np.random.Generator) -> list[float]:
    """One positive click well inside the object (a user's click), in pixels."""
    from .synthetic import sample_points

    pts, _ = sample_points(mask, rng, 1, 0, margin=3)
    return [float(pts[0][0]), float(pts[0][1])]


@torch.inference_mode()
def evaluate_image_iou(model_or_predictor, n: int = 200, seed: int = 0, size: int = 256,
                       num_objects: tuple[int, int] = (1, 6)) -> dict[str, Any]:
    """Mask IoU on ``n`` held-out scenes, every object prompted by its tight box and, separately, by
    one positive click. Returns ``box_iou`` / ``point_iou`` (mean over objects), ``box_iou_median``,
    ``box_iou_ge_0.85`` (fraction of objects), ``n_objects``.
    """
    from ..processing.prompts import to_sam_points
    from .synthetic import generate_scene

    api = _is_predictor(model_or_predictor)
    box_ious, pt_ious = [], []
    for i in range(n):
        scene = generate_scene(eval_seed(seed, 0, i), size, num_objects)
        rng = np.random.default_rng(eval_seed(seed, 1, i))
        boxes = [list(o.box) for o in scene.objects]
        clicks = [_click(o.mask, rng) for o in scene.objects]
        if api:
            pam = model_or_predictor
            enc = pam.encode(scene.image)
            res_b = pam.perceive(enc, [{"box": b} for b in boxes], task="label", max_new_tokens=1)
            res_p = pam.perceive(enc, [{"points": [c], "labels": [1]} for c in clicks], task="label", max_new_tokens=1)
            pred_b = [r.mask for r in res_b]
            pred_p = [r.mask for r in res_p]
        else:
            seg = segmenter_of(model_or_predictor)
            s = seg.config.image_size
            feats = seg.encode_image(_pixels(scene.image, s).to(seg.device, seg.dtype))
            pred_b, pred_p = [], []
            for prompts, out_list in (
                ([(np.array(b, np.float64).reshape(2, 2), [2, 3]) for b in boxes], pred_b),
                ([(np.array([c], np.float64), [1]) for c in clicks], pred_p),
            ):
                pts = [to_sam_points(p, lab, (size, size), s, torch.float32) for p, lab in prompts]
                coords = torch.stack([c for c, _ in pts]).to(seg.device, seg.dtype)
                labels = torch.stack([lab for _, lab in pts]).to(seg.device)
                out = seg.segment(feats, coords, labels)
                logits = seg.postprocess_masks(out.low_res_logits, (size, size))[:, 0]
                out_list.extend(list((logits > 0).cpu().numpy()))
        for o, pb, pp in zip(scene.objects, pred_b, pred_p):
            box_ious.append(binary_iou(pb, o.mask))
            pt_ious.append(binary_iou(pp, o.mask))
    b = np.array(box_ious)
    return {
        "box_iou": float(b.mean()),
        "box_iou_median": float(np.median(b)),
        "box_iou_ge_0.85": float((b >= 0.85).mean()),
        "point_iou": float(np.mean(pt_ious)),
        "n_objects": int(b.size),
        "n_images": int(n),
        "path": "api" if api else "segmenter",
    }


def _pixels(image: np.ndarray, s: int) -> torch.Tensor:
    if image.shape[0] == s and image.shape[1] == s:
        return normalize_pixels(image[None])
    from PIL import Image

    from ..processing.image import preprocess_image

    return preprocess_image(Image.fromarray(image), s)


@torch.inference_mode()
def evaluate_tracking_miou(model_or_predictor, n_videos: int = 40, num_frames: int = 16, seed: int = 0,
                           size: int = 256, num_objects: tuple[int, int] = (2, 4)) -> dict[str, Any]:
    """Video tracking on ``n_videos`` held-out videos: every object is prompted with its tight box on
    frame 0 and tracked. ``miou``: IoU averaged over all (object, frame >= 1) pairs where the object
    is visible; ``miou_per_object``: mean of per-object means; ``absent_acc``: fraction of frames
    with the object absent where the prediction is empty; ``frame0_iou`` for reference.
    """
    from ..processing.prompts import to_sam_points
    from .synthetic import generate_video

    api = _is_predictor(model_or_predictor)
    pair_ious, obj_means, absent_ok, frame0 = [], [], [], []
    for i in range(n_videos):
        video = generate_video(eval_seed(seed, 2, i), num_frames, size, num_objects)
        boxes = [list(o.boxes[0]) for o in video.objects]
        preds: list[list[np.ndarray]] = [[] for _ in video.objects]
        if api:
            res = model_or_predictor.perceive_video(list(video.frames), [{"box": b} for b in boxes], frame=0,
                                                    max_new_tokens=1)
            for k, obj in enumerate(res.objects):
                preds[k] = [obj.mask(t) for t in range(num_frames)]
        else:
            seg = segmenter_of(model_or_predictor)
            s = seg.config.image_size
            session = seg.new_tracking_session(num_frames=num_frames)
            for k, b in enumerate(boxes):
                c, lab = to_sam_points(np.array(b, np.float64).reshape(2, 2), [2, 3], (size, size), s, torch.float32)
                seg.add_prompt(session, 0, k + 1, point_coords=c.to(seg.device, seg.dtype), point_labels=lab.to(seg.device))
            for t in range(num_frames):
                outs = seg.track_frame(session, t, _pixels(video.frames[t], s).to(seg.device, seg.dtype))
                for obj_id, out in outs.items():
                    logits = seg.postprocess_masks(out.low_res_logits.float(), (size, size))[0, 0]
                    preds[obj_id - 1].append((logits > 0).cpu().numpy())
        for k, o in enumerate(video.objects):
            frame0.append(binary_iou(preds[k][0], o.masks[0]))
            ious = []
            for t in range(1, num_frames):
                gt = o.masks[t]
                if gt.any():
                    ious.append(binary_iou(preds[k][t], gt))
                else:
                    absent_ok.append(not preds[k][t].any())
            pair_ious.extend(ious)
            if ious:
                obj_means.append(float(np.mean(ious)))
    return {
        "miou": float(np.mean(pair_ious)) if pair_ious else float("nan"),
        "miou_per_object": float(np.mean(obj_means)) if obj_means else float("nan"),
        "frame0_iou": float(np.mean(frame0)),
        "absent_acc": float(np.mean(absent_ok)) if absent_ok else float("nan"),
        "n_absent_frames": len(absent_ok),
        "n_objects": len(frame0),
        "n_videos": int(n_videos),
        "num_frames": int(num_frames),
        "path": "api" if api else "segmenter",
    }


def evaluate_exits(pam, n_videos: int = 12, seed: int = 0, num_frames: int = 24, size: int = 256) -> dict[str, Any]:
    """Objects leaving the view, through the public ``perceive_video`` (``pam`` is a predictor).

    Held-out videos whose objects exit (``motions=("exit",)``); every object gone by the last frame is
    prompted with its frame-0 box. Returns ``absent_rate``: the share of frames after the object has
    gone (the first frame without it excluded: one frame of lag is allowed) on which it is reported
    absent (object score < 0) with an empty mask; ``present_rate``: the share of frames, while the object is still well inside (>= 80 % of its
    frame-0 area visible), on which it is reported present; and the frame counts.
    """
    from .synthetic import generate_video

    inside, after = [], []
    for i in range(n_videos):
        video = generate_video(eval_seed(seed, 3, i), num_frames=num_frames, size=size, num_objects=(2, 3),
                               motions=("exit",))
        leaving = [k for k, o in enumerate(video.objects) if not o.masks[-1].any()]
        if not leaving:
            continue
        res = pam.perceive_video([np.asarray(f) for f in video.frames], [list(video.objects[k].boxes[0]) for k in leaving],
                                 task="video_caption", max_new_tokens=1)
        for k, tracked in zip(leaving, res.objects):
            masks = video.objects[k].masks
            gone = video.objects[k].first_frame_gone()
            area0 = masks[0].sum()
            inside += [tracked.present(t) for t in range(1, gone) if masks[t].sum() >= 0.8 * area0]
            after += [(not tracked.present(t)) and not tracked.mask(t).any() for t in range(gone + 1, len(masks))]
    return {"absent_rate": float(np.mean(after)) if after else float("nan"),
            "present_rate": float(np.mean(inside)) if inside else float("nan"),
            "frames_after": len(after), "frames_inside": len(inside)}
