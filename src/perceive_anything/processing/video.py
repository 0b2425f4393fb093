"""Video input behind one interface: files (PyAV), frame folders, lists of images/arrays, live sources.

Frames are decoded lazily, one at a time, and dropped by the reader once yielded: nothing holds the
whole video unless the caller keeps the frames. Sampling by stride, target fps or a frame count.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".gif"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
LIVE_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


class VideoError(ValueError):
    """A video source that cannot be opened or decoded; the message names the source."""


@dataclass
class Frame:
    """One decoded frame: its index in the source (before sampling), time in seconds, RGB image."""

    index: int
    time: float
    image: Image.Image

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.image)


@dataclass
class VideoInfo:
    width: int | None
    height: int | None
    fps: float | None
    num_frames: int | None  # None when unknown (live sources, some containers)
    live: bool = False


@dataclass(frozen=True)
class Sampling:
    """Which source frames to keep: every ``stride``-th, or ~``fps`` per second, or ``count`` evenly spread.

    ``count`` reproduces the official notebooks' ``np.linspace(0, n-1, count, dtype=int)``; it needs
    the number of frames, so it is unavailable on live sources.
    """

    stride: int = 1
    fps: float | None = None
    count: int | None = None
    start: int = 0
    max_frames: int | None = None

    def __post_init__(self):
        if self.stride < 1:
            raise ValueError(f"sampling stride must be >= 1, got {self.stride}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"sampling fps must be > 0, got {self.fps}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"sampling count must be >= 1, got {self.count}")
        if sum(x is not None for x in (self.fps, self.count)) + (self.stride != 1) > 1:
            raise ValueError("choose one of stride, fps or count for sampling")


def linspace_indices(n: int, count: int) -> list[int]:
    """The official frame sampling: ``np.linspace(0, n-1, count, dtype=int)`` (floor), duplicates removed."""
    if n <= 0:
        return []
    idx = np.linspace(0, n - 1, count).astype(int).tolist()
    return sorted(set(idx))


class VideoSource:
    """Base class: iterate :class:`Frame` objects lazily; ``info`` describes the source."""

    name: str = "video"

    @property
    def info(self) -> VideoInfo:
        raise NotImplementedError

    def _frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def frames(self, sampling: Sampling | None = None) -> Iterator[Frame]:
        """Decode lazily and yield the sampled frames, in order."""
        s = sampling or Sampling()
        keep: set[int] | None = None
        if s.count is not None or (s.fps is not None and not self.info.live):
            keep = set(self.sampled_indices(s))
        next_time = None
        yielded = 0
        size = (self.info.width, self.info.height)
        for f in self._frames():
            if f.image.size != size:
                # masks and prompts are in the first frame's pixels; a resized frame would silently
                # misplace them
                raise VideoError(
                    f"{self.name}: frame {f.index} is {f.image.width}x{f.image.height} but the video is "
                    f"{size[0]}x{size[1]}; all frames must have one size"
                )
            if f.index < s.start:
                continue
            if keep is not None:
                if f.index not in keep:
                    continue
            elif s.fps is not None:  # live source: decide on the fly
                if next_time is not None and f.time + 1e-6 < next_time:
                    continue
                next_time = (next_time if next_time is not None else f.time) + 1.0 / s.fps
            elif (f.index - s.start) % s.stride:
                continue
            yield f
            yielded += 1
            if s.max_frames is not None and yielded >= s.max_frames:
                return

    def frame_times(self) -> list[float]:
        """Presentation time of every frame, without decoding pixels (finite sources only)."""
        raise NotImplementedError

    def sampled_indices(self, sampling: Sampling | None = None) -> list[int]:
        """Source indices that :meth:`frames` will yield, computed cheaply up front (finite sources)."""
        s = sampling or Sampling()
        if self.info.live:
            raise VideoError(f"{self.name}: a live source has no frame list; sample by stride or fps while streaming")
        times = self.frame_times()
        n = len(times)
        idx = list(range(s.start, n))
        if s.count is not None:
            idx = [i + s.start for i in linspace_indices(n - s.start, s.count)]
        elif s.fps is not None:
            keep, next_time = [], None
            for i in idx:
                if next_time is not None and times[i] + 1e-6 < next_time:
                    continue
                next_time = (next_time if next_time is not None else times[i]) + 1.0 / s.fps
                keep.append(i)
            idx = keep
        else:
            idx = idx[:: s.stride]
        if s.max_frames is not None:
            idx = idx[: s.max_frames]
        return idx

    def count_frames(self) -> int | None:
        return self.info.num_frames

    def __iter__(self):
        return self.frames()


class FileVideo(VideoSource):
    """A video file or live URL decoded with PyAV (FFmpeg)."""

    def __init__(self, path: str | os.PathLike, live: bool | None = None, options: dict[str, str] | None = None,
                 format: str | None = None, timeout: float = 10.0):
        self.path = str(path)
        self.name = self.path
        self.live = live if live is not None else self.path.startswith(LIVE_PREFIXES) or self.path.startswith("/dev/")
        self.options = dict(options or {})
        self.format = format
        self.timeout = timeout
        if not self.live and not Path(self.path).is_file():
            raise VideoError(f"video file not found: {self.path}")
        self._info: VideoInfo | None = None
        self._probe()

    def _open(self):
        try:
            import av
        except ImportError as err:  # pragma: no cover - av is a declared extra
            raise VideoError("reading video needs PyAV: pip install 'perceive-anything[video]'") from err
        kwargs = {"options": self.options} if self.options else {}
        if self.format:
            kwargs["format"] = self.format
        if self.live:
            kwargs["timeout"] = self.timeout
        try:
            container = av.open(self.path, **kwargs)
        except Exception as err:  # av raises many subclasses of FFmpegError/OSError
            what = "stream" if self.live else "video file"
            raise VideoError(f"cannot open {what} {self.path}: {err}") from err
        if not container.streams.video:
            container.close()
            raise VideoError(f"{self.path} has no video stream")
        return container

    def _probe(self):
        container = self._open()
        try:
            st = container.streams.video[0]
            fps = float(st.average_rate) if st.average_rate else None
            n = int(st.frames) if st.frames else None
            if n is None and not self.live and st.duration and st.time_base and fps:
                n = None  # durations lie for some containers; count lazily if asked
            self._info = VideoInfo(st.codec_context.width, st.codec_context.height, fps, n, self.live)
        finally:
            container.close()

    @property
    def info(self) -> VideoInfo:
        return self._info

    def count_frames(self) -> int | None:
        if self.live:
            return None
        return len(self.frame_times())

    def frame_times(self) -> list[float]:
        # Demux packets only (no decoding): their sorted timestamps are the presentation times.
        if getattr(self, "_times", None) is None:
            container = self._open()
            try:
                st = container.streams.video[0]
                tb = st.time_base or Fraction(1, 1)
                pts = sorted(p.pts for p in container.demux(st) if p.size and p.pts is not None)
            except Exception as err:
                raise VideoError(f"{self.path}: cannot read the packet index: {err}") from err
            finally:
                container.close()
            t0 = float(pts[0] * tb) if pts else 0.0
            self._times = [float(p * tb) - t0 for p in pts]
            self._info.num_frames = len(self._times)
        return self._times

    def _frames(self) -> Iterator[Frame]:
        container = self._open()
        try:
            st = container.streams.video[0]
            st.thread_type = "AUTO"
            tb = st.time_base or Fraction(1, 1)
            fps = self._info.fps or 0
            idx = 0
            t0 = None
            try:
                for frame in container.decode(st):
                    t = float(frame.pts * tb) if frame.pts is not None else (idx / fps if fps else float(idx))
                    if t0 is None:
                        t0 = t
                    t -= t0
                    yield Frame(idx, t, frame.to_image().convert("RGB"))
                    idx += 1
            except Exception as err:
                if idx == 0 or not _is_truncation(err):
                    raise VideoError(f"{self.path}: decoding failed at frame {idx}: {err}") from err
                # A truncated file ends where its data ends; frames already decoded are kept.
            if idx == 0:
                raise VideoError(f"{self.path}: no frame could be decoded (corrupt or empty video)")
        finally:
            container.close()


def _is_truncation(err: Exception) -> bool:
    msg = str(err).lower()
    return any(k in msg for k in ("end of file", "invalid data", "truncated", "eof"))


class FrameFolder(VideoSource):
    """A folder of image files, ordered by the integer in their names (``00000.jpg``...) or by name."""

    def __init__(self, folder: str | os.PathLike, fps: float | None = None):
        self.folder = Path(folder)
        self.name = str(folder)
        if not self.folder.is_dir():
            raise VideoError(f"frame folder not found: {folder}")
        files = [p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise VideoError(f"frame folder {folder} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.files = sorted(files, key=_frame_sort_key)
        self.fps = fps
        first = Image.open(self.files[0])
        self._info = VideoInfo(first.width, first.height, fps, len(self.files))

    @property
    def info(self) -> VideoInfo:
        return self._info

    def frame_times(self) -> list[float]:
        return [i / self.fps if self.fps else float(i) for i in range(len(self.files))]

    def _frames(self) -> Iterator[Frame]:
        for i, p in enumerate(self.files):
            try:
                img = Image.open(p).convert("RGB")
            except OSError as err:
                raise VideoError(f"cannot read frame {p}: {err}") from err
            yield Frame(i, i / self.fps if self.fps else float(i), img)


def _frame_sort_key(p: Path):
    m = re.search(r"(\d+)", p.stem)
    return (0, int(m.group(1)), p.name) if m else (1, 0, p.name)


class FrameList(VideoSource):
    """A Python list of frames: paths, PIL images or HxWx3 uint8 arrays."""

    def __init__(self, frames: Sequence, fps: float | None = None):
        if len(frames) == 0:
            raise VideoError("the frame list is empty")
        self.items = list(frames)
        self.fps = fps
        self.name = "frame list"
        first = _to_image(self.items[0], 0)
        self._info = VideoInfo(first.width, first.height, fps, len(self.items))

    @property
    def info(self) -> VideoInfo:
        return self._info

    def frame_times(self) -> list[float]:
        return [i / self.fps if self.fps else float(i) for i in range(len(self.items))]

    def _frames(self) -> Iterator[Frame]:
        for i, item in enumerate(self.items):
            yield Frame(i, i / self.fps if self.fps else float(i), _to_image(item, i))


class FrameIterator(VideoSource):
    """Any Python iterable of frames (paths, PIL images or arrays), consumed lazily like a live feed:
    its length is unknown and nothing is kept once a frame has been used."""

    def __init__(self, frames, fps: float | None = None, size: tuple[int, int] | None = None):
        self._it = iter(frames)
        self.fps = fps
        self.name = "frame iterator"
        try:
            first = next(self._it)
        except StopIteration:
            raise VideoError("the frame iterator is empty") from None
        self._first = _to_image(first, 0)
        w, h = size or self._first.size
        self._info = VideoInfo(w, h, fps, None, live=True)
        self._used = False

    @property
    def info(self) -> VideoInfo:
        return self._info

    def _frames(self) -> Iterator[Frame]:
        if self._used:
            raise VideoError("a frame iterator can only be read once")
        self._used = True
        first, self._first = self._first, None
        yield Frame(0, 0.0, first)
        for i, item in enumerate(self._it, start=1):
            yield Frame(i, i / self.fps if self.fps else float(i), _to_image(item, i))


def _to_image(item, i: int) -> Image.Image:
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, (str, os.PathLike)):
        try:
            return Image.open(item).convert("RGB")
        except OSError as err:
            raise VideoError(f"cannot read frame {i} ({item}): {err}") from err
    arr = np.asarray(item)
    if arr.ndim == 3 and arr.shape[2] in (3, 4) and arr.dtype == np.uint8:
        return Image.fromarray(arr[..., :3])
    raise VideoError(f"frame {i}: expected a path, PIL image or HxWx3 uint8 array, got {type(item).__name__} {getattr(arr, 'shape', '')}")


def open_video(source, fps: float | None = None, **kwargs) -> VideoSource:
    """Pick the reader for ``source``: file path, folder, URL / device, list of frames, or a VideoSource."""
    if isinstance(source, VideoSource):
        return source
    if isinstance(source, (list, tuple)):
        return FrameList(source, fps=fps)
    if hasattr(source, "__next__") or (hasattr(source, "__iter__") and not isinstance(source, (str, bytes, os.PathLike))):
        return FrameIterator(source, fps=fps)
    if isinstance(source, int):
        return FileVideo(f"/dev/video{source}", live=True, format="v4l2", **kwargs)
    s = str(source)
    if s.startswith(LIVE_PREFIXES) or s.startswith("/dev/video"):
        fmt = kwargs.pop("format", "v4l2" if s.startswith("/dev/video") else None)
        return FileVideo(s, live=True, format=fmt, **kwargs)
    p = Path(s)
    if p.is_dir():
        return FrameFolder(p, fps=fps)
    if not p.exists():
        raise VideoError(f"video source not found: {s}")
    if p.suffix.lower() in IMAGE_SUFFIXES:
        # FFmpeg would read a photo as a one-frame video and tracking would "succeed" on it
        raise VideoError(f"{s} is a still image, not a video; use perceive() / `pam image` for it, "
                         "or a folder of frames (or a list of images) for a video")
    return FileVideo(p, **kwargs)


class VideoWriter:
    """Write RGB frames to a video file with PyAV (H.264 in mp4 by default)."""

    def __init__(self, path: str | os.PathLike, fps: float = 10.0, codec: str = "libx264", crf: int = 23):
        import av

        self.path = str(path)
        self.container = av.open(self.path, mode="w")
        rate = Fraction(fps).limit_denominator(1000)
        self.stream = self.container.add_stream(codec, rate=rate)
        self.stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            self.stream.options = {"crf": str(crf)}
        self._open = False

    def write(self, image: Image.Image | np.ndarray) -> None:
        import av

        arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
        h, w = arr.shape[:2]
        # yuv420p needs even sizes
        arr = arr[: h - h % 2, : w - w % 2]
        if not self._open:
            self.stream.width, self.stream.height = arr.shape[1], arr.shape[0]
            self._open = True
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def llm_frame_positions(num_frames: int, llm_frames: int = 16) -> list[int]:
    """Which of ``num_frames`` tracked frames the LLM sees: the first, then ``linspace(1, n-1, llm_frames-1)``
    floored — the official rule (reference §6).

    Videos shorter than ``llm_frames`` keep the same rule instead of failing like the official code:
    frames repeat so the LLM still sees ``llm_frames`` frames laid out as in training (a 1-frame video
    repeats its only frame; a 2-frame video is [0, 1, 1, ..., 1]).
    """
    if num_frames < 1:
        raise ValueError("a video needs at least one frame")
    if num_frames == 1:
        return [0] * llm_frames
    return [0] + np.linspace(1, num_frames - 1, llm_frames - 1).astype(int).tolist()
