"""What every benchmark adapter provides, and the helpers the adapters share.

An adapter reads one public annotation format from a local folder into :class:`Item` s (JSON-able
inputs + references), generates outputs for a batch of items with a :class:`PerceiveAnything`, and
scores the cached outputs. Adapters never download anything: the folder layout each expects is in its
``layout`` text (shown by ``pam eval --list`` and in any missing-data error).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["Benchmark", "DataError", "Item", "ScoreContext", "find_file", "read_json", "check_media",
           "generate_image_regions", "load_sphinxv_boxes", "region_prompt"]


class DataError(ValueError):
    """A data folder that is missing, partial or malformed; the message says what and the expected layout."""


@dataclass
class Item:
    """One unit of generation: ``inputs`` says what to run, ``reference`` what it is scored against."""

    id: str
    inputs: dict[str, Any]
    reference: Any


@dataclass
class ScoreContext:
    """What scoring may need besides the outputs: the sentence embedder (built on first use) and the judge."""

    embedder_factory: Callable[[], Any] | None = None
    judge: Any = None
    _embedder: Any = field(default=None, repr=False)

    @property
    def embedder(self):
        if self._embedder is None:
            if self.embedder_factory is None:
                from ..embeddings import SentenceEmbedder

                self.embedder_factory = SentenceEmbedder
            self._embedder = self.embedder_factory()
        return self._embedder


class Benchmark:
    name: str = ""
    title: str = ""
    media: str = "image"                 # image | video | stream
    task: str = ""                       # the PAM task generated
    metrics: tuple[str, ...] = ()        # in the order the paper's table prints them
    judge_metrics: tuple[str, ...] = ()  # those that need --judge-url
    paper_table: str = ""                # where the published numbers are
    source: str = ""                     # where the data comes from
    layout: str = ""                     # the folder the adapter expects

    def load(self, root: Path) -> list[Item]:
        raise NotImplementedError

    def generate(self, pam, items: Sequence[Item], generation: dict[str, Any]) -> list[Any]:
        raise NotImplementedError

    def score(self, items: Sequence[Item], outputs: Sequence[Any], ctx: ScoreContext) -> dict[str, Any]:
        raise NotImplementedError

    # -- shared error text
    def missing(self, what: str) -> DataError:
        return DataError(f"{self.name}: {what}. Expected layout:\n{self.layout}")


def find_file(bench: Benchmark, root: Path, names: Sequence[str]) -> Path:
    """The first of ``names`` under ``root``; a DataError naming all of them otherwise."""
    if not root.is_dir():
        raise bench.missing(f"data folder {root} does not exist")
    for n in names:
        if (root / n).is_file():
            return root / n
    raise bench.missing(f"none of {', '.join(names)} in {root}")


def read_json(bench: Benchmark, path: Path) -> Any:
    """A JSON document, or a list of records for JSON lines (several public files use one under a
    ``.json`` name); a malformed file is a DataError naming the line."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
        # a one-line JSON-lines file parses as one document
        return [data] if path.suffix == ".jsonl" and isinstance(data, dict) else data
    except json.JSONDecodeError as whole:
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                where = f"line {n}" if records or n > 1 else f"({whole})"
                raise DataError(f"{bench.name}: {path} is neither JSON nor JSON lines: {where} {err}") from None
        return records


def check_media(bench: Benchmark, paths: Sequence[Path], what: str = "image") -> None:
    """Refuse to start when annotations refer to files that are not there (name the first few)."""
    absent = sorted({str(p) for p in paths if not Path(p).exists()})
    if absent:
        more = f" and {len(absent) - 3} more" if len(absent) > 3 else ""
        raise bench.missing(f"{len(absent)} {what}(s) referred to by the annotations are absent: "
                            f"{', '.join(absent[:3])}{more}")


def require_keys(bench: Benchmark, record: dict, keys: Sequence[str], where: str) -> None:
    absent = [k for k in keys if k not in record]
    if absent:
        raise DataError(f"{bench.name}: {where} lacks key(s) {absent}; is this the right annotation file?")


def load_sphinxv_boxes(bench: Benchmark, root: Path, path: Path, image_base: Path) -> list[Item]:
    """SPHINX-V's region-answer files (LVIS_box.json, PACO_box.json, COCOText_box.json): several boxes per
    record and the answers as lines ``Region k: answer``, in box order; one item per box."""
    items = []
    for n, rec in enumerate(read_json(bench, path)):
        require_keys(bench, rec, ["image_name", "bbox", "gt_answers"], f"{path.name} entry {n}")
        answers = [line.partition(": ")[2] for line in str(rec["gt_answers"]).split("\n") if ": " in line]
        if len(answers) != len(rec["bbox"]):
            raise DataError(f"{bench.name}: {path.name} entry {n}: {len(rec['bbox'])} boxes but "
                            f"{len(answers)} 'Region k: answer' lines")
        for k, (box, answer) in enumerate(zip(rec["bbox"], answers)):
            x, y, w, h = (float(v) for v in box)
            items.append(Item(id=f"{rec.get('question_id', n)}:{k}",
                              inputs={"image": str(image_base / rec["image_name"]), "box": [x, y, x + w, y + h]},
                              reference=answer))
    check_media(bench, [Path(it.inputs["image"]) for it in items])
    return items


def region_prompt(inputs: dict[str, Any]) -> dict[str, Any]:
    """The region of an item in the project's request vocabulary (a COCO RLE becomes a bool mask)."""
    if "mask_rle" in inputs:
        from pycocotools import mask as mask_utils

        rle = dict(inputs["mask_rle"])
        if isinstance(rle.get("counts"), str):
            rle["counts"] = rle["counts"].encode("ascii")
        return {"mask": mask_utils.decode(rle).astype(bool)}
    if "box" in inputs:
        return {"box": list(inputs["box"])}
    return {"points": inputs["points"], "labels": inputs.get("labels", [1] * len(inputs["points"]))}


def generate_image_regions(pam, items: Sequence[Item], task: str, generation: dict[str, Any],
                           lang: str = "en", question: str | None = None) -> list[str]:
    """Generate ``task`` for every item; the items of one image share one encoding and one batched call."""
    groups: dict[str, list[int]] = {}
    for k, it in enumerate(items):
        groups.setdefault(it.inputs["image"], []).append(k)
    texts: list[str] = [""] * len(items)
    for image, idx in groups.items():
        result = pam.perceive(image, [region_prompt(items[k].inputs) for k in idx], task=task, lang=lang,
                              question=question, **generation)
        for k, region in zip(idx, result):
            texts[k] = region.output(task).text
    return texts


def reference_caption_scores(items: Sequence[Item], outputs: Sequence[Any], metrics: Sequence[str],
                             tokenize: bool = True) -> dict[str, Any]:
    """Caption metrics of one output per item against ``item.reference`` (a caption or a list of them)."""
    from ..metrics import caption_scores

    refs = {it.id: ([it.reference] if isinstance(it.reference, str) else list(it.reference)) for it in items}
    preds = {it.id: str(out) for it, out in zip(items, outputs)}
    scores: dict[str, Any] = caption_scores(refs, preds, metrics, tokenize=tokenize)
    scores["items"] = len(items)
    return scores


def coco_polygons_to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) as a compressed RLE with str counts."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = dict(segmentation)
    counts = rle["counts"]
    return {"size": [int(height), int(width)], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
