"""describe_everything with the embedded tiny model on freshly generated shapes-world scenes.

The CI bars are looser than the benchmark's targets (``benchmarks/annotate.py``: recall >= 90 %,
precision >= 80 % on 200 scenes): a few scenes are a small sample, and the bars must flag a broken
proposal pipeline, not sampling noise.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from perceive_anything.checkpoints import embedded_model_dir
from perceive_anything.everything import EverythingConfig, box_iou, box_nms, point_grid, stability_score
from perceive_anything.training.eval_segmentation import binary_iou

pytestmark = pytest.mark.skipif(embedded_model_dir() is None, reason="no embedded model in this checkout")

RECALL_BAR = 0.8
PRECISION_BAR = 0.6  # 10 scenes: precision ranged 0.60-0.86 across 6- to 40-scene samples while tuning


@pytest.fixture(scope="module")
def pam():
    from perceive_anything import PerceiveAnything

    return PerceiveAnything.from_pretrained()


@pytest.fixture(scope="module")
def scenes():
    from perceive_anything.training.language import heldout_seed
    from perceive_anything.training.synthetic import generate_scene

    return [generate_scene(heldout_seed(i, "ci-everything"), size=256) for i in range(10)]


@pytest.fixture(scope="module")
def found(pam, scenes):
    """Masks only (no LLM), default settings: one result per scene."""
    return [pam.describe_everything(s.image, tasks=()) for s in scenes]


def test_finds_the_generated_objects(scenes, found):
    hits = objects = kept = true_pos = 0
    for scene, result in zip(scenes, found):
        ious = np.array([[binary_iou(r.mask, o.mask) for o in scene.objects] for r in result]).reshape(
            len(result), len(scene.objects))
        objects += len(scene.objects)
        kept += len(result)
        if len(result):
            hits += int((ious.max(0) >= 0.5).sum())
            true_pos += int((ious.max(1) >= 0.5).sum())
    assert objects >= 15
    assert hits / objects >= RECALL_BAR, f"found {hits}/{objects} objects"
    assert true_pos / kept >= PRECISION_BAR, f"{true_pos}/{kept} kept masks match an object"


def test_every_region_carries_its_proposal_fields(found):
    cfg = EverythingConfig()
    regions = [r for result in found for r in result]
    assert regions
    for r in regions:
        assert r.stability_score >= cfg.stability_score_thresh
        assert r.iou >= cfg.pred_iou_thresh
        assert r.present and r.area > 0 and r.bbox is not None
        assert r.outputs == []
        d = r.to_dict()
        assert set(d) >= {"bbox", "area", "iou", "stability_score", "mask_rle", "prompt"}
        assert d["prompt"]["labels"] == [1] and len(d["prompt"]["points"]) == 1
    for result in found:  # best predicted IoU first
        ious = [r.iou for r in result]
        assert ious == sorted(ious, reverse=True)


def test_kept_boxes_respect_nms(found):
    thresh = EverythingConfig().box_nms_thresh
    for result in found:
        if len(result) < 2:
            continue
        boxes = torch.tensor([r.bbox for r in result], dtype=torch.float64)
        iou = box_iou(boxes, boxes).fill_diagonal_(0)
        # boxes are re-measured at the image size after NMS: allow a pixel of rounding
        assert float(iou.max()) <= thresh + 0.05


def test_semantics_for_every_region(pam, scenes):
    result = pam.describe_everything(scenes[0].image, max_new_tokens=12)
    assert len(result) >= 2
    for r in result:
        assert [o.task for o in r.outputs] == ["label", "brief_caption"]
        assert r.label and r.caption
    d = json.loads(result.to_json())
    assert all(reg["outputs"][1]["caption"] for reg in d["regions"])
    # the regular prompted path does not grow the new keys
    plain = pam.perceive(scenes[0].image, [list(scenes[0].objects[0].box)], task="label", max_new_tokens=2)
    assert "stability_score" not in plain[0].to_dict() and "crop_box" not in plain[0].to_dict()


def test_filters_behave(pam, scenes, found):
    image = scenes[1].image
    base = found[1]
    strict = pam.describe_everything(image, tasks=(), stability_score_thresh=0.9)
    assert all(r.stability_score >= 0.9 for r in strict)
    assert len(strict) <= len(base)
    top = pam.describe_everything(image, tasks=(), max_regions=1)
    assert len(top) == 1 and top[0].iou == pytest.approx(base[0].iou)
    big = sorted(r.area for r in base)[len(base) // 2]
    large_only = pam.describe_everything(image, tasks=(), min_area=big)
    assert large_only and all(r.area >= big for r in large_only)
    assert len(large_only) < len(base) or min(r.area for r in base) >= big
    dedup = pam.describe_everything(image, tasks=(), contained_thresh=0.8)
    assert len(dedup) <= len(base)
    for i, r in enumerate(dedup):  # no kept mask lies mostly inside an earlier (better) one
        for q in dedup[:i]:
            assert (r.mask & q.mask).sum() < 0.8 * r.area
    no_nms = pam.describe_everything(image, tasks=(), box_nms_thresh=1.0)
    assert len(no_nms) > len(base)  # a grid clicks each object many times: NMS removes the repeats
    with pytest.raises(ValueError, match="points_per_side"):
        pam.describe_everything(image, points_per_side=0)
    with pytest.raises(ValueError, match="video task"):
        pam.describe_everything(image, tasks=["video_caption"])


def test_crop_layers_add_tile_masks_inside_their_tiles(pam, scenes):
    result = pam.describe_everything(scenes[2].image, tasks=(), crop_layers=1)
    tiles = [r for r in result if r.crop_box is not None]
    assert tiles, "no mask came from a tile"
    for r in tiles:
        x1, y1, x2, y2 = r.crop_box
        bx = r.bbox
        assert x1 <= bx[0] and y1 <= bx[1] and bx[2] <= x2 and bx[3] <= y2
        assert r.to_dict()["crop_box"] == [x1, y1, x2, y2]


def test_pieces():
    g = point_grid(4)
    assert g.shape == (16, 2) and g.min() == 0.125 and g.max() == 0.875
    logits = torch.tensor([[[3.0, 0.5, -0.5, -3.0]], [[-5.0, -5.0, -5.0, -5.0]]])
    # > +1: one pixel; > -1: three pixels -> 1/3; nothing above -1 -> 1 by definition
    assert stability_score(logits, 1.0).tolist() == pytest.approx([1 / 3, 1.0])
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 9]], dtype=torch.float64)
    scores = torch.tensor([0.5, 0.9, 0.8, 0.7], dtype=torch.float64)
    assert box_nms(boxes, scores, 0.7).tolist() == [1, 2]
    assert box_nms(boxes, scores, 0.95).tolist() == [1, 2, 3, 0]
    assert box_nms(boxes[:0], scores[:0], 0.5).numel() == 0


def test_cli_image_everything(tmp_path, scenes):
    from PIL import Image

    img = tmp_path / "scene.png"
    Image.fromarray(scenes[0].image).save(img)
    out = tmp_path / "out.json"
    cmd = [sys.executable, "-m", "perceive_anything.cli", "image", str(img), "--everything", "--max-regions", "3",
           "--max-new-tokens", "6", "--json", str(out), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    d = json.loads(out.read_text())
    assert 1 <= len(d["regions"]) <= 3
    assert all("stability_score" in r and r["outputs"][0]["task"] == "label" for r in d["regions"])
    bad = subprocess.run(cmd[:6] + ["--box", "1,1,20,20"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--everything finds the regions itself" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_video_objects_proposed_on_the_first_frame_are_tracked_and_captioned(pam, tmp_path):
    pytest.importorskip("av")
    from perceive_anything.everything import describe_everything_video
    from perceive_anything.processing.video import VideoWriter
    from perceive_anything.training.synthetic import generate_video

    video = generate_video(21, num_frames=8, size=128, num_objects=2, allow_exit=False)
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, fps=8) as w:
        for f in video.frames:
            w.write(f)
    result = describe_everything_video(pam, path, EverythingConfig(max_regions=3), num_frames=8, max_new_tokens=8)
    assert result.num_frames == 8 and 1 <= len(result) <= 3
    first = [binary_iou(o.mask(0), v.masks[0]) for o in result for v in video.objects]
    assert max(first) >= 0.5  # at least one proposal is a real object on the proposal frame
    for obj in result:
        assert len(obj.rles) == 8 and obj.caption
        assert obj.prompt["kind"] == "mask" and obj.prompt["mask_area"] > 0


def test_everything_options_map_onto_the_config():
    import argparse

    from perceive_anything.everything import EverythingConfig, add_everything_args, everything_config_from_args

    parser = argparse.ArgumentParser()
    add_everything_args(parser)
    cfg = everything_config_from_args(parser.parse_args(["--stability-thresh", "0.8", "--points-per-side", "8",
                                                         "--max-regions", "5", "--crop-layers", "1"]))
    assert (cfg.stability_score_thresh, cfg.points_per_side, cfg.max_regions, cfg.crop_layers) == (0.8, 8, 5, 1)
    assert cfg.pred_iou_thresh == EverythingConfig().pred_iou_thresh  # not given: the default
    assert everything_config_from_args(parser.parse_args([])) == EverythingConfig()
    with pytest.raises(ValueError):
        everything_config_from_args(parser.parse_args(["--points-per-side", "0"]))
