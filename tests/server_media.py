"""Small generated inputs for the server tests: a shapes-world scene (PNG + data URI) and a short mp4."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def scene(seed: int = 5, size: int = 128):
    from perceive_anything.training.synthetic import generate_scene

    return generate_scene(seed, size=size, num_objects=2)


def write_mp4(path: Path, seed: int = 11, num_frames: int = 12, size: int = 96):
    """A real H.264 mp4 of a generated shapes video; returns the generator's ground truth."""
    from perceive_anything.processing.video import VideoWriter
    from perceive_anything.training.synthetic import generate_video

    video = generate_video(seed, num_frames=num_frames, size=size, num_objects=2, allow_exit=False)
    with VideoWriter(path, fps=8) as w:
        for f in video.frames:
            w.write(f)
    return video


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))
