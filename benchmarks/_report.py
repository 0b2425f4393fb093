"""The one way a benchmark reports: one JSON line on stdout, the indented JSON in a results file."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def report(result: dict, out: str | Path | None) -> None:
    print(json.dumps(result, ensure_ascii=False))
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
