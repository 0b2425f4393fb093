"""Write random tiny PAM checkpoints in the OFFICIAL formats (PAM Hugging Face folder + SAM 2.1 ``.pt``
+ hydra yaml), so loaders can be tested on any model shape without the shared fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import torch

# the official SAM2Base / yaml layout, only the keys segmenter_config_from_official_yaml reads
_YAML = """# @package _global_
model:
  _target_: sam2.modeling.sam2_base.SAM2Base
  image_encoder:
    scalp: 1
    trunk:
      embed_dim: {embed_dim}
      num_heads: {num_heads}
      stages: {stages}
      global_att_blocks: {global_att_blocks}
      window_pos_embed_bkg_spatial_size: {window_pos_embed_bkg_spatial_size}
      window_spec: {window_spec}
    neck:
      d_model: {d_model}
      backbone_channel_list: {backbone_channel_list}
      fpn_top_down_levels: [2, 3]
      fpn_interp_model: nearest
  memory_attention:
    d_model: {d_model}
    num_layers: {memory_attention_num_layers}
    layer:
      dim_feedforward: {memory_attention_dim_feedforward}
      self_attention:
        rope_theta: {memory_attention_rope_theta}
  memory_encoder:
    out_dim: {mem_dim}
  num_maskmem: {num_maskmem}
  image_size: {image_size}
  sigmoid_scale_for_mem_enc: 20.0
  sigmoid_bias_for_mem_enc: -10.0
  multimask_output_in_sam: false
"""


def official_yaml(seg) -> str:
    return _YAML.format(**{k: (json.dumps(v) if isinstance(v, list) else v) for k, v in seg.to_dict().items()})


def write_official_checkpoint(root: Path, config, tokenizer, seed: int = 0, head_noise: float = 0.0) -> tuple[Path, Path]:
    """A random ``PamModel(config)`` written as ``root/pam_model`` (official PAM folder) and
    ``root/sam2/sam2.1_hiera_test.{pt,yaml}``. An untied LLM gets its own ``lm_head.weight``; for a tied one,
    ``head_noise`` > 0 stores a head that differs from the embedding. Returns (pam folder, .pt)."""
    from safetensors.torch import load_file, save_file

    from perceive_anything.checkpoints.pam_official import save_official_pam
    from perceive_anything.checkpoints.sam2 import to_official_sam2_state_dict
    from perceive_anything.modeling.pam import PamModel

    torch.manual_seed(seed)
    model = PamModel(config).eval()
    pam_dir = save_official_pam(model.language, root / "pam_model", tokenizer=tokenizer,
                                generation_config={"eos_token_id": [tokenizer.eos_token_id], "repetition_penalty": 1.05})
    if head_noise:
        sd = load_file(str(pam_dir / "model.safetensors"))
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"] + head_noise * torch.randn_like(sd["model.embed_tokens.weight"])
        save_file(sd, str(pam_dir / "model.safetensors"), metadata={"format": "pt"})
    sam_dir = root / "sam2"
    sam_dir.mkdir(parents=True, exist_ok=True)
    pt = sam_dir / "sam2.1_hiera_test.pt"
    torch.save({"model": to_official_sam2_state_dict(model.segmenter.sam.state_dict(), config.segmenter)}, pt)
    (sam_dir / "sam2.1_hiera_test.yaml").write_text(official_yaml(config.segmenter))
    return pam_dir, pt
