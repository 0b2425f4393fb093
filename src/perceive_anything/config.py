"""Typed configuration for PAM: segmenter (SAM 2.1), semantic perceiver, projectors and the LLM.

Every size used by the model code is derived from these dataclasses: the image size, the SAM 2
feature-map size (``image_size // backbone_stride``) and the visual-token counts. A 256-pixel toy
model and PAM-3B go through the same code.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any


def _from_dict(cls, data: dict[str, Any]):
    """Build a dataclass from a dict, refusing unknown keys so typos in a config JSON are loud."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known fields are {sorted(names)}")
    return cls(**data)


@dataclass
class SegmenterConfig:
    """A SAM 2.1 architecture (Hiera trunk + FPN neck + SAM heads + memory modules).

    Field names follow the official SAM 2 YAML files. Values that SAM 2 hard-codes in Python
    (prompt encoder, mask decoder sizes) are fields too, so a tiny test model can shrink nothing by
    accident: they default to the official values.
    """

    image_size: int = 1024
    # Hiera trunk
    embed_dim: int = 144
    num_heads: int = 2
    stages: list[int] = field(default_factory=lambda: [2, 6, 36, 4])
    global_att_blocks: list[int] = field(default_factory=lambda: [23, 33, 43])
    window_spec: list[int] = field(default_factory=lambda: [8, 4, 16, 8])
    window_pos_embed_bkg_spatial_size: list[int] = field(default_factory=lambda: [7, 7])
    # FPN neck; backbone_channel_list is the trunk's stage widths, deepest first
    d_model: int = 256
    backbone_channel_list: list[int] = field(default_factory=lambda: [1152, 576, 288, 144])
    fpn_top_down_levels: list[int] = field(default_factory=lambda: [2, 3])
    backbone_stride: int = 16
    # memory attention / encoder
    memory_attention_num_layers: int = 4
    memory_attention_dim_feedforward: int = 2048
    memory_attention_rope_theta: float = 10000.0
    mem_dim: int = 64
    num_maskmem: int = 7
    max_obj_ptrs_in_encoder: int = 16
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    # SAM heads (hard-coded in the official SAM2Base)
    mask_decoder_mlp_dim: int = 2048
    mask_decoder_num_heads: int = 8
    mask_decoder_depth: int = 2
    num_multimask_outputs: int = 3
    mask_in_chans: int = 16
    # PAM's choices (see reference §3.4, §3.5)
    multimask_output_in_sam: bool = False
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98

    @property
    def feature_size(self) -> int:
        """Side of the stride-16 SAM image embedding (64 for 1024-pixel input)."""
        return self.image_size // self.backbone_stride

    @property
    def low_res_mask_size(self) -> int:
        """Side of the mask decoder's low-resolution logits (4x the feature map)."""
        return self.feature_size * 4

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmenterConfig:
        return _from_dict(cls, dict(data))


def hiera_channel_list(embed_dim: int, num_stages: int) -> list[int]:
    """The Hiera stage widths, deepest first (SAM 2's ``backbone_channel_list``): every official
    Hiera doubles its width at each stage (``dim_mul = 2.0``)."""
    return [embed_dim * 2**i for i in range(num_stages)][::-1]


def _hiera_preset(embed_dim, num_heads, stages, global_att_blocks, window_pos=(7, 7), window_spec=(8, 4, 14, 7)):
    channels = hiera_channel_list(embed_dim, len(stages))
    return SegmenterConfig(
        embed_dim=embed_dim,
        num_heads=num_heads,
        stages=list(stages),
        global_att_blocks=list(global_att_blocks),
        window_spec=list(window_spec),
        window_pos_embed_bkg_spatial_size=list(window_pos),
        backbone_channel_list=channels,
    )


# The four official SAM 2.1 sizes (values from the sam2.1_hiera_{t,s,b+,l}.yaml files).
SEGMENTER_PRESETS: dict[str, SegmenterConfig] = {
    "tiny": _hiera_preset(96, 1, [1, 2, 7, 2], [5, 7, 9]),
    "small": _hiera_preset(96, 1, [1, 2, 11, 2], [7, 10, 13]),
    "base-plus": _hiera_preset(112, 2, [2, 3, 16, 3], [12, 16, 20], window_pos=(14, 14)),
    "large": _hiera_preset(144, 2, [2, 6, 36, 4], [23, 33, 43], window_spec=(8, 4, 16, 8)),
}


def segmenter_preset(name: str) -> SegmenterConfig:
    try:
        return copy.deepcopy(SEGMENTER_PRESETS[name])
    except KeyError:
        raise ValueError(f"unknown SAM 2.1 preset {name!r}; choose one of {sorted(SEGMENTER_PRESETS)}") from None


@dataclass
class PerceiverConfig:
    """The Semantic Perceiver (reference §4). The official code hard-codes these values."""

    hidden_size: int = 256
    num_sem_tokens: int = 16
    depth: int = 2
    num_heads: int = 8
    mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    # pixel-shuffle factors: 2 for images and the first video frame, 4 for other video frames
    image_shuffle: int = 2
    frame_shuffle: int = 4
    # output width of every visual token (before the image projector); proj maps 16*256 -> this
    token_dim: int = 1024

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PerceiverConfig:
        return _from_dict(cls, dict(data))


@dataclass
class PamConfig:
    """Everything needed to build a PAM model.

    ``llm`` holds the keyword arguments of a ``transformers.Qwen2Config``. ``vocab_size`` there is
    the number of embedding rows in the checkpoint; ``tokenizer_vocab_size`` (``len(tokenizer)``)
    is the number the official loader keeps after ``resize_token_embeddings`` (reference §1.1).
    """

    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    perceiver: PerceiverConfig = field(default_factory=PerceiverConfig)
    llm: dict[str, Any] = field(default_factory=dict)
    projector_type: str = "mlp2x_gelu"
    tokenizer_vocab_size: int | None = None
    tokenizer_model_max_length: int = 12288
    # video: frames handed to the LLM (frame 0 + linspace over the rest)
    video_llm_frames: int = 16
    name: str = "pam"

    @property
    def hidden_size(self) -> int:
        return int(self.llm["hidden_size"])

    @property
    def image_tokens_per_region(self) -> int:
        """Visual rows for one image region: grid tokens + image_newline + sem tokens + semT_newline."""
        g = self.segmenter.feature_size // self.perceiver.image_shuffle
        return g * g + 1 + self.perceiver.num_sem_tokens + 1

    def frame_tokens(self, first: bool) -> int:
        """Visual rows for one video frame (including frame_newline)."""
        shuffle = self.perceiver.image_shuffle if first else self.perceiver.frame_shuffle
        g = self.segmenter.feature_size // shuffle
        return g * g + 1 + self.perceiver.num_sem_tokens + 1 + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "segmenter": self.segmenter.to_dict(),
            "perceiver": self.perceiver.to_dict(),
            "llm": dict(self.llm),
            "projector_type": self.projector_type,
            "tokenizer_vocab_size": self.tokenizer_vocab_size,
            "tokenizer_model_max_length": self.tokenizer_model_max_length,
            "video_llm_frames": self.video_llm_frames,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PamConfig:
        data = dict(data)
        seg = SegmenterConfig.from_dict(data.pop("segmenter", {}))
        per = PerceiverConfig.from_dict(data.pop("perceiver", {}))
        obj = _from_dict(cls, {**data, "segmenter": seg, "perceiver": per})
        return obj

    def qwen2_config(self):
        """The transformers ``Qwen2Config`` of the LLM, with the vocabulary cut to the tokenizer length."""
        from transformers import Qwen2Config

        kwargs = dict(self.llm)
        if self.tokenizer_vocab_size is not None:
            kwargs["vocab_size"] = int(self.tokenizer_vocab_size)
        kwargs.setdefault("tie_word_embeddings", True)
        kwargs["rope_scaling"] = None
        return Qwen2Config(**kwargs)


def _qwen25(hidden, inter, layers, heads) -> dict[str, Any]:
    return dict(vocab_size=151936, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=2, max_position_embeddings=32768,
                rope_theta=1000000.0, rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=True,
                use_sliding_window=False, sliding_window=32768, attention_dropout=0.0)


def _tiny_shapes() -> PamConfig:
    # 256-pixel input, a 4-stage Hiera of width 16, a 64-wide SAM head and perceiver, a 2-layer Qwen2:
    # the same code as PAM-3B, ~1.7 M parameters. The memory width stays 64 because transformers'
    # Sam2Video memory attention hard-codes it.
    seg = SegmenterConfig(
        image_size=256, embed_dim=16, num_heads=1, stages=[1, 1, 2, 1], global_att_blocks=[3],
        window_spec=[8, 4, 16, 8], backbone_channel_list=[128, 64, 32, 16], d_model=64,
        memory_attention_num_layers=2, memory_attention_dim_feedforward=256, mem_dim=64,
        mask_decoder_mlp_dim=256, mask_decoder_num_heads=4, mask_in_chans=8,
    )
    per = PerceiverConfig(hidden_size=64, num_heads=4, mlp_dim=256, token_dim=256)
    llm = dict(vocab_size=2048, hidden_size=128, intermediate_size=352, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=8192, rope_theta=1000000.0, rms_norm_eps=1e-6,
               hidden_act="silu", tie_word_embeddings=True)
    return PamConfig(segmenter=seg, perceiver=per, llm=llm, tokenizer_vocab_size=2048, name="tiny-shapes")


def _released(name: str, llm: dict[str, Any]) -> PamConfig:
    return PamConfig(segmenter=segmenter_preset("large"), perceiver=PerceiverConfig(), llm=llm,
                     tokenizer_vocab_size=151665, name=name)


# Model presets, in the spirit of segment-anything's build_sam registry.
PAM_PRESETS = {
    "pam-3b": lambda: _released("PAM-3B", _qwen25(2048, 11008, 36, 16)),
    "pam-1.5b": lambda: _released("PAM-1.5B", _qwen25(1536, 8960, 28, 12)),
    "tiny-shapes": _tiny_shapes,
}


def pam_preset(name: str) -> PamConfig:
    try:
        return PAM_PRESETS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown PAM preset {name!r}; choose one of {sorted(PAM_PRESETS)}") from None
