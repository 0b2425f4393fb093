"""Benchmark adapters, by ``pam eval`` name."""

from __future__ import annotations

from .base import Benchmark, DataError, Item, ScoreContext
from .captions import RefCOCOg, VisualGenome
from .dlc import DLCBench
from .ferret import FerretBench
from .mdvp import MDVPBench
from .ocr import CocoText, TotalText
from .recognition import LVIS, PACO
from .refl4 import RefL4
from .streaming import StreamingActivityNet
from .tracking import BenSMOT, Elysium
from .video import HCSTVG, VideoReferD

__all__ = ["BENCHMARKS", "Benchmark", "DataError", "Item", "ScoreContext", "get_benchmark"]

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    LVIS(), PACO(), CocoText(), TotalText(), RefCOCOg(), VisualGenome(), RefL4(), FerretBench(), MDVPBench(), DLCBench(),
    Elysium(), BenSMOT(), HCSTVG(), VideoReferD(), StreamingActivityNet(),
)}


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)} (pam eval --list)") from None
