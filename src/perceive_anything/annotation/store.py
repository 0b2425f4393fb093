"""The output folder of ``pam annotate``: a manifest, append-only shards, and the merged result.

Layout::

    OUT/manifest.json          settings that decide the records' content, and the input
    OUT/shards/<run>.jsonl     one file per run of the command; one JSON record per line
    OUT/records.jsonl          every item exactly once, in input order (written when a run completes)
    OUT/coco.json              COCO export (see exports.py)
    OUT/summary.json           the last run's counts and throughput

Crash safety (``kill -9`` at any moment): a record is one ``os.write`` of a whole line to a file
opened with ``O_APPEND``, so a killed process leaves at most a partial last line, which the next
run cuts off before it appends. Finished files (records, COCO, summary) are written to a temporary
name and renamed, so they are complete or absent.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable

MANIFEST = "manifest.json"
SHARDS = "shards"
RECORDS = "records.jsonl"


class SettingsMismatch(ValueError):
    """The output folder was written by a command with different settings."""


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} there, {b!r} now")
    return out


class OutputStore:
    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        self.shards = self.dir / SHARDS

    def bind(self, settings: dict[str, Any], source: str) -> bool:
        """Create the folder for ``settings`` or check that it holds the same ones. Returns True when
        the folder already existed (a resumed run)."""
        manifest = {"settings": settings, "input": source}
        path = self.dir / MANIFEST
        if path.is_file():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                raise SettingsMismatch(f"{path} is not valid JSON; not an output folder of pam annotate?") from None
            diffs = _differences({"settings": old.get("settings", {}), "input": old.get("input")}, manifest)
            if diffs:
                raise SettingsMismatch(
                    f"{self.dir} holds annotations of a different command ({'; '.join(diffs)}); "
                    "records made with other settings cannot be mixed: use another --out or the same options")
            return True
        if self.dir.exists() and any(self.dir.iterdir()):
            raise SettingsMismatch(f"{self.dir} is not empty and has no {MANIFEST}: not an output folder of pam annotate")
        self.shards.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({**manifest, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                                      indent=2, ensure_ascii=False))
        return False

    def _repair(self, shard: Path) -> None:
        """Cut a partial last line (the process was killed inside a write)."""
        data = shard.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(shard, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def records(self) -> Iterable[dict[str, Any]]:
        """Every complete record of every shard, oldest run first."""
        if not self.shards.is_dir():
            return
        for shard in sorted(self.shards.glob("*.jsonl")):
            self._repair(shard)
            with open(shard, encoding="utf-8") as f:
                for line in f:
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:
                        continue  # cannot happen after _repair; never let one line lose the others

    def latest(self) -> dict[str, dict[str, Any]]:
        """id -> the record that counts: the last successful one, else the last error."""
        best: dict[str, dict[str, Any]] = {}
        for rec in self.records():
            old = best.get(rec.get("id"))
            if old is None or rec.get("error") is None or old.get("error") is not None:
                best[rec["id"]] = rec
        return best

    def writer(self) -> ShardWriter:
        self.shards.mkdir(parents=True, exist_ok=True)
        name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}.jsonl"
        return ShardWriter(self.shards / name)


class ShardWriter:
    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        # one write of the whole line: a kill leaves the line complete or cut (repaired on resume)
        written = os.write(self.fd, data)
        while written < len(data):  # only on exotic file systems; still one record per line
            written += os.write(self.fd, data[written:])

    def close(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
