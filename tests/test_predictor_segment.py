"""``PerceiveAnything.segment``: the masks and scores of ``perceive`` without running the LLM."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from perceive_anything.processing.regions import RegionError


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)


def test_segment_matches_perceive_masks(tiny_pam, image):
    regions = [[2, 3, 40, 30], {"points": [[10, 12], [30, 20]], "labels": [1, 0]}, {"mask": np.pad(np.ones((10, 10)), ((5, 33), (7, 47)))}]
    enc = tiny_pam.encode(image)
    seg = tiny_pam.segment(enc, regions)
    full = tiny_pam.perceive(enc, regions, task="label", max_new_tokens=3)
    assert seg.image_size == (64, 48) and len(seg) == 3
    for s, f in zip(seg, full):
        assert s.outputs == [] and f.outputs
        assert s.mask.shape == (48, 64) and s.mask.dtype == bool
        assert np.array_equal(s.mask, f.mask)
        assert s.object_score == pytest.approx(f.object_score, abs=1e-5) and s.iou == pytest.approx(f.iou, abs=1e-5)
        assert s.prompt == f.prompt
    assert [r.prompt["kind"] for r in seg] == ["box", "points", "mask"]
    assert seg.timings.generate == 0 and seg.timings.segment > 0
    d = seg.to_dict()
    assert [r["outputs"] for r in d["regions"]] == [[], [], []]
    # an image path / array works like perceive's and is encoded on the fly
    again = tiny_pam.segment(image, regions[:1], return_mask_logits=True)
    assert np.array_equal(again[0].mask, seg[0].mask) and again[0].mask_logits.shape == (48, 64)


def test_segment_checks_regions_like_perceive(tiny_pam, image):
    with pytest.raises(RegionError, match="region 1: box .* zero area or is inverted"):
        tiny_pam.segment(image, [[1, 1, 5, 5], [9, 9, 3, 3]])
    with pytest.raises(RegionError, match="empty"):
        tiny_pam.segment(image, [])


def test_pam_serve_warns_when_bound_beyond_loopback(tmp_path):
    """The warning comes before the model loads, so a missing model ends the run (one-line error)
    without ever binding the public address."""
    r = subprocess.run([sys.executable, "-m", "perceive_anything.cli", "serve", "--host", "0.0.0.0",
                        "--model", str(tmp_path / "missing")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "warning: listening on 0.0.0.0" in r.stderr and "no authentication" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("pam: error:") and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "perceive_anything.cli", "serve", "--allowed-root", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--allowed-root" in r.stderr and "not a folder" in r.stderr


def test_a_question_can_be_asked_next_to_other_tasks(tiny_pam, image):
    res = tiny_pam.perceive(image, [[2, 3, 40, 30]], task=["label", "question"], question="What is it?", max_new_tokens=3)
    assert [o.task for o in res[0].outputs] == ["label", "question"]
    with pytest.raises(ValueError, match="needs question"):
        tiny_pam.perceive(image, [[2, 3, 40, 30]], task=["label", "question"], max_new_tokens=3)
