"""Shared test helpers: where the golden fixtures live (``PAM_SHARED_DIR`` or ``<repo>/../shared``)."""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

SHARED_DIR = Path(os.environ.get("PAM_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder (``golden/``, ...); skips the test when it is not there."""
    if not (SHARED_DIR / "golden" / "compare.py").is_file():
        pytest.skip(f"shared golden fixtures not available at {SHARED_DIR}")
    return SHARED_DIR


@dataclass
class GoldenCase:
    dir: Path
    manifest: dict
    compare: ModuleType  # golden/compare.py (compare_case, format_report, ...)

    @property
    def weights(self) -> Path:
        return self.dir.parent / "weights"

    def outputs(self) -> dict:
        from safetensors.torch import load_file

        return load_file(str(self.dir / "outputs.safetensors"))


@pytest.fixture(scope="session")
def golden_case(shared_dir):
    """``golden_case(name)`` -> ``GoldenCase`` (skips when that case is absent)."""
    golden = shared_dir / "golden"
    spec = importlib.util.spec_from_file_location("pam_golden_compare", golden / "compare.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)

    def load(name: str) -> GoldenCase:
        case_dir = golden / name
        if not (case_dir / "manifest.json").is_file():
            pytest.skip(f"golden case {name} not available")
        return GoldenCase(case_dir, json.loads((case_dir / "manifest.json").read_text()), compare)

    return load


@pytest.fixture(scope="session")
def tiny_pam_dir(tmp_path_factory) -> Path:
    """A tiny random PAM saved in this package's format (built once per test session)."""
    from tiny_model import build_tiny_pam

    return build_tiny_pam(tmp_path_factory.mktemp("tiny_pam"))


@pytest.fixture(scope="session")
def tiny_pam(tiny_pam_dir):
    from perceive_anything import PerceiveAnything

    return PerceiveAnything.from_pretrained(tiny_pam_dir)


@pytest.fixture(scope="session")
def pam_server(tmp_path_factory):
    """One real ``pam serve`` process (embedded model, loopback, small limits that the bad-input
    tests exercise: 2 MB bodies, 4 megapixels, a queue of 4) shared by every server test."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    from server_process import start_server

    server = start_server(tmp_path_factory.mktemp("pam_serve"), "--max-upload-mb", "2", "--max-pixels", "4000000",
                          "--queue", "4")
    yield server
    server.stop()
