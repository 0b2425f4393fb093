"""The whole PAM model: a SAM 2.1 segmenter feeding the semantic (perceiver + projectors + LLM) side.

Pure ``nn.Module`` composition; pixels, prompts and text are prepared by ``processing`` and the
user-facing loop lives in ``predictor``.
"""

from __future__ import annotations

from torch import nn

from ..config import PamConfig
from .language import PamLanguageModel
from .segmenter import PamSegmenter


class PamModel(nn.Module):
    """``segmenter`` (SAM 2.1 with PAM's intermediate features) + ``language`` (perceiver, projectors, LLM).

    State-dict names of the package's own format are ``segmenter.*`` and ``language.*``.
    """

    def __init__(self, config: PamConfig):
        super().__init__()
        self.config = config
        self.segmenter = PamSegmenter(config.segmenter)
        self.language = PamLanguageModel(config)

    @property
    def device(self):
        return next(self.parameters()).device

    @property
    def dtype(self):
        return next(self.parameters()).dtype
