"""Token decoding for PAM on top of ``transformers.Qwen2ForCausalLM`` with a KV cache.

Generation starts from ``inputs_embeds`` (text embeddings with the visual block spliced in), so the
returned ids are new tokens only, and the repetition penalty only ever sees generated tokens — exactly
what the official ``generate`` does (fixture quirk 7). Logit processing follows the Hugging Face
order: repetition penalty -> temperature -> top-k -> top-p, then argmax or multinomial sampling.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "GenerationSettings",
    "GenerationOutput",
    "SharedPrompt",
    "StepEvent",
    "process_logits",
    "stream",
    "generate",
    "eos_ids_from",
]


@dataclass
class GenerationSettings:
    """Decoding settings. The default is deterministic greedy decoding without penalty.

    ``None`` for ``temperature``/``top_k``/``top_p``/``repetition_penalty`` means "off", like a value of
    1.0 / 0 / 1.0 / 1.0 in Hugging Face. Temperature, top-k and top-p only act when ``do_sample``.
    """

    max_new_tokens: int = 512
    do_sample: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    eos_token_id: list[int] = field(default_factory=list)
    pad_token_id: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.eos_token_id, int):
            self.eos_token_id = [self.eos_token_id]
        self.eos_token_id = [int(i) for i in (self.eos_token_id or [])]
        if self.max_new_tokens < 0:
            raise ValueError("max_new_tokens must be >= 0")
        if self.temperature is not None and self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.temperature is not None and self.temperature == 0 and self.do_sample:
            raise ValueError("sampling needs temperature > 0 (use do_sample=False for greedy decoding)")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if self.repetition_penalty is not None and self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")

    def replace(self, **changes) -> GenerationSettings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def greedy(cls, **overrides) -> GenerationSettings:
        """Deterministic greedy decoding (no penalty unless given)."""
        return cls(**overrides)

    @classmethod
    def from_generation_config_json(cls, path: str | Path, **overrides) -> GenerationSettings:
        """Read a Hugging Face ``generation_config.json``. Keyword overrides win, as call-time kwargs do in
        ``generate``; fields the call does not override (repetition penalty, top_k, EOS ids) stay active."""
        data = json.loads(Path(path).read_text())
        eos = data.get("eos_token_id")
        kwargs = dict(
            do_sample=bool(data.get("do_sample", False)),
            temperature=data.get("temperature"),
            top_k=data.get("top_k"),
            top_p=data.get("top_p"),
            repetition_penalty=data.get("repetition_penalty"),
            eos_token_id=[] if eos is None else ([eos] if isinstance(eos, int) else list(eos)),
            pad_token_id=data.get("pad_token_id"),
        )
        if data.get("max_new_tokens") is not None:
            kwargs["max_new_tokens"] = int(data["max_new_tokens"])
        kwargs.update(overrides)
        return cls(**kwargs)

    def official_notebook(self) -> GenerationSettings:
        """The notebooks' call (temperature 0.1, sampling, top_p None, 512 new tokens) on top of these
        settings, so a checkpoint's top_k and repetition penalty keep applying as they did officially."""
        return self.replace(do_sample=True, temperature=0.1, top_p=None, max_new_tokens=512)

    def official_greedy(self, max_new_tokens: int | None = None) -> GenerationSettings:
        """The golden fixtures' call (``do_sample=False, temperature=None, top_p=None``); the
        repetition penalty of the generation config still applies."""
        return self.replace(
            do_sample=False,
            temperature=None,
            top_p=None,
            max_new_tokens=self.max_new_tokens if max_new_tokens is None else max_new_tokens,
        )

    @classmethod
    def notebook_preset(cls, generation_config_json: str | Path | None = None) -> GenerationSettings:
        base = cls() if generation_config_json is None else cls.from_generation_config_json(generation_config_json)
        return base.official_notebook()


@dataclass
class StepEvent:
    """One decoding step. ``tokens`` (B,) are the ids chosen at this step (``pad_token_id`` for rows
    that had already finished); ``active`` (B,) marks the rows that really produced ``tokens``."""

    step: int
    tokens: Tensor
    active: Tensor
    logits: Tensor
    scores: Tensor


@dataclass
class GenerationOutput:
    """``sequences`` (B, n): new tokens, padded with ``pad_token_id`` after a row's EOS; ``lengths``
    (B,) the number of real tokens per row (EOS included); ``step_logits``/``step_scores`` (n, B, V):
    raw logits and processed scores of every step when recorded."""

    sequences: Tensor
    lengths: Tensor
    step_logits: Tensor | None = None
    step_scores: Tensor | None = None

    def row_tokens(self, row: int = 0) -> list[int]:
        return self.sequences[row, : int(self.lengths[row])].tolist()

    def capture_dict(self) -> dict[str, Tensor]:
        """Tensors under the golden names (batch-1 shapes of the fixtures; batch dim kept for B > 1)."""
        out = {"llm.output_ids": self.sequences.clone()}
        if self.step_logits is not None and self.step_logits.shape[0]:
            b = self.step_logits.shape[1]
            out["llm.first_token_logits"] = self.step_logits[0].clone()
            if b == 1:
                out["llm.step_logits"] = self.step_logits[:, 0].clone()
                out["llm.step_scores"] = self.step_scores[:, 0].clone()
            else:
                out["llm.step_logits"] = self.step_logits.transpose(0, 1).clone()
                out["llm.step_scores"] = self.step_scores.transpose(0, 1).clone()
        return out


def process_logits(logits: Tensor, generated: Tensor, settings: GenerationSettings) -> Tensor:
    """Hugging Face logits processing for one step: ``logits`` (B, V) float, ``generated`` (B, n) ids."""
    scores = logits
    penalty = settings.repetition_penalty
    if penalty is not None and penalty != 1.0 and generated.shape[1] > 0:
        picked = torch.gather(scores, 1, generated)
        picked = torch.where(picked < 0, picked * penalty, picked / penalty)
        scores = scores.scatter(1, generated, picked)
    if not settings.do_sample:
        return scores
    if settings.temperature is not None and settings.temperature != 1.0:
        scores = scores / settings.temperature
    if settings.top_k is not None and settings.top_k > 0:
        k = min(int(settings.top_k), scores.shape[-1])
        kth = torch.topk(scores, k)[0][..., -1, None]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if settings.top_p is not None and settings.top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(scores, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cum <= (1 - settings.top_p)
        remove_sorted[..., -1:] = False
        remove = remove_sorted.scatter(1, sorted_idx, remove_sorted)
        scores = scores.masked_fill(remove, float("-inf"))
    return scores


def _cache_keyword(llm) -> str:
    """The keyword ``llm.forward`` takes its KV cache by: ``cache`` from transformers 5.x releases that
    renamed it (``past_key_values`` then warns and is removed in 5.40), ``past_key_values`` before.
    Wrappers with a ``**kwargs`` signature (peft) are looked through to their base model."""
    import inspect

    model = llm
    for _ in range(4):
        params = inspect.signature(model.forward).parameters
        if "cache" in params:
            return "cache"
        if "past_key_values" in params:
            return "past_key_values"
        inner = getattr(model, "get_base_model", None) or getattr(model, "base_model", None)
        model = inner() if callable(inner) and not isinstance(inner, torch.nn.Module) else inner
        if model is None:
            break
    return "past_key_values"


@dataclass
class SharedPrompt:
    """Rows whose inputs are ``prefix + segments[segment_of_row[b]] + suffixes[b]``, prefilled so that
    what rows share is computed once: each of the G ``segments`` (G, N, H), behind the ``prefix``
    (P, H; P may be 0), once for all the rows that name it, then every row's own ``suffix``
    (s_b >= 1, H) on a copy of its segment's KV cache. Suffixes of different lengths are padded
    between the segment and the suffix (masked, with positions counting real tokens only), so a row
    decodes as it would alone. Used for a region's visual block shared by several tasks.

    ``prefix_once`` also prefills the prefix once for all segments (batch 1, then repeated). It is off
    by default because it does not pay with SDPA: the segments then attend to a cache they do not
    start, so their attention needs a materialised causal mask instead of the ``is_causal`` kernel,
    and for PAM's prompts (a 14-20-token chat header before ~1,000 visual tokens) that costs more
    than the header saves (``docs/speed.md``)."""

    prefix: Tensor
    segments: Tensor
    segment_of_row: Tensor
    suffixes: list[Tensor]
    prefix_once: bool = False

    def __post_init__(self) -> None:
        if self.prefix.dim() != 2 or self.segments.dim() != 3:
            raise ValueError(f"prefix must be (P, H) and segments (G, N, H), got {tuple(self.prefix.shape)} "
                             f"and {tuple(self.segments.shape)}")
        h = self.segments.shape[-1]
        if self.prefix.shape[-1] != h or any(x.dim() != 2 or x.shape[-1] != h for x in self.suffixes):
            raise ValueError(f"prefix, segments and suffixes must all have width {h}")
        if self.segments.shape[1] == 0:
            raise ValueError("segments must not be empty")
        if not self.suffixes or any(x.shape[0] == 0 for x in self.suffixes):
            raise ValueError("every row needs a suffix of at least one position")
        self.segment_of_row = torch.as_tensor(self.segment_of_row, dtype=torch.long, device=self.segments.device)
        if self.segment_of_row.shape != (len(self.suffixes),):
            raise ValueError(f"segment_of_row must name one segment per row ({len(self.suffixes)} rows)")
        if bool(((self.segment_of_row < 0) | (self.segment_of_row >= self.segments.shape[0])).any()):
            raise ValueError(f"segment_of_row must index the {self.segments.shape[0]} segments")

    @property
    def batch_size(self) -> int:
        return len(self.suffixes)

    @property
    def device(self) -> torch.device:
        return self.segments.device


def _make_generator(settings: GenerationSettings, generator: torch.Generator | None, device: torch.device):
    if generator is not None or settings.seed is None:
        return generator
    g = torch.Generator(device=device)
    g.manual_seed(int(settings.seed))
    return g


def _new_cache(llm) -> dict:
    """An empty ``DynamicCache`` under the keyword ``llm.forward`` takes it by."""
    from transformers import DynamicCache

    return {_cache_keyword(llm): DynamicCache(config=llm.config)}


def _prefill(llm, inputs_embeds: Tensor, attention_mask: Tensor | None):
    """One forward over left-padded rows. Returns (output, the ``llm`` keyword holding the KV cache,
    attention mask, position of each row's next token)."""
    b, length, _ = inputs_embeds.shape
    device = inputs_embeds.device
    if attention_mask is None:
        attention_mask = torch.ones((b, length), dtype=torch.long, device=device)
    attention_mask = attention_mask.to(device=device, dtype=torch.long)
    # Positions count only attended tokens, so a left-padded row sees the same RoPE phases as alone.
    position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
    cache_kw = _new_cache(llm)
    out = llm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
              use_cache=True, logits_to_keep=1, **cache_kw)
    return out, cache_kw, attention_mask, position_ids[:, -1:] + 1


def _prefill_shared(llm, prompt: SharedPrompt):
    """:class:`SharedPrompt`'s three stages on one KV cache; same returns as :func:`_prefill`."""
    device = prompt.device
    p = prompt.prefix.shape[0]
    g, n, h = prompt.segments.shape
    cache_kw = _new_cache(llm)
    (cache,) = cache_kw.values()
    if prompt.prefix_once and p:
        llm(inputs_embeds=prompt.prefix[None], position_ids=torch.arange(p, device=device)[None],
            use_cache=True, logits_to_keep=1, **cache_kw)
        if g > 1:
            cache.batch_repeat_interleave(g)
        llm(inputs_embeds=prompt.segments, position_ids=(p + torch.arange(n, device=device))[None].expand(g, n),
            use_cache=True, logits_to_keep=1, **cache_kw)
    else:
        heads = torch.cat([prompt.prefix.to(prompt.segments.dtype)[None].expand(g, p, h), prompt.segments], dim=1)
        llm(inputs_embeds=heads, position_ids=torch.arange(p + n, device=device)[None].expand(g, p + n),
            use_cache=True, logits_to_keep=1, **cache_kw)
    rows = prompt.segment_of_row
    if not (rows.shape[0] == g and bool((rows == torch.arange(g, device=device)).all())):
        cache.batch_select_indices(rows)
    b = prompt.batch_size
    lengths = [x.shape[0] for x in prompt.suffixes]
    width = max(lengths)
    suffix = torch.zeros((b, width, h), dtype=prompt.segments.dtype, device=device)
    attention_mask = torch.ones((b, p + n + width), dtype=torch.long, device=device)
    for row, x in enumerate(prompt.suffixes):
        suffix[row, width - x.shape[0]:] = x.to(suffix.dtype)
        attention_mask[row, p + n : p + n + width - x.shape[0]] = 0
    position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)[:, p + n:]
    out = llm(inputs_embeds=suffix, attention_mask=attention_mask, position_ids=position_ids,
              use_cache=True, logits_to_keep=1, **cache_kw)
    return out, cache_kw, attention_mask, position_ids[:, -1:] + 1


@torch.no_grad()
def stream(
    llm,
    inputs_embeds: Tensor | SharedPrompt,
    attention_mask: Tensor | None = None,
    settings: GenerationSettings | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[StepEvent]:
    """Yield one :class:`StepEvent` per decoding step until every row emitted an EOS id or
    ``max_new_tokens`` were produced. Rows may be left-padded (``attention_mask`` 0 on pads), or given
    as a :class:`SharedPrompt` (then without ``attention_mask``)."""
    settings = settings or GenerationSettings()
    shared = isinstance(inputs_embeds, SharedPrompt)
    if shared and attention_mask is not None:
        raise ValueError("a SharedPrompt carries its own padding; pass no attention_mask")
    b = inputs_embeds.batch_size if shared else inputs_embeds.shape[0]
    device = inputs_embeds.device
    if not shared and attention_mask is not None and bool((attention_mask[:, -1] == 0).any()):
        raise ValueError("rows must be left-padded: the last position of every row has to be attended")
    pad_id = settings.pad_token_id
    if pad_id is None:
        pad_id = settings.eos_token_id[0] if settings.eos_token_id else 0
    eos = torch.tensor(settings.eos_token_id, dtype=torch.long, device=device)
    gen = _make_generator(settings, generator, device)
    if settings.max_new_tokens == 0:
        return

    if shared:
        out, cache_kw, attention_mask, next_pos = _prefill_shared(llm, inputs_embeds)
    else:
        out, cache_kw, attention_mask, next_pos = _prefill(llm, inputs_embeds, attention_mask)
    generated = torch.empty((b, 0), dtype=torch.long, device=device)
    unfinished = torch.ones(b, dtype=torch.bool, device=device)
    for step in range(settings.max_new_tokens):
        logits = out.logits[:, -1, :].float()
        scores = process_logits(logits, generated, settings)
        if settings.do_sample:
            probs = torch.softmax(scores, dim=-1)
            tokens = torch.multinomial(probs, num_samples=1, generator=gen).squeeze(1)
        else:
            tokens = torch.argmax(scores, dim=-1)
        active = unfinished.clone()
        tokens = torch.where(active, tokens, torch.full_like(tokens, pad_id))
        generated = torch.cat([generated, tokens[:, None]], dim=1)
        yield StepEvent(step=step, tokens=tokens, active=active, logits=logits, scores=scores)
        if eos.numel():
            unfinished &= ~torch.isin(tokens, eos)
        if not bool(unfinished.any()) or step + 1 == settings.max_new_tokens:
            break
        attention_mask = torch.cat([attention_mask, torch.ones((b, 1), dtype=attention_mask.dtype, device=device)], dim=1)
        out = llm(
            input_ids=tokens[:, None],
            attention_mask=attention_mask,
            position_ids=next_pos,
            use_cache=True,
            **cache_kw,
        )
        next_pos = next_pos + 1


@torch.no_grad()
def generate(
    llm,
    inputs_embeds: Tensor | SharedPrompt,
    attention_mask: Tensor | None = None,
    settings: GenerationSettings | None = None,
    generator: torch.Generator | None = None,
    on_token: Callable[[StepEvent], None] | None = None,
    record_logits: bool = False,
) -> GenerationOutput:
    """Run :func:`stream` to the end. ``on_token`` is called with every :class:`StepEvent`;
    ``record_logits`` keeps the raw logits and processed scores of every step."""
    settings = settings or GenerationSettings()
    b = inputs_embeds.batch_size if isinstance(inputs_embeds, SharedPrompt) else inputs_embeds.shape[0]
    device = inputs_embeds.device
    steps: list[Tensor] = []
    actives: list[Tensor] = []
    logits: list[Tensor] = []
    scores: list[Tensor] = []
    for ev in stream(llm, inputs_embeds, attention_mask, settings, generator):
        steps.append(ev.tokens)
        actives.append(ev.active)
        if record_logits:
            logits.append(ev.logits)
            scores.append(ev.scores)
        if on_token is not None:
            on_token(ev)
    if steps:
        sequences = torch.stack(steps, dim=1)
        lengths = torch.stack(actives, dim=1).sum(dim=1)
    else:
        sequences = torch.empty((b, 0), dtype=torch.long, device=device)
        lengths = torch.zeros(b, dtype=torch.long, device=device)
    return GenerationOutput(
        sequences=sequences,
        lengths=lengths,
        step_logits=torch.stack(logits) if record_logits and logits else None,
        step_scores=torch.stack(scores) if record_logits and scores else None,
    )


def eos_ids_from(tokenizer, extra: Sequence[int] = ()) -> list[int]:
    """EOS ids a chat model should stop on: the tokenizer's EOS plus ``extra`` (e.g. ``<|endoftext|>``)."""
    ids = [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]
    for i in extra:
        if int(i) not in ids:
            ids.append(int(i))
    return ids
