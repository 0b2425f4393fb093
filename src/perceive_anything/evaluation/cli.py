"""``pam eval``: the subcommand's parser and body (registered by perceive_anything.cli)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_eval_parser", "cmd_eval", "list_text"]


def add_eval_parser(sub) -> None:
    p = sub.add_parser(
        "eval", help="reproduce a table of the paper: generate (resumable cache), score, compare with the published numbers",
        description="pam eval BENCH --data DIR --out DIR [...]; pam eval --list names every benchmark and its data layout",
    )
    p.add_argument("benchmark", nargs="?", help="benchmark name (see --list)")
    p.add_argument("--list", action="store_true", help="name every benchmark, its metrics and the data layout it expects")
    p.add_argument("--data", help="local folder with the benchmark's annotations and media")
    p.add_argument("--out", help="output folder: generations.jsonl (resumable cache), judgements.jsonl, results.json/.md")
    p.add_argument("--model", help="PAM folder (ours or official) or hub id; default: the embedded tiny model")
    p.add_argument("--sam2", help="SAM 2.1 checkpoint (.pt or hub id) for an official PAM folder")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default: cpu)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--limit", type=int, help="only the first N items (a quick check; the cache is reused by a full run)")
    p.add_argument("--batch-size", type=int, default=8, help="items generated between cache writes (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--judge-url", help="OpenAI-compatible base URL for LLM-judged metrics, e.g. http://host:8000/v1")
    p.add_argument("--judge-model", help="judge model name sent to --judge-url (recorded in the results)")
    p.add_argument("--judge-attempts", type=int, default=5, help="tries per judgement before giving up (default 5)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_eval)


def list_text() -> str:
    from .benchmarks import BENCHMARKS

    parts = []
    for b in BENCHMARKS.values():
        judge = f" (LLM judge: {', '.join(b.judge_metrics)})" if b.judge_metrics else ""
        parts.append(f"{b.name}: {b.title}\n  metrics: {', '.join(b.metrics)}{judge}\n  paper: {b.paper_table}\n"
                     f"  data: {b.source}\n  layout:\n" + "\n".join("    " + ln for ln in b.layout.splitlines()))
    return "\n\n".join(parts)


def cmd_eval(args: argparse.Namespace) -> int:
    if args.list:
        print(list_text())
        return 0
    if not args.benchmark or not args.data or not args.out:
        print("pam: error: pam eval needs BENCH --data DIR --out DIR (or --list)", file=sys.stderr)
        return 2
    from .benchmarks import get_benchmark
    from .cache import CacheMismatchError
    from .judge import JudgeConfig, JudgeError
    from .runner import CACHE_NAME, run_eval

    get_benchmark(args.benchmark)  # an unknown name fails before any model is loaded
    generation = {} if args.max_new_tokens is None else {"max_new_tokens": args.max_new_tokens}
    try:
        run = run_eval(
            args.benchmark, args.data, args.out, model=args.model, sam2=args.sam2, device=args.device,
            dtype=args.dtype, limit=args.limit, batch_size=args.batch_size, generation=generation,
            judge_url=args.judge_url, judge_model=args.judge_model,
            judge_config=JudgeConfig(attempts=args.judge_attempts) if args.judge_url else None,
            progress=None if args.quiet else (lambda m: print(m, file=sys.stderr)),
        )
    except CacheMismatchError as err:
        print(f"pam: error: {err}", file=sys.stderr)
        return 2
    except JudgeError as err:
        print(f"pam: error: {err}. The generated outputs are kept in {args.out}/{CACHE_NAME}; "
              "rerun the same command when the judge is reachable", file=sys.stderr)
        return 3
    print(run.markdown())
    if not args.quiet:
        print(f"wrote {args.out}/results.json and results.md", file=sys.stderr)
    return 0
