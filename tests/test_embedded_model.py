"""The embedded default model: loads with no model named, and `pam demo` runs offline end to end."""

import json
import subprocess
import sys

import pytest

from perceive_anything.checkpoints import embedded_model_dir

pytestmark = pytest.mark.skipif(embedded_model_dir() is None, reason="no embedded model in this checkout")


def test_loads_when_no_model_is_named():
    from perceive_anything import PerceiveAnything

    pam = PerceiveAnything.from_pretrained()
    assert pam.name == "tiny-shapes"
    assert pam.config.segmenter.image_size == 256 and pam.config.image_tokens_per_region == 82


def test_pam_demo_runs_offline(tmp_path):
    r = subprocess.run([sys.executable, "-m", "perceive_anything.cli", "demo", "--out", str(tmp_path), "--quiet"],
                       capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["model"] == "tiny-shapes"
    assert len(report["image"]["regions"]) >= 3
    for name in ("scene.png", "scene_overlay.png", "video.mp4", "video_overlay.mp4"):
        assert (tmp_path / name).stat().st_size > 0
