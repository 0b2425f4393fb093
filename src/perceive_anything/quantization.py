"""Weight-only int8 quantization of PAM's LLM (optional extra ``quantization``: ``optimum-quanto``).

Only the decoder's linear layers are quantized (per-output-channel int8 weights, activations stay in
the model dtype). The embedding and the LM head, which share one matrix in PAM, stay as they are: the
embedding is a lookup, and quantizing the head would untie it into a second copy. SAM 2, the
perceiver and the projectors are untouched (they are small next to a 1.5B/3B LLM, and SAM 2's
numerics drive the masks).

How much this costs in quality is measured, not assumed: ``benchmarks/speed.py --llm-int8`` and
``benchmarks/int8_quality.py`` report the token agreement with float32.
"""

from __future__ import annotations

from torch import nn

__all__ = ["quantize_llm_int8", "is_quantized"]


def _quanto():
    try:
        import optimum.quanto as quanto
    except ImportError:
        raise ImportError(
            "int8 quantization needs optimum-quanto: pip install 'perceive-anything[quantization]'"
        ) from None
    return quanto


def quantize_llm_int8(language: nn.Module) -> nn.Module:
    """Replace the LLM decoder's ``nn.Linear`` weights by int8 (in place); returns ``language``.

    ``language`` is a :class:`~perceive_anything.modeling.language.PamLanguageModel`. Idempotent:
    a model already quantized is returned unchanged.
    """
    quanto = _quanto()
    decoder = language.llm.model
    if is_quantized(language):
        return language
    # lm_head is outside ``llm.model`` and embed_tokens is no Linear: both stay tied and unquantized.
    quanto.quantize(decoder, weights=quanto.qint8, activations=None)
    quanto.freeze(decoder)
    return language


def is_quantized(language: nn.Module) -> bool:
    """True when some layer of the LLM decoder holds quantized weights."""
    try:
        from optimum.quanto.nn import QModuleMixin
    except ImportError:
        return False
    return any(isinstance(m, QModuleMixin) for m in language.llm.model.modules())
