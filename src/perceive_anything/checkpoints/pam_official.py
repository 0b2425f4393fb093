"""Read and write official PAM Hugging Face folders (``model_type: llava_qwen``).

Only the language side lives in such a folder (the official loader builds SAM 2 from its own ``.pt``):
Qwen2 weights under ``model.*``, the Semantic Perceiver under ``model.vision_resampler.*``, the two
projectors and the three separator vectors. Loading is strict: anything missing, unexpected or
mis-shaped raises ``ValueError`` naming the keys.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import PamConfig, PerceiverConfig, SegmenterConfig

__all__ = [
    "QWEN2_CONFIG_FIELDS",
    "LoadReport",
    "LoadedPam",
    "pam_config_from_official",
    "official_config_json",
    "read_official_state_dict",
    "from_official_state_dict",
    "to_official_pam_state_dict",
    "load_official_pam",
    "save_official_pam",
]

# Qwen2 fields copied between the official config.json and ``PamConfig.llm``.
QWEN2_CONFIG_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "use_cache",
    "tie_word_embeddings",
    "rope_theta",
    "rope_parameters",
    "use_sliding_window",
    "sliding_window",
    "max_window_layers",
    "attention_dropout",
    "bos_token_id",
    "eos_token_id",
)

_LLM_PREFIXES = ("model.embed_tokens.", "model.layers.", "model.norm.")
_DIRECT = {
    "model.vision_resampler.": "perceiver.",
    "model.mm_projector_img.": "mm_projector_img.",
    "model.mm_projector_semT.": "mm_projector_semT.",
}
_SEPARATORS = ("image_newline", "semT_newline", "frame_newline")
_IGNORED_PREFIXES = ("model.vision_tower.",)


@dataclass
class LoadReport:
    """What a load did besides copying tensors."""

    ignored_keys: list[str] = field(default_factory=list)
    embedding_rows_in_file: int = 0
    embedding_rows_kept: int = 0
    lm_head_in_file: bool = False
    lm_head_matches_embedding: bool | None = None


@dataclass
class LoadedPam:
    model: Any  # PamLanguageModel
    tokenizer: Any
    config: PamConfig
    generation: Any  # GenerationSettings (from generation_config.json, or greedy defaults)
    official_config: dict
    report: LoadReport


def pam_config_from_official(cfg: dict, tokenizer_len: int | None = None,
                             segmenter: SegmenterConfig | None = None) -> PamConfig:
    """Validate an official ``config.json`` dict and turn it into a :class:`PamConfig`."""
    problems = []
    if cfg.get("model_type") != "llava_qwen":
        problems.append(f"model_type is {cfg.get('model_type')!r}, expected 'llava_qwen'")
    tower = cfg.get("mm_vision_tower")
    if not isinstance(tower, str) or "sam2" not in tower:
        problems.append(f"mm_vision_tower {tower!r} does not name a SAM 2 tower (must contain 'sam2')")
    if cfg.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        problems.append(f"mm_projector_type is {cfg.get('mm_projector_type')!r}, expected 'mlp2x_gelu'")
    if cfg.get("mm_hidden_size") != 256:
        problems.append(f"mm_hidden_size is {cfg.get('mm_hidden_size')!r}, expected 256 (the perceiver width)")
    if cfg.get("mm_use_im_patch_token", True) or cfg.get("mm_use_im_start_end", False):
        # The official loader would add <im_patch>/<im_start>/<im_end> tokens; PAM never trained with them.
        problems.append("mm_use_im_patch_token / mm_use_im_start_end must be false for PAM checkpoints")
    if problems:
        raise ValueError("not a PAM (llava_qwen + SAM 2) config: " + "; ".join(problems))
    llm = {k: cfg[k] for k in QWEN2_CONFIG_FIELDS if k in cfg and cfg[k] is not None}
    # The official LlavaQwenConfig is a Qwen2Config, whose default is an untied head: a config.json
    # without the field describes an untied model (Qwen2.5-7B style), not a tied one.
    llm["tie_word_embeddings"] = bool(cfg.get("tie_word_embeddings", False))
    if "rope_parameters" in llm:
        llm.pop("rope_theta", None)
    for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"):
        if k not in llm:
            raise ValueError(f"official config lacks the Qwen2 field {k!r}")
    return PamConfig(
        segmenter=segmenter if segmenter is not None else SegmenterConfig(),
        perceiver=PerceiverConfig(hidden_size=int(cfg["mm_hidden_size"])),
        llm=llm,
        projector_type="mlp2x_gelu",
        tokenizer_vocab_size=tokenizer_len,
        tokenizer_model_max_length=int(cfg.get("tokenizer_model_max_length") or 12288),
    )


def official_config_json(pam_config: PamConfig, torch_dtype: str = "float32") -> dict:
    """An official-format ``config.json`` dict for ``pam_config`` (what ``LlavaQwenForCausalLM`` reads)."""
    llm = dict(pam_config.llm)
    rope = llm.pop("rope_parameters", None)
    if rope is not None and "rope_theta" not in llm:
        llm["rope_theta"] = rope.get("rope_theta")
    out = {
        "architectures": ["LlavaQwenForCausalLM"],
        "model_type": "llava_qwen",
        **{k: llm[k] for k in QWEN2_CONFIG_FIELDS if k in llm},
        "rope_scaling": None,
        "mm_vision_tower": "meta/sam2.1_hiera_large",
        "mm_hidden_size": pam_config.perceiver.hidden_size,
        "mm_projector_type": pam_config.projector_type,
        "use_mm_proj": True,
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_patch_merge_type": "flat",
        "mm_tunable_parts": "mm_vision_resampler,mm_mlp_adapter,mm_language_model",
        "tokenizer_model_max_length": pam_config.tokenizer_model_max_length,
        "tokenizer_padding_side": "right",
        "torch_dtype": torch_dtype,
    }
    out.setdefault("tie_word_embeddings", True)
    return out


def read_official_state_dict(folder: str | Path) -> dict[str, Tensor]:
    """All tensors of ``model.safetensors`` or of the shards listed in ``model.safetensors.index.json``."""
    from .native import read_safetensors

    folder = Path(folder)
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        sd: dict[str, Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            part = read_safetensors(folder / shard)
            sd.update(part)
        missing = sorted(set(weight_map) - set(sd))
        if missing:
            raise ValueError(f"shards of {folder} lack keys listed in the index: {missing[:10]}")
        return sd
    if single.exists():
        return read_safetensors(single)
    raise FileNotFoundError(f"neither model.safetensors nor model.safetensors.index.json in {folder}")


def from_official_state_dict(sd: dict[str, Tensor], vocab_rows: int | None = None,
                             lm_head_mismatch: str = "raise",
                             tie_word_embeddings: bool = True) -> tuple[dict[str, Tensor], LoadReport]:
    """Map official names to :class:`PamLanguageModel` names.

    The embedding (and an untied head) is cut to ``vocab_rows`` (``len(tokenizer)``, as the official
    loader's ``resize_token_embeddings`` does). ``tie_word_embeddings`` is the checkpoint's own flag:

    * untied: ``lm_head.weight`` is the output head and must be in the file;
    * tied: a stored ``lm_head.weight`` must equal the embedding; on a mismatch ``lm_head_mismatch`` =
      ``"raise"`` (default), ``"warn"`` (keep the embedding) or ``"ignore"``.

    ``model.vision_tower.*`` keys are skipped and reported.
    """
    if lm_head_mismatch not in ("raise", "warn", "ignore"):
        raise ValueError("lm_head_mismatch must be 'raise', 'warn' or 'ignore'")
    report = LoadReport()
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in sd.items():
        if key.startswith(_IGNORED_PREFIXES):
            report.ignored_keys.append(key)
        elif key.startswith(_LLM_PREFIXES):
            out["llm." + key] = value
        elif key == "lm_head.weight":
            report.lm_head_in_file = True
        elif any(key.startswith(p) for p in _DIRECT):
            prefix = next(p for p in _DIRECT if key.startswith(p))
            out[_DIRECT[prefix] + key[len(prefix):]] = value
        elif key.startswith("model.") and key[len("model."):] in _SEPARATORS:
            out[key[len("model."):]] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"unexpected keys in the official checkpoint: {sorted(unknown)}")
    emb_key = "llm.model.embed_tokens.weight"
    if emb_key not in out:
        raise ValueError("missing keys in the official checkpoint: ['model.embed_tokens.weight']")
    emb = out[emb_key]
    report.embedding_rows_in_file = emb.shape[0]
    if report.lm_head_in_file:
        head = sd["lm_head.weight"]
        same = head.shape == emb.shape and torch.equal(head, emb)
        report.lm_head_matches_embedding = bool(same)
        if tie_word_embeddings and not same:
            msg = ("lm_head.weight differs from model.embed_tokens.weight although config.json ties them "
                   "(tie_word_embeddings: true); the embedding is used as the output head")
            if lm_head_mismatch == "raise":
                raise ValueError(msg + " (pass lm_head_mismatch='warn' to accept)")
            if lm_head_mismatch == "warn":
                warnings.warn(msg, stacklevel=2)
        if not tie_word_embeddings:
            if head.ndim != 2 or head.shape[1] != emb.shape[1]:
                raise ValueError(f"lm_head.weight has shape {tuple(head.shape)}; expected (vocab, {emb.shape[1]})")
            out["llm.lm_head.weight"] = head
    elif not tie_word_embeddings:
        raise ValueError("the checkpoint's head is untied (config.json: tie_word_embeddings is false or absent, "
                         "the Qwen2 default) but model.safetensors has no lm_head.weight")
    if vocab_rows is not None:
        for key, what in ((emb_key, "embedding"), ("llm.lm_head.weight", "lm_head")):
            if key not in out:
                continue
            if vocab_rows > out[key].shape[0]:
                raise ValueError(f"tokenizer has {vocab_rows} tokens but the checkpoint only {out[key].shape[0]} "
                                 f"{what} rows")
            out[key] = out[key][:vocab_rows]
    report.embedding_rows_kept = out[emb_key].shape[0]
    return out, report


def to_official_pam_state_dict(model_or_sd, vocab_size: int | None = None,
                               include_lm_head: bool = False) -> dict[str, Tensor]:
    """Inverse of :func:`from_official_state_dict`. ``vocab_size`` pads the embedding (and the head)
    with zero rows (the official files carry padded rows; their values never reach an output after
    truncation). The head is written when the model is untied, or for a tied one with ``include_lm_head``."""
    if hasattr(model_or_sd, "state_dict"):
        sd = model_or_sd.state_dict()
        # an untied head is a weight of its own and travels with the checkpoint
        include_lm_head = include_lm_head or not model_or_sd.llm.config.tie_word_embeddings
    else:
        sd = dict(model_or_sd)
    out: dict[str, Tensor] = {}
    head = None
    for key, value in sd.items():
        if key == "llm.lm_head.weight":
            head = value
            continue
        if key.startswith("llm.model."):
            out["model." + key[len("llm.model."):]] = value
        elif key.startswith("perceiver."):
            out["model.vision_resampler." + key[len("perceiver."):]] = value
        elif key.startswith(("mm_projector_img.", "mm_projector_semT.")) or key in _SEPARATORS:
            out["model." + key] = value
        else:
            raise ValueError(f"cannot map {key!r} to an official PAM name")
    if include_lm_head:
        out["lm_head.weight"] = head if head is not None else out["model.embed_tokens.weight"]
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        rows = out.get(key)
        if rows is not None and vocab_size is not None and vocab_size > rows.shape[0]:
            pad = torch.zeros((vocab_size - rows.shape[0], rows.shape[1]), dtype=rows.dtype, device=rows.device)
            out[key] = torch.cat([rows, pad], dim=0)
    return {k: v.detach().contiguous() for k, v in out.items()}


def _check_against_model(model, mapped: dict[str, Tensor]) -> None:
    from .native import strict_load

    tied = {"llm.lm_head.weight"} if model.llm.config.tie_word_embeddings else set()
    strict_load(model, mapped, "official PAM checkpoint", ignore=tied, load=False)


def load_official_pam(folder: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                      segmenter: SegmenterConfig | None = None, lm_head_mismatch: str = "raise",
                      tokenizer=None) -> LoadedPam:
    """Build a :class:`PamLanguageModel` from an official PAM folder and load it strictly."""
    from ..generation import GenerationSettings
    from ..modeling.language import PamLanguageModel
    from ..processing.text import load_tokenizer

    folder = Path(folder)
    official = json.loads((folder / "config.json").read_text())
    if tokenizer is None:
        tokenizer = load_tokenizer(folder)
    config = pam_config_from_official(official, tokenizer_len=len(tokenizer), segmenter=segmenter)
    mapped, report = from_official_state_dict(read_official_state_dict(folder), len(tokenizer), lm_head_mismatch,
                                              tie_word_embeddings=config.llm["tie_word_embeddings"])
    model = PamLanguageModel(config, init_weights=False)
    _check_against_model(model, mapped)
    model.load_state_dict(mapped, strict=False, assign=True)
    model.tie_weights()
    # Keep RoPE inverse frequencies in float32 under a bf16/fp16 cast, as the official model does.
    rotary = model.llm.model.rotary_emb
    rope_buffers = {name: buf.clone() for name, buf in rotary.named_buffers(recurse=False)}
    model.to(device=device, dtype=dtype)
    for name, buf in rope_buffers.items():
        setattr(rotary, name, buf.to(device))
    model.eval()
    gen_path = folder / "generation_config.json"
    if gen_path.exists():
        generation = GenerationSettings.from_generation_config_json(gen_path)
    else:
        generation = GenerationSettings(eos_token_id=[tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
    return LoadedPam(model=model, tokenizer=tokenizer, config=config, generation=generation,
                     official_config=official, report=report)


def save_official_pam(model, folder: str | Path, tokenizer=None, generation_config: dict | None = None,
                      torch_dtype: str | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (+ tokenizer, ``generation_config.json``) in the
    official layout, so the official loader (and :func:`load_official_pam`) can read it back."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    sd = to_official_pam_state_dict(model, vocab_size=int(cfg.llm.get("vocab_size", model.vocab_size)))
    dt = torch_dtype or str(next(iter(sd.values())).dtype).removeprefix("torch.")
    (folder / "config.json").write_text(json.dumps(official_config_json(cfg, dt), indent=2) + "\n")
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    if generation_config is not None:
        (folder / "generation_config.json").write_text(json.dumps(generation_config, indent=1) + "\n")
    return folder
