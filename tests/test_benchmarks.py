"""The on-demand benchmarks run as a user runs them (a script, a results file), here for a few steps."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("trunk, extra", [
    ("hiera", []), ("cnn", []), ("crop-cnn", []),
    # the crop-to-scene curricula and the per-cell term of the Hiera probe
    ("hiera", ["--crop-steps", "1", "--crop-mode", "box"]),
    ("hiera", ["--crop-steps", "1", "--crop-mode", "window", "--crop-size", "128"]),
    ("hiera", ["--crop-steps", "2", "--crop-mode", "zoom", "--dense", "1"]),
    ("hiera", ["--box-readout", "16", "--upscale", "2"]),
])
def test_shape_probe_runs_and_reports(trunk, extra, tmp_path):
    out = tmp_path / "probe.json"
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "shape_probe.py"), "--trunk", trunk, "--steps", "2", "--eval-every", "1",
         "--threads", "1", "--out", str(out), *extra],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == result
    assert result["trunk"] == trunk and result["steps"] == 2
    assert [c["step"] for c in result["curve"]] == [0, 1, 2]
    for name in ("shape_accuracy", "color_accuracy"):
        assert 0.0 <= result["final"][name] <= 1.0
    assert result["parameters_trained"] > 0


def test_shape_probe_rejects_an_unknown_hiera_field(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "shape_probe.py"), "--steps", "1", "--hiera", '{"no_such_field": 1}',
         "--out", str(tmp_path / "x.json")],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "SegmenterConfig has no field 'no_such_field'" in proc.stderr
    assert not (tmp_path / "x.json").exists()


def test_compile_decode_measures_eager_and_compiled_decoding(tmp_path):
    """benchmarks/compile_decode.py on the embedded model, 3 tokens: both sides timed, same tokens."""
    import shutil

    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("torch.compile (inductor) needs a C++ compiler on the CPU")
    out = tmp_path / "compile.json"
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "compile_decode.py"), "--models", "embedded", "--rows", "2",
         "--tokens", "3", "--runs", "1", "--variants", "ours", "--out", str(out)],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == result
    (row,) = result["results"]
    assert (row["variant"], row["model"], row["rows"], row["tokens"]) == ("ours", "embedded", 2, 3)
    assert row["eager_step_ms"] > 0 and row["compiled_step_ms"] > 0
    assert row["first_compiled_generate_s"] >= row["compiled_generate_s"]
    assert row["same_tokens"] is True


def test_mask_prompt_probe_runs_each_mode_and_the_silhouette_reaches_the_heads(tmp_path):
    results = {}
    for mode in ("control", "pred", "gt"):
        out = tmp_path / f"{mode}.json"
        proc = subprocess.run(
            [sys.executable, str(BENCHMARKS / "mask_prompt_probe.py"), "--mode", mode, "--steps", "1",
             "--eval-every", "1", "--out", str(out)],
            capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results[mode] = json.loads(out.read_text())
        assert json.loads(proc.stdout.strip().splitlines()[-1]) == results[mode]
        assert [c["step"] for c in results[mode]["curve"]] == [0, 1]
        for point in results[mode]["curve"]:
            assert all(0.0 <= point[k] <= 1.0 for k in ("shape", "colour", "mask_iou"))
    # before any training the dense prompt is the only difference: the ground-truth silhouette
    # changes (and improves) the shipped model's masks, so it does reach the heads
    before = {mode: r["curve"][0] for mode, r in results.items()}
    assert before["gt"]["mask_iou"] != before["control"]["mask_iou"]
