"""What every ``pam`` command needs around the model, kept out of ``cli.py`` so that file stays a list of
commands: output paths checked before any work, files written atomically, negative numbers as option
values, a progress bar, image lists, and the notice that names the embedded default model."""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class CliError(Exception):
    """A user error reported as one line on stderr with exit code 2."""


# Extensions each kind of output is written in: PIL and PyAV pick the format from the name, and a
# typo (out.pgn) should fail before minutes of work rather than after.
OUTPUT_SUFFIXES = {
    "json": (".json", ".jsonl", ".ndjson"),
    "image": (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"),
    "video": (".mp4", ".mov", ".mkv"),
}

# Options whose value may start with a minus sign (coordinates, durations); argparse would take
# "-50,-50,-10,-10" for an option of its own.
NEGATIVE_VALUE_OPTIONS = ("--box", "--point", "--clip", "--frame")
_NEGATIVE_VALUE = re.compile(r"-[\d.]")

DEFAULT_MODEL_NOTICE = (
    "pam: note: no --model given, so the embedded tiny demo model is used; it knows only the generated "
    "shapes world of `pam demo` and describes real photos and videos with confident nonsense. For real "
    "media pass the released PAM: --model PAM-3B/ --sam2 sam2.1_hiera_large.pt "
    "(or --model Perceive-Anything/PAM-3B)."
)


def task_list(text: str) -> list[str]:
    """Comma-separated task names of a --task/--tasks option, blanks dropped."""
    return [t.strip() for t in text.split(",") if t.strip()]


def join_negative_values(argv: list[str]) -> list[str]:
    """``--box -50,-50,-10,-10`` -> ``--box=-50,-50,-10,-10`` so argparse reads it as the value."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            out.extend(argv[i:])
            break
        if tok in NEGATIVE_VALUE_OPTIONS and i + 1 < len(argv) and _NEGATIVE_VALUE.match(argv[i + 1]):
            out.append(f"{tok}={argv[i + 1]}")
            i += 2
            continue
        out.append(tok)
        i += 1
    return out


def int_at_least(low: int):
    """argparse type: an integer >= ``low``, with a message naming the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def check_output(path: str | None, option: str, kind: str) -> Path | None:
    """Refuse an output path that cannot be written, before any work: unknown extension, an existing
    folder, a missing parent folder or a parent that is a file, a folder this user cannot write in."""
    if path is None:
        return None
    p = Path(path)
    suffixes = OUTPUT_SUFFIXES[kind]
    if p.is_dir():
        raise CliError(f"{option} {path} is a folder; give a file name ending in {', '.join(suffixes)}")
    if p.suffix.lower() not in suffixes:
        raise CliError(f"{option} {path}: unknown extension {p.suffix or '(none)'!r}; use {', '.join(suffixes)}")
    parent = p.parent
    if not parent.exists():
        raise CliError(f"{option} {path}: folder {parent} does not exist")
    if not parent.is_dir():
        raise CliError(f"{option} {path}: {parent} is not a folder")
    try:  # the only reliable writability test (root passes os.access, read-only mounts do not)
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".pam-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise CliError(f"{option} {path}: cannot write in {parent} ({err.strerror or err})") from None
    return p


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same extension, so writers pick the same format) and
    move it onto ``path`` only when the block succeeds: a failure or Ctrl-C leaves no partial file."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.stem}.", suffix=p.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the result private, unlike open()'s
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LazyLines:
    """JSON lines to a file opened at the first line (a run that fails before producing anything
    leaves no empty file) or to stdout; every line is flushed whole, so an interrupted run keeps
    complete lines only."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = path
        self._fh = None

    def write(self, line: str) -> None:
        if self.path is None:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            return
        if self._fh is None:
            self._fh = open(self.path, "w", encoding="utf-8")
        self._fh.write(line + "\n")
        self._fh.flush()

    @property
    def opened(self) -> bool:
        return self._fh is not None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def progress_bar(total: int | None, unit: str, desc: str, quiet: bool):
    """A tqdm bar on stderr (count, total, rate, ETA); silent with ``--quiet`` or when stderr is not
    a terminal (logs and pipes get no carriage-return noise)."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, dynamic_ncols=True,
                disable=quiet or not sys.stderr.isatty())


class FrameProgress:
    """``on_frame`` callback that advances a progress bar once per new source frame (frames seen
    again, e.g. the frame a paper-mode clip carries over, are not counted twice)."""

    def __init__(self, total: int | None, quiet: bool, desc: str = "tracking"):
        self.bar = progress_bar(total, "frame", desc, quiet)
        self._seen: set[int] = set()

    def __call__(self, pos, frame, masks) -> None:
        key = getattr(frame, "index", pos)
        if key not in self._seen:
            self._seen.add(key)
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def notice_default_model(args) -> None:
    """Name the embedded model once, on stderr, whenever it runs on a user's file (see the README:
    the only media it knows are `pam demo`'s generated scenes)."""
    if getattr(args, "model", None) is None and not getattr(args, "quiet", False):
        print(DEFAULT_MODEL_NOTICE, file=sys.stderr)


def _has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def expand_images(items: list[str]) -> tuple[list[str], bool]:
    """The image files named by ``items`` (files, folders, glob patterns) and whether this is a
    batch (more than one file, or a folder / pattern): a batch is answered as JSON lines."""
    from .processing.video import IMAGE_SUFFIXES

    if len(items) == 1 and not _has_glob(items[0]) and not Path(items[0]).is_dir():
        return items, False
    files: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not found:
                raise CliError(f"folder {item} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            files.extend(found)
        elif _has_glob(item) and not p.exists():
            found = sorted(f for f in glob.glob(item, recursive=True) if Path(f).is_file())
            if not found:
                raise CliError(f"no file matches {item!r}")
            files.extend(found)
        else:
            files.append(item)  # a missing or unreadable one becomes an error record, the rest go on
    return files, True
