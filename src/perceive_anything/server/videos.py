"""Uploaded videos: kept as files in the server's temporary folder (bounded count, removed when
dropped or at shutdown), with every frame also kept as a JPEG for the UI's playback."""

from __future__ import annotations

import collections
import io
import shutil
import tempfile
import threading
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..processing.video import IMAGE_SUFFIXES, VideoError, open_video
from .errors import ApiError, NotFound, TooLarge
from .settings import ServerSettings

VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v"}
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass
class StoredVideo:
    video_id: str
    source: Path  # a file or a folder of frames, what the predictor opens
    width: int
    height: int
    fps: float | None
    frames: list[bytes] = field(default_factory=list)  # JPEG per decoded frame
    times: list[float] = field(default_factory=list)

    def info(self) -> dict:
        return {"video_id": self.video_id, "num_frames": len(self.frames), "width": self.width,
                "height": self.height, "fps": self.fps}


class VideoStore:
    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.root = Path(tempfile.mkdtemp(prefix="pam-serve-videos-"))
        self._videos: collections.OrderedDict[str, StoredVideo] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, video_id: str, param: str = "video_id") -> StoredVideo:
        with self._lock:
            v = self._videos.get(video_id)
        if v is None:
            raise NotFound(f"unknown video_id {video_id!r} (upload it with POST /v1/videos; at most "
                           f"{self.settings.max_videos} videos are kept)", param)
        return v

    def add(self, data: bytes, filename: str | None) -> StoredVideo:
        """Store and decode an upload (blocking: call from a thread). Bad input leaves no file behind."""
        if not data:
            raise ApiError("file: empty upload", "file")
        video_id = uuid.uuid4().hex[:16]
        folder = self.root / video_id
        folder.mkdir()
        try:
            video = self._decode(video_id, folder, data, filename or "")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        with self._lock:
            self._videos[video_id] = video
            while len(self._videos) > self.settings.max_videos:
                _, old = self._videos.popitem(last=False)
                shutil.rmtree(self.root / old.video_id, ignore_errors=True)
        return video

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def _decode(self, video_id: str, folder: Path, data: bytes, filename: str) -> StoredVideo:
        suffix = PurePosixPath(filename).suffix.lower()
        if data.startswith(_ZIP_MAGIC) or suffix == ".zip":
            source = self._unzip(data, folder / "frames")
        else:
            if suffix and suffix not in VIDEO_SUFFIXES:
                raise ApiError(f"file: unsupported type {suffix}; upload mp4, webm, mov or a zip of frames", "file")
            source = folder / f"video{suffix or '.mp4'}"
            source.write_bytes(data)
        try:
            src = open_video(source)
            w, h = src.info.width, src.info.height
            if not w or not h:
                raise ApiError("file: the video reports no frame size", "file")
            if w * h > self.settings.max_image_pixels:
                raise TooLarge(f"file: {w}x{h} frames exceed the server's limit of "
                               f"{self.settings.max_image_pixels:,} pixels", "file")
            frames, times = [], []
            for f in src.frames():
                if len(frames) >= self.settings.max_video_frames:
                    raise TooLarge(f"file: more than {self.settings.max_video_frames} frames; send a shorter clip", "file")
                buf = io.BytesIO()
                f.image.save(buf, format="JPEG", quality=self.settings.frame_jpeg_quality)
                frames.append(buf.getvalue())
                times.append(f.time)
        except VideoError as err:
            raise ApiError(f"file: {str(err).replace(str(folder) + '/', '')}", "file") from None
        return StoredVideo(video_id, source, w, h, src.info.fps, frames, times)

    def _unzip(self, data: bytes, out: Path) -> Path:
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as err:
            raise ApiError(f"file: not a readable zip ({err})", "file") from None
        with zf:
            members = [m for m in zf.infolist() if not m.is_dir() and PurePosixPath(m.filename).suffix.lower() in IMAGE_SUFFIXES
                       and not PurePosixPath(m.filename).name.startswith(".")]
            if not members:
                raise ApiError(f"file: the zip holds no frame images ({', '.join(sorted(IMAGE_SUFFIXES))})", "file")
            if len(members) > self.settings.max_video_frames:
                raise TooLarge(f"file: {len(members)} frames; the limit is {self.settings.max_video_frames}", "file")
            total = sum(m.file_size for m in members)
            if total > self.settings.max_zip_frame_bytes:
                raise TooLarge(f"file: the frames unpack to {total:,} bytes; the limit is "
                               f"{self.settings.max_zip_frame_bytes:,}", "file")
            out.mkdir()
            names = set()
            for m in members:
                # Only the base name is used: a member like ../../x.png cannot escape the folder.
                name = PurePosixPath(m.filename).name
                if name in names:
                    raise ApiError(f"file: two frames named {name} in the zip", "file")
                names.add(name)
                try:
                    (out / name).write_bytes(zf.read(m))
                except (zipfile.BadZipFile, OSError, EOFError) as err:
                    raise ApiError(f"file: cannot extract {name} ({err})", "file") from None
        return out
