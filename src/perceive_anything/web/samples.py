"""Bundled samples for the web page: a few generated shapes-world scenes (PNG) and one short video
(mp4), made on first request from fixed held-out seeds and kept in memory.

Generated rather than committed so they always come from the same generator as the embedded model's
training data (held-out seeds: never seen in training, see ``training.language.heldout_seed``), and
cost nothing in the wheel.  The video needs PyAV (the ``video`` extra); without it only the images
are offered.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True)
class SampleSpec:
    name: str
    kind: str  # "image" or "video"
    index: int  # held-out seed index
    size: int = 256  # the embedded model's training resolution
    num_objects: tuple[int, int] = (3, 5)
    num_frames: int = 24
    fps: int = 8


SAMPLES: tuple[SampleSpec, ...] = (
    SampleSpec("shapes-1.png", "image", 1),
    SampleSpec("shapes-2.png", "image", 2),
    SampleSpec("shapes-3.png", "image", 3),
    SampleSpec("shapes-video.mp4", "video", 1, num_objects=(2, 3)),
)
_BY_NAME = {s.name: s for s in SAMPLES}
_MEDIA_TYPES = {"image": "image/png", "video": "video/mp4"}


def _video_available() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def names() -> list[str]:
    return [s.name for s in SAMPLES if s.kind == "image" or _video_available()]


def catalogue() -> dict:
    """``{"samples": [images...], "videos": [videos...]}`` with name, url and size of each."""
    entries: dict[str, list[dict]] = {"samples": [], "videos": []}
    for spec in SAMPLES:
        if spec.name not in names():
            continue
        item = {"name": spec.name, "url": f"/v1/samples/{spec.name}", "width": spec.size, "height": spec.size}
        if spec.kind == "video":
            item.update(num_frames=spec.num_frames, fps=spec.fps)
        entries["samples" if spec.kind == "image" else "videos"].append(item)
    return entries


def load(name: str) -> tuple[bytes, str]:
    """(file bytes, media type) of sample ``name``; ``KeyError`` when there is no such sample."""
    if name not in names():
        raise KeyError(name)
    spec = _BY_NAME[name]
    return _render(spec), _MEDIA_TYPES[spec.kind]


def scene(name: str):
    """The generated ``Scene`` (image sample) or ``VideoSample`` (video sample) behind ``name``, with
    its ground truth (object masks, boxes, texts)."""
    from ..training.language import heldout_seed
    from ..training.synthetic import generate_scene, generate_video

    spec = _BY_NAME[name]
    if spec.kind == "image":
        return generate_scene(heldout_seed(spec.index, "web-sample"), size=spec.size, num_objects=spec.num_objects)
    return generate_video(heldout_seed(spec.index, "web-sample-video"), num_frames=spec.num_frames,
                          size=spec.size, num_objects=spec.num_objects)


@lru_cache(maxsize=None)
def _render(spec: SampleSpec) -> bytes:
    from PIL import Image

    if spec.kind == "image":
        buf = io.BytesIO()
        Image.fromarray(scene(spec.name).image).save(buf, format="PNG")
        return buf.getvalue()
    from ..processing.video import VideoWriter

    video = scene(spec.name)
    with tempfile.TemporaryDirectory(prefix="pam-sample-") as tmp:
        path = Path(tmp) / spec.name
        with VideoWriter(path, fps=spec.fps) as writer:
            for frame in video.frames:
                writer.write(frame)
        return path.read_bytes()
