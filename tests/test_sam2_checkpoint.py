"""Official SAM 2.1 checkpoints: config reading, key conversion both ways, strict loading."""

from __future__ import annotations

import json

import pytest
import torch

from perceive_anything.checkpoints.sam2 import (
    convert_official_sam2_state_dict,
    load_official_sam2,
    sam2_video_config,
    segmenter_config_from_official_yaml,
    to_official_sam2_state_dict,
)
from perceive_anything.config import SegmenterConfig, segmenter_preset
from perceive_anything.modeling.segmenter import PamSegmenter

from test_segmenter import tiny_config


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = tiny_config()
    return cfg, PamSegmenter(cfg)


@pytest.fixture()
def tiny_pt(tiny, tmp_path):
    cfg, model = tiny
    official = to_official_sam2_state_dict(model.sam.state_dict(), cfg)
    path = tmp_path / "tiny.pt"
    torch.save({"model": official}, path)
    return cfg, model, official, path


def test_round_trip_tiny(tiny):
    cfg, model = tiny
    sd = model.sam.state_dict()
    official = to_official_sam2_state_dict(sd, cfg)
    for key in (
        "image_encoder.trunk.patch_embed.proj.weight",
        "image_encoder.trunk.blocks.0.norm1.weight",
        "image_encoder.trunk.blocks.0.mlp.layers.1.weight",
        "image_encoder.neck.convs.3.conv.weight",
        "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        "sam_prompt_encoder.point_embeddings.3.weight",
        "sam_prompt_encoder.mask_downscaling.6.weight",
        "sam_mask_decoder.transformer.layers.1.norm4.bias",
        "sam_mask_decoder.transformer.final_attn_token_to_image.out_proj.weight",
        "sam_mask_decoder.output_upscaling.1.weight",
        "sam_mask_decoder.output_hypernetworks_mlps.3.layers.2.weight",
        "sam_mask_decoder.iou_prediction_head.layers.1.bias",
        "memory_attention.layers.1.cross_attn_image.out_proj.weight",
        "memory_attention.norm.weight",
        "memory_encoder.mask_downsampler.encoder.10.weight",
        "memory_encoder.mask_downsampler.encoder.12.weight",
        "memory_encoder.fuser.layers.1.gamma",
        "maskmem_tpos_enc",
        "no_obj_embed_spatial",
        "obj_ptr_proj.layers.2.weight",
        "obj_ptr_tpos_proj.weight",
    ):
        assert key in official, key
    assert official["sam_prompt_encoder.point_embeddings.0.weight"].shape == (1, cfg.d_model)
    back = convert_official_sam2_state_dict(official, cfg)
    assert sorted(back) == sorted(sd)
    for k in sd:
        assert torch.equal(back[k], sd[k]), k


def test_golden_checkpoint_keys_round_trip(shared_dir):
    sam2_dir = shared_dir / "golden" / "weights" / "sam2"
    official = torch.load(sam2_dir / "sam2.1_hiera_parity.pt", map_location="cpu", weights_only=True)["model"]
    arch = json.loads((sam2_dir / "sam2_arch.json").read_text())
    assert set(official) == set(arch["param_shapes"])
    cfg = segmenter_config_from_official_yaml(sam2_dir / "sam2.1_hiera_parity.yaml")
    hf = convert_official_sam2_state_dict(official, cfg)
    again = to_official_sam2_state_dict(hf, cfg)
    assert sorted(again) == sorted(official)
    for k, v in official.items():
        assert torch.equal(again[k], v), k
    model = load_official_sam2(sam2_dir / "sam2.1_hiera_parity.pt", cfg)
    own = model.sam.state_dict()
    assert sorted(own) == sorted(hf)


def test_parity_yaml_config(shared_dir):
    sam2_dir = shared_dir / "golden" / "weights" / "sam2"
    cfg = segmenter_config_from_official_yaml(sam2_dir / "sam2.1_hiera_parity.yaml")
    arch = json.loads((sam2_dir / "sam2_arch.json").read_text())
    d = arch["derived"]
    assert cfg.image_size == d["image_size"] and cfg.feature_size == d["sam_image_embedding_size"]
    assert (cfg.embed_dim, cfg.num_heads, cfg.stages, cfg.global_att_blocks) == (32, 1, [1, 1, 2, 1], [3])
    assert cfg.window_spec == [8, 4, 16, 8] and cfg.backbone_channel_list == [256, 128, 64, 32]
    assert cfg.memory_attention_dim_feedforward == 512 and cfg.mem_dim == d["mem_dim"] == 64
    assert cfg.num_maskmem == 7 and cfg.max_obj_ptrs_in_encoder == d["max_obj_ptrs_in_encoder"]
    assert cfg.multimask_output_in_sam is False
    assert (cfg.sigmoid_scale_for_mem_enc, cfg.sigmoid_bias_for_mem_enc) == (20.0, -10.0)


_TINY_YAML = """\
# @package _global_
model:
  _target_: sam2.modeling.sam2_base.SAM2Base
  image_encoder:
    _target_: sam2.modeling.backbones.image_encoder.ImageEncoder
    scalp: 1
    trunk:
      _target_: sam2.modeling.backbones.hieradet.Hiera
      embed_dim: 96
      num_heads: 1
      stages: [1, 2, 7, 2]
      global_att_blocks: [5, 7, 9]
      window_pos_embed_bkg_spatial_size: [7, 7]
    neck:
      _target_: sam2.modeling.backbones.image_encoder.FpnNeck
      d_model: 256
      backbone_channel_list: [768, 384, 192, 96]
      fpn_top_down_levels: [2, 3]
      fpn_interp_model: {interp}
  memory_attention:
    _target_: sam2.modeling.memory_attention.MemoryAttention
    d_model: 256
    num_layers: 4
    layer:
      dim_feedforward: 2048
      self_attention:
        rope_theta: 10000.0
  memory_encoder:
    out_dim: 64
  num_maskmem: 7
  image_size: 1024
  sigmoid_scale_for_mem_enc: 20.0
  sigmoid_bias_for_mem_enc: -10.0
  multimask_output_in_sam: true
  use_obj_ptrs_in_encoder: true
"""


def test_yaml_defaults_match_presets(tmp_path):
    path = tmp_path / "sam2.1_hiera_t.yaml"
    path.write_text(_TINY_YAML.format(interp="nearest"))
    cfg = segmenter_config_from_official_yaml(path)
    want = segmenter_preset("tiny")
    want.multimask_output_in_sam = True  # upstream yaml (PAM sets it False)
    assert cfg == want  # window_spec comes from the Hiera default (8, 4, 14, 7)


def test_yaml_unsupported_settings(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(_TINY_YAML.format(interp="bilinear").replace("use_obj_ptrs_in_encoder: true", "use_obj_ptrs_in_encoder: false"))
    with pytest.raises(ValueError, match="fpn_interp_model.*use_obj_ptrs_in_encoder|use_obj_ptrs_in_encoder"):
        segmenter_config_from_official_yaml(path)
    with pytest.raises(FileNotFoundError):
        segmenter_config_from_official_yaml(tmp_path / "missing.yaml")
    (tmp_path / "empty.yaml").write_text("a: 1\n")
    with pytest.raises(ValueError, match="model"):
        segmenter_config_from_official_yaml(tmp_path / "empty.yaml")


def test_video_config_is_derived():
    cfg = tiny_config()
    hf = sam2_video_config(cfg)
    assert hf.image_size == 256 and hf.memory_attention_rope_feat_sizes == [16, 16]
    assert hf.vision_config.backbone_feature_sizes == [[64, 64], [32, 32], [16, 16]]
    assert hf.vision_config.backbone_config.embed_dim_per_stage == [8, 16, 32, 64]
    assert hf.mask_decoder_config.dynamic_multimask_via_stability is False
    with pytest.raises(ValueError, match="backbone_channel_list"):
        sam2_video_config(tiny_config(backbone_channel_list=[64, 32, 16, 4]))
    large = sam2_video_config(SegmenterConfig())
    assert large.vision_config.backbone_config.num_attention_heads_per_stage == [2, 4, 8, 16]


def test_strict_load_ok(tiny_pt):
    cfg, model, _, path = tiny_pt
    loaded = load_official_sam2(path, cfg)
    for k, v in model.sam.state_dict().items():
        assert torch.equal(loaded.sam.state_dict()[k], v), k


def test_strict_load_missing_key(tiny_pt, tmp_path):
    cfg, _, official, _ = tiny_pt
    sd = dict(official)
    del sd["sam_mask_decoder.iou_token.weight"]
    del sd["memory_encoder.fuser.layers.0.gamma"]
    path = tmp_path / "missing.pt"
    torch.save({"model": sd}, path)
    with pytest.raises(ValueError, match=r"missing keys \(2\)") as err:
        load_official_sam2(path, cfg)
    assert "sam_mask_decoder.iou_token.weight" in str(err.value)
    assert "memory_encoder.fuser.layers.0.gamma" in str(err.value)


def test_strict_load_unexpected_key(tiny_pt, tmp_path):
    cfg, _, official, _ = tiny_pt
    sd = dict(official)
    sd["image_encoder.trunk.extra_param"] = torch.zeros(3)
    path = tmp_path / "unexpected.pt"
    torch.save({"model": sd}, path)
    with pytest.raises(ValueError, match=r"unexpected keys \(1\)") as err:
        load_official_sam2(path, cfg)
    assert "extra_param" in str(err.value)


def test_strict_load_shape_mismatch(tiny_pt, tmp_path):
    cfg, _, official, _ = tiny_pt
    sd = dict(official)
    sd["obj_ptr_tpos_proj.weight"] = torch.zeros(32, cfg.d_model)
    path = tmp_path / "shape.pt"
    torch.save({"model": sd}, path)
    with pytest.raises(ValueError, match=r"shape mismatches \(1\)") as err:
        load_official_sam2(path, cfg)
    assert "obj_ptr_tpos_proj.weight" in str(err.value) and "(32, 256)" in str(err.value)


def test_strict_load_many_keys_are_truncated(tiny_pt, tmp_path):
    cfg, _, official, _ = tiny_pt
    sd = {k: v for k, v in official.items() if not k.startswith("memory_attention.")}
    path = tmp_path / "many.pt"
    torch.save({"model": sd}, path)
    with pytest.raises(ValueError, match=r"and \d+ more"):
        load_official_sam2(path, cfg)


def test_bad_checkpoint_files(tmp_path, tiny):
    cfg, _ = tiny
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_official_sam2(tmp_path / "nope.pt", cfg)
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="model"):
        load_official_sam2(tmp_path / "other.pt", cfg)


def test_unsupported_memory_width_is_refused_up_front():
    from perceive_anything.checkpoints.sam2 import sam2_video_config
    from perceive_anything.config import SegmenterConfig

    with pytest.raises(ValueError, match="mem_dim 32 is not supported"):
        sam2_video_config(SegmenterConfig(mem_dim=32))
