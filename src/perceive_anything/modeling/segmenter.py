"""The SAM 2.1 side of PAM, built on transformers' ``Sam2VideoModel``.

``PamSegmenter`` reproduces what the official PAM code (its vendored, patched SAM 2 and the legacy
SAM 2.1 video predictor) computes:

* images are run as one-frame videos: backbone -> ``+ no_mem_embed`` -> SAM heads;
* the mask decoder always outputs mask token 0 (``multimask_output_in_sam: False``; no dynamic
  fallback, no hole filling); low-res logits are replaced by -1024 where the object score <= 0;
* PAM's extra outputs: ``mid_image_embed`` (the two-way transformer's image-side output) and
  ``mid_mask_tokens`` = ``[token A, token 0]`` where A is token 0 if the stability score of the
  token-0 low-res logits (thresholds +-delta) is >= thresh, else the multimask token (1..3) with the
  highest predicted IoU (reference §3.5);
* video tracking with the legacy SAM 2.1 memory bank (conditioning frames + up to
  ``num_maskmem - 1`` previous frames, object pointers from up to ``max_obj_ptrs - 1`` previous
  frames), conditioning-frame memories encoded from the *binarised* mask and rounded to bf16,
  tracked-frame memories from ``sigmoid(logits)`` kept in the model dtype (fixture quirks 1-2).

Most of the network is transformers' code. A few transformers components round differently from
the official code; they are replaced by subclasses that override one method each (see
``PamSam2VideoModel``). Everything here is pure ``nn.Module`` code: no file I/O.

Precision: float32 matches the official float32 outputs. In bfloat16/float16 the cheap official
bf16 behaviours are reproduced: prompt coordinates quantised in the model dtype (done by
``processing.prompts.to_sam_points`` and the ``+0.5`` shift here), the stride-16 FPN level kept in
float32 (the official neck upsamples the top-down map in float32), sine/dense/RoPE tables computed in
float32 then cast, SAM 2's ``LayerNorm2d`` computed op by op in the tensor dtype, explicit casts to the
model dtype where PAM casts (mask-decoder inputs, memory-attention inputs, memory-encoder inputs),
stability counted on the mask logits in their own dtype. Not reproduced: bf16 storage of
prompted-frame outputs (we keep the model dtype) and the exact float32/bf16 mix of the object
pointer of the prompted frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.models.sam2.modeling_sam2 import Sam2MultiScaleAttention, Sam2VisionNeck, do_pool
from transformers.models.sam2_video.modeling_sam2_video import (
    Sam2VideoLayerNorm,
    Sam2VideoModel,
    Sam2VideoRoPEAttention,
    Sam2VideoVisionRotaryEmbedding,
    get_1d_sine_pe,
    rotate_pairwise,
)

from ..config import SegmenterConfig

__all__ = [
    "NO_OBJ_SCORE",
    "ImageFeatures",
    "SegmenterOutput",
    "TrackingPrompt",
    "TrackedFrame",
    "TrackedObject",
    "TrackingSession",
    "PamSam2VideoModel",
    "PamSegmenter",
]

NO_OBJ_SCORE = -1024.0  # SAM 2's placeholder logit where no object is present


# ----------------------------------------------------------------------------------------------
# transformers components that differ numerically from the official SAM 2 code


class _OfficialLayerNorm2d(Sam2VideoLayerNorm):
    """SAM 2's ``LayerNorm2d``: channel mean/variance computed op by op in the tensor's dtype.

    transformers permutes to channels-last and calls ``nn.LayerNorm`` (a fused kernel that also
    upcasts bf16), which rounds differently. Same parameters, same state-dict names.
    """

    def forward(self, x: Tensor) -> Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class _OfficialFpnNeck(Sam2VisionNeck):
    """The official ``FpnNeck``: the top-down map is upsampled in float32 and *not* cast back, and the
    sine PE is built in float32 then cast to the level's dtype.

    transformers casts the upsampled map back to the lateral dtype and builds the PE in the
    feature dtype. Identical in float32; in bf16 the official stride-16 level (the SAM image
    embedding) stays float32 (reference §3.10), which this reproduces.
    """

    def _pos(self, feat: Tensor) -> Tensor:
        # input-independent: cache per (size, device, dtype); transformers' lru_cache(maxsize=1)
        # thrashes between the four levels and rebuilt the 256x256x256 table on every frame
        b, _, h, w = feat.shape
        key = (h, w, feat.device, feat.dtype)
        cache = self.__dict__.setdefault("_pos_cache", {})
        if key not in cache:
            pe = self.position_encoding((1, self.config.fpn_hidden_size, h, w), feat.device, torch.float32)
            cache[key] = pe.to(feat.dtype)
        return cache[key].expand(b, -1, -1, -1)

    # Levels (backbone index, 0 = stride 4) whose PE is built; None = all (transformers' behaviour).
    # ``PamSegmenter`` reads only the stride-16 PE: the stride-4 table alone is 64 MB at 1024 px.
    pe_levels: frozenset[int] | None = None

    def forward(self, hidden_states, skip_levels: frozenset[int] = frozenset()):
        """``skip_levels``: levels without a top-down input whose output the caller computes itself
        (returned as None; see ``PamSegmenter._fused_high_res``)."""
        outs, poss = (), ()
        n = len(self.convs) - 1
        prev = None
        for i in range(n, -1, -1):
            if i in skip_levels:
                if i in self.fpn_top_down_levels or (i - 1) in self.fpn_top_down_levels:
                    raise ValueError(f"FPN level {i} takes part in the top-down path and cannot be skipped")
                prev = None
                outs += (None,)
                poss += (None,)
                continue
            conv = self.convs[n - i]
            lateral = conv(hidden_states[i].permute(0, 3, 1, 2).to(conv.weight.dtype))
            if i in self.fpn_top_down_levels and prev is not None:
                top_down = F.interpolate(prev.to(torch.float32), scale_factor=2.0, mode="nearest")
                # in place when the dtypes agree (the sum is then the same): 64 MB less at stride 4, 1024 px
                prev = lateral.add_(top_down) if lateral.dtype == top_down.dtype else lateral + top_down
            else:
                prev = lateral
            pos = self._pos(prev) if self.pe_levels is None or i in self.pe_levels else None
            outs += (prev,)
            poss += (pos,)
        return outs, poss


class _HieraAttention(Sam2MultiScaleAttention):
    """Hiera (windowed / query-pooled) attention without transformers' dead score computation.

    transformers' forward first computes ``softmax(q @ k^T)`` over the *heads* axis and never uses
    it; on CPU that batched tiny matmul costs more than the attention itself (10x in bf16). This is
    the official computation: SDPA on (q pooled if this block changes stage, k, v). Same parameters.
    """

    def forward(self, hidden_states: Tensor, **kwargs) -> Tensor:
        b, h, w, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(b, h * w, 3, self.num_attention_heads, -1)
        q, k, v = torch.unbind(qkv, 2)
        if self.query_stride:
            q = do_pool(q.reshape(b, h, w, -1), self.query_stride)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_attention_heads, -1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))


class _Float32AxialRope(Sam2VideoVisionRotaryEmbedding):
    """Axial RoPE whose frequencies are always recomputed in float32.

    ``inv_freq`` is a non-persistent float buffer, so ``model.to(torch.bfloat16)`` would round it;
    the official RoPE table is a complex64 attribute that never leaves float32.
    """

    @torch.no_grad()
    def forward(self, x, position_ids):
        inv_freq, scaling = self.compute_axial_rope_parameters(self.config, device=x.device)
        freqs = position_ids[..., None].float() * inv_freq.float()
        cos = self.recomposition_frequencies(freqs.cos() * scaling)
        sin = self.recomposition_frequencies(freqs.sin() * scaling)
        return cos, sin


def _rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """``x * cos + rotate_pairwise(x) * sin`` in float32 (transformers' order of operations), in place where it can."""
    x = x.float()
    rot = rotate_pairwise(x)
    out = x * cos
    return out.add_(rot.mul_(sin))


class _MemoryRoPEAttention(Sam2VideoRoPEAttention):
    """The memory attention's RoPE attention with transformers' numerics and less memory traffic.

    Video tracking spends most of its time here (each frame attends over up to 7 x 4,096 memory
    tokens at 1024 px). transformers materialises the RoPE table of the keys ``num_memory_frames``
    times (``cos.repeat``/``sin.repeat``, 2 x 29 MB per layer and frame at 1024 px) and concatenates
    rotated and pointer keys into a new tensor; here the table is broadcast over the memory frames
    and the rotated keys are written back into the projection's output. The elementwise operations
    and their order are the same, so the values are identical; then
    ``torch.nn.functional.scaled_dot_product_attention`` (the flash kernel on CPU) as transformers'
    ``sdpa`` path does. Same parameters.
    """

    def forward(self, query, key, value, position_embeddings, num_k_exclude_rope: int = 0, **kwargs):
        b, pb = query.shape[:2]
        shape = (b * pb, -1, self.num_attention_heads, self.head_dim)
        q = self.q_proj(query).view(*shape).transpose(1, 2)
        k = self.k_proj(key).view(*shape).transpose(1, 2)
        v = self.v_proj(value).view(*shape).transpose(1, 2)
        cos, sin = position_embeddings
        q = _rope(q, cos, sin).type_as(q)
        n_rot = k.shape[-2] - num_k_exclude_rope
        if n_rot > 0:
            k_rot = k[..., :n_rot, :]
            n_q = q.shape[-2]
            if not torch.is_grad_enabled() and self.rope_k_repeat and n_rot % n_q == 0:
                # inference: one memory frame at a time, written back in place (the same elementwise
                # operations; the rotation's two temporaries are one frame's keys, not all of them:
                # 58 MB less at 1024 px with 7 memory frames)
                for start in range(0, n_rot, n_q):
                    part = k[..., start: start + n_q, :]
                    part.copy_(_rope(part, cos, sin))
            else:
                if self.rope_k_repeat and n_rot != n_q:
                    # keys of r memory frames, frame-major: every frame reads the same spatial table
                    r = n_rot // n_q
                    rotated = _rope(k_rot.reshape(*k_rot.shape[:-2], r, n_q, k_rot.shape[-1]), cos.unsqueeze(-3),
                                    sin.unsqueeze(-3)).reshape(k_rot.shape)
                else:
                    rotated = _rope(k_rot, cos, sin)
                if torch.is_grad_enabled():  # training: the projection output is read by the rotation's backward
                    k = k.clone()
                k[..., :n_rot, :] = rotated.type_as(k)
        dropout = self.dropout_p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.scaling)
        out = out.transpose(1, 2).reshape(b, pb, -1, self.num_attention_heads * self.head_dim)
        return self.o_proj(out), None


class PamSam2VideoModel(Sam2VideoModel):
    """``Sam2VideoModel`` with the official SAM 2 numerics where transformers differs.

    Replaced components (same parameters and state-dict names): every channels-first LayerNorm
    (-> ``LayerNorm2d`` op by op), the FPN neck (float32 top-down path and PEs), the memory-attention
    RoPE (float32 tables), the Hiera attention (no dead score computation), the memory attention's
    RoPE attention (same values, no repeated RoPE tables).
    ``_encode_new_memory`` is overridden so that only conditioning-frame memories are rounded to
    bf16 (official quirk 1; transformers rounds every memory).
    """

    def __init__(self, config):
        super().__init__(config)
        for parent in list(self.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is Sam2VideoLayerNorm and child.data_format == "channels_first":
                    new = _OfficialLayerNorm2d(child.normalized_shape, eps=child.eps, data_format="channels_first")
                    new.load_state_dict(child.state_dict())
                    setattr(parent, name, new)
        for block in self.vision_encoder.backbone.blocks:
            old = block.attn
            block.attn = _HieraAttention(old.config, old.dim, old.dim_out, old.num_attention_heads, old.query_stride)
            block.attn.load_state_dict(old.state_dict())
        old_neck = self.vision_encoder.neck
        self.vision_encoder.neck = _OfficialFpnNeck(config.vision_config)
        self.vision_encoder.neck.load_state_dict(old_neck.state_dict())
        # the memory attention reads the PE of the stride-16 level only (``PamSegmenter.encode_image``)
        self.vision_encoder.neck.pe_levels = frozenset({config.vision_config.num_feature_levels - 1})
        self.memory_attention.rotary_emb = _Float32AxialRope(config=config)
        for layer in self.memory_attention.layers:
            for name in ("self_attn", "cross_attn_image"):
                old = getattr(layer, name)
                new = _MemoryRoPEAttention(config, kv_in_dim=old.kv_in_dim, rope_k_repeat=old.rope_k_repeat)
                new.load_state_dict(old.state_dict())
                setattr(layer, name, new)
        # the official prompt encoder has ONE random-Fourier matrix for point and dense PEs;
        # transformers keeps two buffers, initialised independently: tie their values
        with torch.no_grad():
            gauss = self.prompt_encoder.shared_embedding.positional_embedding
            self.shared_image_embedding.positional_embedding.copy_(gauss)

    # -- memory encoder ------------------------------------------------------------------------

    def encode_memory(
        self,
        pix_feat: Tensor,
        high_res_logits: Tensor,
        object_score_logits: Tensor,
        binarize: bool,
    ) -> Tensor:
        """Memory features (B, mem_dim, F, F) of a frame from its raw stride-16 features and mask logits.

        ``binarize`` (conditioning frames): ``(logits > 0) * scale + bias``; otherwise
        ``sigmoid(logits) * scale + bias``. ``no_obj_embed_spatial`` is added where the object score is <= 0.
        """
        cfg = self.config
        dtype = self.no_memory_embedding.dtype
        s = cfg.image_size
        if high_res_logits.shape[-2:] != (s, s):
            high_res_logits = F.interpolate(
                high_res_logits.float(), size=(s, s), mode="bilinear", align_corners=False, antialias=True
            )
        if binarize:
            mask = (high_res_logits > 0).float()
        else:
            mask = torch.sigmoid(high_res_logits.float())
        mask = mask * cfg.sigmoid_scale_for_mem_enc + cfg.sigmoid_bias_for_mem_enc
        enc = self.memory_encoder
        # PAM casts the memory-encoder inputs to the model dtype (the bf16 path feeds a float32 level2)
        x = enc.feature_projection(pix_feat.to(dtype)) + enc.mask_downsampler(mask.to(dtype))
        x = enc.projection(enc.memory_fuser(x))
        if self.occlusion_spatial_embedding_parameter is not None:
            not_obj = 1.0 - (object_score_logits > 0).float()
            emb = self.occlusion_spatial_embedding_parameter[..., None, None].expand(*x.shape)
            x = x + (not_obj[..., None, None] * emb).to(x.dtype)
        return x

    def memory_pos_enc(self, batch: int, device, dtype) -> Tensor:
        """Sine PE of the memory features (B, mem_dim, F, F): built in float32, cast (official order)."""
        f = self.backbone_feature_sizes[-1]
        # input-independent, and needed on every tracked frame: built once per (device, dtype)
        # (an inference-mode tensor must not reach autograd: one entry per mode)
        key = (tuple(f), torch.device(device), dtype, torch.is_inference_mode_enabled())
        cache = self.__dict__.setdefault("_mem_pos_cache", {})
        if key not in cache:
            shape = (1, self.mem_dim, f[0], f[1])
            # clone: transformers' lru-cached table may be an inference tensor from an earlier call
            cache[key] = self.memory_encoder.position_encoding(shape, device, torch.float32).to(dtype).clone()
        return cache[key].expand(batch, -1, -1, -1)

    def _encode_new_memory(self, current_vision_feats, pred_masks_high_res, object_score_logits, is_mask_from_pts):
        # Keeps transformers' own session API usable with the official memory semantics:
        # prompted (conditioning) frames -> binarised mask, bf16-rounded memory; tracked frames ->
        # sigmoid mask, memory in the model dtype.
        b = current_vision_feats.size(1)
        h, w = self.backbone_feature_sizes[-1]
        pix_feat = current_vision_feats.permute(1, 2, 0).reshape(b, self.hidden_dim, h, w)
        feats = self.encode_memory(pix_feat, pred_masks_high_res, object_score_logits, binarize=is_mask_from_pts)
        if is_mask_from_pts:
            feats = feats.to(torch.bfloat16)
        pos = self.memory_pos_enc(b, feats.device, pred_masks_high_res.dtype)
        return feats.flatten(2).permute(2, 0, 1), pos.flatten(2).permute(2, 0, 1)


# ----------------------------------------------------------------------------------------------
# data types


@dataclass
class ImageFeatures:
    """SAM 2 image-encoder output for a batch of images; reusable for any number of prompts.

    ``image_embed`` is the raw stride-16 FPN level (``backbone_fpn[2]``, before ``no_mem_embed``),
    ``image_pos`` its sine PE (used by the memory attention), ``feat_s0``/``feat_s1`` the stride-4 and
    stride-8 levels after the mask decoder's ``conv_s0``/``conv_s1``.
    """

    image_embed: Tensor  # (B, C, F, F)
    image_pos: Tensor  # (B, C, F, F)
    feat_s0: Tensor  # (B, C/8, 4F, 4F)
    feat_s1: Tensor  # (B, C/4, 2F, 2F)

    @property
    def batch_size(self) -> int:
        return self.image_embed.shape[0]

    def select(self, index: int) -> ImageFeatures:
        sl = slice(index, index + 1)
        return ImageFeatures(self.image_embed[sl], self.image_pos[sl], self.feat_s0[sl], self.feat_s1[sl])

    def fixture_tensors(self) -> dict[str, Tensor]:
        """The backbone tensors under the golden-fixture suffix names."""
        return {
            "backbone.level2": self.image_embed,
            "backbone.level0_conv_s0": self.feat_s0,
            "backbone.level1_conv_s1": self.feat_s1,
        }


# SegmenterOutput field -> golden-fixture suffix (``sam2.frame<ttt>.<suffix>``)
_FIXTURE_NAMES = {
    "low_res_logits": "low_res_mask_logits",
    "high_res_logits": "high_res_mask_logits",
    "object_score_logits": "object_score_logits",
    "iou_pred": "iou_pred",
    "stability_score": "stability_score",
    "mid_image_embed": "mid_image_embed",
    "mid_mask_tokens": "mid_mask_tokens_out",
    "obj_ptr": "obj_ptr",
}


@dataclass
class SegmenterOutput:
    """SAM heads output for R regions (or R tracked objects) of one frame.

    ``low_res_logits`` are in the model dtype, gated to -1024 where ``object_score_logits <= 0``;
    ``high_res_logits`` is their bilinear upsampling to the SAM input size, in float32.
    ``stability_score`` is the stability of the *ungated* token-0 logits (it drives the choice of the
    first ``mid_mask_tokens`` row). ``extras`` holds intermediate tensors under the fixture suffix
    names when ``capture=True`` was passed.
    """

    low_res_logits: Tensor  # (R, 1, L, L)
    high_res_logits: Tensor | None  # (R, 1, S, S); None when ``segment(high_res=False)``
    object_score_logits: Tensor  # (R, 1)
    iou_pred: Tensor  # (R, num_mask_tokens)
    stability_score: Tensor  # (R, 1)
    mid_image_embed: Tensor  # (R, C, F, F)
    mid_mask_tokens: Tensor  # (R, 2, C)
    obj_ptr: Tensor  # (R, C)
    extras: dict[str, Tensor] = field(default_factory=dict)
    # Training support: the *ungated* low-res logits of every mask token (R, num_mask_tokens, L, L).
    # The -1024 gate above has no gradient, so SAM-style mask losses are computed on these. Not a
    # golden-fixture tensor (kept out of ``fixture_tensors``); None for the mask-as-output path.
    multimask_logits: Tensor | None = None

    def __len__(self) -> int:
        return self.low_res_logits.shape[0]

    def select(self, index: int) -> SegmenterOutput:
        """Region ``index`` as a one-region output (extras with a leading region axis are sliced)."""
        sl = slice(index, index + 1)
        n = len(self)
        kw = {name: (None if getattr(self, name) is None else getattr(self, name)[sl]) for name in _FIXTURE_NAMES}
        extras = {k: (v[sl] if v.shape[:1] == (n,) and n > 1 else v) for k, v in self.extras.items()}
        multi = None if self.multimask_logits is None else self.multimask_logits[sl]
        return SegmenterOutput(**kw, extras=extras, multimask_logits=multi)

    def fixture_tensors(self, prefix: str = "") -> dict[str, Tensor]:
        """Every tensor under its golden-fixture name (``prefix`` e.g. ``"sam2.frame000."``)."""
        out = {prefix + suffix: getattr(self, name) for name, suffix in _FIXTURE_NAMES.items()
               if getattr(self, name) is not None}
        out.update({prefix + k: v for k, v in self.extras.items()})
        return out


@dataclass
class TrackingPrompt:
    """A prompt for one object on one frame: SAM-input point coordinates + labels, or a binary mask."""

    point_coords: Tensor | None = None  # (1, P, 2), SAM input pixels
    point_labels: Tensor | None = None  # (1, P) int32
    mask: Tensor | None = None  # (1, 1, H, W) float binary


@dataclass
class TrackedFrame:
    """What later frames read from a processed frame: its object pointer and (while in the window) its memory."""

    obj_ptr: Tensor | None  # (1, C); None once out of the object-pointer window
    maskmem_features: Tensor | None  # (1, mem_dim, F, F); bf16 for conditioning frames; None once out of the window


@dataclass
class TrackedObject:
    obj_id: int
    prompts: dict[int, TrackingPrompt] = field(default_factory=dict)
    cond_frames: dict[int, TrackedFrame] = field(default_factory=dict)  # prompted frames, kept for good
    non_cond_frames: dict[int, TrackedFrame] = field(default_factory=dict)  # tracked frames, pruned

    @property
    def started(self) -> bool:
        return bool(self.cond_frames) or bool(self.non_cond_frames)


@dataclass
class TrackingSession:
    """State of one streaming tracking pass (frames are given one at a time, in order).

    ``num_frames`` (if known) caps the object-pointer window at ``min(num_frames, max_obj_ptrs_in_encoder)``
    like the official offline predictor; ``None`` means a stream of unknown length (window =
    ``max_obj_ptrs_in_encoder``). ``reverse=True`` tracks towards lower frame indices.
    """

    num_frames: int | None = None
    reverse: bool = False
    objects: dict[int, TrackedObject] = field(default_factory=dict)
    last_frame_idx: int | None = None
    max_obj_ptrs: int = 16

    @property
    def direction(self) -> int:
        return -1 if self.reverse else 1

    def memory_footprint(self) -> int:
        """Number of stored tensors (object pointers + memories); stays bounded on long streams."""
        n = 0
        for obj in self.objects.values():
            for fr in list(obj.cond_frames.values()) + list(obj.non_cond_frames.values()):
                n += (fr.obj_ptr is not None) + (fr.maskmem_features is not None)
        return n


# ----------------------------------------------------------------------------------------------
# the module


class PamSegmenter(nn.Module):
    """SAM 2.1 with PAM's intermediate features, for images (``encode_image`` + ``segment``) and
    streaming video (``new_tracking_session`` + ``add_prompt`` + ``track_frame``).

    The SAM 2 weights live in ``self.sam`` (a ``PamSam2VideoModel``; state-dict names are
    transformers' ``Sam2VideoModel`` names under ``sam.``). The module is frozen and stays in eval
    mode, as in PAM (dropout in the memory attention must never be active).
    """

    def __init__(self, config: SegmenterConfig):
        super().__init__()
        from ..checkpoints.sam2 import sam2_video_config  # lazy: checkpoints imports modeling

        self.config = config
        self.sam = PamSam2VideoModel(sam2_video_config(config))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        # Always inference semantics, also while training the segmenter (see ``set_trainable``): the
        # only train/eval difference in SAM 2 is dropout in the memory attention.
        self.sam.eval()
        return self

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    def set_trainable(self, trainable: bool = True) -> "PamSegmenter":
        """Unfreeze (``True``) or freeze (``False``, the default state) every SAM 2 parameter.

        Only ``requires_grad`` changes: the forward computation is the same in both states, so a model
        trained through ``segment`` / ``track_clip_for_training`` and frozen again computes exactly
        what a freshly loaded eval model computes. Dropout stays off while training (the module stays
        in eval mode): losses are then deterministic in the batch (exact resume), and a ~1 M-parameter
        SAM trained on unlimited synthetic data underfits rather than overfits.
        """
        self.requires_grad_(bool(trainable))
        self.eval()
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.sam.no_memory_embedding.dtype

    @property
    def device(self) -> torch.device:
        return self.sam.no_memory_embedding.device

    # -- image encoder -------------------------------------------------------------------------

    def encode_image(self, pixel_values: Tensor) -> ImageFeatures:
        """Hiera + FPN (+ ``conv_s0``/``conv_s1``) for ``pixel_values`` (B, 3, S, S) normalised input."""
        s = self.config.image_size
        if pixel_values.ndim != 4 or pixel_values.shape[1:] != (3, s, s):
            raise ValueError(f"pixel_values must be (B, 3, {s}, {s}); got {tuple(pixel_values.shape)}")
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        fused = self._fused_high_res()
        if fused is None:
            out = self.sam.vision_encoder(pixel_values, return_dict=True)
            level0, level1, level2 = out.fpn_hidden_states
            decoder = self.sam.mask_decoder
            return ImageFeatures(
                image_embed=level2,
                image_pos=out.fpn_position_encoding[2],
                feat_s0=decoder.conv_s0(level0),
                feat_s1=decoder.conv_s1(level1),
            )
        encoder = self.sam.vision_encoder
        stages = encoder.backbone(pixel_values).intermediate_hidden_states  # (B, H, W, C) per stage
        levels, pos = encoder.neck(stages, skip_levels=frozenset(fused))
        first = len(levels) - encoder.num_feature_levels  # the neck's output order is low to high resolution
        level2, pos2 = levels[first], pos[first]
        s0, s1 = (F.linear(stages[i], *fused[i]).permute(0, 3, 1, 2).contiguous() for i in (0, 1))
        return ImageFeatures(image_embed=level2, image_pos=pos2, feat_s0=s0, feat_s1=s1)

    def _fused_high_res(self) -> dict[int, tuple[Tensor, Tensor]] | None:
        """Stride-4/8 FPN laterals folded into ``conv_s0``/``conv_s1`` for inference in float32.

        Those two levels have no top-down input (``fpn_top_down_levels`` are the low-resolution
        ones) and are read only through the decoder's 1x1 ``conv_s0``/``conv_s1``, so each pair of
        1x1 convolutions is one linear map of the trunk's channels-last stage output: W = W_s W_fpn,
        b = W_s b_fpn + b_s (products in float64). At 1024 px this skips the 256-channel stride-4
        map (64 MB) and its 1x1 convolution; the result is the same up to float32 rounding (~1e-7
        relative). ``None`` (the two-step official path) while training, in other dtypes, or for a
        neck whose convolutions are not 1x1.
        """
        if torch.is_grad_enabled() or self.dtype != torch.float32:
            return None
        neck = self.sam.vision_encoder.neck
        decoder = self.sam.mask_decoder
        n = len(neck.convs) - 1
        pairs = {0: (neck.convs[n], decoder.conv_s0), 1: (neck.convs[n - 1], decoder.conv_s1)}
        convs = [c for pair in pairs.values() for c in pair]
        if any(c.kernel_size != (1, 1) or c.stride != (1, 1) or c.padding not in ((0, 0), "valid") or c.bias is None
               for c in convs) or {0, 1} & set(neck.fpn_top_down_levels):
            return None
        key = tuple((c.weight.data_ptr(), c.weight._version, c.bias._version, c.weight.device) for c in convs)
        cached = self.__dict__.get("_fused_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        fused = {}
        for level, (lateral, head) in pairs.items():
            w_l, w_h = lateral.weight.double()[:, :, 0, 0], head.weight.double()[:, :, 0, 0]
            fused[level] = ((w_h @ w_l).float(), (w_h @ lateral.bias.double() + head.bias.double()).float())
        self.__dict__["_fused_cache"] = (key, fused)
        return fused

    # -- prompt encoder ------------------------------------------------------------------------

    def _dense_pe(self) -> Tensor:
        """(1, C, F, F) random-Fourier PE of the feature grid, computed in float32 (official ``get_dense_pe``)."""
        gauss = self.sam.shared_image_embedding.positional_embedding
        # the same for every prompt and frame: rebuilt only if the Fourier matrix changes (a new load)
        key = (gauss.device, gauss.data_ptr(), gauss._version, torch.is_inference_mode_enabled())
        cached = self.__dict__.get("_dense_pe_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        gauss = gauss.float()
        f = self.config.feature_size
        grid = torch.ones((f, f), device=gauss.device, dtype=torch.float32)
        y = (grid.cumsum(dim=0) - 0.5) / f
        x = (grid.cumsum(dim=1) - 0.5) / f
        pe = self._fourier(torch.stack([x, y], dim=-1), gauss).permute(2, 0, 1).unsqueeze(0)
        self.__dict__["_dense_pe_cache"] = (key, pe)
        return pe

    @staticmethod
    def _fourier(coords01: Tensor, gauss: Tensor) -> Tensor:
        c = 2 * coords01 - 1
        c = c @ gauss
        c = 2 * math.pi * c
        return torch.cat([torch.sin(c), torch.cos(c)], dim=-1)

    def _sparse_embeddings(self, point_coords: Tensor | None, point_labels: Tensor | None, num: int) -> Tensor:
        """(R, P+1, C) float32 point embeddings, padding point (0, 0, label -1) appended like SAM 2."""
        pe = self.sam.prompt_encoder
        device = self.device
        if point_coords is None:
            point_coords = torch.zeros(num, 1, 2, device=device, dtype=torch.float32)
            point_labels = -torch.ones(num, 1, device=device, dtype=torch.int32)
        # +0.5 (pixel centre) in the coordinates' own dtype: in bf16 this rounds (reference §3.3)
        pts = point_coords.to(device) + 0.5
        pts = torch.cat([pts.float(), torch.zeros(num, 1, 2, device=device)], dim=1)
        labels = torch.cat(
            [point_labels.to(device=device, dtype=torch.int64), -torch.ones(num, 1, device=device, dtype=torch.int64)],
            dim=1,
        )
        gauss = pe.shared_embedding.positional_embedding.float()  # bf16 checkpoint values, used in fp32
        emb = self._fourier(pts / self.config.image_size, gauss)
        typed = emb + pe.point_embed.weight.float()[labels.clamp(min=0)]
        return torch.where((labels == -1)[..., None], pe.not_a_point_embed.weight.float().expand_as(emb), typed)

    def _dense_embeddings(self, mask_prompt: Tensor | None, num: int) -> Tensor:
        pe = self.sam.prompt_encoder
        f = self.config.feature_size
        if mask_prompt is None:
            return pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(num, -1, f, f)
        return pe.mask_embed(mask_prompt.to(self.dtype))

    # -- SAM heads -----------------------------------------------------------------------------

    def _sam_heads(
        self,
        pix_feat: Tensor,
        feat_s0: Tensor,
        feat_s1: Tensor,
        point_coords: Tensor | None,
        point_labels: Tensor | None,
        mask_prompt: Tensor | None = None,
        multimask: bool = False,
        high_res: bool = True,
    ) -> SegmenterOutput:
        """Prompt encoder + mask decoder on R memory-conditioned feature maps (official ``_forward_sam_heads``).

        ``high_res=False`` skips the upsampling to S x S (``high_res_logits`` None): only the memory
        encoder and training read it, and it is 4 MB per region at 1024 px.
        """
        cfg = self.config
        dtype = self.dtype
        md = self.sam.mask_decoder
        num, c, f, _ = pix_feat.shape
        sparse = self._sparse_embeddings(point_coords, point_labels, num)
        dense = self._dense_embeddings(mask_prompt, num)

        out_tokens = torch.cat([md.obj_score_token.weight, md.iou_token.weight, md.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(num, -1, -1).to(sparse.dtype), sparse], dim=1)
        # PAM casts the transformer inputs to its dtype (in bf16: after adding dense to a float32 level2)
        tokens = tokens.to(dtype)
        src = (pix_feat + dense).to(dtype)
        pos = self._dense_pe().to(dtype).expand(num, -1, -1, -1)
        queries, keys = md.transformer(
            point_embeddings=tokens.unsqueeze(1),
            image_embeddings=src,
            image_positional_embeddings=pos,
            attention_similarity=None,
        )
        hs = queries[:, 0]
        keys = keys[:, 0]
        n_tok = md.num_mask_tokens
        iou_token_out = hs[:, 1]
        mask_tokens_out = hs[:, 2 : 2 + n_tok]
        mid_image_embed = keys.transpose(1, 2).reshape(num, c, f, f)

        up = md.upscale_conv1(mid_image_embed) + feat_s1.expand(num, -1, -1, -1)
        up = md.activation(md.upscale_layer_norm(up))
        up = md.activation(md.upscale_conv2(up) + feat_s0.expand(num, -1, -1, -1))
        hyper = torch.stack([md.output_hypernetworks_mlps[i](mask_tokens_out[:, i]) for i in range(n_tok)], dim=1)
        b, uc, uh, uw = up.shape
        masks = (hyper @ up.reshape(b, uc, uh * uw)).reshape(b, n_tok, uh, uw)
        iou_pred = md.iou_prediction_head(iou_token_out)
        object_score = md.pred_obj_score_head(hs[:, 0])

        # PAM "3best1": stability of the (ungated) token-0 logits, counted in the logits' dtype
        delta = cfg.dynamic_multimask_stability_delta
        flat = masks[:, 0].flatten(1)
        area_i = (flat > delta).sum(-1).float()
        area_u = (flat > -delta).sum(-1).float()
        stability = torch.where(area_u > 0, area_i / area_u, torch.ones_like(area_u))
        rows = torch.arange(num, device=masks.device)
        if n_tok > 1:
            best_multi = torch.argmax(iou_pred[:, 1:], dim=-1) + 1
            stable = stability >= cfg.dynamic_multimask_stability_thresh
            chosen = torch.where(stable, torch.zeros_like(best_multi), best_multi)
        else:
            chosen = torch.zeros(num, dtype=torch.long, device=masks.device)
        mid_mask_tokens = torch.stack([mask_tokens_out[rows, chosen], mask_tokens_out[:, 0]], dim=1)

        out_idx = torch.zeros(num, dtype=torch.long, device=masks.device)
        if multimask and n_tok > 1:  # not PAM (multimask_output_in_sam False); upstream SAM 2 behaviour
            out_idx = torch.argmax(iou_pred[:, 1:], dim=-1) + 1
        low = masks[rows, out_idx].unsqueeze(1)
        ungated = masks  # kept for training losses (the gate below has no gradient)
        is_obj = object_score > 0
        low = torch.where(is_obj[:, :, None, None], low, torch.full_like(low, NO_OBJ_SCORE))
        s = cfg.image_size
        high = F.interpolate(low.float(), size=(s, s), mode="bilinear", align_corners=False) if high_res else None

        ptr = self.sam.object_pointer_proj(mask_tokens_out[rows, out_idx])
        lam = is_obj.to(ptr.dtype)
        ptr = lam * ptr + (1 - lam) * self.sam.no_object_pointer

        return SegmenterOutput(
            low_res_logits=low,
            high_res_logits=high,
            object_score_logits=object_score,
            iou_pred=iou_pred,
            stability_score=stability.unsqueeze(1),
            mid_image_embed=mid_image_embed,
            mid_mask_tokens=mid_mask_tokens,
            obj_ptr=ptr,
            multimask_logits=ungated,
        )

    def _mask_as_output(self, features: ImageFeatures, mask: Tensor) -> SegmenterOutput:
        """SAM 2's ``use_mask_input_as_output_without_sam`` path for (R, 1, S, S) binary masks.

        The mask itself becomes the output (logits +10 inside / -10 outside; low-res by antialiased
        bilinear downsampling); object score +10 if any pixel is set else -10. The SAM heads still run
        once on the *raw* features (no ``no_mem_embed``, as in SAM 2) with the mask, through
        ``mask_downsample``, as dense prompt and no points: that run gives the object pointer and the
        mid features (and the IoU/stability values reported, which describe that run).
        """
        num = mask.shape[0]
        scale, bias = 20.0, -10.0
        mask_f = mask.float()
        high = mask_f * scale + bias
        low_size = self.config.low_res_mask_size
        low = F.interpolate(high, size=(low_size, low_size), mode="bilinear", align_corners=False, antialias=True)
        heads = self._sam_heads(
            features.image_embed.expand(num, -1, -1, -1),
            features.feat_s0,
            features.feat_s1,
            None,
            None,
            mask_prompt=self.sam.mask_downsample(mask_f.to(self.dtype)),
        )
        appearing = (mask_f.flatten(1) > 0).any(dim=1, keepdim=True).float()
        ptr = appearing.to(heads.obj_ptr.dtype) * heads.obj_ptr
        ptr = ptr + (1 - appearing.to(ptr.dtype)) * self.sam.no_object_pointer
        heads.low_res_logits = low.to(self.dtype)
        heads.high_res_logits = high
        heads.object_score_logits = (scale * appearing + bias).to(self.dtype)
        heads.obj_ptr = ptr
        heads.multimask_logits = None  # the output is the prompt itself: nothing to train on it
        return heads

    def _prepare_mask(self, mask: Tensor) -> Tensor:
        """(R, 1, H, W) or (R, H, W) mask -> (R, 1, S, S) float {0, 1} (official ``add_new_mask`` resize)."""
        if mask.ndim == 3:
            mask = mask.unsqueeze(1)
        if mask.ndim != 4 or mask.shape[1] != 1:
            raise ValueError(f"mask prompts must be (R, 1, H, W); got {tuple(mask.shape)}")
        s = self.config.image_size
        mask = (mask.to(self.device).float() >= 0.5).float()
        if mask.shape[-2:] != (s, s):
            mask = F.interpolate(mask, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
            mask = (mask >= 0.5).float()
        return mask

    # -- images --------------------------------------------------------------------------------

    def segment(
        self,
        features: ImageFeatures,
        point_coords: Tensor | None,
        point_labels: Tensor | None,
        mask_inputs: Tensor | None = None,
        capture: bool = False,
        high_res: bool = True,
    ) -> SegmenterOutput:
        """SAM heads for R regions of one image (features computed once and broadcast).

        ``point_coords`` (R, P, 2) in SAM input pixels (0..S), ``point_labels`` (R, P): 1 positive,
        0 negative, 2/3 box corners; a padding point (0, 0, -1) is appended. The image is a prompted
        frame without memory: ``image_embed + no_mem_embed`` goes to the heads.

        ``mask_inputs`` (R, 1, H, W) binary masks instead of points (the official PAM code cannot
        take masks): SAM 2's mask-as-output path (see ``_mask_as_output``): the returned logits are
        the mask itself (+-10), ``mid_*`` come from a SAM-heads run with the mask as dense prompt.
        ``high_res=False``: no ``high_res_logits`` (point prompts; image inference reads the low-res ones).
        """
        num_regions = (mask_inputs if mask_inputs is not None else point_coords).shape[0] if (
            mask_inputs is not None or point_coords is not None) else 1
        # Features of one image (broadcast to every region) or, for batched training, one image per
        # region (row r of the features goes with region r); the computation per row is the same.
        if features.batch_size not in (1, num_regions):
            raise ValueError(
                f"segment() takes the features of one image (or one per region); got a batch of "
                f"{features.batch_size} for {num_regions} region(s)"
            )
        if mask_inputs is not None:
            if point_coords is not None:
                raise ValueError("give either points or mask_inputs for a region batch, not both")
            out = self._mask_as_output(features, self._prepare_mask(mask_inputs))
            pix_feat = features.image_embed
        else:
            if point_coords is None or point_labels is None:
                raise ValueError("segment() needs point_coords and point_labels (or mask_inputs)")
            if point_coords.ndim != 3 or point_coords.shape[-1] != 2 or point_labels.shape != point_coords.shape[:2]:
                raise ValueError(
                    f"point_coords must be (R, P, 2) and point_labels (R, P); got {tuple(point_coords.shape)} "
                    f"and {tuple(point_labels.shape)}"
                )
            num = point_coords.shape[0]
            pix_feat = features.image_embed + self.sam.no_memory_embedding.reshape(1, -1, 1, 1)
            multimask = self._use_multimask(point_labels.shape[1])
            out = self._sam_heads(
                pix_feat.expand(num, -1, -1, -1), features.feat_s0, features.feat_s1, point_coords, point_labels,
                multimask=multimask, high_res=high_res or capture,
            )
        if capture:
            out.extras.update(features.fixture_tensors())
            out.extras["pix_feat_with_mem"] = pix_feat
        return out

    def _use_multimask(self, num_points: int) -> bool:
        # official SAM2Base._use_multimask with multimask_output_for_tracking True and 0 <= points <= 1
        # (always False for PAM, whose yaml sets multimask_output_in_sam: False)
        return bool(self.config.multimask_output_in_sam) and 0 <= num_points <= 1

    @staticmethod
    def postprocess_masks(low_res_logits: Tensor, size: tuple[int, int]) -> Tensor:
        """Low-res logits -> logits at the original (H, W): bilinear, ``align_corners=False``, float32 result.

        Interpolates in the input's dtype (the official image path upsamples the model-dtype logits;
        its video path upsamples float32 copies: pass ``low_res_logits.float()`` for that).
        """
        h, w = int(size[0]), int(size[1])
        return F.interpolate(low_res_logits, size=(h, w), mode="bilinear", align_corners=False).float()

    # -- video tracking ------------------------------------------------------------------------

    def new_tracking_session(self, num_frames: int | None = None, reverse: bool = False) -> TrackingSession:
        """A fresh streaming session. ``num_frames``: total frame count if known (official offline semantics)."""
        cap = self.config.max_obj_ptrs_in_encoder
        if num_frames is not None:
            if num_frames < 1:
                raise ValueError(f"num_frames must be >= 1, got {num_frames}")
            cap = min(num_frames, cap)
        return TrackingSession(num_frames=num_frames, reverse=reverse, max_obj_ptrs=cap)

    def add_prompt(
        self,
        session: TrackingSession,
        frame_idx: int,
        obj_id: int,
        point_coords: Tensor | None = None,
        point_labels: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> None:
        """Register a prompt for ``obj_id`` on ``frame_idx`` (applied when that frame is tracked).

        Points: ``point_coords`` (P, 2) or (1, P, 2) in SAM input pixels, ``point_labels`` (P,) or (1, P)
        (box = two points labelled 2, 3 first). Or ``mask`` (H, W) / (1, 1, H, W) binary. A new prompt
        on the same frame replaces the old one (official ``clear_old_points=True``).
        """
        if frame_idx < 0 or (session.num_frames is not None and frame_idx >= session.num_frames):
            raise ValueError(f"frame_idx {frame_idx} is outside the video (num_frames={session.num_frames})")
        if session.last_frame_idx is not None and (frame_idx - session.last_frame_idx) * session.direction <= 0:
            raise ValueError(
                f"frame {frame_idx} has already been passed in this session (last tracked frame: "
                f"{session.last_frame_idx}); prompts must be on frames still to come"
            )
        if (mask is None) == (point_coords is None):
            raise ValueError("give either point_coords/point_labels or a mask")
        if mask is not None:
            m = mask if mask.ndim == 4 else mask.reshape(1, 1, *mask.shape[-2:])
            prompt = TrackingPrompt(mask=self._prepare_mask(m))
        else:
            if point_labels is None:
                raise ValueError("point_labels are required with point_coords")
            coords = point_coords.reshape(1, -1, 2)
            labels = point_labels.reshape(1, -1).to(torch.int32)
            if labels.shape[1] != coords.shape[1]:
                raise ValueError(f"{coords.shape[1]} points but {labels.shape[1]} labels")
            prompt = TrackingPrompt(point_coords=coords.to(self.device), point_labels=labels.to(self.device))
        obj = session.objects.setdefault(obj_id, TrackedObject(obj_id=obj_id))
        obj.prompts[frame_idx] = prompt

    def track_frame(
        self,
        session: TrackingSession,
        frame_idx: int,
        pixel_values: Tensor | None = None,
        features: ImageFeatures | None = None,
        capture: bool = False,
    ) -> dict[int, SegmenterOutput]:
        """Process one frame for every object that is active on it; returns ``{obj_id: output}`` (R = 1 each).

        An object becomes active on its first prompted frame (no memory there: ``+ no_mem_embed``) and
        is then tracked on every later frame (earlier frames when ``session.reverse``) through the
        memory attention. Frames must come in order (gaps are allowed; a skipped frame simply has no
        memory). Give ``pixel_values`` (1, 3, S, S) or precomputed ``features``.
        """
        if session.last_frame_idx is not None and (frame_idx - session.last_frame_idx) * session.direction <= 0:
            word = "decreasing" if session.reverse else "increasing"
            raise ValueError(f"frames must be tracked in {word} order: got {frame_idx} after {session.last_frame_idx}")
        if session.num_frames is not None and not 0 <= frame_idx < session.num_frames:
            raise ValueError(f"frame_idx {frame_idx} is outside the video (num_frames={session.num_frames})")
        if features is None:
            if pixel_values is None:
                raise ValueError("track_frame needs pixel_values or features")
            features = self.encode_image(pixel_values)
        if features.batch_size != 1:
            raise ValueError("track_frame takes the features of one frame")
        session.last_frame_idx = frame_idx

        results: dict[int, SegmenterOutput] = {}
        for obj in session.objects.values():
            prompt = obj.prompts.pop(frame_idx, None)
            if prompt is None and not obj.started:
                continue  # not prompted yet
            out = self._track_object(session, obj, frame_idx, features, prompt, capture=capture)
            if capture and pixel_values is not None:
                out.extras["image_input"] = pixel_values
            results[obj.obj_id] = out
        self._prune(session, frame_idx)
        return results

    def _track_object(
        self,
        session: TrackingSession,
        obj: TrackedObject,
        frame_idx: int,
        features: ImageFeatures,
        prompt: TrackingPrompt | None,
        capture: bool = False,
    ) -> SegmenterOutput:
        """One object on one frame: SAM heads (prompted, or memory-conditioned) + this frame's memory.

        Shared by ``track_frame`` (batch 1) and ``track_clip_for_training`` (a batch of B clips tracked
        in lockstep: every tensor of ``obj`` then has a leading batch of B).
        """
        is_cond = prompt is not None
        if prompt is not None and prompt.mask is not None:
            out = self._mask_as_output(features, prompt.mask)
            pix_feat = features.image_embed
        else:
            if obj.started:
                pix_feat = self._memory_conditioned(session, obj, frame_idx, features)
            else:
                pix_feat = features.image_embed + self.sam.no_memory_embedding.reshape(1, -1, 1, 1)
            coords = prompt.point_coords if prompt is not None else None
            labels = prompt.point_labels if prompt is not None else None
            multimask = self._use_multimask(0 if labels is None else labels.shape[1])
            out = self._sam_heads(pix_feat, features.feat_s0, features.feat_s1, coords, labels, multimask=multimask)

        # memory of this frame: conditioning frames from the binarised mask, rounded to bf16
        # (official preflight consolidation); tracked frames from sigmoid(logits), model dtype
        mem = self.sam.encode_memory(features.image_embed, out.high_res_logits, out.object_score_logits, binarize=is_cond)
        if is_cond:
            mem = mem.to(torch.bfloat16)
        frame = TrackedFrame(obj_ptr=out.obj_ptr, maskmem_features=mem)
        if is_cond:
            obj.cond_frames[frame_idx] = frame
            obj.non_cond_frames.pop(frame_idx, None)
        else:
            obj.non_cond_frames[frame_idx] = frame
        if capture:
            out.extras.update(features.fixture_tensors())
            out.extras["pix_feat_with_mem"] = pix_feat
            out.extras["maskmem_features"] = mem
            if is_cond:
                out.extras["mem_enc_input_mask_logits"] = out.high_res_logits
        return out

    def track_clip_for_training(
        self,
        frames: Tensor | list[ImageFeatures],
        point_coords: Tensor | None = None,
        point_labels: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> list[SegmenterOutput]:
        """Differentiable tracking of one object in each of B clips, prompted on frame 0.

        ``frames``: (B, T, 3, S, S) normalised pixels (encoded here in one batch) or T precomputed
        ``ImageFeatures`` of batch B. Prompt: ``point_coords`` (B, P, 2) + ``point_labels`` (B, P) in SAM
        input pixels, or ``mask`` (B, 1, H, W). Returns T outputs of R = B rows. The computation per
        clip is exactly ``new_tracking_session(num_frames=T)`` + ``add_prompt(frame 0)`` +
        ``track_frame`` on every frame (same memory bank, pointers, bf16 rounding of the prompted
        memory), but nothing is detached: gradients reach the image encoder through every frame and
        the memory attention / memory encoder / object pointers through the memory bank.
        """
        if torch.is_tensor(frames):
            if frames.ndim != 5:
                raise ValueError(f"frames must be (B, T, 3, S, S); got {tuple(frames.shape)}")
            b, t = frames.shape[:2]
            flat = self.encode_image(frames.reshape(b * t, *frames.shape[2:]))
            feats = [
                ImageFeatures(*(x.reshape(b, t, *x.shape[1:])[:, i] for x in
                                (flat.image_embed, flat.image_pos, flat.feat_s0, flat.feat_s1)))
                for i in range(t)
            ]
        else:
            feats = list(frames)
        if (mask is None) == (point_coords is None):
            raise ValueError("give either point_coords/point_labels or a mask")
        if mask is not None:
            prompt = TrackingPrompt(mask=self._prepare_mask(mask))
        else:
            if point_labels is None or point_coords.ndim != 3 or point_labels.shape != point_coords.shape[:2]:
                raise ValueError("point_coords must be (B, P, 2) and point_labels (B, P)")
            prompt = TrackingPrompt(point_coords=point_coords.to(self.device),
                                    point_labels=point_labels.to(device=self.device, dtype=torch.int32))
        session = self.new_tracking_session(num_frames=len(feats))
        obj = TrackedObject(obj_id=0)
        session.objects[0] = obj
        outs = []
        for t, f in enumerate(feats):
            outs.append(self._track_object(session, obj, t, f, prompt if t == 0 else None))
            session.last_frame_idx = t
            self._prune(session, t)
        return outs

    def _memory_conditioned(
        self, session: TrackingSession, obj: TrackedObject, frame_idx: int, features: ImageFeatures
    ) -> Tensor:
        """Official ``_prepare_memory_conditioned_features`` for a frame after the object's first prompt."""
        sam = self.sam
        cfg = self.config
        dtype = self.dtype
        reverse = session.reverse
        sign = session.direction
        c = cfg.d_model
        f = cfg.feature_size
        mem_dim = cfg.mem_dim
        nm = cfg.num_maskmem
        tpos = sam.memory_temporal_positional_encoding  # (nm, 1, 1, mem_dim)
        # b = 1 at inference; B clips tracked in lockstep by ``track_clip_for_training``
        b = features.image_embed.shape[0]
        pos = sam.memory_pos_enc(b, features.image_embed.device, dtype).flatten(2).permute(2, 0, 1)

        memories, memory_pos = [], []
        # conditioning frames (max_cond_frames_in_attn = -1: all of them), temporal slot nm-1
        for fr in obj.cond_frames.values():
            memories.append(fr.maskmem_features.to(dtype).flatten(2).permute(2, 0, 1))
            memory_pos.append(pos + tpos[nm - 1].to(dtype))
        # the nm-1 previous frames (stride 1), oldest first, temporal slot t_rel-1
        for t_pos in range(1, nm):
            t_rel = nm - t_pos
            fr = obj.non_cond_frames.get(frame_idx - sign * t_rel)
            if fr is None or fr.maskmem_features is None:
                continue
            memories.append(fr.maskmem_features.to(dtype).flatten(2).permute(2, 0, 1))
            memory_pos.append(pos + tpos[nm - t_pos - 1].to(dtype))

        # object pointers: conditioning frames not in the future, then up to max_obj_ptrs-1 previous frames
        max_ptrs = session.max_obj_ptrs
        ptrs = [
            ((frame_idx - t) * sign, fr.obj_ptr)
            for t, fr in obj.cond_frames.items()
            if (t >= frame_idx if reverse else t <= frame_idx)
        ]
        for t_diff in range(1, max_ptrs):
            t = frame_idx - sign * t_diff
            if t < 0 or (session.num_frames is not None and t >= session.num_frames):
                break
            fr = obj.non_cond_frames.get(t)
            if fr is not None and fr.obj_ptr is not None:
                ptrs.append((t_diff, fr.obj_ptr))
        n_ptr_tokens = 0
        if ptrs:
            pos_list, ptr_list = zip(*ptrs)
            obj_ptrs = torch.stack(ptr_list, dim=0).to(dtype)  # (N, b, C)
            t_diff_max = max(max_ptrs - 1, 1)
            rel = torch.tensor(pos_list, device=obj_ptrs.device) / t_diff_max
            obj_pos = sam.temporal_positional_encoding_projection_layer(get_1d_sine_pe(rel, dim=c).to(dtype))
            obj_pos = obj_pos.unsqueeze(1).expand(-1, b, mem_dim)
            if mem_dim < c:  # each pointer becomes C/mem_dim tokens of width mem_dim
                split = c // mem_dim
                obj_ptrs = obj_ptrs.reshape(-1, b, split, mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
                obj_pos = obj_pos.repeat_interleave(split, dim=0)
            memories.append(obj_ptrs)
            memory_pos.append(obj_pos)
            n_ptr_tokens = obj_ptrs.shape[0]

        memory = torch.cat(memories, dim=0).to(dtype)
        memory_pos = torch.cat(memory_pos, dim=0).to(dtype)
        # PAM casts the current features to the memory-attention dtype (float32 level2 in bf16 runs)
        curr = features.image_embed.flatten(2).permute(2, 0, 1).to(dtype)
        curr_pos = features.image_pos.flatten(2).permute(2, 0, 1).to(dtype)
        out = sam.memory_attention(
            current_vision_features=curr,
            memory=memory,
            current_vision_position_embeddings=curr_pos,
            memory_posision_embeddings=memory_pos,
            num_object_pointer_tokens=n_ptr_tokens,
        )
        # transformers returns (1, B, HW, C) (batch-first inside, one "point batch")
        out = out.reshape(-1, f * f, c)
        return out.transpose(1, 2).reshape(-1, c, f, f)

    def _prune(self, session: TrackingSession, frame_idx: int) -> None:
        """Drop what no later frame can read (tracked frames only; prompted frames are always used).

        The next frame reads memories of the ``num_maskmem - 1`` frames before it and pointers of the
        ``max_obj_ptrs - 1`` frames before it, so after frame t a memory more than ``num_maskmem - 2``
        frames behind t, or a pointer more than ``max_obj_ptrs - 2`` behind, is dead.
        """
        keep_mem = self.config.num_maskmem - 2
        keep_ptr = session.max_obj_ptrs - 2
        for obj in session.objects.values():
            for t in list(obj.non_cond_frames):
                fr = obj.non_cond_frames[t]
                dist = (frame_idx - t) * session.direction
                if dist > keep_mem:
                    fr.maskmem_features = None
                if dist > keep_ptr:
                    fr.obj_ptr = None
                if fr.maskmem_features is None and fr.obj_ptr is None:
                    del obj.non_cond_frames[t]
