"""``pam golden``: run this implementation on golden fixtures of the official code and compare.

A fixture case folder holds ``manifest.json`` (inputs, prompts, generation kwargs, weights paths)
and ``outputs.safetensors`` (what the official code computed); the format is described in the
fixtures' README. Every case kind of that format is handled: ``image`` (box or points, any task
and language), ``video`` (box or points on frame 0) and ``stream`` (clips with the previous
caption as history and the box re-derived from the last mask of the previous clip).
"""

from .runner import CaseReport, find_cases, main, run_case

__all__ = ["CaseReport", "find_cases", "main", "run_case"]
