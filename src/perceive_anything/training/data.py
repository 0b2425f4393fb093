"""The PAM-data training format: reader (``load_pam_records``) and writer (``write_pam_records``).

Format (reference §10.1, the official ``llava/train/train.py`` data path):

* ``--data_path`` is either one ``.json`` (a list of records) / ``.jsonl`` (one record per line)
  file, or a YAML file ``datasets: [{json_path: ..., sampling_strategy: ...}, ...]`` with
  strategies ``all``, ``first:N``, ``end:N``, ``random:N`` and the ``N%`` variants of the last three.
* A record: ``type`` ("image" | "video"); ``image`` (path or list of paths) for images, or
  ``frames`` (file names) + ``image_root`` (their directory) for videos; ``conversations`` (turns
  ``{"from": "human"|"gpt", "value": ...}``, ``role``/``content`` accepted too); and the three
  visual-prompt keys ``bbox`` (xywh), ``points``, ``labels`` which must all *exist* (values may be
  null).  For videos the prompt keys are per-frame lists of which only frame 0 is used.  ``id`` is
  optional.  Unknown keys are kept in :attr:`TrainingSample.extra`.

The reader validates every record and reports problems as ``PamDataError("file:line: problem")``
(``file[record i]`` for ``.json``), reproduces the official conversions (``<image>`` moved to the
front, xywh -> xyxy with ``int()`` truncation, box-vs-points choice, point subsampling) with a
seeded RNG, and returns typed :class:`TrainingSample` objects.

Deliberate choices where the official code leaves room:

* Relative paths (``image``, ``image_root``/``frames``) resolve against ``image_folder`` when given
  (the official ``--image_folder``), else against the directory of the data file, so an exported
  data set is relocatable.  YAML ``json_path`` entries resolve against the YAML's directory first,
  then the working directory.
* The prompt choice of each record uses its own RNG seeded from ``(seed, file name, line)``, so it
  does not depend on the sampling strategy or on the other records; a training loop that wants a
  fresh choice every epoch calls :meth:`TrainingSample.resample_prompt`.
* Records whose conversations contain no ``<image>`` are rejected (the official code would
  silently drop the visual tokens, which is never useful for PAM).
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image

__all__ = [
    "TASK_PROMPTS", "IMAGE_TOKEN", "PamDataError", "TrainingSample",
    "load_pam_records", "read_pam_file", "parse_record", "choose_visual_prompt", "apply_sampling_strategy",
    "video_caption_prompt", "write_pam_records",
]

IMAGE_TOKEN = "<image>"

def _official_prompts() -> dict[str, str]:
    """The human turns the released checkpoints were trained with, by official mode name (reference
    §8.2), taken from the one prompt registry (``processing.text.TASKS``) so the strings live once."""
    from ..processing.text import TASKS

    out: dict[str, str] = {}
    for task in TASKS.values():
        for lang, mode in task.official_modes.items():
            name = mode if task.name != "stream_caption" else mode.replace("video_cap", "video_stream_cap")
            out[name] = task.prompts[lang]
    return out


TASK_PROMPTS: dict[str, str] = _official_prompts()

# Language codes: the Python API uses "en"/"zh"; PAM's prompt names and file names use "en"/"ch".
_LANG_TAG = {"en": "en", "zh": "ch"}


def video_caption_prompt(lang: str, history: str | None = None, *, streaming: bool = False) -> str:
    """Human turn of the video caption task.  Offline (``streaming=False``) gives the verbatim
    offline prompt (ZH says "无"); streaming fills ``{history}`` with ``history`` or ``"None"`` for the
    first clip in both languages (as the released notebook does), via ``str.replace``."""
    tag = _LANG_TAG[lang]
    if not streaming:
        if history is not None:
            raise ValueError("an offline video prompt has no history; use streaming=True")
        return TASK_PROMPTS[f"video_cap_{tag}"]
    return TASK_PROMPTS[f"video_stream_cap_{tag}"].replace("{history}", "None" if history is None else history)


class PamDataError(ValueError):
    """A malformed data file / record; the message starts with ``file:line`` (or ``file[record i]``)."""


# =============================================================================================
# Typed sample
# =============================================================================================

@dataclass
class TrainingSample:
    type: str                                  # "image" | "video"
    image: str | list[str] | None              # resolved image path(s) (type == "image")
    frames: list[str] | None                   # resolved frame paths, in order (type == "video")
    prompt_kind: str                           # "box" | "points"
    box: list[int] | None                      # xyxy ints (prompt_kind == "box")
    points: list[list[float]] | None           # [[x, y], ...] (prompt_kind == "points")
    labels: list[int] | None                   # 1 = positive, 0 = negative, parallel to points
    conversations: list[dict[str, str]]        # normalised {"from": "human"|"gpt", "value": ...}
    id: str | None
    source: str                                # "file:line" of the record
    extra: dict[str, Any] = field(default_factory=dict)   # unknown keys of the record, untouched
    # Validated prompt candidates (both box and all points) so the choice can be redrawn.
    candidates: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def visual_paths(self) -> list[str]:
        if self.type == "video":
            return list(self.frames or [])
        return [self.image] if isinstance(self.image, str) else list(self.image or [])

    @property
    def prompt(self) -> str:
        """The first human turn (the task prompt)."""
        return next(t["value"] for t in self.conversations if t["from"] == "human")

    @property
    def target(self) -> str:
        """The first gpt turn (the training target)."""
        return next(t["value"] for t in self.conversations if t["from"] == "gpt")

    def resample_prompt(self, rng: random.Random) -> "TrainingSample":
        """A copy with the box/points choice and point subset redrawn from ``rng``."""
        kind, box, pts, labs = choose_visual_prompt(self.type, self.candidates, rng)
        return replace(self, prompt_kind=kind, box=box, points=pts, labels=labs)


# =============================================================================================
# Reading
# =============================================================================================

def read_pam_file(path: str | os.PathLike) -> list[tuple[dict[str, Any], str]]:
    """Raw records of one ``.json`` / ``.jsonl`` file with their location strings."""
    path = Path(path)
    if not path.is_file():
        raise PamDataError(f"{path}: data file not found")
    out: list[tuple[dict[str, Any], str]] = []
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as fh:
            for ln, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise PamDataError(f"{path}:{ln}: invalid JSON ({e.msg} at column {e.colno})") from None
                out.append((rec, f"{path}:{ln}"))
    elif path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise PamDataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        if not isinstance(data, list):
            raise PamDataError(f"{path}: a .json data file must hold a list of records, got {type(data).__name__}")
        out = [(rec, f"{path}[record {i}]") for i, rec in enumerate(data)]
    else:
        raise PamDataError(f"{path}: unsupported data file type {path.suffix!r} (expected .json, .jsonl, .yaml)")
    return out


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_box(b: Any, where: str, what: str) -> list[float]:
    if not (isinstance(b, (list, tuple)) and len(b) == 4 and all(_is_num(v) for v in b)):
        raise PamDataError(f"{where}: {what} must be 4 numbers [x, y, w, h], got {b!r}")
    if b[2] < 0 or b[3] < 0:
        raise PamDataError(f"{where}: {what} has a negative width/height: {b!r}")
    return list(b)


def _check_points(pts: Any, labs: Any, where: str, what: str) -> tuple[list[list[float]], list[int]]:
    if not isinstance(pts, (list, tuple)) or not pts:
        raise PamDataError(f"{where}: {what} 'points' must be a non-empty list of [x, y], got {pts!r}")
    for p in pts:
        if not (isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_num(v) for v in p)):
            raise PamDataError(f"{where}: {what} 'points' entries must be [x, y] numbers, got {p!r}")
    if labs is None:
        raise PamDataError(f"{where}: {what} 'points' given but 'labels' is null")
    if not isinstance(labs, (list, tuple)) or len(labs) != len(pts):
        raise PamDataError(f"{where}: {what} 'labels' must be a list as long as 'points' ({len(pts)}), got {labs!r}")
    if any(isinstance(lab, bool) or lab not in (0, 1) for lab in labs):
        raise PamDataError(f"{where}: {what} 'labels' must be 0/1, got {labs!r}")
    return [list(p) for p in pts], [int(lab) for lab in labs]


_ROLES = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt"}


def _normalise_conversations(conv: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(conv, list) or not conv:
        raise PamDataError(f"{where}: 'conversations' must be a non-empty list of turns")
    turns = []
    for k, t in enumerate(conv):
        if not isinstance(t, dict):
            raise PamDataError(f"{where}: conversations[{k}] must be an object, got {type(t).__name__}")
        if "from" in t and "value" in t:
            role, value = t["from"], t["value"]
        elif "role" in t and "content" in t:
            role, value = t["role"], t["content"]
        else:
            raise PamDataError(f"{where}: conversations[{k}] needs 'from'/'value' or 'role'/'content' keys, got {sorted(t)}")
        if role not in _ROLES:
            raise PamDataError(f"{where}: conversations[{k}] has unknown role {role!r} (expected human/gpt or user/assistant)")
        if not isinstance(value, str):
            raise PamDataError(f"{where}: conversations[{k}] text must be a string, got {type(value).__name__}")
        if IMAGE_TOKEN in value:
            # Official preprocess_multimodal: drop every placeholder and put one at the front.
            value = IMAGE_TOKEN + "\n" + value.replace(IMAGE_TOKEN, "").strip()
        turns.append({"from": _ROLES[role], "value": value})
    while turns and turns[0]["from"] != "human":   # official preprocess_qwen drops a leading non-human turn
        turns.pop(0)
    if not any(t["from"] == "human" and IMAGE_TOKEN in t["value"] for t in turns):
        raise PamDataError(f"{where}: no human turn contains the {IMAGE_TOKEN} placeholder")
    if not any(t["from"] == "gpt" for t in turns):
        raise PamDataError(f"{where}: conversations have no gpt (answer) turn after the first human turn")
    return turns


_KNOWN_KEYS = {"type", "image", "frames", "image_root", "conversations", "bbox", "points", "labels", "id"}


def parse_record(rec: Any, where: str, base_dir: str | os.PathLike, rng: random.Random) -> TrainingSample:
    """Validate one raw record and convert it into a :class:`TrainingSample`."""
    if not isinstance(rec, dict):
        raise PamDataError(f"{where}: a record must be a JSON object, got {type(rec).__name__}")
    typ = rec.get("type")
    if "type" not in rec:
        raise PamDataError(f"{where}: missing required key 'type' (must be 'image' or 'video')")
    if typ not in ("image", "video"):
        raise PamDataError(f"{where}: 'type' must be 'image' or 'video', got {typ!r}")
    for key in ("bbox", "points", "labels"):
        if key not in rec:
            raise PamDataError(f"{where}: missing required key {key!r} (PAM records need 'bbox', 'points' "
                               "and 'labels'; their values may be null)")
    base = Path(base_dir)
    image = frames = None
    if typ == "image":
        img = rec.get("image")
        if isinstance(img, str) and img:
            image = str(base / img)
        elif isinstance(img, list) and img and all(isinstance(p, str) and p for p in img):
            image = [str(base / p) for p in img]
        else:
            raise PamDataError(f"{where}: image record needs 'image' as a path or a non-empty list of paths, got {img!r}")
    else:
        fr = rec.get("frames")
        if not (isinstance(fr, list) and fr and all(isinstance(p, str) and p for p in fr)):
            raise PamDataError(f"{where}: video record needs 'frames' as a non-empty list of file names, got {fr!r}")
        root = rec.get("image_root", "")
        if not isinstance(root, str):
            raise PamDataError(f"{where}: 'image_root' must be a string, got {root!r}")
        frames = [str(base / root / p) for p in fr]

    # Visual-prompt candidates.  Videos carry per-frame lists; only frame 0 is used.
    what = "bbox" if typ == "image" else "bbox[0]"
    bbox, pts, labs = rec["bbox"], rec["points"], rec["labels"]
    if typ == "video":
        for key, val in (("bbox", bbox), ("points", pts), ("labels", labs)):
            if val is not None and not (isinstance(val, list) and val):
                raise PamDataError(f"{where}: video {key!r} must be a non-empty per-frame list or null, got {val!r}")
        bbox = bbox[0] if bbox is not None else None
        pts = pts[0] if pts is not None else None
        labs = labs[0] if labs is not None else None
    elif isinstance(bbox, list) and len(bbox) == 1 and isinstance(bbox[0], list):
        bbox = bbox[0]   # tolerate a single nested box
    cand: dict[str, Any] = {"box": None, "points": None, "labels": None}
    if bbox is not None:
        x, y, w, h = _check_box(bbox, where, what)
        cand["box"] = [int(x), int(y), int(x + w), int(y + h)]   # official int() truncation
    if pts is not None:
        cand["points"], cand["labels"] = _check_points(pts, labs, where, "video frame-0" if typ == "video" else "image")
    elif labs is not None:
        raise PamDataError(f"{where}: 'labels' given but 'points' is null")
    if cand["box"] is None and cand["points"] is None:
        raise PamDataError(f"{where}: no visual prompt: 'bbox' and 'points' are both null")

    conv = _normalise_conversations(rec.get("conversations"), where)
    rid = rec.get("id")
    kind, box, p, lab = choose_visual_prompt(typ, cand, rng)
    return TrainingSample(type=typ, image=image, frames=frames, prompt_kind=kind, box=box, points=p, labels=lab,
                          conversations=conv, id=None if rid is None else str(rid), source=where,
                          extra={k: v for k, v in rec.items() if k not in _KNOWN_KEYS}, candidates=cand)


def choose_visual_prompt(typ: str, cand: dict[str, Any], rng: random.Random):
    """Official rules: only a box -> box; only points -> points; both -> 50/50.  Points are then
    subsampled (when more than one) to a random subset whose size is uniform in [1, 4] for images,
    [1, 3] for videos (capped by the number available), keeping their original order.
    Returns (kind, box, points, labels)."""
    box, pts, labs = cand.get("box"), cand.get("points"), cand.get("labels")
    if box is not None and pts is not None:
        use_points = rng.random() < 0.5
    else:
        use_points = pts is not None
    if not use_points:
        return "box", list(box), None, None
    if len(pts) > 1:
        k = min(rng.randint(1, 4 if typ == "image" else 3), len(pts))
        keep = sorted(rng.sample(range(len(pts)), k))
        pts, labs = [pts[i] for i in keep], [labs[i] for i in keep]
    return "points", None, [list(p) for p in pts], list(labs)


def apply_sampling_strategy(records: list, strategy: str, rng: random.Random, where: str = "") -> list:
    """LLaVA-NeXT's ``sampling_strategy``: ``all`` | ``first:N`` | ``end:N`` | ``random:N`` where N
    may be ``P%`` (ceil(P * len / 100)).  ``random`` shuffles with ``rng`` and takes the first N."""
    s = str(strategy).strip()
    if s == "all":
        return list(records)
    name, _, num = s.partition(":")
    if name not in ("first", "end", "random") or not num:
        raise PamDataError(f"{where}: unknown sampling_strategy {strategy!r} (expected all, first:N, end:N, random:N or N%)")
    try:
        n = math.ceil(float(num[:-1]) * len(records) / 100) if num.endswith("%") else int(num)
    except ValueError:
        raise PamDataError(f"{where}: bad number in sampling_strategy {strategy!r}") from None
    if n < 0:
        raise PamDataError(f"{where}: negative count in sampling_strategy {strategy!r}")
    if name == "first":
        return list(records[:n])
    if name == "end":
        return list(records[-n:]) if n else []
    recs = list(records)
    rng.shuffle(recs)
    return recs[:n]


def _load_yaml(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    try:
        import yaml  # PyYAML is optional; the official configs only need the tiny subset below
    except ImportError:  # pragma: no cover - exercised only without PyYAML
        return _mini_yaml(text, path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PamDataError(f"{path}: invalid YAML ({e})") from None


def _mini_yaml(text: str, path: Path) -> dict[str, Any]:
    """Parser for ``datasets:`` followed by ``- key: value`` items (the official config shape)."""
    items: list[dict[str, str]] = []
    seen = False
    for ln, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if line.strip() == "datasets:":
            seen = True
            continue
        s = line.strip()
        if s.startswith("- "):
            items.append({})
            s = s[2:].strip()
        if not seen or not items or ":" not in s:
            raise PamDataError(f"{path}:{ln}: cannot parse without PyYAML: {raw!r}")
        k, _, v = s.partition(":")
        items[-1][k.strip()] = v.strip().strip("'\"")
    return {"datasets": items}


def load_pam_records(path_or_yaml: str | os.PathLike, *, seed: int = 0,
                     image_folder: str | os.PathLike | None = None) -> list[TrainingSample]:
    """Read a PAM-data ``.json``/``.jsonl`` file or a YAML ``datasets:`` list into validated samples.

    ``seed`` drives ``random:N`` sampling and the per-record visual-prompt choice (deterministic).
    ``image_folder`` is the root for relative media paths (default: each data file's directory).
    """
    path = Path(path_or_yaml)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise PamDataError(f"{path}: YAML file not found")
        cfg = _load_yaml(path)
        if not isinstance(cfg, dict) or not isinstance(cfg.get("datasets"), list):
            raise PamDataError(f"{path}: expected a top-level 'datasets:' list")
        entries = []
        for i, d in enumerate(cfg["datasets"]):
            if not isinstance(d, dict) or not isinstance(d.get("json_path"), str):
                raise PamDataError(f"{path}: datasets[{i}] needs a 'json_path' string, got {d!r}")
            jp = Path(d["json_path"])
            if not jp.is_absolute() and (path.parent / jp).exists():
                jp = path.parent / jp
            entries.append((jp, str(d.get("sampling_strategy", "all")), f"{path}: datasets[{i}]"))
    else:
        entries = [(path, "all", str(path))]

    samples: list[TrainingSample] = []
    for idx, (jp, strategy, where) in enumerate(entries):
        raw = read_pam_file(jp)
        base = Path(image_folder) if image_folder is not None else jp.parent
        # Validate everything (a broken record is reported even if sampling would skip it).
        # Per-record RNG keyed on (seed, file name, line) - independent of the directory it lives in.
        parsed = [parse_record(rec, loc, base, random.Random(f"{seed}|{jp.name}|{loc[len(str(jp)):]}"))
                  for rec, loc in raw]
        samples.extend(apply_sampling_strategy(parsed, strategy, random.Random(f"{seed}|sampling|{idx}"), where))
    return samples


# =============================================================================================
# Writing synthetic data in the same format
# =============================================================================================

# task -> (file-name task part, prompt key prefix)
_IMAGE_TASKS: dict[str, str] = {"label": "recognize", "label_exp": "explain", "briefCap": "brief_cap",
                                "detailCap": "detail_cap"}


def _xywh(box: Sequence[int]) -> list[int]:
    x0, y0, x1, y1 = (int(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def write_pam_records(samples: Iterable[Any], out_dir: str | os.PathLike, *, seed: int = 0,
                      prompt_mode: str = "boxNpoint", image_format: str = "png",
                      languages: Sequence[str] = ("en", "zh"), image_tasks: Sequence[str] = tuple(_IMAGE_TASKS),
                      prefix: str = "shapes", jpeg_quality: int = 95, negative_points: int = 0,
                      min_prompt_pixels: int | None = None, stream_carry_last_frame: bool = False,
                      save_masks: bool = False) -> dict[str, Path]:
    """Export synthetic :class:`~.synthetic.Scene` / :class:`~.synthetic.VideoSample` objects as a
    PAM-data style data set under ``out_dir``; returns ``{file name: path}`` of what was written.

    Layout (all paths in records are relative to ``out_dir``, where the ``.jsonl`` files live)::

        images/<id>.png                     still scenes
        videos/<id>/00000.jpg ...           videos and streams (all frames, JPEG like the official
                                            frame extraction)
        <prefix>_<pk>_obj_<task>_<lang>.jsonl          task in label | label_exp | briefCap | detailCap
        <prefix>_<pk>_video_obj_cap_<lang>.jsonl        single-clip videos, offline prompt
        <prefix>_<pk>_stream_video_obj_cap_<lang>.jsonl stream clips, "Previous caption: {history}"
        <prefix>.yaml                                    datasets: list of all files, sampling "all"

    ``<pk>`` is ``box``, ``point`` or ``boxNpoint`` (``prompt_mode``: which of ``bbox``/``points`` are
    filled, the other is null); ``<lang>`` is ``en``/``ch`` as in PAM-data file names (API code
    ``zh``).  One record per (object, task, language); for streams one per (object, clip, language)
    with history = that object's previous-clip caption ("None" for clip 0).  Objects whose prompt
    frame shows fewer than ``min_prompt_pixels`` (default 0.3 % of the image) are skipped.
    Points: 4 positives for images, 3 for videos (the reader subsamples) plus ``negative_points``.
    ``stream_carry_last_frame`` prepends the previous clip's last frame to each stream clip (the
    paper's layout, reference §7.2/7.3) and takes the prompt from it.  ``save_masks`` writes each
    image object's visible mask to ``masks/<id>_obj<j>.png`` and adds a ``"mask"`` key.
    """
    from .synthetic import Scene, VideoSample, sample_points  # local: synthetic is optional for readers

    if prompt_mode not in ("box", "point", "boxNpoint"):
        raise ValueError(f"prompt_mode must be 'box', 'point' or 'boxNpoint', got {prompt_mode!r}")
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    for lang in languages:
        if lang not in _LANG_TAG:
            raise ValueError(f"unknown language {lang!r}; expected 'en' or 'zh'")
    for t in image_tasks:
        if t not in _IMAGE_TASKS:
            raise ValueError(f"unknown image task {t!r}; expected some of {tuple(_IMAGE_TASKS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    want_box, want_pts = prompt_mode in ("box", "boxNpoint"), prompt_mode in ("point", "boxNpoint")
    handles: dict[str, Any] = {}
    written: dict[str, Path] = {}

    def emit(stem: str, rec: dict[str, Any]) -> None:
        if stem not in handles:
            p = out / f"{stem}.jsonl"
            handles[stem] = open(p, "w", encoding="utf-8")
            written[p.name] = p
        handles[stem].write(json.dumps(rec, ensure_ascii=False) + "\n")

    def prompts_for(mask: np.ndarray, n_pos: int, key: list[int]) -> tuple[Any, Any]:
        if not want_pts:
            return None, None
        return sample_points(mask, np.random.default_rng([seed] + key), n_pos, negative_points)

    try:
        for si, smp in enumerate(samples):
            size = smp.size
            min_px = min_prompt_pixels if min_prompt_pixels is not None else max(12, int(0.003 * size * size))
            if isinstance(smp, Scene):
                sid = f"{prefix}_img{si:06d}"
                rel = f"images/{sid}.{image_format}"
                (out / "images").mkdir(exist_ok=True)
                im = Image.fromarray(smp.image)
                if image_format == "png":
                    im.save(out / rel)
                else:
                    im.save(out / rel, quality=jpeg_quality)
                for obj in smp.objects:
                    if obj.area < min_px:
                        continue
                    pts, labs = prompts_for(obj.mask, 4, [si, obj.index])
                    base = {"type": "image", "image": rel,
                            "bbox": _xywh(obj.box) if want_box else None, "points": pts, "labels": labs}
                    if save_masks:
                        (out / "masks").mkdir(exist_ok=True)
                        mrel = f"masks/{sid}_obj{obj.index}.png"
                        Image.fromarray(obj.mask.astype(np.uint8) * 255).save(out / mrel)
                        base["mask"] = mrel
                    for task in image_tasks:
                        for lang in languages:
                            tag = _LANG_TAG[lang]
                            target = {"label": obj.label[lang], "label_exp": obj.explanation(lang),
                                      "briefCap": obj.brief_caption[lang], "detailCap": obj.detailed_caption[lang]}[task]
                            rec = {"id": f"{sid}_obj{obj.index}_{task}_{tag}", **base,
                                   "conversations": [{"from": "human", "value": TASK_PROMPTS[f"{_IMAGE_TASKS[task]}_{tag}"]},
                                                     {"from": "gpt", "value": target}]}
                            emit(f"{prefix}_{prompt_mode}_obj_{task}_{tag}", rec)
            elif isinstance(smp, VideoSample):
                stream = smp.num_clips > 1
                sid = f"{prefix}_{'str' if stream else 'vid'}{si:06d}"
                vdir = out / "videos" / sid
                vdir.mkdir(parents=True, exist_ok=True)
                names = [f"{t:05d}.jpg" for t in range(smp.num_frames)]
                for t, name in enumerate(names):
                    Image.fromarray(smp.frames[t]).save(vdir / name, quality=jpeg_quality)
                for obj in smp.objects:
                    for k, (a, b) in enumerate(smp.clips):
                        idx = list(range(a, b))
                        if stream and stream_carry_last_frame and k > 0:
                            idx = [a - 1] + idx
                        f0 = idx[0]
                        if obj.masks[f0].sum() < min_px:
                            continue   # nothing to prompt on this clip's first frame
                        pts, labs = prompts_for(obj.masks[f0], 3, [si, obj.index, k])
                        base = {"type": "video", "image_root": f"videos/{sid}", "frames": [names[t] for t in idx],
                                "bbox": [(_xywh(obj.boxes[t]) if obj.boxes[t] is not None else None) for t in idx] if want_box else None,
                                "points": [pts] if pts is not None else None,
                                "labels": [labs] if labs is not None else None}
                        for lang in languages:
                            tag = _LANG_TAG[lang]
                            if stream:
                                hist = obj.events[k - 1].caption[lang] if k > 0 else None
                                human = video_caption_prompt(lang, hist, streaming=True)
                                stem = f"{prefix}_{prompt_mode}_stream_video_obj_cap_{tag}"
                                rid = f"{sid}_obj{obj.index}_clip{k}_{tag}"
                            else:
                                human = video_caption_prompt(lang)
                                stem = f"{prefix}_{prompt_mode}_video_obj_cap_{tag}"
                                rid = f"{sid}_obj{obj.index}_{tag}"
                            rec = {"id": rid, **base,
                                   "conversations": [{"from": "human", "value": human},
                                                     {"from": "gpt", "value": obj.events[k].caption[lang]}]}
                            emit(stem, rec)
            else:
                raise TypeError(f"cannot export {type(smp).__name__}; expected Scene or VideoSample")
    finally:
        for h in handles.values():
            h.close()
    yaml_path = out / f"{prefix}.yaml"
    lines = ["datasets:"]
    for name in sorted(written):
        lines += [f"  - json_path: {name}", "    sampling_strategy: all"]
    yaml_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    written[yaml_path.name] = yaml_path
    return written
