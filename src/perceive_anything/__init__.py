"""Perceive Anything Model (PAM) as a library."""
__version__ = "0.1.0"

from .config import PamConfig, PerceiverConfig, SegmenterConfig, segmenter_preset
from .processing.regions import Region, RegionError, box, mask, points
from .results import ImageResult, RegionResult, TaskOutput


def __getattr__(name):
    # The predictor pulls in torch/transformers; import it lazily so `import perceive_anything` stays light.
    if name in ("PerceiveAnything", "EncodedImage"):
        from . import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'perceive_anything' has no attribute {name!r}")


__all__ = [
    "PerceiveAnything",
    "EncodedImage",
    "PamConfig",
    "PerceiverConfig",
    "SegmenterConfig",
    "segmenter_preset",
    "Region",
    "RegionError",
    "box",
    "points",
    "mask",
    "ImageResult",
    "RegionResult",
    "TaskOutput",
]
