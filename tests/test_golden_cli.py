"""`pam golden` over every fixture in the shared folder, as a user runs it; its dump is judged by the
fixtures' own independent checker (golden/compare.py) too."""

import json
import subprocess
import sys

import pytest


def _cases(shared_dir):
    return sorted(p.parent for p in (shared_dir / "golden").glob("*/manifest.json"))


def test_pam_golden_passes_every_fixture(shared_dir, golden_case, tmp_path):
    cases = _cases(shared_dir)
    assert cases, "no fixture case found"
    r = subprocess.run([sys.executable, "-m", "perceive_anything.cli", "golden", *map(str, cases), "--dump", str(tmp_path)],
                       capture_output=True, text=True)
    print(r.stdout[-4000:])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert f"{len(cases)} passed, 0 failed" in r.stdout
    from safetensors.torch import load_file

    for case in cases:
        gc = golden_case(case.name)
        produced = load_file(str(tmp_path / f"{case.name}.safetensors"))
        texts = json.loads((tmp_path / f"{case.name}.json").read_text())
        rep = gc.compare.compare_case(str(case), produced, texts=texts)
        assert rep["ok"], gc.compare.format_report(rep, show_pass=False)


def test_pam_golden_reports_failures(shared_dir, tmp_path):
    """A case whose inputs no longer fit its outputs must fail loudly, not pass or skip."""
    import shutil

    src = shared_dir / "golden" / "case_A_image_box_detailcap_en"
    if not src.exists():
        pytest.skip("case A absent")
    root = tmp_path / "golden"
    case = root / src.name
    shutil.copytree(src, case)
    (root / "weights").symlink_to(shared_dir / "golden" / "weights")
    man = json.loads((case / "manifest.json").read_text())
    man["inputs"]["visual_prompts"] = [80, 110, 150, 180]  # a different box
    (case / "manifest.json").write_text(json.dumps(man))
    r = subprocess.run([sys.executable, "-m", "perceive_anything.cli", "golden", str(case)], capture_output=True, text=True)
    assert r.returncode == 1
    assert "FAIL" in r.stdout and "sam2.prompt.point_coords" in r.stdout and "0 passed, 1 failed" in r.stdout
