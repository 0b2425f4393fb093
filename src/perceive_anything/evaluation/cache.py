"""Resumable JSONL cache of generated outputs.

Line 1 is a header naming the benchmark, the model and every generation setting that changes the
output; each further line is one finished item ``{"id": ..., "output": ...}``, appended and flushed as
soon as it is generated. A killed run leaves at worst one torn last line, which is dropped on reopen;
everything before it is kept and never generated again. Opening a cache written with another model
or other settings is refused (mixing outputs of two models would silently corrupt the score).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

__all__ = ["GenerationCache", "CacheMismatchError"]

FORMAT = "pam-eval-cache/1"


class CacheMismatchError(ValueError):
    """The cache on disk was written by another model, benchmark or settings."""


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys, so a mismatch names the one setting that differs."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class GenerationCache:
    def __init__(self, path: str | Path, header: dict[str, Any]):
        self.path = Path(path)
        self.header = {"format": FORMAT, **header}
        self.outputs: dict[str, Any] = {}
        self._open()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._write_lines([self.header], mode="w")
            return
        lines = self.path.read_text(encoding="utf-8").split("\n")
        try:
            found = json.loads(lines[0])
        except json.JSONDecodeError:
            raise CacheMismatchError(f"{self.path}: first line is not a cache header; move the file away") from None
        if found != self.header:
            old, new = _flat(found), _flat(self.header)
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            detail = "; ".join(f"{k}: cache has {old.get(k)!r}, this run {new.get(k)!r}" for k in diff)
            raise CacheMismatchError(
                f"{self.path} was generated with other settings ({detail}); refusing to mix outputs. "
                "Use another --out folder or the same settings."
            )
        good, torn = [lines[0]], False
        for line in lines[1:]:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                torn = True  # torn write of a killed run: this line is dropped, everything before it kept
                break
            self.outputs[str(rec["id"])] = rec["output"]
            good.append(line)
        if torn:
            self.path.write_text("\n".join(good) + "\n", encoding="utf-8")

    def _write_lines(self, records: Iterable[dict], mode: str = "a") -> None:
        with self.path.open(mode, encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def __contains__(self, item_id: str) -> bool:
        return str(item_id) in self.outputs

    def add(self, item_id: str, output: Any) -> None:
        item_id = str(item_id)
        if item_id in self.outputs:
            raise ValueError(f"item {item_id!r} is already in {self.path}")
        self._write_lines([{"id": item_id, "output": output}])
        self.outputs[item_id] = output
