"""``annotate()``: items -> records in an output folder, in this process or through Ray Data.

Either way the records are written by this (the driver) process, one append per record, so the
resume logic is the same: items with a successful record are skipped, the rest (and earlier
failures) run again.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from .exports import coco_from_records
from .inputs import Item
from .pipeline import Annotator, Settings
from .store import RECORDS, OutputStore, write_atomic


@dataclass
class Summary:
    items: int
    done: int  # annotated by this run
    skipped: int  # already done by an earlier run
    failed: int  # error records written by this run
    seconds: float

    @property
    def rate(self) -> float:
        return (self.done + self.failed) / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"items": self.items, "done": self.done, "skipped": self.skipped, "failed": self.failed,
                "seconds": round(self.seconds, 3), "items_per_s": round(self.rate, 4)}


def annotate(
    items: list[Item],
    out_dir: str,
    settings: Settings,
    source: str,
    *,
    ray: str | None = None,
    num_workers: int | None = None,
    batch_size: int = 4,
    device: str | None = "cpu",
    threads: int | None = None,
    progress: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> Summary:
    """Annotate ``items`` into ``out_dir`` (resuming what is there); see the module docs."""
    store = OutputStore(out_dir)
    store.bind(settings.to_dict(), source)
    previous = store.latest()
    todo = [it for it in items if (previous.get(it.id) or {}).get("error", "missing") is not None]
    skipped = len(items) - len(todo)
    t0 = time.perf_counter()
    done = failed = 0
    bar = _progress(len(todo), skipped, progress)
    try:
        with store.writer() as writer:
            stream = _ray_records(todo, settings, ray, num_workers, batch_size, device) if ray else \
                _local_records(todo, settings, device, threads)
            for rec in stream:
                writer.write(rec)
                if rec.get("error") is None:
                    done += 1
                else:
                    failed += 1
                    if bar is not None:
                        bar.write(f"[pam] {rec['id']}: {rec['error']}", file=sys.stderr)
                if on_record is not None:
                    on_record(rec)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(done=done, failed=failed, refresh=False)
    finally:
        if bar is not None:
            bar.close()
    summary = Summary(items=len(items), done=done, skipped=skipped, failed=failed, seconds=time.perf_counter() - t0)
    finish(store, items)
    write_atomic(store.dir / "summary.json", json.dumps(summary.to_dict(), indent=2))
    return summary


def finish(store: OutputStore, items: list[Item]) -> None:
    """Merged records (each item once, input order) and the COCO export."""
    latest = store.latest()
    ordered = [latest[it.id] for it in items if it.id in latest]
    write_atomic(store.dir / RECORDS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered))
    write_atomic(store.dir / "coco.json", json.dumps(coco_from_records(ordered), ensure_ascii=False))


def _progress(total: int, skipped: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    desc = f"annotate ({skipped} already done)" if skipped else "annotate"
    return tqdm(total=total, desc=desc, unit="item", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


def _local_records(todo: list[Item], settings: Settings, device, threads) -> Iterator[dict[str, Any]]:
    if not todo:
        return
    annotator = Annotator(settings, device=device, threads=threads)
    for item in todo:
        yield annotator(item)


class _RayAnnotator:
    """Ray Data actor: one model per worker, a batch of serialized items in, records out."""

    def __init__(self, settings: dict[str, Any], device: str, threads: int | None):
        self.annotator = Annotator(Settings.from_dict(settings), device=device, threads=threads)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        out = [json.dumps(self.annotator(Item.from_json(s)), ensure_ascii=False) for s in batch["item"]]
        return {"record": np.array(out, dtype=object)}


def _ray_records(todo: list[Item], settings: Settings, address: str, num_workers: int | None, batch_size: int,
                 device) -> Iterable[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs the annotation extra: pip install 'perceive-anything[annotation]'") from None
    if not todo:
        return
    import logging

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # our own progress bar reports on stderr
    ray.data.DataContext.get_current().enable_progress_bars = False
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, ignore_reinit_error=True,
                 log_to_driver=False, include_dashboard=False)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    use_gpu = gpus > 0 and device not in ("cpu",)
    workers = num_workers or (gpus if use_gpu else max(1, int(ray.cluster_resources().get("CPU", 1))))
    ds = ray.data.from_items([{"item": it.to_json()} for it in todo], override_num_blocks=max(1, len(todo) // batch_size))
    ds = ds.map_batches(
        _RayAnnotator,
        fn_constructor_kwargs={"settings": settings.to_dict(), "device": "cuda" if use_gpu else "cpu",
                               # one CPU per actor: more torch threads than cores only slows everyone down
                               "threads": None if use_gpu else 1},
        batch_size=batch_size, concurrency=workers, num_gpus=1 if use_gpu else 0, num_cpus=1,
    )
    for batch in ds.iter_batches(batch_size=1, batch_format="numpy"):
        for text in batch["record"]:
            yield json.loads(text)
