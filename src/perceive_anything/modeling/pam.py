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

    def __init__(
        self,
        config: PamConfig,
        segmenter: PamSegmenter | None = None,
        language: PamLanguageModel | None = None,
    ):
        super().__init__()
        self.config = config
        # Parts already built by a checkpoint loader are adopted as they are.
        self.segmenter = segmenter if segmenter is not None else PamSegmenter(config.segmenter)
        self.language = language if language is not None else PamLanguageModel(config)

    def cast(self, device=None, dtype=None) -> "PamModel":
        """``.to(device, dtype)`` that keeps the LLM's RoPE inverse frequencies in float32.

        The official model computes its rotary tables in fp32 even when running in bf16; casting the
        buffer would round the frequencies and move every position's angle.
        """
        rotary = self.language.llm.model.rotary_emb
        keep = {name: buf.detach().clone().float() for name, buf in rotary.named_buffers(recurse=False)}
        self.to(device=device, dtype=dtype)
        for name, buf in keep.items():
            setattr(rotary, name, buf.to(device=buf.device if device is None else device))
        return self

    @property
    def device(self):
        return next(self.parameters()).device

    @property
    def dtype(self):
        return next(self.parameters()).dtype
