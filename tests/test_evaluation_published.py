"""The published-numbers table against what `pam eval` reports: every metric an adapter prints has its
row, every row names a real metric, and the printed result, results.json and the README show the
table's numbers (computed from the table here, not copied)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from perceive_anything.evaluation.benchmarks import BENCHMARKS
from perceive_anything.evaluation.published import PUBLISHED, published_for, published_sources
from perceive_anything.evaluation.runner import EvalRun

README = Path(__file__).resolve().parents[1] / "README.md"
PAPER = "arXiv 2506.05302"


def paper_cells(benchmark: str, metric: str, digits: int | None = 2) -> tuple[str, str]:
    """The PAM-1.5B / PAM-3B cells a table shows for one metric: the number, '?' when unverified, '—' if unknown."""
    p = published_for(benchmark, metric)
    assert p is not None, f"no published row for {benchmark} {metric}"

    def cell(v):
        if v is None:
            return "—"
        return (f"{v:.{digits}f}" if digits is not None else f"{v:g}") + ("" if p.verified else "?")

    return cell(p.pam_1_5b), cell(p.pam_3b)


def test_every_reported_metric_has_a_published_row():
    for name, bench in BENCHMARKS.items():
        for metric in bench.metrics:
            assert published_for(name, metric) is not None, f"{name}: {metric} has no row in PUBLISHED"


def test_every_published_row_names_a_reported_metric_once():
    keys = [(p.benchmark, p.metric) for p in PUBLISHED]
    assert len(keys) == len(set(keys)), "duplicate (benchmark, metric) rows"
    for bench, metric in keys:
        assert bench in BENCHMARKS, f"PUBLISHED names unknown benchmark {bench!r}"
        assert metric in BENCHMARKS[bench].metrics, f"{bench}: PUBLISHED names {metric!r}, the adapter reports {BENCHMARKS[bench].metrics}"


def test_numbers_carry_their_source():
    for p in PUBLISHED:
        has_number = p.pam_1_5b is not None or p.pam_3b is not None
        if p.verified:
            # a number read in the paper names the paper and the table it was read in
            assert has_number and PAPER in p.source and "Table" in p.source, p
        elif has_number:
            assert "not read" not in p.source and p.source, p
        assert all(v is None or v >= 0 for v in (p.pam_1_5b, p.pam_3b)), p


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_printed_result_shows_the_paper_numbers(tmp_path, name):
    bench = BENCHMARKS[name]
    scores = {m: 10.0 + i for i, m in enumerate(bench.metrics)}
    run = EvalRun(name, "embedded:tiny-shapes", {}, 3, 3, scores, None, tmp_path)
    text = run.markdown()
    assert "| metric | this run | PAM-1.5B (paper) | PAM-3B (paper) |" in text
    for metric in bench.metrics:
        want_15, want_3 = paper_cells(name, metric)
        assert f"| {metric} | {scores[metric]:.2f} | {want_15} | {want_3} |" in text
    sources = published_sources(name)
    for src in sources:
        assert f"published numbers: {src}" in text
    if not sources:
        assert "none filled in for this benchmark" in text
    rows = {r["metric"]: r for r in run.to_dict()["published"]}
    assert list(rows) == list(bench.metrics)
    for metric, r in rows.items():
        p = published_for(name, metric)
        assert (r["PAM-1.5B"], r["PAM-3B"], r["published_source"], r["verified"]) == (p.pam_1_5b, p.pam_3b, p.source, p.verified)


def test_readme_table_equals_the_published_table():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Evaluation: `pam eval`"):]
    section = section[:section.index("\n## ", 1)]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `pam eval ([\w-]+) [^`]*` \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2, 3, 4)]
    assert set(rows) == set(BENCHMARKS), "the README table has one command per benchmark of pam eval --list"
    for name, (metrics, col_15, col_3) in rows.items():
        bench = BENCHMARKS[name]
        assert metrics.removesuffix(" (judge)").split(" / ") == list(bench.metrics), name
        want = [paper_cells(name, m, digits=None) for m in bench.metrics]
        assert col_15 == " / ".join(w[0] for w in want), name
        assert col_3 == " / ".join(w[1] for w in want), name
