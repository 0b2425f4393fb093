"""``pam`` command line: a thin front end over :class:`perceive_anything.PerceiveAnything`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class CliError(Exception):
    """A user error reported as one line on stderr with exit code 2."""


def _floats(text: str, n: int | None, what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise CliError(f"{what} {text!r}: expected comma-separated numbers") from None
    if n is not None and len(vals) != n:
        raise CliError(f"{what} {text!r}: expected {n} numbers, got {len(vals)}")
    return vals


def _regions_from_args(args) -> list:
    """Each --box and each --mask is one region; --point clicks form one region (or join the single box)."""
    import numpy as np
    from PIL import Image

    regions: list = []
    for b in args.box or []:
        regions.append({"box": _floats(b, 4, "--box")})
    pts, labels = [], []
    for p in args.point or []:
        vals = _floats(p, None, "--point")
        if len(vals) not in (2, 3):
            raise CliError(f"--point {p!r}: expected x,y or x,y,label")
        if len(vals) == 3 and vals[2] not in (0.0, 1.0):
            raise CliError(f"--point {p!r}: unknown label {vals[2]:g}; use 1 (positive) or 0 (negative)")
        pts.append(vals[:2])
        labels.append(int(vals[2]) if len(vals) == 3 else 1)
    if pts:
        if len(regions) == 1 and args.points_with_box:
            regions[0].update(points=pts, labels=labels)
        else:
            regions.append({"points": pts, "labels": labels})
    for m in args.mask or []:
        path = Path(m)
        try:
            arr = np.asarray(Image.open(path).convert("L")) > 127
        except FileNotFoundError:
            raise CliError(f"--mask {m}: file not found") from None
        except OSError as err:
            raise CliError(f"--mask {m}: cannot read image ({err})") from None
        regions.append({"mask": arr})
    if not regions:
        raise CliError("give at least one region: --box x1,y1,x2,y2, --point x,y[,label] or --mask FILE.png")
    return regions


def _add_region_args(p: argparse.ArgumentParser, where: str) -> None:
    p.add_argument("--box", action="append", help=f"x1,y1,x2,y2 in pixels {where} (repeatable: one region each)")
    p.add_argument("--point", action="append",
                   help=f"x,y[,label] click {where}, label 1 positive (default) / 0 negative; all clicks form one region")
    p.add_argument("--points-with-box", action="store_true",
                   help="add the --point clicks to the single --box region instead of a separate region")
    p.add_argument("--mask", action="append", help="binary mask PNG of the image/frame size (repeatable)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="PAM folder (ours or official) or hub id; default: the embedded tiny model")
    p.add_argument("--sam2", help="SAM 2.1 checkpoint (.pt or hub id) for an official PAM folder")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default: cpu)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="default: float32 on cpu, bfloat16 on cuda")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--sample", action="store_true", help="sample like the official notebooks (temperature 0.1) instead of greedy")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--quiet", action="store_true", help="no progress messages on stderr")


def _load(args):
    from . import PerceiveAnything

    return PerceiveAnything.from_pretrained(
        args.model, sam2=args.sam2, device=args.device, dtype=args.dtype, progress=not args.quiet
    )


def _generation_kwargs(args) -> dict:
    kw = {}
    if args.max_new_tokens is not None:
        kw["max_new_tokens"] = args.max_new_tokens
    if args.sample:
        kw["preset"] = "official"
    if args.seed is not None:
        kw["seed"] = args.seed
    return kw


def cmd_image(args) -> int:
    from .processing.image import load_image

    try:
        image = load_image(args.image)
    except (FileNotFoundError, ValueError) as err:
        raise CliError(str(err)) from None
    if args.everything:
        from .everything import everything_config_from_args

        if args.box or args.point or args.mask:
            raise CliError("--everything finds the regions itself; leave out --box, --point and --mask")
        config = everything_config_from_args(args)
        tasks = [t.strip() for t in (args.task or "label,brief_caption").split(",") if t.strip()]
        pam = _load(args)
        result = pam.describe_everything(image, config=config, tasks=tasks, lang=args.lang, **_generation_kwargs(args))
    else:
        regions = _regions_from_args(args)
        tasks = [t.strip() for t in (args.task or "detailed_caption").split(",") if t.strip()]
        pam = _load(args)
        result = pam.perceive(
            image, regions, task=tasks if len(tasks) > 1 else tasks[0], lang=args.lang,
            question=args.question, **_generation_kwargs(args),
        )
    result.source = str(args.image)
    text = result.to_json(indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
        if not args.quiet:
            print(f"wrote {args.json}", file=sys.stderr)
    else:
        print(text)
    if args.overlay:
        result.draw(image).save(args.overlay)
        if not args.quiet:
            print(f"wrote {args.overlay}", file=sys.stderr)
    return 0


def cmd_video(args) -> int:
    from .processing.video import VideoError, open_video

    try:
        src = open_video(args.video)
    except VideoError as err:
        raise CliError(str(err)) from None
    regions = _regions_from_args(args)
    pam = _load(args)
    progress = _FrameProgress(args.quiet)
    result = pam.perceive_video(
        src, regions, frame=args.frame, task=args.task, lang=args.lang, num_frames=args.frames,
        stride=args.stride, fps=args.fps, on_frame=progress, **_generation_kwargs(args),
    )
    progress.done()
    result.source = str(args.video)
    text = result.to_json(masks=not args.no_masks, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    if args.overlay:
        from .visualize import write_video_overlay

        write_video_overlay(open_video(args.video), result, args.overlay, stride=args.stride, fps=args.fps,
                            num_frames=args.frames)
        if not args.quiet:
            print(f"wrote {args.overlay}", file=sys.stderr)
    return 0


class _FrameProgress:
    """Frames processed so far, on one stderr line."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.n = 0

    def __call__(self, pos, frame, masks) -> None:
        self.n += 1
        if not self.quiet and (self.n % 10 == 0 or self.n == 1):
            print(f"\r[pam] tracked {self.n} frames (source frame {frame.index})", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if not self.quiet and self.n:
            print(f"\r[pam] tracked {self.n} frames", file=sys.stderr, flush=True)


def cmd_stream(args) -> int:
    from .processing.video import VideoError, open_video

    source = args.source
    if source.isdigit():
        source = int(source)  # webcam index
    try:
        src = open_video(source)
    except VideoError as err:
        raise CliError(str(err)) from None
    regions = _regions_from_args(args)
    pam = _load(args)
    progress = _FrameProgress(args.quiet)
    clip = args.clip if not args.clip.isdigit() else int(args.clip)
    out = open(args.json, "w", encoding="utf-8") if args.json else sys.stdout
    try:
        for event in pam.perceive_stream(
            src, regions, clip=clip, mode=args.mode, carry_memory=args.carry_memory, stride=args.stride,
            fps=args.fps, lang=args.lang, max_clips=args.max_clips, on_frame=progress, **_generation_kwargs(args),
        ):
            if not args.quiet:
                print(file=sys.stderr)
            print(event.to_json(), file=out, flush=True)
    finally:
        if out is not sys.stdout:
            out.close()
    progress.done()
    return 0


def cmd_golden(args) -> int:
    from .golden import main as golden_main

    return golden_main(args.cases, dump=args.dump, quiet=args.quiet)


def cmd_convert(args) -> int:
    from .checkpoints import convert_official

    out = convert_official(args.model, args.sam2, args.out, sam2_config=args.sam2_config, progress=not args.quiet)
    print(json.dumps({"saved": str(out)}))
    return 0


def cmd_train(args) -> int:
    from .training.recipes import main_train

    return main_train(args)


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args)


def _add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model: the tiny shapes model (--recipe shapes) or a language stage on PAM-data (--data)",
        description="Run under torchrun for data parallelism: torchrun --nproc_per_node 2 -m perceive_anything.cli train ...",
    )
    p.add_argument("--recipe", choices=["shapes"], help="built-in recipe: the embedded tiny model from scratch")
    p.add_argument("--out", required=True, help="output model folder (also holds train_log.jsonl and checkpoint/)")
    # recipe-only and --data-only options default to None so that one given to the other mode is
    # refused instead of silently ignored; main_train fills in the defaults the help names
    p.add_argument("--steps-scale", type=float, help="recipe: multiply every phase's steps (default 1.0)")
    p.add_argument("--skip-segmenter", action="store_true", default=None,
                   help="recipe: keep SAM 2 random/frozen, train only the language stages")
    p.add_argument("--data", help="PAM-data .yaml / .json / .jsonl (the official training format)")
    p.add_argument("--model", help="start from this model folder / hub id, or a preset (tiny-shapes, pam-3b, ...)")
    p.add_argument("--tokenizer", help="tokenizer folder (needed for presets other than tiny-shapes)")
    p.add_argument("--stage", choices=["1", "1.5", "2"], help="language stage (default 2)")
    p.add_argument("--steps", type=int, help="optimizer steps (default: --epochs over the data)")
    p.add_argument("--epochs", type=float, help="passes over the data (default 1)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 1e-5, the released stage-2 script's)")
    p.add_argument("--batch-size", type=int, help="per process and micro-batch (default 2)")
    p.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step (default 8)")
    p.add_argument("--lora", action="store_true", default=None, help="stage 2 with LoRA adapters on the LLM (needs peft)")
    p.add_argument("--official-label-masking", action="store_true", default=None,
                   help="reproduce the official labels (also trains on template newlines / im_start / im_end)")
    p.add_argument("--gradient-checkpointing", action="store_true", default=None, help="gradient checkpointing of the LLM")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="auto: bf16 autocast on CUDA, fp32 on CPU")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cuda when available; under torchrun cuda is each process's GPU)")
    p.add_argument("--image-folder", help="data: root of relative media paths (default: each data file's folder)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint (exact resume)")
    p.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (recipe 50, data 500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)


def _add_eval_parser(sub) -> None:
    from .evaluation.cli import add_eval_parser  # argparse only; the evaluation extra is imported when run

    add_eval_parser(sub)


def _add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="offline demo with the embedded model: a generated scene and video, JSON + overlays")
    p.add_argument("--out", default="./pam-demo", help="output folder for overlays (default ./pam-demo)")
    p.add_argument("--model", help="model folder (default: the embedded tiny model)")
    p.add_argument("--seed", type=int, default=7, help="which generated scene / video")
    p.add_argument("--lang", default="en", help="en or zh")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-video", action="store_true", help="skip the video part")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)


def _add_serve_parser(sub) -> None:
    from .server.command import add_parser

    add_parser(sub)


def build_parser() -> argparse.ArgumentParser:
    from .annotation.cli import add_annotate_parser
    from .everything import add_everything_args

    parser = argparse.ArgumentParser(prog="pam", description="Perceive Anything: segment and describe any region.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("image", help="perceive regions of one image")
    p.add_argument("image", help="image file")
    _add_region_args(p, "")
    p.add_argument("--task", help="label, definition, brief_caption, detailed_caption, question; comma-separated for several "
                   "(default detailed_caption; with --everything label,brief_caption)")
    p.add_argument("--question", help="free question (with --task question)")
    p.add_argument("--everything", action="store_true", help="find every object (grid of clicks) and describe each")
    p.add_argument("--lang", default="en", help="en or zh")
    p.add_argument("--json", help="write the JSON result here (default: stdout)")
    p.add_argument("--overlay", help="write an overlay PNG/JPEG with masks and captions")
    _add_model_args(p)
    add_everything_args(p)
    p.set_defaults(func=cmd_image)

    p = sub.add_parser("video", help="track regions through a video and describe what each object does")
    p.add_argument("video", help="video file (mp4, mov, mkv, webm, ...) or folder of frames")
    _add_region_args(p, "on the prompt frame")
    p.add_argument("--frame", type=int, default=0, help="processed frame the prompts are on (default 0)")
    p.add_argument("--frames", type=int, help="sample this many frames evenly (the notebooks use 32); default: all")
    p.add_argument("--stride", type=int, default=1, help="keep every n-th frame")
    p.add_argument("--fps", type=float, help="sample about this many frames per second")
    p.add_argument("--task", default="video_caption", help="video_caption (default) or question")
    p.add_argument("--lang", default="en", help="en or zh")
    p.add_argument("--json", help="write the JSON result here (default: stdout)")
    p.add_argument("--no-masks", action="store_true", help="leave per-frame mask RLEs out of the JSON")
    p.add_argument("--overlay", help="write an overlay video (mp4) with masks and captions")
    _add_model_args(p)
    p.set_defaults(func=cmd_video)

    p = sub.add_parser("stream", help="caption regions clip by clip as a video or live source plays (JSON lines)")
    p.add_argument("source", help="video file, frame folder, webcam index/device (0, /dev/video0) or rtsp/http URL")
    _add_region_args(p, "on the first frame")
    p.add_argument("--clip", default="32", help="clip length: frames (32) or seconds ('2s')")
    p.add_argument("--mode", default="released", choices=["released", "paper"], help="clip chaining (see docs)")
    p.add_argument("--carry-memory", action="store_true", help="keep SAM 2's memory across clips")
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--fps", type=float)
    p.add_argument("--max-clips", type=int)
    p.add_argument("--lang", default="en")
    p.add_argument("--json", help="write the JSON lines here instead of stdout")
    _add_model_args(p)
    p.set_defaults(func=cmd_stream)

    p = sub.add_parser("golden", help="check numerical parity against golden fixtures of the official code")
    p.add_argument("cases", nargs="+", help="fixture case folders (or a folder holding several)")
    p.add_argument("--dump", help="also write produced tensors/texts to this folder")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_golden)

    p = sub.add_parser("convert", help="convert an official PAM folder + SAM 2.1 .pt into this package's format")
    p.add_argument("model", help="official PAM folder or hub id")
    p.add_argument("--sam2", required=True, help="SAM 2.1 .pt file or hub id")
    p.add_argument("--sam2-config", help="official SAM 2.1 yaml (default: a yaml beside the .pt, else the preset named in the file name)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_convert)

    _add_train_parser(sub)
    _add_demo_parser(sub)
    _add_serve_parser(sub)
    _add_eval_parser(sub)
    add_annotate_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .checkpoints.hub import HubUnavailableError
    from .processing.regions import RegionError
    from .processing.video import VideoError

    try:
        return int(args.func(args) or 0)
    except (CliError, RegionError, HubUnavailableError, FileNotFoundError, VideoError) as err:
        print(f"pam: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # bad task / language / checkpoint: the message says which
        print(f"pam: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
