"""``pam annotate``: the command-line front end of :func:`perceive_anything.annotation.annotate`.

Kept free of heavy imports at module level: ``pam --help`` imports it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def add_annotate_parser(sub) -> None:
    from ..everything import add_everything_args

    p = sub.add_parser(
        "annotate", help="annotate a folder / list / COCO file: JSONL records, COCO export; resumable; --ray to scale out",
        description="Every item becomes one JSON record in OUT/records.jsonl (masks as COCO RLE, every text field, "
                    "timings, model id, error if any); OUT/coco.json is written when the run completes. Run the "
                    "same command again to resume after a crash or kill.",
    )
    p.add_argument("input", help="folder of images/videos (recursive), text file of paths, or COCO JSON whose boxes/masks are the prompts")
    p.add_argument("--out", required=True, help="output folder (created; an existing one is resumed)")
    p.add_argument("--tasks", default="label,brief_caption", help="image tasks, comma-separated (default label,brief_caption); videos get video_caption")
    p.add_argument("--lang", default="en", help="en or zh")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--everything", action="store_true", help="find every object (grid of clicks) in each image / first video frame")
    mode.add_argument("--prompts", help="COCO JSON whose boxes/masks are the prompts; INPUT is then its image folder")
    p.add_argument("--ray", metavar="auto|ADDRESS", help="run through Ray Data: 'auto' joins the running cluster (ray start), "
                   "'local' starts one on this machine, or a ray:// / host:port address")
    p.add_argument("--num-workers", type=int, help="Ray actors, one model each (default: one per GPU, else per CPU)")
    p.add_argument("--batch-size", type=int, default=4, help="items per Ray batch (default 4)")
    p.add_argument("--frames", type=int, default=32, help="frames sampled per video (default 32)")
    p.add_argument("--threads", type=int, help="torch CPU threads of the single-process run")
    p.add_argument("--model", help="PAM folder (ours or official) or hub id; default: the embedded tiny model")
    p.add_argument("--sam2", help="SAM 2.1 checkpoint (.pt or hub id) for an official PAM folder")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps (default: cpu; with --ray, cuda uses a GPU per actor)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_everything_args(p)
    p.set_defaults(func=cmd_annotate)


def _report_errors(record: dict) -> None:
    """Without the progress bar (which prints them itself), failed items still get a line on stderr."""
    if record.get("error"):
        print(f"[pam] {record['id']}: {record['error']}", file=sys.stderr)


def cmd_annotate(args) -> int:
    from dataclasses import asdict

    from ..everything import everything_config_from_args
    from ..cli_support import task_list
    from ..processing import text as text_proc
    from .inputs import discover, is_coco_json
    from .pipeline import Settings
    from .runner import annotate

    tasks = task_list(args.tasks)
    if not tasks:
        raise ValueError("--tasks is empty")
    for t in tasks:
        if t not in text_proc.TASKS or text_proc.get_task(t).media == "video" or t == "question":
            raise ValueError(f"--tasks {t!r}: use image tasks (label, definition, brief_caption, detailed_caption)")
    text_proc.build_prompt(tasks[0], args.lang)  # an unknown language fails here, before anything is written
    src = Path(args.input)
    if not args.everything and not args.prompts and not is_coco_json(src):
        raise ValueError("say what to describe: --everything, --prompts COCO.json, or a COCO JSON as INPUT")
    items = discover(src, args.prompts)  # InputError (a ValueError): one line from pam's main
    generation = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens is not None else {}
    settings = Settings(
        mode="everything" if args.everything else "prompts", tasks=tasks, lang=args.lang,
        model=args.model, sam2=args.sam2, dtype=args.dtype,
        everything=asdict(everything_config_from_args(args)), video_frames=args.frames, generation=generation,
    )
    source = str(src.resolve()) + (f" + prompts {Path(args.prompts).resolve()}" if args.prompts else "")
    # errors are ValueErrors (SettingsMismatch, InputError, bad options): pam's main prints them as one
    # line (this module may run under ``python -m perceive_anything.cli``, whose CliError is another class)
    summary = annotate(items, args.out, settings, source, ray=args.ray, num_workers=args.num_workers,
                       batch_size=args.batch_size, device=args.device, threads=args.threads,
                       progress=not args.quiet, on_record=_report_errors if args.quiet else None)
    d = summary.to_dict()
    print(f"[pam] {d['items']} items: {d['done']} done, {d['skipped']} skipped as already done, "
          f"{d['failed']} failed; {d['items_per_s']} items/s; output in {args.out}", file=sys.stderr)
    print(json.dumps(d))
    return 0 if summary.failed == 0 else 1
