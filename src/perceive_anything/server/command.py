"""``pam serve``: load a model and serve the HTTP API (and the web UI) with uvicorn."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .settings import ServerSettings

_DEFAULTS = ServerSettings()


class ServeError(ValueError):
    """A bad ``pam serve`` option; ``pam``'s main prints it as one line (exit 2). A ValueError rather
    than ``cli.CliError`` because under ``python -m perceive_anything.cli`` that class is ``__main__``'s."""


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve the HTTP API, an OpenAI-compatible endpoint and the web UI",
                       description="Serve PAM over HTTP. Without --model the embedded tiny model is served.")
    p.add_argument("--model", help="PAM folder (ours or official) or hub id; default: the embedded tiny model")
    p.add_argument("--sam2", help="SAM 2.1 checkpoint (.pt or hub id) for an official PAM folder")
    p.add_argument("--sam2-config", help="official SAM 2.1 yaml for --sam2")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default: cpu)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="default: float32 on cpu, bfloat16 on cuda")
    p.add_argument("--host", default=_DEFAULTS.host, help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=_DEFAULTS.port)
    p.add_argument("--max-upload-mb", type=float, default=_DEFAULTS.max_upload_mb,
                   help=f"largest request body in MB (default {_DEFAULTS.max_upload_mb:g}); larger ones get 413")
    p.add_argument("--max-pixels", type=int, default=_DEFAULTS.max_image_pixels,
                   help="largest image / frame, width x height, checked before decoding")
    p.add_argument("--queue", type=int, default=_DEFAULTS.queue_size,
                   help=f"model requests allowed to wait (default {_DEFAULTS.queue_size}); more get 429 + Retry-After")
    p.add_argument("--cache-items", type=int, default=_DEFAULTS.cache_items, help="encoded images kept (LRU)")
    p.add_argument("--cache-mb", type=float, default=_DEFAULTS.cache_mb, help="memory for encoded images (LRU)")
    p.add_argument("--allowed-root", action="append", default=[], metavar="DIR",
                   help="folder whose files file:// image URLs may name (repeatable; default: none)")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--quiet", action="store_true", help="no start-up messages")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as err:
        raise ServeError(f"pam serve needs the server extra ({err.name} is missing): "
                       "pip install 'perceive-anything[server]'") from None
    for name, value in (("--port", args.port), ("--queue", args.queue), ("--cache-items", args.cache_items)):
        if value < (0 if name == "--port" else 1) or (name == "--port" and value > 65535):
            raise ServeError(f"{name} {value} is out of range")
    if args.max_upload_mb <= 0 or args.cache_mb <= 0 or args.max_pixels <= 0:
        raise ServeError("--max-upload-mb, --cache-mb and --max-pixels must be positive")
    roots = []
    for r in args.allowed_root:
        if not Path(r).is_dir():
            raise ServeError(f"--allowed-root {r}: not a folder")
        roots.append(Path(r).resolve())
    settings = ServerSettings(
        host=args.host, port=args.port, max_upload_mb=args.max_upload_mb, queue_size=args.queue,
        allowed_roots=tuple(roots), max_image_pixels=args.max_pixels, cache_items=args.cache_items,
        cache_mb=args.cache_mb, embedded=args.model is None,
    )
    say = (lambda m: None) if args.quiet else (lambda m: print(f"[pam serve] {m}", file=sys.stderr, flush=True))
    if not settings.is_loopback():
        # Said even with --quiet: the API has no authentication.
        print(f"[pam serve] warning: listening on {args.host}, reachable from other machines; the API has no "
              "authentication (default --host 127.0.0.1 keeps it on this machine)", file=sys.stderr, flush=True)
    from ..predictor import PerceiveAnything
    from . import create_app

    if args.model is None:
        from ..checkpoints import embedded_model_dir
        from ..demo import MISSING_MODEL

        if embedded_model_dir() is None:
            raise ServeError(MISSING_MODEL)
    pam = PerceiveAnything.from_pretrained(args.model, sam2=args.sam2, sam2_config=args.sam2_config,
                                           device=args.device, dtype=args.dtype, progress=not args.quiet)
    app = create_app(pam, settings)
    say(f"serving {pam.name} on {pam.device} at http://{args.host}:{args.port}/ (API docs at /docs)")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":  # pragma: no cover
    from ..cli import main

    sys.exit(main(["serve", *sys.argv[1:]]))
