"""`pam golden` on the extra fixtures of tests/golden_extra: produced by the official code
(tools/make_golden_extra.py) for three model shapes unlike the public fixture's, on image, video and
stream cases. They live in the repository, so these tests run without ../shared."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXTRA = Path(__file__).resolve().parent / "golden_extra"


def _cases():
    return sorted(p.parent for p in EXTRA.glob("*/manifest.json"))


def test_extra_fixtures_cover_the_issue():
    mans = [json.loads((c / "manifest.json").read_text()) for c in _cases()]
    kinds = {m["kind"] for m in mans}
    assert kinds == {"image", "video", "stream"}
    shapes = {m["weights"]["pam_model"] for m in mans}
    assert len(shapes) >= 3
    untied = [s for s in shapes if not json.loads((EXTRA / "x" / s / "config.json").resolve().read_text())["tie_word_embeddings"]]
    assert untied
    frames = {len(m["inputs"]["frames"]) for m in mans if m["kind"] == "video"}
    assert frames & {17, 33}
    assert any(len(m["clips"]) >= 4 for m in mans if m["kind"] == "stream")
    assert any(m["inputs"].get("vp_labels") and 0 in m["inputs"]["vp_labels"] for m in mans)
    assert any(m["inputs"]["frame_size_wh"][1] > m["inputs"]["frame_size_wh"][0] for m in mans)
    assert any(m["inputs"]["task_mode"].endswith("_ch") for m in mans)


def test_pam_golden_passes_every_extra_fixture(tmp_path):
    cases = _cases()
    r = subprocess.run([sys.executable, "-m", "perceive_anything.cli", "golden", str(EXTRA), "--dump", str(tmp_path)],
                       capture_output=True, text=True)
    print(r.stdout[-6000:])
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert f"{len(cases)} passed, 0 failed" in r.stdout
    assert "FAIL" not in r.stdout
    # every stream clip's derived box (the next clip's prompt) is checked
    clips = sum(len(json.loads((c / "manifest.json").read_text()).get("clips", [])) for c in cases)
    assert sum(1 for line in r.stdout.splitlines() if "box_from_last_mask_xyxy" in line and "exact" in line) == clips
    for case in cases:
        assert (tmp_path / f"{case.name}.json").is_file()


def test_pam_golden_dumps_agree_with_the_independent_checker(shared_dir, tmp_path):
    """The shared fixtures' own checker (golden/compare.py) judges a dump of the extra cases too."""
    import importlib.util

    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location("pam_golden_compare", shared_dir / "golden" / "compare.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    case = next(c for c in _cases() if json.loads((c / "manifest.json").read_text())["kind"] == "image")
    r = subprocess.run([sys.executable, "-m", "perceive_anything.cli", "golden", str(case), "--dump", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]
    rep = compare.compare_case(str(case), load_file(str(tmp_path / f"{case.name}.safetensors")),
                               texts=json.loads((tmp_path / f"{case.name}.json").read_text()))
    assert rep["ok"] and rep["counts"]["missing"] == 0, compare.format_report(rep, show_pass=False)


def test_weights_recipe_is_checked(tmp_path):
    """Recipe weights are regenerated bit-exactly or refused: a changed generator cannot pass silently."""
    import shutil

    from perceive_anything.golden.weights_recipe import materialize

    root = next(p.parent for p in (EXTRA / "weights").glob("*/recipe.json"))
    copy = tmp_path / root.name
    shutil.copytree(root, copy)
    shutil.copytree(EXTRA / "weights" / "tokenizer", tmp_path / "tokenizer")
    recipe = json.loads((copy / "recipe.json").read_text())
    spec = next(iter(recipe["files"].values()))
    name, shape, dtype, init = spec["tensors"][0]
    spec["tensors"][0][3] = [init[0], init[1], float(init[2]) * 1.01] if init[0] == "uniform" else ["const", 0.5]
    (copy / "recipe.json").write_text(json.dumps(recipe))
    with pytest.raises(ValueError, match="does not match the recorded SHA-256"):
        materialize(copy, tmp_path / "out")
