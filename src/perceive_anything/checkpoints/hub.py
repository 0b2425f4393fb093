"""Resolving hub ids of the released checkpoints to local folders/files.

The official PAM repos keep the checkpoint in a subfolder named after the model
(``Perceive-Anything/PAM-3B`` -> ``PAM-3B/``); SAM 2.1 repos hold one ``.pt`` file.
"""

from __future__ import annotations

import os
from pathlib import Path

# hub id -> (subfolder holding the PAM checkpoint, default SAM 2.1 checkpoint id)
PAM_HUB_MODELS: dict[str, str] = {
    "Perceive-Anything/PAM-3B": "PAM-3B",
    "Perceive-Anything/PAM-1.5B": "PAM-1.5B",
}

# hub id -> (file name in the repo, segmenter preset)
SAM2_HUB_MODELS: dict[str, tuple[str, str]] = {
    "facebook/sam2.1-hiera-tiny": ("sam2.1_hiera_tiny.pt", "tiny"),
    "facebook/sam2.1-hiera-small": ("sam2.1_hiera_small.pt", "small"),
    "facebook/sam2.1-hiera-base-plus": ("sam2.1_hiera_base_plus.pt", "base-plus"),
    "facebook/sam2.1-hiera-large": ("sam2.1_hiera_large.pt", "large"),
}

# PAM was trained on SAM 2.1 Hiera-L features (reference §1.2)
DEFAULT_SAM2_FOR_PAM = "facebook/sam2.1-hiera-large"


class HubUnavailableError(RuntimeError):
    """A hub id was given but the hub cannot be reached (offline, or the file is not cached)."""


def looks_like_hub_id(name: str) -> bool:
    return (
        not os.path.exists(name)
        and name.count("/") == 1
        and not name.startswith((".", "/", "~"))
        and not name.endswith((".pt", ".json", ".safetensors"))
    )


def _offline_message(repo_id: str, err: Exception) -> str:
    return (
        f"could not fetch {repo_id!r} from the Hugging Face hub ({type(err).__name__}: {err}). "
        "This machine seems to be offline or the files are not in the local cache. Download the "
        f"repository elsewhere (e.g. `huggingface-cli download {repo_id}`) and pass the local path instead."
    )


def resolve_pam_hub(repo_id: str, revision: str | None = None) -> Path:
    """Download (or find in the cache) an official PAM repo; returns the folder with config.json."""
    from huggingface_hub import snapshot_download

    sub = PAM_HUB_MODELS.get(repo_id)
    patterns = [f"{sub}/*"] if sub else None
    try:
        root = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except Exception as err:  # network, auth, missing cache: all end the same way for the user
        raise HubUnavailableError(_offline_message(repo_id, err)) from err
    folder = root / sub if sub else root
    if not (folder / "config.json").exists():
        # Unknown repo layouts: accept a single subfolder holding config.json.
        hits = sorted(p.parent for p in root.glob("*/config.json"))
        if len(hits) == 1:
            folder = hits[0]
        else:
            raise FileNotFoundError(f"{repo_id}: no config.json found in the downloaded snapshot {root}")
    return folder


def resolve_sam2_hub(repo_id: str, revision: str | None = None) -> tuple[Path, str | None]:
    """Download an official SAM 2.1 checkpoint; returns (path to .pt, preset name or None)."""
    from huggingface_hub import hf_hub_download

    filename, preset = SAM2_HUB_MODELS.get(repo_id, (None, None))
    if filename is None:
        raise ValueError(f"unknown SAM 2.1 hub id {repo_id!r}; known: {sorted(SAM2_HUB_MODELS)} or pass a local .pt")
    try:
        path = Path(hf_hub_download(repo_id, filename, revision=revision))
    except Exception as err:
        raise HubUnavailableError(_offline_message(repo_id, err)) from err
    return path, preset
