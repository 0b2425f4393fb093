"""The language side of PAM: Semantic Perceiver, projectors, separator vectors and the Qwen2 LLM.

The SAM 2 segmenter is not part of this module; it consumes SAM 2's "mid" outputs
(``mid_image_embed`` (R, 256, F, F) and ``mid_mask_tokens_out`` (R, 2, 256)).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..config import PamConfig
from .perceiver import SemanticPerceiver

__all__ = ["IMAGE_TOKEN_INDEX", "PamLanguageModel", "pad_token_rows"]

# The official placeholder id of ``<image>`` in ``input_ids`` (LLaVA's IMAGE_TOKEN_INDEX).
IMAGE_TOKEN_INDEX = -200


def _mlp2x_gelu(in_dim: int, hidden: int) -> nn.Sequential:
    # Index 1 is the parameter-free GELU, so the checkpoint names are ``0.*`` and ``2.*``.
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))


def pad_token_rows(rows: Sequence[Sequence[int]], pad_id: int, side: str = "left") -> tuple[Tensor, Tensor]:
    """Stack token-id lists of different lengths into (input_ids, attention_mask).

    Left padding is the default because decoding appends to the right end of every row.
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if not rows:
        raise ValueError("no rows to pad")
    t = max(len(r) for r in rows)
    ids = torch.full((len(rows), t), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r)
        sl = slice(t - n, t) if side == "left" else slice(0, n)
        ids[i, sl] = torch.as_tensor(list(r), dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def _block_list(visual_blocks: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """Visual blocks given as (B, Nv, H) or as a list of (Nv_b, H), as a list."""
    return list(visual_blocks.unbind(0)) if isinstance(visual_blocks, Tensor) else list(visual_blocks)


class PamLanguageModel(nn.Module):
    """Perceiver + projectors + separators + ``Qwen2ForCausalLM`` (tied head, SDPA attention).

    The LLM vocabulary is ``config.tokenizer_vocab_size`` when set (the official loader truncates the
    padded embedding to ``len(tokenizer)``), else ``config.llm["vocab_size"]``.

    Intermediate tensors can be recorded under the golden-fixture names with :meth:`capturing`.
    """

    def __init__(self, config: PamConfig, init_weights: bool = True) -> None:
        super().__init__()
        from transformers import Qwen2ForCausalLM

        self.config = config
        h = config.hidden_size
        pcfg = config.perceiver
        self.perceiver = SemanticPerceiver(pcfg, config.segmenter.feature_size)
        if config.projector_type != "mlp2x_gelu":
            raise ValueError(f"unsupported projector type {config.projector_type!r}; only 'mlp2x_gelu' exists in PAM")
        self.mm_projector_img = _mlp2x_gelu(pcfg.token_dim, h)
        self.mm_projector_semT = _mlp2x_gelu(pcfg.hidden_size, h)
        # Official initialisation of the separators: randn(H) / sqrt(H).
        self.image_newline = nn.Parameter(torch.randn(h) / h**0.5)
        self.semT_newline = nn.Parameter(torch.randn(h) / h**0.5)
        self.frame_newline = nn.Parameter(torch.randn(h) / h**0.5)

        qcfg = config.qwen2_config()
        qcfg._attn_implementation = "sdpa"
        if init_weights:
            self.llm = Qwen2ForCausalLM(qcfg)
        else:
            from transformers.initialization import no_init_weights

            with no_init_weights():
                self.llm = Qwen2ForCausalLM(qcfg)
        self.tie_weights()
        self._capture: dict[str, Tensor] | None = None

    # ------------------------------------------------------------------ utilities
    def tie_weights(self) -> None:
        """Re-tie the LM head to the input embedding (needed after ``load_state_dict(assign=True)``)."""
        if self.llm.config.tie_word_embeddings:
            self.llm.lm_head.weight = self.llm.model.embed_tokens.weight

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.llm.model.embed_tokens.weight.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.image_newline.dtype

    @property
    def device(self) -> torch.device:
        return self.image_newline.device

    @contextlib.contextmanager
    def capturing(self, store: dict[str, Tensor] | None = None) -> Iterator[dict[str, Tensor]]:
        """Record intermediate tensors (detached) under the golden names while the block runs:
        ``perceiver.frameNNN.{sem_tokens,image_tokens}``, ``projector.frameNNN.{sem,image}``,
        ``llm.input_ids``, ``llm.inputs_embeds`` and, from :meth:`generate`, ``llm.first_token_logits``,
        ``llm.step_logits``, ``llm.step_scores``, ``llm.output_ids``."""
        previous = self._capture
        self._capture = {} if store is None else store
        try:
            yield self._capture
        finally:
            self._capture = previous

    def _record(self, name: str, value: Tensor) -> None:
        if self._capture is not None:
            self._capture[name] = value.detach().clone()

    # ------------------------------------------------------------------ visual blocks
    def _frame_tokens(self, mid_image_embed: Tensor, mid_mask_tokens: Tensor, shuffle: int, frame_id: int) -> tuple[Tensor, Tensor]:
        dtype = self.dtype
        sem, img = self.perceiver(mid_image_embed.to(dtype), mid_mask_tokens.to(dtype), shuffle)
        self._record(f"perceiver.frame{frame_id:03d}.sem_tokens", sem)
        self._record(f"perceiver.frame{frame_id:03d}.image_tokens", img)
        img = self.mm_projector_img(img)
        sem = self.mm_projector_semT(sem)
        self._record(f"projector.frame{frame_id:03d}.sem", sem)
        self._record(f"projector.frame{frame_id:03d}.image", img)
        return img, sem

    def image_visual_block(self, mid_image_embed: Tensor, mid_mask_tokens: Tensor, frame_id: int = 0) -> Tensor:
        """One block per region: ``[image tokens; image_newline; sem tokens; semT_newline]`` -> (R, Nimg, H)."""
        img, sem = self._frame_tokens(mid_image_embed, mid_mask_tokens, self.config.perceiver.image_shuffle, frame_id)
        r = img.shape[0]
        sep_i = self.image_newline.view(1, 1, -1).expand(r, 1, -1)
        sep_s = self.semT_newline.view(1, 1, -1).expand(r, 1, -1)
        return torch.cat([img, sep_i, sem.to(img.dtype), sep_s], dim=1)

    def assemble_block(self, projected: Sequence[tuple[Tensor, Tensor]], video: bool) -> Tensor:
        """Join already projected ``(image (N_f, H), sem (S, H))`` pairs with the separators:
        per frame ``[image; image_newline; sem; semT_newline]`` plus ``frame_newline`` for videos.
        Returns (sum of rows, H)."""
        parts = []
        for img, sem in projected:
            parts += [img, self.image_newline[None].to(img.dtype), sem.to(img.dtype), self.semT_newline[None].to(img.dtype)]
            if video:
                parts.append(self.frame_newline[None].to(img.dtype))
        return torch.cat(parts, dim=0)

    def video_visual_block(
        self,
        frames: Sequence[tuple[Tensor, Tensor]],
        first_flags: Sequence[bool] | None = None,
        frame_ids: Sequence[int] | None = None,
    ) -> Tensor:
        """Concatenate, per LLM frame, ``[image tokens; image_newline; sem; semT_newline; frame_newline]``.

        ``frames`` holds ``(mid_image_embed (1, C, F, F), mid_mask_tokens (1, 2, C))`` per selected frame.
        A frame flagged first gets the image shuffle (1/2, 1024 tokens for F=64), the others the frame
        shuffle (1/4 + ``proj``). The official code flags the frame whose id is 0; by default the first
        entry is flagged. ``frame_ids`` only name captured tensors. Returns (Nvid, H).
        """
        if first_flags is None:
            first_flags = [i == 0 for i in range(len(frames))]
        if frame_ids is None:
            frame_ids = list(range(len(frames)))
        if not (len(frames) == len(first_flags) == len(frame_ids)):
            raise ValueError("frames, first_flags and frame_ids must have the same length")
        projected = [self.video_frame_tokens(embed, tokens, first, int(fid))
                     for (embed, tokens), first, fid in zip(frames, first_flags, frame_ids)]
        return self.assemble_block(projected, video=True)

    def video_frame_tokens(self, mid_image_embed: Tensor, mid_mask_tokens: Tensor, first: bool, frame_id: int = 0
                           ) -> tuple[Tensor, Tensor]:
        """Projected ``(image tokens (N_f, H), sem tokens (S, H))`` of one LLM frame of a video.

        ``mid_image_embed`` (1, C, F, F), ``mid_mask_tokens`` (1, 2, C). ``first``: the image shuffle
        (1/2, 1024 tokens for F=64) instead of the frame shuffle (1/4 + ``proj``). Frames are
        independent up to here, so a tracker can turn each LLM frame into these tokens as soon as it
        is tracked and keep them instead of its (C, F, F) SAM features (4 MB per frame at 1024 px).
        """
        if mid_image_embed.shape[0] != 1 or mid_mask_tokens.shape[0] != 1:
            raise ValueError("video frames are processed one region at a time (batch dimension 1)")
        pcfg = self.config.perceiver
        img, sem = self._frame_tokens(mid_image_embed, mid_mask_tokens,
                                      pcfg.image_shuffle if first else pcfg.frame_shuffle, frame_id)
        return img[0], sem[0]

    # ------------------------------------------------------------------ splicing
    def build_inputs_embeds(
        self,
        input_ids: Tensor,
        visual_blocks: Tensor | Sequence[Tensor],
        attention_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Expand the single ``-200`` of every row into that row's visual block.

        ``input_ids`` (B, T) may be left-padded (``attention_mask`` 0 on pads); ``visual_blocks`` is
        (B, Nv, H) or a list of (Nv_b, H). Rows of different merged lengths are left-padded with zero
        vectors. Returns ``(inputs_embeds (B, L, H), attention_mask (B, L), visual_position_mask (B, L))``.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
        b, t = input_ids.shape
        device = input_ids.device
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        keep = attention_mask.to(torch.bool)
        placeholder = (input_ids == IMAGE_TOKEN_INDEX) & keep
        counts = placeholder.sum(dim=1)
        if not bool((counts == 1).all()):
            raise ValueError(f"every row needs exactly one {IMAGE_TOKEN_INDEX} placeholder, got counts {counts.tolist()}")
        if isinstance(visual_blocks, Tensor):
            if visual_blocks.dim() != 3 or visual_blocks.shape[0] != b:
                raise ValueError(f"visual_blocks must be (B={b}, Nv, H), got {tuple(visual_blocks.shape)}")
            blocks = list(visual_blocks.unbind(0))
        else:
            blocks = list(visual_blocks)
            if len(blocks) != b:
                raise ValueError(f"got {len(blocks)} visual blocks for {b} rows")
        nv = torch.tensor([blk.shape[0] for blk in blocks], device=device)

        # Each source position becomes Nv (placeholder), 1 (text) or 0 (padding) merged positions.
        repeats = torch.where(placeholder, nv[:, None], keep.long())
        lengths = repeats.sum(dim=1)
        length = int(lengths.max())
        starts = (length - lengths)[:, None] + repeats.cumsum(dim=1) - repeats

        embed = self.llm.get_input_embeddings()
        text_sel = keep & ~placeholder
        safe_ids = torch.where(text_sel, input_ids, torch.zeros_like(input_ids))
        text_embeds = embed(safe_ids)
        h = text_embeds.shape[-1]
        inputs_embeds = torch.zeros((b, length, h), dtype=text_embeds.dtype, device=device)
        rows = torch.arange(b, device=device)[:, None].expand(b, t)
        inputs_embeds[rows[text_sel], starts[text_sel]] = text_embeds[text_sel]

        pos = torch.arange(length, device=device)[None, :]
        vis_start = starts[placeholder][:, None]
        visual_mask = (pos >= vis_start) & (pos < vis_start + nv[:, None])
        visual = torch.cat([blk.to(inputs_embeds.dtype) for blk in blocks], dim=0)
        inputs_embeds = inputs_embeds.masked_scatter(visual_mask.unsqueeze(-1).expand_as(inputs_embeds), visual)
        merged_mask = (pos >= (length - lengths)[:, None]).long()
        self._record("llm.input_ids", input_ids)
        self._record("llm.inputs_embeds", inputs_embeds)
        return inputs_embeds, merged_mask, visual_mask

    # ------------------------------------------------------------------ generation
    def shared_prompt(
        self,
        input_ids: Tensor,
        visual_blocks: Tensor | Sequence[Tensor],
        attention_mask: Tensor | None = None,
        block_index: Tensor | Sequence[int] | None = None,
        prefix_once: bool = False,
    ):
        """The rows as a :class:`~perceive_anything.generation.SharedPrompt` (the text before the
        placeholder and each block once; each row's text after it on a copy of its block's KV cache),
        or None when they share nothing that way: no block serving two rows (unless ``prefix_once``,
        the text before the placeholder once for all blocks), rows whose text before the placeholder
        differs, blocks of different lengths, a row ending at its placeholder. Arguments as for
        :meth:`generate`."""
        from ..generation import SharedPrompt

        blocks = _block_list(visual_blocks)
        b = input_ids.shape[0]
        index = self._block_index(block_index, b, len(blocks))
        shares_a_block = len(set(index.tolist())) < b
        if b < 2 or not (shares_a_block or prefix_once) or len({blk.shape[0] for blk in blocks}) != 1:
            return None
        keep = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.to(torch.bool)
        prefix, suffixes = None, []
        for row in range(b):
            ids = input_ids[row][keep[row]]
            at = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten()
            if at.numel() != 1:
                return None  # the one-pass path names the problem
            head, tail = ids[: int(at[0])], ids[int(at[0]) + 1 :]
            if tail.numel() == 0 or (prefix is not None and not torch.equal(head, prefix)):
                return None
            prefix = head
            suffixes.append(tail)
        embed = self.llm.get_input_embeddings()
        texts = embed(torch.cat([prefix, *suffixes]))
        parts = texts.split([prefix.numel()] + [x.numel() for x in suffixes])
        return SharedPrompt(prefix=parts[0], segments=torch.stack(blocks).to(texts.dtype), segment_of_row=index,
                            suffixes=list(parts[1:]), prefix_once=prefix_once)

    @staticmethod
    def _block_index(block_index, rows: int, blocks: int) -> Tensor:
        """``block_index`` checked against ``rows`` and ``blocks``; None means one block per row."""
        if block_index is None:
            if blocks != rows:
                raise ValueError(f"got {blocks} visual blocks for {rows} rows (pass block_index to share blocks)")
            return torch.arange(rows)
        index = torch.as_tensor(block_index, dtype=torch.long).cpu()
        if index.shape != (rows,):
            raise ValueError(f"block_index must name one block per row ({rows} rows), got shape {tuple(index.shape)}")
        if bool(((index < 0) | (index >= blocks)).any()):
            raise ValueError(f"block_index must index the {blocks} visual blocks, got {index.tolist()}")
        return index

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        visual_blocks: Tensor | Sequence[Tensor],
        settings: Any = None,
        attention_mask: Tensor | None = None,
        generator: torch.Generator | None = None,
        on_token: Callable[[Any], None] | None = None,
        record_logits: bool | None = None,
        *,
        block_index: Tensor | Sequence[int] | None = None,
        shared_prefill: bool = True,
        prefix_once: bool = False,
    ):
        """Splice the visual blocks and decode; returns :class:`~perceive_anything.generation.GenerationOutput`
        whose ``sequences`` hold the new tokens only (generation starts from ``inputs_embeds``).

        ``block_index`` (B,) names each row's block when rows share one (several tasks of one region:
        ``visual_blocks`` then holds each distinct block once). With ``shared_prefill``, rows that share
        a block and the text before the placeholder (the chat template's system and user header, the
        same for every task) are prefilled as a :class:`~perceive_anything.generation.SharedPrompt`:
        header and block once, then each row's task text on a copy of that KV cache.
        ``prefix_once`` prefills the header once for all blocks too (slower with SDPA on PAM's prompts;
        see ``SharedPrompt``). A single row, rows that share no block, and a run under
        :meth:`capturing` (which records the whole ``inputs_embeds``) take the one-pass path."""
        from ..generation import GenerationSettings, generate

        settings = settings if settings is not None else GenerationSettings()
        record = (self._capture is not None) if record_logits is None else record_logits
        prompt = None
        if shared_prefill and self._capture is None:
            prompt = self.shared_prompt(input_ids, visual_blocks, attention_mask, block_index, prefix_once)
        if prompt is not None:
            return generate(self.llm, prompt, None, settings, generator=generator, on_token=on_token,
                            record_logits=record)
        if block_index is not None:
            blocks = _block_list(visual_blocks)
            visual_blocks = [blocks[i] for i in self._block_index(block_index, input_ids.shape[0], len(blocks)).tolist()]
        embeds, mask, _ = self.build_inputs_embeds(input_ids, visual_blocks, attention_mask)
        out = generate(self.llm, embeds, mask, settings, generator=generator, on_token=on_token, record_logits=record)
        if self._capture is not None:
            self._capture.update(out.capture_dict())
        return out
