"""``ServerSettings``: every limit and default of ``pam serve`` as a named, typed field."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_mb: float = 64.0
    """Largest request body (uploads, JSON with data URIs); larger bodies get 413 while being read."""
    queue_size: int = 8
    """Model jobs allowed to wait behind the running one; more get 429 with ``Retry-After``."""
    retry_after_s: int = 2
    allowed_roots: tuple[Path, ...] = ()
    """Folders whose files ``file://`` image URLs may name; none by default (every file URL is 403)."""
    max_image_pixels: int = 50_000_000
    """Width x height limit, read from the image header before any pixel is decoded."""
    cache_items: int = 32
    cache_mb: float = 1024.0
    """The LRU of encoded images is bounded by both the number of images and their bytes."""
    max_regions: int = 32
    max_question_chars: int = 2000
    max_new_tokens_limit: int = 1024
    max_video_frames: int = 1800
    max_videos: int = 8
    """Uploaded videos kept (oldest dropped and its files removed)."""
    max_zip_frame_bytes: int = 512 * MB
    """Uncompressed size limit of a zip of frames (a zip bomb is refused before extraction)."""
    frame_jpeg_quality: int = 85
    embedded: bool = False
    """The model is the embedded default (reported by ``/v1/models``)."""

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def cache_bytes(self) -> int:
        return int(self.cache_mb * MB)

    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
