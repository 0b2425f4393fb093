"""Loading, converting and saving PAM checkpoints.

``load_pretrained`` accepts, in this order of checks:

* ``None``: the embedded default model shipped inside the package;
* a folder in this package's format (``pam_config.json`` + ``model.safetensors``);
* an official PAM Hugging Face folder (``config.json`` with ``model_type: llava_qwen``) plus an
  official SAM 2.1 ``.pt`` (``sam2=``; a ``.pt`` inside the folder is used when none is given);
* a hub id (``Perceive-Anything/PAM-3B``, ...), downloaded through ``huggingface_hub``.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import PamConfig, SegmenterConfig, segmenter_preset
from .hub import DEFAULT_SAM2_FOR_PAM, HubUnavailableError, looks_like_hub_id, resolve_pam_hub, resolve_sam2_hub
from .native import CheckpointError, is_native_folder, load_native_weights, read_native_config, save_native

__all__ = [
    "LoadedModel",
    "CheckpointError",
    "HubUnavailableError",
    "load_pretrained",
    "load_official",
    "load_native",
    "save_pretrained",
    "convert_official",
    "embedded_model_dir",
    "sam2_config_for_checkpoint",
]

EMBEDDED_MODEL = "tiny-shapes"


@dataclass
class LoadedModel:
    model: Any  # PamModel
    tokenizer: Any
    generation: Any  # GenerationSettings
    name: str
    source: str


class _Progress:
    """Step-by-step progress on stderr while weights load (large checkpoints take a while)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    @contextmanager
    def step(self, what: str):
        t0 = time.perf_counter()
        if self.enabled:
            print(f"[pam] {what} ...", end="", file=sys.stderr, flush=True)
        try:
            yield
        except BaseException:
            if self.enabled:
                print(" failed", file=sys.stderr, flush=True)
            raise
        if self.enabled:
            print(f" done ({time.perf_counter() - t0:.1f}s)", file=sys.stderr, flush=True)


def embedded_model_dir() -> Path | None:
    """The tiny model trained by ``pam train --recipe shapes`` and shipped inside the package."""
    path = Path(__file__).resolve().parent.parent / "assets" / EMBEDDED_MODEL
    return path if is_native_folder(path) else None


def is_official_folder(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("model_type") == "llava_qwen"
    except json.JSONDecodeError:
        return False


_PRESET_NAME_HINTS = (("base_plus", "base-plus"), ("base-plus", "base-plus"), ("b+", "base-plus"),
                      ("large", "large"), ("small", "small"), ("tiny", "tiny"))


def sam2_config_for_checkpoint(path: Path, sam2_config: str | Path | None = None) -> SegmenterConfig:
    """Which SAM 2.1 architecture a ``.pt`` holds: an explicit yaml, a yaml beside it, or its file name."""
    from .sam2 import segmenter_config_from_official_yaml

    if sam2_config is not None:
        return segmenter_config_from_official_yaml(sam2_config)
    same_stem = path.with_suffix(".yaml")
    if same_stem.is_file():
        return segmenter_config_from_official_yaml(same_stem)
    yamls = sorted(path.parent.glob("*.yaml"))
    if len(yamls) == 1:
        return segmenter_config_from_official_yaml(yamls[0])
    name = path.name.lower()
    for hint, preset in _PRESET_NAME_HINTS:
        if hint in name:
            return segmenter_preset(preset)
    raise CheckpointError(
        f"cannot tell which SAM 2.1 size {path} holds: pass its official yaml (sam2_config=... / "
        "--sam2-config) or keep the official file name (sam2.1_hiera_{tiny,small,base_plus,large}.pt)"
    )


def _find_sam2_in(folder: Path) -> Path | None:
    pts = sorted(folder.glob("*.pt"))
    return pts[0] if len(pts) == 1 else None


def load_official(
    pam_dir: str | Path,
    sam2: str | Path,
    sam2_config: str | Path | None = None,
    progress: bool = False,
    name: str | None = None,
) -> LoadedModel:
    """An official PAM folder + an official SAM 2.1 ``.pt``, both loaded strictly."""
    from ..modeling.pam import PamModel
    from .pam_official import load_official_pam
    from .sam2 import load_official_sam2

    prog = _Progress(progress)
    pam_dir = Path(pam_dir)
    sam2_path = Path(sam2)
    if not sam2_path.is_file():
        raise FileNotFoundError(f"SAM 2.1 checkpoint not found: {sam2_path}")
    seg_cfg = sam2_config_for_checkpoint(sam2_path, sam2_config)
    with prog.step(f"loading SAM 2.1 weights from {sam2_path.name}"):
        segmenter = load_official_sam2(sam2_path, seg_cfg)
    with prog.step(f"loading PAM weights and tokenizer from {pam_dir}"):
        lang = load_official_pam(pam_dir, segmenter=seg_cfg)
    model = PamModel(lang.config, segmenter=segmenter, language=lang.model).eval()
    return LoadedModel(model, lang.tokenizer, _greedy(lang.generation), name or pam_dir.name, str(pam_dir))


def _greedy(settings):
    """Deterministic by default: a checkpoint's generation_config.json (Qwen's do_sample/temperature/top_p)
    only decides how to sample once sampling is asked for (``preset="official"``); its repetition penalty,
    top-k and EOS ids stay, as in the official calls (fixture quirk 7)."""
    return settings.official_greedy(max_new_tokens=512)


def load_native(folder: str | Path, progress: bool = False, name: str | None = None) -> LoadedModel:
    """This package's format; strict."""
    from ..generation import GenerationSettings
    from ..modeling.pam import PamModel
    from ..processing.text import load_tokenizer

    prog = _Progress(progress)
    folder = Path(folder)
    meta = read_native_config(folder)
    config = PamConfig.from_dict(meta["config"])
    with prog.step(f"loading {folder}"):
        model = PamModel(config)
        load_native_weights(folder, model)
        model.language.tie_weights()
        tokenizer = load_tokenizer(folder)
    gen = GenerationSettings(**meta["generation"]) if meta.get("generation") else GenerationSettings(
        eos_token_id=[tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    )
    return LoadedModel(model.eval(), tokenizer, gen, name or meta.get("name") or config.name, str(folder))


def load_pretrained(
    model: str | Path | None = None,
    sam2: str | Path | None = None,
    sam2_config: str | Path | None = None,
    progress: bool = False,
) -> LoadedModel:
    """Load any supported checkpoint (see the module docstring)."""
    if model is None:
        path = embedded_model_dir()
        if path is None:
            raise CheckpointError(
                "no model given and this installation has no embedded default model; pass a model folder "
                "(ours, or an official PAM folder with sam2=...) or a hub id such as Perceive-Anything/PAM-3B"
            )
        return load_native(path, progress, name=EMBEDDED_MODEL)
    model_str = str(model)
    from_hub = looks_like_hub_id(model_str)
    if from_hub:
        folder = resolve_pam_hub(model_str)
    else:
        folder = Path(model_str).expanduser()
        if not folder.exists():
            raise FileNotFoundError(f"model folder not found: {folder}")
    if is_native_folder(folder):
        return load_native(folder, progress)
    if is_official_folder(folder):
        if sam2 is None:
            found = _find_sam2_in(folder)
            if found is not None:
                sam2 = found
            elif from_hub:
                sam2 = DEFAULT_SAM2_FOR_PAM
            else:
                raise CheckpointError(
                    f"{folder} is an official PAM folder; its SAM 2.1 weights are a separate file: pass "
                    "sam2=PATH/sam2.1_hiera_large.pt (--sam2) or the hub id facebook/sam2.1-hiera-large"
                )
        sam2_str = str(sam2)
        if looks_like_hub_id(sam2_str):
            sam2_path, preset = resolve_sam2_hub(sam2_str)
            if sam2_config is None and preset is not None and not sam2_path.with_suffix(".yaml").exists():
                return _load_official_preset(folder, sam2_path, preset, progress, model_str)
            sam2 = sam2_path
        return load_official(folder, sam2, sam2_config, progress, name=Path(model_str).name)
    raise CheckpointError(
        f"{folder} is neither a perceive-anything folder (pam_config.json) nor an official PAM folder "
        "(config.json with model_type 'llava_qwen')"
    )


def _load_official_preset(folder: Path, sam2_path: Path, preset: str, progress: bool, name: str) -> LoadedModel:
    from ..modeling.pam import PamModel
    from .pam_official import load_official_pam
    from .sam2 import load_official_sam2

    prog = _Progress(progress)
    seg_cfg = segmenter_preset(preset)
    with prog.step(f"loading SAM 2.1 ({preset}) weights"):
        segmenter = load_official_sam2(sam2_path, seg_cfg)
    with prog.step(f"loading PAM weights from {folder}"):
        lang = load_official_pam(folder, segmenter=seg_cfg)
    model = PamModel(lang.config, segmenter=segmenter, language=lang.model).eval()
    return LoadedModel(model, lang.tokenizer, _greedy(lang.generation), name, str(folder))


def save_pretrained(loaded: LoadedModel, folder: str | Path) -> Path:
    """Write a loaded model in this package's format."""
    gen = loaded.generation.to_dict() if loaded.generation is not None else None
    return save_native(
        folder, loaded.model, loaded.model.config.to_dict(), tokenizer=loaded.tokenizer, generation=gen,
        extra={"name": loaded.name},
    )


def convert_official(
    model: str | Path,
    sam2: str | Path,
    out: str | Path,
    sam2_config: str | Path | None = None,
    progress: bool = False,
) -> Path:
    """``pam convert``: official PAM folder (or hub id) + SAM 2.1 ``.pt`` -> this package's format."""
    loaded = load_pretrained(model, sam2=sam2, sam2_config=sam2_config, progress=progress)
    prog = _Progress(progress)
    with prog.step(f"writing {out}"):
        return save_pretrained(loaded, out)
