"""``pam`` command line: a thin front end over :class:`perceive_anything.PerceiveAnything`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .cli_support import (
    CliError,
    FrameProgress,
    LazyLines,
    atomic_output,
    check_output,
    task_list,
    expand_images,
    int_at_least,
    join_negative_values,
    notice_default_model,
    positive_float,
    progress_bar,
)


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
    p.add_argument("--box", action="append",
                   help=f"x1,y1,x2,y2 in pixels{where} (repeatable: one region each; negative values are fine: --box -5,0,40,40)")
    p.add_argument("--point", action="append",
                   help=f"x,y[,label] click{where}; label 1 positive (default) or 0 negative; all clicks form one region")
    p.add_argument("--points-with-box", action="store_true",
                   help="add the --point clicks to the single --box region instead of a separate region")
    p.add_argument("--mask", action="append", help="binary mask PNG of the image/frame size (repeatable)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="PAM folder (ours or official) or hub id, e.g. PAM-3B/ with --sam2 "
                   "sam2.1_hiera_large.pt; default: the embedded tiny demo model, which knows only the generated "
                   "shapes world of `pam demo` (its words on real media are nonsense)")
    p.add_argument("--sam2", help="SAM 2.1 checkpoint (.pt or hub id) for an official PAM folder")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default: cpu)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="default: float32 on cpu, bfloat16 on cuda")
    p.add_argument("--max-new-tokens", type=int_at_least(1), default=None,
                   help="stop each answer after this many tokens (default: the model's generation config, 512)")
    p.add_argument("--sample", action="store_true", help="sample like the official notebooks (temperature 0.1) instead of greedy")
    p.add_argument("--seed", type=int, default=None, help="random seed for --sample (makes sampled answers repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, notes or messages on stderr (errors still)")


def _load(args):
    from . import PerceiveAnything

    notice_default_model(args)
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


def _check_tasks(tasks: list[str], lang: str, media: str, question: str | None) -> None:
    """Unknown task or language, a task of the other medium, a --question the tasks do not read:
    refused before the model loads."""
    from .processing import text as text_proc

    if not tasks:
        raise CliError("--task is empty; give one or more task names, comma-separated")
    for t in tasks:
        if text_proc.get_task(t).media not in (media, "any"):
            raise CliError(f"--task {t!r} cannot run on {'an image' if media == 'image' else 'a video'}")
        text_proc.task_prompt(t, lang, question=question if t == "question" else None)
    if question is not None and "question" not in tasks:
        raise CliError("--question is only read with --task question")


def cmd_image(args) -> int:
    from .processing.image import load_image
    from .processing.regions import parse_regions

    default_tasks = "label,brief_caption" if args.everything else "detailed_caption"
    tasks = task_list(args.task if args.task is not None else default_tasks)
    _check_tasks(tasks, args.lang, "image", args.question)
    if args.everything:
        from .everything import everything_config_from_args

        if args.box or args.point or args.mask:
            raise CliError("--everything finds the regions itself; leave out --box, --point and --mask")
        args.everything_config = everything_config_from_args(args)  # bad values refused before the model loads
    files, batch = expand_images(args.image)
    if batch:
        return _image_batch(args, files, tasks)
    check_output(args.json, "--json", "json")
    check_output(args.overlay, "--overlay", "image")
    try:
        image = load_image(files[0])
    except (FileNotFoundError, ValueError) as err:
        raise CliError(str(err)) from None
    if args.everything:
        result = _describe_everything(args, image, tasks)
    else:
        regions = parse_regions(_regions_from_args(args), image.width, image.height)
        pam = _load(args)
        result = pam.perceive(
            image, regions, task=tasks if len(tasks) > 1 else tasks[0], lang=args.lang,
            question=args.question, **_generation_kwargs(args),
        )
    result.source = str(files[0])
    _write_outputs(args, result.to_json(indent=2), lambda tmp: result.draw(image).save(tmp))
    return 0


def _write_outputs(args, text: str, draw_overlay) -> None:
    """JSON (to --json or stdout) and the --overlay written by ``draw_overlay(path)``: both are
    rendered to temporary files first, so a failure of either leaves neither behind."""
    from contextlib import nullcontext

    def temp(path):
        return atomic_output(path) if path else nullcontext(None)

    with temp(args.json) as json_tmp, temp(args.overlay) as overlay_tmp:
        if json_tmp:
            json_tmp.write_text(text + "\n", encoding="utf-8")
        if overlay_tmp:
            draw_overlay(overlay_tmp)
    if args.json is None:
        print(text)
    if not args.quiet:
        for path in (args.json, args.overlay):
            if path:
                print(f"wrote {path}", file=sys.stderr)


def _describe_everything(args, image, tasks: list[str], pam=None):
    pam = pam or _load(args)
    return pam.describe_everything(image, config=args.everything_config, tasks=tasks, lang=args.lang,
                                   **_generation_kwargs(args))


def _image_batch(args, files: list[str], tasks: list[str]) -> int:
    """Many images, one model load: one JSON line per image; a bad image gets an error record and
    the rest go on. Exit status 1 when any image failed."""
    from .processing.image import load_image
    from .processing.regions import RegionError

    if args.overlay:
        raise CliError("--overlay takes a single image; run a folder or pattern without it")
    check_output(args.json, "--json", "json")
    regions = None if args.everything else _regions_from_args(args)
    pam = _load(args)
    out = LazyLines(args.json)
    failed = 0
    bar = progress_bar(len(files), "image", "images", args.quiet)
    try:
        for path in files:
            try:
                image = load_image(path)
                if args.everything:
                    result = _describe_everything(args, image, tasks, pam)
                else:
                    result = pam.perceive(image, regions, task=tasks if len(tasks) > 1 else tasks[0], lang=args.lang,
                                          question=args.question, **_generation_kwargs(args))
            except (FileNotFoundError, ValueError, RegionError) as err:
                failed += 1
                out.write(json.dumps({"source": path, "error": str(err)}, ensure_ascii=False))
            else:
                result.source = path
                out.write(result.to_json())
            bar.update(1)
    finally:
        bar.close()
        out.close()
    if not args.quiet and failed:
        print(f"pam: {failed} of {len(files)} images failed (see their error records)", file=sys.stderr)
    return 1 if failed else 0


def cmd_video(args) -> int:
    from .processing.regions import parse_regions
    from .processing.video import Sampling, VideoError, open_video

    tasks = task_list(args.task)
    _check_tasks(tasks, args.lang, "video", args.question)
    check_output(args.json, "--json", "json")
    check_output(args.overlay, "--overlay", "video")
    try:
        src = open_video(args.video)
        if src.info.live:
            raise CliError(f"{args.video} is a live source; use `pam stream` for it")
        n = len(src.sampled_indices(Sampling(stride=args.stride, fps=args.fps, count=args.frames)))
    except VideoError as err:
        raise CliError(str(err)) from None
    if n == 0:
        raise CliError(f"{args.video}: no frame left after sampling")
    if args.frame >= n:
        raise CliError(f"--frame {args.frame} is outside the {n} processed frames (0..{n - 1})")
    regions = parse_regions(_regions_from_args(args), src.info.width, src.info.height)
    pam = _load(args)
    # the backward pass (prompt on a later frame) tracks the prompt frame a second time
    progress = FrameProgress(n, args.quiet)
    extra = {"question": args.question} if args.question else {}
    try:
        result = pam.perceive_video(
            src, regions, frame=args.frame, task=tasks if len(tasks) > 1 else tasks[0], lang=args.lang,
            num_frames=args.frames, stride=args.stride, fps=args.fps, on_frame=progress,
            **extra, **_generation_kwargs(args),
        )
    finally:
        progress.close()
    result.source = str(args.video)

    def draw_overlay(tmp):
        from .visualize import write_video_overlay

        write_video_overlay(open_video(args.video), result, tmp, stride=args.stride, fps=args.fps,
                            num_frames=args.frames)

    _write_outputs(args, result.to_json(masks=not args.no_masks, indent=2), draw_overlay)
    return 0


def cmd_stream(args) -> int:
    from .predictor import _clip_length
    from .processing import text as text_proc
    from .processing.regions import parse_regions
    from .processing.video import VideoError, open_video

    text_proc.task_prompt("stream_caption", args.lang)  # unknown language: refused before any work
    check_output(args.json, "--json", "json")
    source = args.source
    if source.isdigit():
        source = int(source)  # webcam index
    try:
        src = open_video(source)
    except VideoError as err:
        raise CliError(str(err)) from None
    info = src.info
    clip = args.clip if not args.clip.isdigit() else int(args.clip)
    try:
        clip_frames = _clip_length(clip, args.fps or (info.fps / args.stride if info.fps else None))
    except ValueError as err:
        raise CliError(f"--clip: {err}") from None
    regions = parse_regions(_regions_from_args(args), info.width, info.height)
    pam = _load(args)
    total = None  # unknown for live sources and fps sampling: the bar then shows count and rate
    if not info.live and info.num_frames and args.fps is None:
        total = -(-info.num_frames // args.stride)
        if args.max_clips:
            total = min(total, args.max_clips * clip_frames)
    progress = FrameProgress(total, args.quiet, desc="streaming")
    out = LazyLines(args.json)  # created at the first caption: a source that fails leaves no empty file
    try:
        for event in pam.perceive_stream(
            src, regions, clip=clip, mode=args.mode, carry_memory=args.carry_memory, stride=args.stride,
            fps=args.fps, lang=args.lang, max_clips=args.max_clips, on_frame=progress, **_generation_kwargs(args),
        ):
            out.write(event.to_json())
    finally:
        progress.close()
        out.close()
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
    p.add_argument("--init-from", help="recipe: a tiny-shapes model folder that ran the phases before --start-phase")
    p.add_argument("--start-phase", help="recipe: continue from this phase (with --init-from; e.g. a phase "
                                         "appended to the recipe after the model was made)")
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


class _Parser(argparse.ArgumentParser):
    """argparse with its error as one line (the usage block is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .annotation.cli import add_annotate_parser
    from .everything import add_everything_args

    parser = _Parser(
        prog="pam", description="Perceive Anything: segment and describe any region.",
        epilog="Without --model the embedded tiny demo model runs: it knows only the generated shapes "
               "world (pam demo). For real photos and videos pass the released PAM: "
               "--model PAM-3B/ --sam2 sam2.1_hiera_large.pt.",
    )
    parser.add_argument("--version", action="version", version=f"pam (perceive-anything) {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("image", help="perceive regions of an image (or of many: a folder or glob, as JSON lines)")
    p.add_argument("image", nargs="+",
                   help="image file; several files, a folder or a quoted glob ('shots/*.jpg') run every image "
                        "with one model load and print one JSON line per image (an error record for a bad one)")
    _add_region_args(p, "")
    p.add_argument("--task", help="label, definition, brief_caption, detailed_caption, question; comma-separated for several "
                   "(default detailed_caption; with --everything label,brief_caption)")
    p.add_argument("--question", help="free question (with --task question)")
    p.add_argument("--everything", action="store_true", help="find every object (grid of clicks) and describe each")
    p.add_argument("--lang", default="en", help="en or zh")
    p.add_argument("--json", help="write the JSON result here, .json (JSON lines for many images); default: stdout")
    p.add_argument("--overlay", help="write an overlay image (.png, .jpg, .webp, ...) with masks and captions")
    _add_model_args(p)
    add_everything_args(p)
    p.set_defaults(func=cmd_image)

    p = sub.add_parser("video", help="track regions through a video and describe what each object does")
    p.add_argument("video", help="video file (mp4, mov, mkv, webm, ...) or folder of frames")
    _add_region_args(p, " on the prompt frame")
    p.add_argument("--frame", type=int_at_least(0), default=0, help="processed frame the prompts are on (default 0)")
    p.add_argument("--frames", type=int_at_least(1), help="sample this many frames evenly (the notebooks use 32); default: all")
    p.add_argument("--stride", type=int_at_least(1), default=1, help="keep every n-th frame of the source (default 1)")
    p.add_argument("--fps", type=positive_float, help="sample about this many frames per second of video time")
    p.add_argument("--task", default="video_caption", help="video_caption (default) or question")
    p.add_argument("--question", help="free question (with --task question)")
    p.add_argument("--lang", default="en", help="en or zh")
    p.add_argument("--json", help="write the JSON result here (.json; default: stdout)")
    p.add_argument("--no-masks", action="store_true", help="leave per-frame mask RLEs out of the JSON")
    p.add_argument("--overlay", help="write an overlay video (.mp4, .mov, .mkv) with masks and captions")
    _add_model_args(p)
    p.set_defaults(func=cmd_video)

    p = sub.add_parser("stream", help="caption regions clip by clip as a video or live source plays (JSON lines)")
    p.add_argument("source", help="video file, frame folder, webcam index/device (0, /dev/video0) or rtsp/http URL")
    _add_region_args(p, " on the first frame")
    p.add_argument("--clip", default="32", help="clip length: frames (32, the released notebook's) or seconds ('2s')")
    p.add_argument("--mode", default="released", choices=["released", "paper"],
                   help="released (default): disjoint clips, each re-prompted with the box of the last mask, as "
                        "the released notebook; paper: each clip also starts with the previous clip's last frame")
    p.add_argument("--carry-memory", action="store_true",
                   help="keep one SAM 2 memory for the whole stream instead of re-prompting each clip")
    p.add_argument("--stride", type=int_at_least(1), default=1, help="keep every n-th frame of the source (default 1)")
    p.add_argument("--fps", type=positive_float, help="sample about this many frames per second of source time")
    p.add_argument("--max-clips", type=int_at_least(1), help="stop after this many clips (default: until the source ends)")
    p.add_argument("--lang", default="en", help="en or zh")
    p.add_argument("--json", help="write the JSON lines here (.jsonl) instead of stdout")
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
    args = parser.parse_args(join_negative_values(sys.argv[1:] if argv is None else list(argv)))
    from .checkpoints.hub import HubUnavailableError
    from .processing.regions import RegionError
    from .processing.video import VideoError

    try:
        return int(args.func(args) or 0)
    except (CliError, RegionError, HubUnavailableError, FileNotFoundError, VideoError) as err:
        print(f"pam: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except ValueError as err:  # bad task / language / checkpoint: the message says which
        print(f"pam: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # outputs are written atomically or line by line, so what exists now is complete
        print("pam: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `pam stream ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as err:
        if os.environ.get("PAM_DEBUG"):
            raise
        print(f"pam: error: unexpected {type(err).__name__}: {_one_line(err)} "
              "(set PAM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
