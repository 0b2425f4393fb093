"""Streaming captioning on a generated 30-minute video: does resident memory stay flat?

Writes a synthetic mp4 (a shape wandering over a textured background; 30 minutes at 10 fps by
default), streams it through ``PerceiveAnything.perceive_stream`` (sampled at ``--fps``) and prints
one JSON object: ``frames`` (processed), ``rss_mb_start`` (after the first clip), ``rss_mb_end``,
``rss_mb_max``, timings. Also written to ``benchmarks/results/stream_memory.json``.

    python benchmarks/stream_memory.py [--minutes 30] [--fps 2] [--model DIR] [--carry-memory]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _report import report  # benchmarks/ is sys.path[0] when a benchmark runs as a script


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def write_video(path: Path, minutes: float, fps: int, size: int) -> int:
    from perceive_anything.processing.video import VideoWriter

    n = int(minutes * 60 * fps)
    yy, xx = np.mgrid[0:size, 0:size]
    bg = ((xx * 3 + yy * 5) % 64 + 96).astype(np.uint8)
    with VideoWriter(path, fps=fps, crf=30) as w:
        for i in range(n):
            frame = np.stack([bg, bg[::-1], bg.T], axis=-1).copy()
            cx = int(size / 2 + size / 3 * np.sin(i / 50.0))
            cy = int(size / 2 + size / 4 * np.cos(i / 70.0))
            frame[max(0, cy - 8) : cy + 8, max(0, cx - 8) : cx + 8] = (220, 40, 40)
            w.write(frame)
    return n


def load_model(model: str | None):
    from perceive_anything import PerceiveAnything
    from perceive_anything.checkpoints import embedded_model_dir

    if model or embedded_model_dir() is not None:
        return PerceiveAnything.from_pretrained(model)
    # No trained model installed: a random tiny one has exactly the same memory behaviour.
    import torch

    from perceive_anything.config import pam_preset
    from perceive_anything.generation import GenerationSettings
    from perceive_anything.modeling.pam import PamModel
    from perceive_anything.training.tokenizer import build_shapes_tokenizer

    torch.manual_seed(0)
    tok = build_shapes_tokenizer(num_scenes=40)
    cfg = pam_preset("tiny-shapes")
    cfg.tokenizer_vocab_size = len(tok)
    gen = GenerationSettings(max_new_tokens=16, eos_token_id=[tok.eos_token_id], pad_token_id=tok.pad_token_id)
    return PerceiveAnything(PamModel(cfg), tok, gen, name="tiny-random")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--source-fps", type=int, default=10)
    p.add_argument("--fps", type=float, default=2.0, help="frames per second processed")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--clip", default="16s")
    p.add_argument("--model")
    p.add_argument("--carry-memory", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "stream_memory.json"))
    args = p.parse_args(argv)

    pam = load_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "long.mp4"
        t0 = time.perf_counter()
        total = write_video(video, args.minutes, args.source_fps, args.size)
        t_write = time.perf_counter() - t0
        c = args.size // 2
        frames = 0
        samples = []
        t0 = time.perf_counter()

        def count(pos, frame, masks):
            nonlocal frames
            frames += 1

        start = None
        for ev in pam.perceive_stream(video, [[c - 40, c - 40, c + 40, c + 40]], clip=args.clip, fps=args.fps,
                                      carry_memory=args.carry_memory, on_frame=count, max_new_tokens=16):
            samples.append(rss_mb())
            if start is None:
                start = samples[-1]
            print(f"clip {ev.clip}: frames {frames} rss {samples[-1]:.1f} MB", file=sys.stderr)
        t_stream = time.perf_counter() - t0
    result = {
        "frames": frames,
        "source_frames": total,
        "minutes": args.minutes,
        "clips": len(samples),
        "rss_mb_start": round(start, 1),
        "rss_mb_end": round(samples[-1], 1),
        "rss_mb_max": round(max(samples), 1),
        "rss_mb_growth": round(samples[-1] - start, 1),
        "seconds_write_video": round(t_write, 1),
        "seconds_stream": round(t_stream, 1),
        "model": pam.name,
        "carry_memory": args.carry_memory,
    }
    report(result, args.out)
    return result


if __name__ == "__main__":
    main()
