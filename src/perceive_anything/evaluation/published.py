"""The paper's published PAM-1.5B / PAM-3B numbers, the one table ``pam eval`` prints beside a run.

Each entry names where its number comes from. The paper's text was not available when this table was
written, so no number here has been checked against the paper's tables: the few filled in come from a
third-party leaderboard that lists the paper's results (wizwand.com, "Perceive Anything" page), which does
not say which model size it quotes; they are marked ``verified=False`` and printed with a "?" mark. ``None``
means "not known here" -- fill it from the paper (arXiv 2506.05302) and set ``verified=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Published", "PUBLISHED", "published_for"]

_LEADERBOARD = "wizwand.com leaderboard entry for arXiv 2506.05302 (model size not stated; assumed PAM-3B)"


@dataclass(frozen=True)
class Published:
    benchmark: str
    metric: str
    pam_1_5b: float | None
    pam_3b: float | None
    source: str
    verified: bool = False


PUBLISHED: tuple[Published, ...] = (
    Published("refcocog", "CIDEr", None, 143.1, _LEADERBOARD),
    Published("vg", "METEOR", None, 20.8, _LEADERBOARD + "; listed as 0.208"),
    Published("ref-l4", "ROUGE-L", None, 31.3, _LEADERBOARD),
    Published("videorefer-d", "average", None, 3.14, _LEADERBOARD),
)


def published_for(benchmark: str, metric: str) -> Published | None:
    for p in PUBLISHED:
        if p.benchmark == benchmark and p.metric == metric:
            return p
    return None
