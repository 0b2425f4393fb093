"""``benchmarks/server_load.py`` runs as a user runs it (a script, a results file), here with 30 requests."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("av")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "server_load.py"


def test_server_load_reports(tmp_path):
    out = tmp_path / "load.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--requests", "30", "--clients", "4", "--malformed", "0.5",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == result
    assert result["requests_completed"] == 30 and result["malformed_sent"] > 0
    assert result["server_alive"] and result["crashes"] == 0 and result["5xx"] == 0
    assert result["malformed_not_4xx"] == [] and result["valid_not_2xx"] == 0
    assert result["4xx"] >= result["malformed_sent"]
    assert sum(v["n"] for v in result["latency_ms"].values()) == 30 - result["malformed_sent"]
    for stats in result["latency_ms"].values():
        assert 0 < stats["p50"] <= stats["p95"]
    assert result["rss_mb"]["start"] > 0 and result["rss_mb"]["end"] > 0
