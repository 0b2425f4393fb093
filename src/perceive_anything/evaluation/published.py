"""The paper's published PAM-1.5B / PAM-3B numbers, the one table ``pam eval`` prints beside a run.

One row per (benchmark, metric) that a ``pam eval`` adapter reports, so filling in a number is a
values-only edit and a test checks every key against the adapters. ``None`` means "not known here".

State of the checking (see docs/evaluation.md, "Published numbers"): the paper's own page
(arxiv.org/html/2506.05302v1) was searched for every results table, but the stored copy reachable
from here holds only its opening (title, abstract, Figure 1), so **no value below has been read in
the paper** and none is ``verified``. The four values filled in come from a third-party leaderboard
listing of arXiv 2506.05302 that does not name the model size; they are printed with a "?" mark.
Once a number is read in one of the paper's tables, set it, name the table in ``source`` and set
``verified=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Published", "PUBLISHED", "published_for", "published_sources"]

_NOT_READ = ("arXiv 2506.05302: not read (the stored copy of the paper's page reachable here ends "
             "before its results tables)")
_LEADERBOARD = ("wizwand.com leaderboard entry for arXiv 2506.05302 (model size not stated there; "
                "assumed PAM-3B); not checked against the paper")


@dataclass(frozen=True)
class Published:
    benchmark: str
    metric: str
    pam_1_5b: float | None
    pam_3b: float | None
    source: str
    verified: bool = False


def _unread(benchmark: str, *metrics: str) -> tuple[Published, ...]:
    return tuple(Published(benchmark, m, None, None, _NOT_READ) for m in metrics)


PUBLISHED: tuple[Published, ...] = (
    # region recognition (LVIS, PACO, COCO-Text, Total-Text)
    *_unread("lvis", "semantic_similarity", "semantic_iou"),
    *_unread("paco", "semantic_similarity", "semantic_iou"),
    *_unread("coco-text", "accuracy"),
    *_unread("total-text", "accuracy"),
    # image region captioning
    *_unread("refcocog", "METEOR"),
    Published("refcocog", "CIDEr", None, 143.1, _LEADERBOARD),
    Published("vg", "METEOR", None, 20.8, _LEADERBOARD + "; listed there as 0.208"),
    *_unread("vg", "CIDEr"),
    Published("ref-l4", "ROUGE-L", None, 31.3, _LEADERBOARD),
    *_unread("ref-l4", "METEOR", "CIDEr"),
    *_unread("ferret-bench", "refer_caption", "refer_reason"),
    *_unread("mdvp-bench", "natural", "ocr", "screenshot", "multipanel", "all"),
    *_unread("dlc-bench", "positive", "negative", "average"),
    # video region captioning
    *_unread("elysium", "METEOR", "CIDEr"),
    *_unread("bensmot", "METEOR", "CIDEr"),
    *_unread("hc-stvg", "METEOR", "CIDEr"),
    *_unread("videorefer-d", "SC", "AD", "TD", "HD"),
    Published("videorefer-d", "average", None, 3.14,
              _LEADERBOARD + "; the PAM-3B row of Table 1 of arXiv 2605.18018 (SWIM), which compares "
              "with PAM, gives the same average"),
    # region-level streaming video captioning
    *_unread("streaming-activitynet", "METEOR", "CIDEr", "G-STDC"),
)


def published_for(benchmark: str, metric: str) -> Published | None:
    for p in PUBLISHED:
        if p.benchmark == benchmark and p.metric == metric:
            return p
    return None


def published_sources(benchmark: str) -> list[str]:
    """Where this benchmark's printed numbers come from, each source once, for rows that have a number."""
    seen: list[str] = []
    for p in PUBLISHED:
        if p.benchmark == benchmark and (p.pam_1_5b is not None or p.pam_3b is not None) and p.source not in seen:
            seen.append(p.source)
    return seen
