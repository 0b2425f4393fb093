"""Official SAM 2.1 checkpoints (``.pt`` + hydra ``.yaml``) <-> the transformers ``Sam2VideoModel`` layout.

* ``sam2_video_config``: a ``SegmenterConfig`` -> ``transformers.Sam2VideoConfig``.
* ``segmenter_config_from_official_yaml``: an official ``sam2.1_hiera_*.yaml`` -> ``SegmenterConfig``.
* ``convert_official_sam2_state_dict`` / ``to_official_sam2_state_dict``: key renaming both ways.
* ``load_official_sam2``: build a ``PamSegmenter`` and load a ``.pt`` strictly.

The key mapping is written from the two module trees (names only; no code of either project is
reused). Official MLPs are ``layers.0 .. layers.{n-1}``; transformers splits them into
``proj_in``, ``layers.{0..n-3}`` and ``proj_out``, so those keys are renumbered by MLP depth.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch

from ..config import SegmenterConfig, hiera_channel_list

__all__ = [
    "sam2_video_config",
    "segmenter_config_from_official_yaml",
    "convert_official_sam2_state_dict",
    "to_official_sam2_state_dict",
    "load_official_sam2",
    "load_official_sam2_state_dict",
    "strict_load_state_dict",
]

# One table of renames, read in both directions: (official template, transformers template). A
# template ending in "." renames a key prefix, any other template a whole key. ``{name}`` fields
# capture a piece of the key (digits unless _FIELDS says otherwise) and are copied to the other
# side. Rows are tried in order and the first match wins, in both directions.
_RENAMES: list[tuple[str, str]] = [
    # Hiera trunk
    ("image_encoder.trunk.patch_embed.proj.", "vision_encoder.backbone.patch_embed.projection."),
    ("image_encoder.trunk.blocks.{i}.norm{j}.", "vision_encoder.backbone.blocks.{i}.layer_norm{j}."),
    ("image_encoder.trunk.", "vision_encoder.backbone."),
    # FPN neck
    ("image_encoder.neck.convs.{i}.conv.", "vision_encoder.neck.convs.{i}."),
    # prompt encoder
    ("sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", "prompt_encoder.shared_embedding.positional_embedding"),
    ("sam_prompt_encoder.mask_downscaling.0.", "prompt_encoder.mask_embed.conv1."),
    ("sam_prompt_encoder.mask_downscaling.1.", "prompt_encoder.mask_embed.layer_norm1."),
    ("sam_prompt_encoder.mask_downscaling.3.", "prompt_encoder.mask_embed.conv2."),
    ("sam_prompt_encoder.mask_downscaling.4.", "prompt_encoder.mask_embed.layer_norm2."),
    ("sam_prompt_encoder.mask_downscaling.6.", "prompt_encoder.mask_embed.conv3."),
    ("sam_prompt_encoder.", "prompt_encoder."),
    # mask decoder
    ("sam_mask_decoder.transformer.layers.{i}.norm{j}.", "mask_decoder.transformer.layers.{i}.layer_norm{j}."),
    ("sam_mask_decoder.transformer.norm_final_attn.", "mask_decoder.transformer.layer_norm_final_attn."),
    ("sam_mask_decoder.transformer.{path}.out_proj.", "mask_decoder.transformer.{path}.o_proj."),
    ("sam_mask_decoder.output_upscaling.0.", "mask_decoder.upscale_conv1."),
    ("sam_mask_decoder.output_upscaling.1.", "mask_decoder.upscale_layer_norm."),
    ("sam_mask_decoder.output_upscaling.3.", "mask_decoder.upscale_conv2."),
    ("sam_mask_decoder.", "mask_decoder."),
    # memory attention
    ("memory_attention.layers.{i}.{attn}.out_proj.", "memory_attention.layers.{i}.{attn}.o_proj."),
    ("memory_attention.layers.{i}.norm{j}.", "memory_attention.layers.{i}.layer_norm{j}."),
    ("memory_attention.norm.", "memory_attention.layer_norm."),
    # memory encoder (mask_downsampler.encoder.* is renumbered in _official_key_to_hf / _hf_key_to_official)
    ("memory_encoder.pix_feat_proj.", "memory_encoder.feature_projection."),
    ("memory_encoder.fuser.layers.{i}.dwconv.", "memory_encoder.memory_fuser.layers.{i}.depthwise_conv."),
    ("memory_encoder.fuser.layers.{i}.norm.", "memory_encoder.memory_fuser.layers.{i}.layer_norm."),
    ("memory_encoder.fuser.layers.{i}.pwconv{j}.", "memory_encoder.memory_fuser.layers.{i}.pointwise_conv{j}."),
    ("memory_encoder.fuser.layers.{i}.gamma", "memory_encoder.memory_fuser.layers.{i}.scale"),
    ("memory_encoder.out_proj.", "memory_encoder.projection."),
    # SAM2Base-level parameters
    ("maskmem_tpos_enc", "memory_temporal_positional_encoding"),
    ("no_mem_embed", "no_memory_embedding"),
    ("no_mem_pos_enc", "no_memory_positional_encoding"),
    ("no_obj_ptr", "no_object_pointer"),
    ("no_obj_embed_spatial", "occlusion_spatial_embedding_parameter"),
    ("obj_ptr_proj.", "object_pointer_proj."),
    ("obj_ptr_tpos_proj.", "temporal_positional_encoding_projection_layer."),
]
_FIELDS = {"path": r".*", "attn": r"self_attn|cross_attn_image"}
_DIGITS = r"\d+"


def _compile(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    body = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{_FIELDS.get(p, _DIGITS)})" for i, p in enumerate(parts))
    return re.compile("^" + body + ("" if template.endswith(".") else "$"))


_OFFICIAL_TO_HF = [(_compile(a), b) for a, b in _RENAMES]
_HF_TO_OFFICIAL = [(_compile(b), a) for a, b in _RENAMES]


# transformers keeps a second copy of the prompt encoder's random-Fourier matrix for the dense PE.
_HF_DENSE_PE_KEY = "shared_image_embedding.positional_embedding"
_HF_SPARSE_PE_KEY = "prompt_encoder.shared_embedding.positional_embedding"
_HF_POINT_EMBED_KEY = "prompt_encoder.point_embed.weight"
_OFFICIAL_POINT_EMBED = re.compile(r"^sam_prompt_encoder\.point_embeddings\.(\d+)\.weight$")


def _mlp_depths(cfg: SegmenterConfig) -> list[tuple[re.Pattern, int]]:
    """(transformers-side MLP prefix pattern, number of linear layers) for every MLP of the model."""
    return [
        (re.compile(r"^(vision_encoder\.backbone\.blocks\.\d+\.mlp)\."), 2),
        (re.compile(r"^(mask_decoder\.transformer\.layers\.\d+\.mlp)\."), 2),
        (re.compile(r"^(mask_decoder\.output_hypernetworks_mlps\.\d+)\."), 3),
        (re.compile(r"^(mask_decoder\.iou_prediction_head)\."), 3),
        (re.compile(r"^(mask_decoder\.pred_obj_score_head)\."), 3),
        (re.compile(r"^(object_pointer_proj)\."), 3),
    ]


def _apply_rules(key: str, rules: list[tuple[re.Pattern, str]]) -> str:
    for pattern, template in rules:
        m = pattern.match(key)
        if m:
            return template.format(**m.groupdict()) + key[m.end():]
    return key


def _num_mask_downsampler_layers() -> int:
    # total stride 16 reached with stride-2 convs -> 4 conv+LN+GELU groups, then a 1x1 conv
    return 4


def _official_key_to_hf(key: str, cfg: SegmenterConfig) -> str:
    m = re.match(r"^memory_encoder\.mask_downsampler\.encoder\.(\d+)\.(.*)$", key)
    if m:
        idx, rest = int(m.group(1)), m.group(2)
        n = _num_mask_downsampler_layers()
        if idx == 3 * n:
            return f"memory_encoder.mask_downsampler.final_conv.{rest}"
        layer, slot = divmod(idx, 3)
        name = {0: "conv", 1: "layer_norm"}.get(slot)
        if name is None:
            return key  # an activation has no parameters; leave unknown keys alone (reported later)
        return f"memory_encoder.mask_downsampler.layers.{layer}.{name}.{rest}"
    new = _apply_rules(key, _OFFICIAL_TO_HF)
    for pattern, depth in _mlp_depths(cfg):
        mm = pattern.match(new)
        if mm:
            prefix = mm.group(1)
            lm = re.match(re.escape(prefix) + r"\.layers\.(\d+)\.(.*)$", new)
            if lm:
                i, rest = int(lm.group(1)), lm.group(2)
                if i == 0:
                    new = f"{prefix}.proj_in.{rest}"
                elif i == depth - 1:
                    new = f"{prefix}.proj_out.{rest}"
                else:
                    new = f"{prefix}.layers.{i - 1}.{rest}"
            break
    return new


def _hf_key_to_official(key: str, cfg: SegmenterConfig) -> str:
    m = re.match(r"^memory_encoder\.mask_downsampler\.(final_conv|layers\.(\d+)\.(conv|layer_norm))\.(.*)$", key)
    if m:
        rest = m.group(4)
        if m.group(1) == "final_conv":
            return f"memory_encoder.mask_downsampler.encoder.{3 * _num_mask_downsampler_layers()}.{rest}"
        idx = 3 * int(m.group(2)) + (0 if m.group(3) == "conv" else 1)
        return f"memory_encoder.mask_downsampler.encoder.{idx}.{rest}"
    new = key
    for pattern, depth in _mlp_depths(cfg):
        mm = pattern.match(new)
        if mm:
            prefix = mm.group(1)
            tail = new[len(prefix) + 1 :]
            if tail.startswith("proj_in."):
                new = f"{prefix}.layers.0.{tail[len('proj_in.'):]}"
            elif tail.startswith("proj_out."):
                new = f"{prefix}.layers.{depth - 1}.{tail[len('proj_out.'):]}"
            else:
                lm = re.match(r"^layers\.(\d+)\.(.*)$", tail)
                if lm:
                    new = f"{prefix}.layers.{int(lm.group(1)) + 1}.{lm.group(2)}"
            break
    return _apply_rules(new, _HF_TO_OFFICIAL)


def convert_official_sam2_state_dict(sd: Mapping[str, torch.Tensor], cfg: SegmenterConfig) -> dict[str, torch.Tensor]:
    """Rename an official SAM 2.1 state dict (``SAM2Base`` names) to ``Sam2VideoModel`` names.

    The four ``point_embeddings.{i}.weight`` (1, C) rows are stacked into ``point_embed.weight``
    (4, C); the random-Fourier matrix is copied to both of transformers' PE modules. Keys that
    match no rule are passed through unchanged, so a strict load reports them as unexpected.
    """
    out: dict[str, torch.Tensor] = {}
    points: dict[int, torch.Tensor] = {}
    for key, value in sd.items():
        pm = _OFFICIAL_POINT_EMBED.match(key)
        if pm:
            points[int(pm.group(1))] = value
            continue
        new = _official_key_to_hf(key, cfg)
        if new in out:
            raise ValueError(f"two official keys map to {new!r} (second one: {key!r})")
        out[new] = value
        if new == _HF_SPARSE_PE_KEY:
            out[_HF_DENSE_PE_KEY] = value
    if points:
        idx = sorted(points)
        if idx != list(range(len(idx))):
            raise ValueError(f"sam_prompt_encoder.point_embeddings indices are not contiguous: {idx}")
        out[_HF_POINT_EMBED_KEY] = torch.cat([points[i].reshape(1, -1) for i in idx], dim=0)
    return out


def to_official_sam2_state_dict(sd: Mapping[str, torch.Tensor], cfg: SegmenterConfig) -> dict[str, torch.Tensor]:
    """Inverse of ``convert_official_sam2_state_dict`` (``Sam2VideoModel`` names -> official names).

    Non-persistent buffers (e.g. the RoPE position ids) must not be in ``sd``; pass
    ``segmenter.sam.state_dict()`` (a ``PamSegmenter.state_dict()`` with its ``sam.`` prefix is accepted
    too). The duplicated random-Fourier matrix is checked for equality.
    """
    if sd and all(k.startswith("sam.") for k in sd):
        sd = {k[len("sam.") :]: v for k, v in sd.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key == _HF_DENSE_PE_KEY:
            other = sd.get(_HF_SPARSE_PE_KEY)
            if other is not None and not torch.equal(other, value):
                raise ValueError(f"{_HF_DENSE_PE_KEY} and {_HF_SPARSE_PE_KEY} differ; the official format has one matrix")
            if other is None:
                out["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = value
            continue
        if key == _HF_POINT_EMBED_KEY:
            for i in range(value.shape[0]):
                out[f"sam_prompt_encoder.point_embeddings.{i}.weight"] = value[i : i + 1].clone()
            continue
        out[_hf_key_to_official(key, cfg)] = value
    return out


# --------------------------------------------------------------------------------------------
# configs


def sam2_video_config(cfg: SegmenterConfig):
    """The ``transformers.Sam2VideoConfig`` of a ``SegmenterConfig`` (every size derived from it).

    PAM-specific settings: ``multimask_output_in_sam`` comes from ``cfg``; the mask decoder's own
    dynamic multimask fallback is off (PAM always outputs token 0; the stability rule is applied
    to the perceiver query only, in ``PamSegmenter``); attention is SDPA like the official code.
    """
    from transformers import Sam2VideoConfig
    from transformers.models.sam2.configuration_sam2 import Sam2HieraDetConfig, Sam2VisionConfig

    n_stages = len(cfg.stages)
    if len(cfg.window_spec) != n_stages:
        raise ValueError(f"window_spec {cfg.window_spec} must have one entry per stage {cfg.stages}")
    if cfg.mem_dim != 64:
        # transformers' Sam2VideoMemoryAttentionLayer builds its cross-attention with kv_in_dim=64 whatever
        # the config says; another width would fail deep inside the first tracked frame.
        raise ValueError(f"mem_dim {cfg.mem_dim} is not supported: transformers' SAM 2 video memory attention "
                         "reads 64-channel memories (every official SAM 2.1 size uses 64)")
    if cfg.image_size % cfg.backbone_stride:
        raise ValueError(f"image_size {cfg.image_size} is not a multiple of backbone_stride {cfg.backbone_stride}")
    channels = hiera_channel_list(cfg.embed_dim, n_stages)
    dims = channels[::-1]
    heads = [cfg.num_heads * 2**i for i in range(n_stages)]  # official Hiera head_mul = 2.0
    if list(cfg.backbone_channel_list) != channels:
        raise ValueError(
            f"backbone_channel_list {cfg.backbone_channel_list} does not match the Hiera stage widths {channels} "
            f"(embed_dim {cfg.embed_dim} doubled per stage, deepest first)"
        )
    # official Hiera: 4x4 patch embedding, then a 2x2 query pool at the start of every later stage
    # (q_pool = 3); FPN scalp 1 drops the deepest level, so the SAM levels are strides 4, 8, 16.
    s = cfg.image_size
    if cfg.backbone_stride != 4 * 2 ** (n_stages - 2):
        raise ValueError(f"backbone_stride {cfg.backbone_stride} is inconsistent with {n_stages} Hiera stages")
    feature_sizes = [[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]]
    f = cfg.feature_size

    backbone = Sam2HieraDetConfig(
        hidden_size=cfg.embed_dim,
        num_attention_heads=cfg.num_heads,
        num_channels=3,
        image_size=[s, s],
        patch_kernel_size=[7, 7],
        patch_stride=[4, 4],
        patch_padding=[3, 3],
        query_stride=[2, 2],
        window_positional_embedding_background_size=list(cfg.window_pos_embed_bkg_spatial_size),
        num_query_pool_stages=n_stages - 1,
        blocks_per_stage=list(cfg.stages),
        embed_dim_per_stage=dims,
        num_attention_heads_per_stage=heads,
        window_size_per_stage=list(cfg.window_spec),
        global_attention_blocks=list(cfg.global_att_blocks),
        mlp_ratio=4.0,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=list(cfg.backbone_channel_list),
        backbone_feature_sizes=feature_sizes,
        fpn_hidden_size=cfg.d_model,
        fpn_kernel_size=1,
        fpn_stride=1,
        fpn_padding=0,
        fpn_top_down_levels=list(cfg.fpn_top_down_levels),
        num_feature_levels=3,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
    )
    prompt = dict(
        hidden_size=cfg.d_model,
        image_size=s,
        patch_size=cfg.backbone_stride,
        mask_input_channels=cfg.mask_in_chans,
        num_point_embeddings=4,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        scale=1,
    )
    decoder = dict(
        hidden_size=cfg.d_model,
        hidden_act="gelu",
        mlp_dim=cfg.mask_decoder_mlp_dim,
        num_hidden_layers=cfg.mask_decoder_depth,
        num_attention_heads=cfg.mask_decoder_num_heads,
        attention_downsample_rate=2,
        num_multimask_outputs=cfg.num_multimask_outputs,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
        dynamic_multimask_via_stability=False,
        dynamic_multimask_stability_delta=cfg.dynamic_multimask_stability_delta,
        dynamic_multimask_stability_thresh=cfg.dynamic_multimask_stability_thresh,
    )
    config = Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=prompt,
        mask_decoder_config=decoder,
        num_maskmem=cfg.num_maskmem,
        image_size=s,
        sigmoid_scale_for_mem_enc=cfg.sigmoid_scale_for_mem_enc,
        sigmoid_bias_for_mem_enc=cfg.sigmoid_bias_for_mem_enc,
        enable_occlusion_spatial_embedding=True,
        multimask_output_in_sam=cfg.multimask_output_in_sam,
        multimask_min_pt_num=0,
        multimask_max_pt_num=1,
        multimask_output_for_tracking=True,
        max_object_pointers_in_encoder=cfg.max_obj_ptrs_in_encoder,
        max_cond_frame_num=-1,
        enable_temporal_pos_encoding_for_object_pointers=True,
        memory_attention_hidden_size=cfg.d_model,
        memory_attention_num_layers=cfg.memory_attention_num_layers,
        memory_attention_num_attention_heads=1,
        memory_attention_downsample_rate=1,
        memory_attention_feed_forward_hidden_size=cfg.memory_attention_dim_feedforward,
        memory_attention_feed_forward_hidden_act="relu",
        memory_attention_dropout=0.1,
        # the official yaml says [32, 32] but the RoPE table is rebuilt for the real grid on first
        # use (fixture README quirk 9): use the real feature-map size directly
        memory_attention_rope_feat_sizes=[f, f],
        memory_attention_rope_dropout=0.1,
        rope_parameters={"rope_type": "axial", "rope_theta": float(cfg.memory_attention_rope_theta)},
        memory_encoder_hidden_size=cfg.d_model,
        memory_encoder_output_channels=cfg.mem_dim,
        mask_downsampler_embed_dim=cfg.d_model,
        mask_downsampler_kernel_size=3,
        mask_downsampler_stride=2,
        mask_downsampler_padding=1,
        mask_downsampler_total_stride=16,
        mask_downsampler_hidden_act="gelu",
        memory_fuser_num_layers=2,
        memory_fuser_embed_dim=cfg.d_model,
        memory_fuser_intermediate_dim=4 * cfg.d_model,
        memory_fuser_kernel_size=7,
        memory_fuser_padding=3,
        memory_fuser_layer_scale_init_value=1e-6,
        memory_fuser_hidden_act="gelu",
    )
    # SDPA everywhere (the official code calls F.scaled_dot_product_attention); eager attention
    # would materialise 4096 x 28672 score matrices in the memory attention.
    config._attn_implementation = "sdpa"
    config.vision_config._attn_implementation = "sdpa"
    config.vision_config.backbone_config._attn_implementation = "sdpa"
    config.mask_decoder_config._attn_implementation = "sdpa"
    return config


# Hiera constructor defaults (official hieradet.Hiera), used when a yaml leaves a field out
# (e.g. sam2.1_hiera_b+.yaml only sets embed_dim and num_heads).
_HIERA_DEFAULTS = dict(
    embed_dim=96,
    num_heads=1,
    stages=[2, 3, 16, 3],
    global_att_blocks=[12, 16, 20],
    window_spec=[8, 4, 14, 7],
    window_pos_embed_bkg_spatial_size=[14, 14],
)

# SAM2Base settings that this implementation hard-wires, with the value it implements. A yaml
# that sets one of them differently describes a model we would silently get wrong, so refuse it.
_REQUIRED_MODEL_FLAGS: dict[str, Any] = {
    "use_mask_input_as_output_without_sam": True,
    "directly_add_no_mem_embed": True,
    "no_obj_embed_spatial": True,
    "use_high_res_features_in_sam": True,
    "iou_prediction_use_sigmoid": True,
    "use_obj_ptrs_in_encoder": True,
    "add_tpos_enc_to_obj_ptrs": True,
    "proj_tpos_enc_in_obj_ptrs": True,
    "use_signed_tpos_enc_to_obj_ptrs": True,
    "only_obj_ptrs_in_the_past_for_eval": True,
    "pred_obj_scores": True,
    "pred_obj_scores_mlp": True,
    "fixed_no_obj_ptr": True,
    "use_mlp_for_obj_ptr_proj": True,
    "soft_no_obj_ptr": False,
    "max_cond_frames_in_attn": -1,
    "memory_temporal_stride_for_eval": 1,
    "non_overlap_masks_for_mem_enc": False,
    "multimask_output_for_tracking": True,
    "use_multimask_token_for_obj_ptr": True,
    "multimask_min_pt_num": 0,
    "multimask_max_pt_num": 1,
}

# Sizes that the yaml may set but every official SAM 2.1 keeps, and this implementation wires in
# (yaml path, value). A yaml with another value is refused rather than silently misread.
_FIXED_SIZES: list[tuple[tuple[str, ...], Any]] = [
    (("image_encoder", "trunk", "dim_mul"), 2.0),
    (("image_encoder", "trunk", "head_mul"), 2.0),
    (("image_encoder", "trunk", "q_stride"), [2, 2]),
    (("image_encoder", "trunk", "mlp_ratio"), 4.0),
    (("memory_attention", "layer", "self_attention", "num_heads"), 1),
    (("memory_attention", "layer", "cross_attention", "num_heads"), 1),
    (("memory_attention", "layer", "self_attention", "downsample_rate"), 1),
    (("memory_encoder", "fuser", "num_layers"), 2),
    (("memory_encoder", "fuser", "layer", "kernel_size"), 7),
    (("memory_encoder", "mask_downsampler", "kernel_size"), 3),
    (("memory_encoder", "mask_downsampler", "stride"), 2),
]


def segmenter_config_from_official_yaml(path: str | Path) -> SegmenterConfig:
    """Read an official SAM 2.1 hydra yaml (``model: {image_encoder: ..., memory_attention: ...}``).

    Fields missing from the yaml take the official class defaults. Settings this implementation
    does not support (another FPN interpolation, no object pointers, ...) raise ``ValueError``.
    Uses PyYAML (a dependency of transformers).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SAM 2 config not found: {path}")
    with open(path, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict):
        raise ValueError(f"{path}: not an official SAM 2 config (no top-level 'model' mapping)")
    model = doc["model"]

    def get(d: Any, *keys, default=None):
        for k in keys:
            if not isinstance(d, dict) or k not in d:
                return default
            d = d[k]
        return d

    trunk = get(model, "image_encoder", "trunk", default={}) or {}
    neck = get(model, "image_encoder", "neck", default={}) or {}
    mem_layer = get(model, "memory_attention", "layer", default={}) or {}
    problems = []
    scalp = get(model, "image_encoder", "scalp", default=1)
    if scalp != 1:
        problems.append(f"image_encoder.scalp={scalp} (only 1 is supported)")
    interp = neck.get("fpn_interp_model", "bilinear")
    if interp != "nearest":
        problems.append(f"neck.fpn_interp_model={interp!r} (only 'nearest' is supported)")
    fuse = neck.get("fuse_type", "sum")
    if fuse != "sum":
        problems.append(f"neck.fuse_type={fuse!r} (only 'sum' is supported)")
    for name, want in _REQUIRED_MODEL_FLAGS.items():
        if name in model and model[name] != want:
            problems.append(f"model.{name}={model[name]!r} (only {want!r} is supported)")
    for keys, want in _FIXED_SIZES:
        value = get(model, *keys)
        if value is not None and value != want and not (isinstance(want, list) and list(value) == want):
            problems.append(f"model.{'.'.join(keys)}={value!r} (only {want!r} is supported)")
    stages_in_yaml = trunk.get("stages", _HIERA_DEFAULTS["stages"])
    q_pool = trunk.get("q_pool", len(stages_in_yaml) - 1)
    if q_pool != len(stages_in_yaml) - 1:
        problems.append(f"model.image_encoder.trunk.q_pool={q_pool!r} (only one query pool per later stage, "
                        f"{len(stages_in_yaml) - 1}, is supported)")
    for att in ("self_attention", "cross_attention"):
        dim = get(model, "memory_attention", "layer", att, "embedding_dim")
        if dim is not None and dim != neck.get("d_model", dim):
            problems.append(f"model.memory_attention.layer.{att}.embedding_dim={dim!r} differs from neck.d_model")
    if problems:
        raise ValueError(f"{path}: unsupported SAM 2 settings: " + "; ".join(problems))

    hiera = {k: trunk.get(k, v) for k, v in _HIERA_DEFAULTS.items()}
    sa = mem_layer.get("self_attention", {}) or {}
    extra = model.get("sam_mask_decoder_extra_args", {}) or {}
    defaults = SegmenterConfig()
    embed_dim = int(hiera["embed_dim"])
    stages = [int(x) for x in hiera["stages"]]
    channels = neck.get("backbone_channel_list") or hiera_channel_list(embed_dim, len(stages))
    return SegmenterConfig(
        image_size=int(model.get("image_size", 512)),
        embed_dim=embed_dim,
        num_heads=int(hiera["num_heads"]),
        stages=stages,
        global_att_blocks=[int(x) for x in hiera["global_att_blocks"]],
        window_spec=[int(x) for x in hiera["window_spec"]],
        window_pos_embed_bkg_spatial_size=[int(x) for x in hiera["window_pos_embed_bkg_spatial_size"]],
        d_model=int(neck.get("d_model", defaults.d_model)),
        backbone_channel_list=[int(x) for x in channels],
        fpn_top_down_levels=[int(x) for x in neck.get("fpn_top_down_levels", [2, 3])],
        backbone_stride=int(model.get("backbone_stride", 16)),
        memory_attention_num_layers=int(get(model, "memory_attention", "num_layers", default=4)),
        memory_attention_dim_feedforward=int(mem_layer.get("dim_feedforward", 2048)),
        memory_attention_rope_theta=float(sa.get("rope_theta", 10000.0)),
        mem_dim=int(get(model, "memory_encoder", "out_dim", default=defaults.mem_dim)),
        num_maskmem=int(model.get("num_maskmem", 7)),
        max_obj_ptrs_in_encoder=int(model.get("max_obj_ptrs_in_encoder", 16)),
        sigmoid_scale_for_mem_enc=float(model.get("sigmoid_scale_for_mem_enc", 1.0)),
        sigmoid_bias_for_mem_enc=float(model.get("sigmoid_bias_for_mem_enc", 0.0)),
        multimask_output_in_sam=bool(model.get("multimask_output_in_sam", False)),
        dynamic_multimask_stability_delta=float(extra.get("dynamic_multimask_stability_delta", 0.05)),
        dynamic_multimask_stability_thresh=float(extra.get("dynamic_multimask_stability_thresh", 0.98)),
    )


# --------------------------------------------------------------------------------------------
# loading


def strict_load_state_dict(module: torch.nn.Module, sd: Mapping[str, torch.Tensor], what: str = "state dict",
                           describe=None, assign: bool = False) -> None:
    """Strict load with one error naming missing, unexpected and mis-shaped keys (see ``native.strict_load``)."""
    from .native import strict_load

    strict_load(module, dict(sd), what, describe=describe, assign=assign)


def load_official_sam2_state_dict(path_pt: str | Path) -> dict[str, torch.Tensor]:
    """The ``"model"`` state dict of an official SAM 2 ``.pt`` (``torch.save({"model": sd})``)."""
    path_pt = Path(path_pt)
    if not path_pt.is_file():
        raise FileNotFoundError(f"SAM 2 checkpoint not found: {path_pt}")
    # mmap: tensors are read from the page cache where they are used, not copied into fresh memory first
    obj = torch.load(path_pt, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(obj, dict) or "model" not in obj:
        keys = list(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{path_pt}: expected torch.save({{'model': state_dict}}), found {keys}")
    return obj["model"]


def load_official_sam2(path_pt: str | Path, cfg: SegmenterConfig, dtype: torch.dtype | None = None, device=None):
    """Build a ``PamSegmenter`` for ``cfg`` and load an official SAM 2.1 ``.pt`` into it strictly.

    Any missing/unexpected key or shape mismatch raises ``ValueError`` listing them (official name
    first, then the transformers name it maps to).
    """
    from ..modeling.segmenter import PamSegmenter

    from transformers.initialization import no_init_weights

    sd = convert_official_sam2_state_dict(load_official_sam2_state_dict(path_pt), cfg)
    # every persistent tensor comes from the checkpoint (strict): random init would be thrown away
    with no_init_weights():
        seg = PamSegmenter(cfg)
    def describe(key: str) -> str:
        if key == _HF_POINT_EMBED_KEY:
            return f"sam_prompt_encoder.point_embeddings.* (stacked) [{key}]"
        if key == _HF_DENSE_PE_KEY:
            return f"sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix [{key}]"
        return f"{_hf_key_to_official(key, cfg)} [{key}]"

    strict_load_state_dict(seg.sam, sd, what=f"SAM 2 checkpoint {path_pt}", describe=describe, assign=True)
    seg.eval()
    if dtype is not None or device is not None:
        seg.to(device=device, dtype=dtype)
    return seg
