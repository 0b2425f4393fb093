"""Golden-fixture weights stored as a recipe instead of as tensors.

PAM hard-codes its largest parts whatever the model shape (the Semantic Perceiver's
``proj`` Linear(4096, 1024), the SAM 2 mask decoder, the 256-wide memory attention), so even a
tiny checkpoint weighs ~60 MB: too much to keep several model shapes in git. A recipe lists every
tensor (name, shape, dtype, distribution) of a weight file; :func:`materialize` regenerates the
exact bytes from a counter-based generator (SplitMix64, pure NumPy integer arithmetic, so the
values do not depend on the NumPy or torch version or the machine) and checks them against the
SHA-256 the recipe recorded when the fixture's official outputs were produced.

Layout of a recipe folder (the small files sit beside it as they are)::

    weights/<shape>/
      recipe.json                       {"format": ..., "files": {"pam_model/model.safetensors": {...}, ...},
                                         "copy": {"pam_model/tokenizer.json": "../tokenizer/tokenizer.json", ...}}
      pam_model/config.json ...         committed as they are
      sam2/<name>.yaml

This module only needs NumPy, torch and safetensors, so the fixture generator can import it by path
from another environment.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "perceive-anything-golden-weights"
VERSION = 1
RECIPE_FILE = "recipe.json"

_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def tensor_seed(global_seed: int, name: str) -> int:
    """A 64-bit stream id per tensor, so adding or renaming one tensor leaves the others unchanged."""
    digest = hashlib.sha256(f"{global_seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def uniform01(seed: int, n: int) -> np.ndarray:
    """``n`` float64 values in [0, 1): SplitMix64 outputs of ``seed + (i + 1) * gamma``, top 53 bits."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN_GAMMA)
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def make_tensor(global_seed: int, name: str, shape: list[int], init: list) -> np.ndarray:
    """One tensor of a recipe. ``init`` is ``["uniform", mean, std]`` (a uniform distribution with that
    mean and standard deviation) or ``["const", value]``; values are rounded to float32 once."""
    n = int(np.prod(shape)) if shape else 1
    kind = init[0]
    if kind == "uniform":
        mean, std = float(init[1]), float(init[2])
        u = uniform01(tensor_seed(global_seed, name), n)
        vals = mean + std * np.sqrt(3.0) * (2.0 * u - 1.0)
    elif kind == "const":
        vals = np.full(n, float(init[1]), dtype=np.float64)
    else:
        raise ValueError(f"{name}: unknown init {init!r}")
    return vals.astype(np.float32).reshape(shape)


def tensors_sha256(tensors: "OrderedDict[str, Any]") -> str:
    """Digest of names, shapes, dtypes and raw bytes, in order (independent of the file container)."""
    h = hashlib.sha256()
    for name, t in tensors.items():
        arr = np.ascontiguousarray(t.detach().cpu().numpy() if hasattr(t, "detach") else t)
        h.update(f"{name}|{list(arr.shape)}|{arr.dtype.str}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def build_file_tensors(spec: dict) -> "OrderedDict[str, Any]":
    import torch

    seed = int(spec["seed"])
    out: OrderedDict[str, Any] = OrderedDict()
    for name, shape, dtype, init in spec["tensors"]:
        if dtype != "float32":
            raise ValueError(f"{name}: only float32 tensors are generated, got {dtype}")
        out[name] = torch.from_numpy(make_tensor(seed, name, list(shape), init))
    return out


def write_file(path: Path, spec: dict, tensors: "OrderedDict[str, Any]") -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    kind = spec["container"]
    if kind == "safetensors":
        from safetensors.torch import save_file

        save_file(dict(tensors), str(path), metadata=spec.get("metadata") or {"format": "pt"})
    elif kind == "torch_save_model":
        # the format sam2.build_sam._load_checkpoint reads: torch.save({"model": state_dict})
        torch.save({"model": tensors}, str(path))
    else:
        raise ValueError(f"{path.name}: unknown container {kind!r}")


def materialize(recipe_dir: str | Path, dest: str | Path, check: bool = True) -> Path:
    """Write the recipe folder's small files and its generated weight files under ``dest``."""
    recipe_dir, dest = Path(recipe_dir), Path(dest)
    recipe = json.loads((recipe_dir / RECIPE_FILE).read_text())
    if recipe.get("format") != FORMAT or int(recipe.get("version", 0)) > VERSION:
        raise ValueError(f"{recipe_dir / RECIPE_FILE}: not a {FORMAT} v{VERSION} recipe")
    for src in sorted(recipe_dir.rglob("*")):
        if src.is_file() and src.name != RECIPE_FILE:
            target = dest / src.relative_to(recipe_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
    for rel, src in recipe.get("copy", {}).items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(recipe_dir / src, target)
    for rel, spec in recipe["files"].items():
        tensors = build_file_tensors(spec)
        if check and spec.get("sha256") and tensors_sha256(tensors) != spec["sha256"]:
            raise ValueError(f"{recipe_dir / RECIPE_FILE}: regenerated {rel} does not match the recorded SHA-256 "
                             "(the generator changed); the fixture's outputs no longer belong to these weights")
        write_file(dest / rel, spec, tensors)
    return dest


_MATERIALIZED: dict[Path, Path] = {}


def resolve_weights_path(path: str | Path) -> Path:
    """``path`` itself, or, when a folder holding it has a recipe, the same path inside the materialised
    recipe folder (generated once per process into a temporary folder, removed at exit)."""
    path = Path(path).resolve()
    for root in [path, *path.parents]:
        if (root / RECIPE_FILE).is_file():
            if root not in _MATERIALIZED:
                tmp = Path(tempfile.mkdtemp(prefix="pam-golden-weights-"))
                atexit.register(shutil.rmtree, tmp, ignore_errors=True)
                _MATERIALIZED[root] = materialize(root, tmp)
            out = _MATERIALIZED[root] / path.relative_to(root)
            if not out.exists():
                raise FileNotFoundError(f"{path}: not produced by the weights recipe {root / RECIPE_FILE}")
            return out
    if not path.exists():
        raise FileNotFoundError(f"fixture weights not found: {path}")
    return path
