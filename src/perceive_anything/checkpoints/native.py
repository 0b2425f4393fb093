"""The package's own checkpoint format: a config JSON beside one safetensors file.

```
folder/
  pam_config.json       {"format": "perceive-anything", "format_version": 1, "config": {...}, "generation": {...}}
  model.safetensors     every weight, SAM 2 included (segmenter.*, language.*)
  tokenizer.json ...    the tokenizer, saved by transformers
```
Loading is strict: a missing or unexpected tensor, or a shape mismatch, is an error that names it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT_NAME = "perceive-anything"
FORMAT_VERSION = 1
CONFIG_FILE = "pam_config.json"
WEIGHTS_FILE = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint does not fit the model it is loaded into."""


def strict_load(
    module: nn.Module,
    state_dict: dict[str, torch.Tensor],
    what: str,
    describe=None,
    ignore: set[str] = frozenset(),
    load: bool = True,
    assign: bool = False,
) -> None:
    """``load_state_dict(strict=True)`` with one readable error listing every problem at once.

    ``describe(key)`` formats a key for the message (e.g. to add its name in another format);
    ``ignore`` names model keys that need no tensor (tied weights). The one strict loader of the
    package: our format, official PAM folders and official SAM 2.1 files all go through it.
    ``assign=True`` adopts the checkpoint's tensors (cast to the model's dtypes) instead of copying
    them into the module's own: no second copy of the weights, for modules built without init.
    """
    describe = describe or (lambda k: k)
    expected = {k: v for k, v in module.state_dict().items() if k not in ignore}
    missing = [describe(k) for k in sorted(set(expected) - set(state_dict))]
    unexpected = [describe(k) for k in sorted(set(state_dict) - set(expected))]
    mismatched = [
        f"{describe(k)}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state_dict))
        if tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:

        def block(title, items):
            if not items:
                return ""
            shown = "\n    ".join(items[:20])
            more = f"\n    ... and {len(items) - 20} more" if len(items) > 20 else ""
            return f"\n  {title} ({len(items)}):\n    {shown}{more}"

        raise CheckpointError(
            f"{what} does not match the model"
            + block("missing keys", missing)
            + block("unexpected keys", unexpected)
            + block("shape mismatches", mismatched)
        )
    if load:
        if assign:
            state_dict = {k: v.to(expected[k].dtype) if k in expected else v for k, v in state_dict.items()}
        module.load_state_dict(state_dict, strict=not ignore, assign=assign)


def is_native_folder(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def read_native_config(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / CONFIG_FILE
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not a {FORMAT_NAME} checkpoint (format={meta.get('format')!r})")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {meta['format_version']} is newer than this package supports "
            f"({FORMAT_VERSION}); upgrade perceive-anything"
        )
    return meta


def save_native(
    folder: str | Path,
    model: nn.Module,
    config_dict: dict[str, Any],
    tokenizer=None,
    generation: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights (tied tensors once, aliases recorded in the metadata) and its config."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": config_dict}
    if generation:
        meta["generation"] = generation
    if extra:
        meta.update(extra)
    tensors, aliases = {}, {}
    first_name: dict[tuple, str] = {}
    for name, t in model.state_dict().items():
        key = (t.device, t.data_ptr(), tuple(t.shape), t.stride())
        if key in first_name:
            aliases[name] = first_name[key]  # tied weights (e.g. lm_head <- embed_tokens) are stored once
            continue
        first_name[key] = name
        tensors[name] = t.detach().contiguous().cpu()
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt", "aliases": json.dumps(aliases)})
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    return folder


def read_safetensors(path: str | Path) -> dict:
    """All tensors of one safetensors file; a truncated or corrupt file is a :class:`CheckpointError`
    naming it instead of safetensors' bare error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err} (corrupt or incomplete file? download it again)") from None


def load_native_weights(folder: str | Path, model: nn.Module) -> None:
    """Strictly load ``model.safetensors`` into ``model``, restoring the tied aliases."""
    from safetensors import safe_open

    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    sd = read_safetensors(path)
    with safe_open(str(path), "pt") as f:
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    for name, source in aliases.items():
        if source in sd:
            sd[name] = sd[source]
    strict_load(model, sd, f"{path}")
