"""Checkpoint formats: official -> ours -> identical outputs; strict loading; hub ids offline."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from perceive_anything import PerceiveAnything
from perceive_anything.checkpoints import CheckpointError, load_pretrained


def _same_outputs(a, b, image, regions):
    ra = a.perceive(image, regions, task=["label", "brief_caption"], max_new_tokens=6)
    rb = b.perceive(image, regions, task=["label", "brief_caption"], max_new_tokens=6)
    for x, y in zip(ra, rb):
        assert (x.mask == y.mask).all() and x.object_score == y.object_score
        assert [o.token_ids for o in x.outputs] == [o.token_ids for o in y.outputs]


def test_native_round_trip_is_exact(tiny_pam, tiny_pam_dir, tmp_path):
    from perceive_anything.checkpoints import LoadedModel, save_pretrained

    out = save_pretrained(LoadedModel(tiny_pam.model, tiny_pam.tokenizer, tiny_pam.generation, "t", ""), tmp_path / "copy")
    again = PerceiveAnything.from_pretrained(out)
    for k, v in tiny_pam.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k]), k
    img = torch.rand(96, 128, 3).mul(255).byte().numpy()
    _same_outputs(tiny_pam, again, img, [[5, 5, 60, 70], [30, 20, 120, 90]])


def _corrupt(folder, dst, edit):
    import shutil

    shutil.copytree(folder, dst)
    sd = load_file(str(dst / "model.safetensors"))
    from safetensors import safe_open

    with safe_open(str(dst / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    edit(sd)
    save_file(sd, str(dst / "model.safetensors"), metadata=meta)
    return dst


def test_strict_native_load_names_every_problem(tiny_pam_dir, tmp_path):
    def drop(sd):
        sd.pop("language.mm_projector_semT.0.weight")

    def extra(sd):
        sd["language.unused.weight"] = torch.zeros(3)

    def reshape(sd):
        sd["language.image_newline"] = torch.zeros(7)

    for edit, message in [(drop, "missing keys (1):\n    language.mm_projector_semT.0.weight"),
                          (extra, "unexpected keys (1):\n    language.unused.weight"),
                          (reshape, "language.image_newline: checkpoint (7,) vs model (128,)")]:
        bad = _corrupt(tiny_pam_dir, tmp_path / edit.__name__, edit)
        with pytest.raises(CheckpointError) as err:
            PerceiveAnything.from_pretrained(bad)
        assert message in str(err.value)


def test_unknown_folders_and_missing_sam2(tmp_path, shared_dir):
    (tmp_path / "x").mkdir()
    with pytest.raises(CheckpointError, match="neither a perceive-anything folder"):
        load_pretrained(tmp_path / "x")
    with pytest.raises(CheckpointError, match="SAM 2.1 weights are a separate file"):
        load_pretrained(shared_dir / "golden" / "weights" / "pam_model")


def test_hub_ids_fail_clearly_offline(tmp_path):
    code = (
        "from perceive_anything.checkpoints import load_pretrained\n"
        "try:\n    load_pretrained('Perceive-Anything/PAM-3B')\n"
        "except Exception as e:\n    print(type(e).__name__, e)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "HubUnavailableError" in r.stdout and "Perceive-Anything/PAM-3B" in r.stdout and "offline" in r.stdout


def test_official_to_ours_gives_identical_outputs(shared_dir, tmp_path):
    w = shared_dir / "golden" / "weights"
    sam2 = w / "sam2" / "sam2.1_hiera_parity.pt"
    official = PerceiveAnything.from_pretrained(w / "pam_model", sam2=sam2)
    r = subprocess.run([sys.executable, "-m", "perceive_anything.cli", "convert", str(w / "pam_model"),
                        "--sam2", str(sam2), "--out", str(tmp_path / "ours"), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["saved"] == str(tmp_path / "ours")
    ours = PerceiveAnything.from_pretrained(tmp_path / "ours")
    assert ours.model.config.to_dict() == official.model.config.to_dict()
    assert ours.generation == official.generation  # the repetition penalty and EOS ids travel along
    image = shared_dir / "golden" / "case_A_image_box_detailcap_en" / "inputs" / "image.jpg"
    _same_outputs(official, ours, image, [[72, 106, 156, 190], {"points": [[100, 150], [30, 30]], "labels": [1, 0]}])


def test_official_sam2_preset_from_file_name(shared_dir, tmp_path):
    """Without a yaml beside it, the SAM 2.1 size comes from the official file name; a wrong size is a
    strict-load error naming the mismatched tensors."""
    import shutil

    w = shared_dir / "golden" / "weights"
    pt = tmp_path / "sam2.1_hiera_tiny.pt"
    shutil.copy(w / "sam2" / "sam2.1_hiera_parity.pt", pt)
    with pytest.raises(ValueError, match="does not match the model"):
        load_pretrained(w / "pam_model", sam2=pt)
    odd = tmp_path / "weights.pt"
    shutil.copy(pt, odd)
    (tmp_path / "sam2.1_hiera_tiny.pt").unlink()
    with pytest.raises(CheckpointError, match="cannot tell which SAM 2.1 size"):
        load_pretrained(w / "pam_model", sam2=odd)
