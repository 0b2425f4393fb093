"""Numerical parity of the SAM 2 side with the official PAM code (golden fixtures A and C).

Every ``sam2.*`` tensor the segmenter can produce is compared with ``compare.py``'s tolerances, plus
the official SAM return values (``official.*``). Case C tracks all 20 frames once (~2 min on 2 CPU cores).
"""

from __future__ import annotations

import torch

from perceive_anything.checkpoints.sam2 import load_official_sam2, segmenter_config_from_official_yaml
from perceive_anything.processing.image import load_image, preprocess_image
from perceive_anything.processing.prompts import box_to_points, to_sam_points

CASE_A = "case_A_image_box_detailcap_en"
CASE_C = "case_C_video20_box_cap_en"


def _segmenter(case):
    sam2_dir = case.weights / "sam2"
    cfg = segmenter_config_from_official_yaml(sam2_dir / "sam2.1_hiera_parity.yaml")
    return cfg, load_official_sam2(sam2_dir / "sam2.1_hiera_parity.pt", cfg)


def _prompt(case, wh, image_size):
    inputs = case.manifest["inputs"]
    vp = inputs["visual_prompts"]
    if len(vp) == 4 and not isinstance(vp[0], (list, tuple)):  # official rule: a flat 4-list is a box
        pts, labels = box_to_points(vp)
    else:
        pts, labels = vp, inputs["vp_labels"]
    return to_sam_points(pts, labels, wh, image_size, torch.float32)


def _check(case, produced):
    """Every ``sam2.*`` / ``official.*`` golden tensor must be produced and pass (LLM side: other tests)."""
    rep = case.compare.compare_case(str(case.dir), produced, only=["sam2.*", "official.*"], strict=True)
    report = case.compare.format_report(rep, show_pass=False)
    assert rep["ok"], report
    assert rep["counts"]["pass"] > 0, report


@torch.no_grad()
def test_case_a_image_parity(golden_case):
    case = golden_case(CASE_A)
    cfg, seg = _segmenter(case)
    img = load_image(case.dir / case.manifest["inputs"]["images"][0])
    w, h = img.size
    x = preprocess_image(img, cfg.image_size)
    coords, labels = _prompt(case, (w, h), cfg.image_size)
    out = seg.segment(seg.encode_image(x), coords[None], labels[None], capture=True)

    produced = out.fixture_tensors("sam2.frame000.")
    produced["sam2.frame000.image_input"] = x
    produced["sam2.prompt.point_coords"] = coords[None]
    produced["sam2.prompt.point_labels"] = labels[None]
    logits = seg.postprocess_masks(out.low_res_logits, (h, w))
    produced["sam2.frame000.video_res_mask_logits"] = logits
    produced["official.all_masks_logits.0"] = logits
    produced["official.all_masks_logits.0.binary"] = logits > 0
    produced["official.all_scores.0"] = out.object_score_logits
    _check(case, produced)


@torch.no_grad()
def test_case_c_video_tracking_parity(golden_case):
    case = golden_case(CASE_C)
    cfg, seg = _segmenter(case)
    frames = case.manifest["inputs"]["frames"]
    session = seg.new_tracking_session(num_frames=len(frames))
    produced = {}
    binary, scores = [], []
    footprints = []
    for t, rel in enumerate(frames):  # frames decoded one at a time, nothing kept
        img = load_image(case.dir / rel)
        w, h = img.size
        x = preprocess_image(img, cfg.image_size)
        if t == 0:
            coords, labels = _prompt(case, (w, h), cfg.image_size)
            produced["sam2.prompt.point_coords"] = coords[None]
            produced["sam2.prompt.point_labels"] = labels[None]
            seg.add_prompt(session, 0, 1, coords, labels)
        out = seg.track_frame(session, t, x, capture=True)[1]
        pre = f"sam2.frame{t:03d}."
        produced.update(out.fixture_tensors(pre))
        # official video path: float32 copies of the low-res logits are upsampled, then thresholded
        logits = seg.postprocess_masks(out.low_res_logits.float(), (h, w))
        produced[pre + "video_res_mask_logits"] = logits
        binary.append(logits > 0)
        scores.append(out.object_score_logits)
        footprints.append(session.memory_footprint())
    produced["official.binary_masks"] = torch.cat(binary)
    produced["official.scores"] = torch.stack(scores)
    _check(case, produced)
    # stored state stays bounded: cond frame (ptr + mem) + 6 memories + 15 pointers
    assert max(footprints) <= 2 + (cfg.num_maskmem - 1) + (min(len(frames), cfg.max_obj_ptrs_in_encoder) - 1)
