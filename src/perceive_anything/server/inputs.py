"""Request payloads -> library inputs, each failure an :class:`ApiError` naming the field.

Images are checked in the order that keeps the server safe: size of the bytes (while reading, see
``app.BodyLimit``), format and pixel count from the header (before decoding), then the decode.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..processing import text as text_proc
from ..processing.regions import RegionError, parse_regions
from .errors import ApiError, Forbidden, TooLarge
from .settings import ServerSettings

IMAGE_FORMATS = {"PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"}
_DATA_URI = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?((?:;[\w=.+-]+)*?);base64,(.*)$", re.DOTALL)

# The server checks pixel counts itself (with a field name in the error); PIL's own bomb check
# would raise a bare warning/exception at a different limit.
Image.MAX_IMAGE_PIXELS = None


def decode_data_uri(uri: Any, param: str) -> tuple[str, bytes]:
    """``data:<mime>;base64,<payload>`` -> (mime, bytes)."""
    if not isinstance(uri, str):
        raise ApiError(f"{param} must be a data URI string 'data:image/png;base64,...'", param)
    m = _DATA_URI.match(uri.strip())
    if not m:
        raise ApiError(f"{param} is not a base64 data URI ('data:image/png;base64,...')", param)
    try:
        data = base64.b64decode(m.group(3), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(f"{param}: the data URI's base64 payload is invalid", param) from None
    if not data:
        raise ApiError(f"{param}: the data URI holds no bytes", param)
    return (m.group(1) or "application/octet-stream"), data


def image_key(data: bytes) -> str:
    """Content-addressed id: the same bytes uploaded twice share one cached encoding."""
    return hashlib.sha256(data).hexdigest()[:24]


def open_image(data: bytes, param: str, settings: ServerSettings, keep_alpha: bool = False) -> Image.Image:
    """Decode image bytes: format and pixel count are checked from the header before decoding."""
    if not data:
        raise ApiError(f"{param}: empty image", param)
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ApiError(f"{param}: not an image in a supported format ({', '.join(sorted(IMAGE_FORMATS))})", param) from None
    except Exception as exc:  # noqa: BLE001 - any header-parsing failure is the client's corrupt file
        raise ApiError(f"{param}: cannot read the image header ({exc})", param) from None
    if im.format not in IMAGE_FORMATS:
        raise ApiError(f"{param}: unsupported image format {im.format}; use {', '.join(sorted(IMAGE_FORMATS))}", param)
    w, h = im.size
    if w < 1 or h < 1:
        raise ApiError(f"{param}: image has no pixels ({w}x{h})", param)
    if w * h > settings.max_image_pixels:
        raise TooLarge(
            f"{param}: {w}x{h} = {w * h:,} pixels exceeds the server's limit of {settings.max_image_pixels:,}", param
        )
    try:
        im.load()
    except Exception as exc:  # noqa: BLE001 - truncated / corrupt pixel data
        raise ApiError(f"{param}: corrupt or truncated image ({exc})", param) from None
    if keep_alpha and ("A" in im.getbands() or "transparency" in im.info):
        return im.convert("RGBA")
    return im.convert("RGB")


def read_file_url(url: str, param: str, settings: ServerSettings) -> bytes:
    """Bytes of a ``file://`` URL that lies under one of the allowed roots (403 otherwise, nothing read)."""
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise Forbidden(f"{param}: file URLs must name a local file (file:///path), got host {parsed.netloc!r}", param)
    path = Path(unquote(parsed.path))
    if not path.is_absolute():
        raise ApiError(f"{param}: a file URL needs an absolute path", param)
    resolved = path.resolve()
    roots = [Path(r).resolve() for r in settings.allowed_roots]
    if not any(resolved.is_relative_to(root) for root in roots):
        where = ", ".join(str(r) for r in roots) if roots else "none configured (pam serve --allowed-root DIR)"
        raise Forbidden(f"{param}: {path} is outside the allowed roots ({where})", param)
    if not resolved.is_file():
        raise ApiError(f"{param}: no such file {path}", param, status=404, type="not_found_error")
    size = resolved.stat().st_size
    if size > settings.max_upload_bytes:
        raise TooLarge(f"{param}: {path} is {size:,} bytes, over the {settings.max_upload_bytes:,}-byte limit", param)
    return resolved.read_bytes()


def image_bytes_from_url(url: Any, param: str, settings: ServerSettings) -> bytes:
    """An image reference as bytes: a data URI or an allowed ``file://`` URL (remote URLs are not fetched)."""
    if not isinstance(url, str) or not url:
        raise ApiError(f"{param} must be a non-empty string (a data URI or a file:// URL)", param)
    if url.startswith("data:"):
        return decode_data_uri(url, param)[1]
    if url.startswith("file:"):
        return read_file_url(url, param, settings)
    scheme = urlparse(url).scheme or "(none)"
    raise ApiError(f"{param}: unsupported URL scheme {scheme}; send a data URI (data:image/png;base64,...) "
                   "or a file:// URL under an allowed root", param)


def _mask_from_json(value: Any, width: int, height: int, param: str) -> np.ndarray:
    """A region mask given as COCO RLE ``{"size": [h, w], "counts": str}`` or a PNG data URI."""
    if isinstance(value, dict):
        if set(value) != {"size", "counts"}:
            raise ApiError(f"{param}: a COCO RLE mask has exactly the keys 'size' and 'counts'", param)
        size, counts = value["size"], value["counts"]
        if (not isinstance(size, list) or len(size) != 2 or not all(isinstance(v, int) for v in size)
                or not isinstance(counts, (str, list))):
            raise ApiError(f"{param}: RLE needs size [h, w] (integers) and counts (a string or a list of integers)", param)
        if size != [height, width]:
            raise ApiError(f"{param}: mask size {size} (h, w) does not match the image ({height}, {width})", param)
        return _decode_rle(size, counts, param)
    if isinstance(value, str):
        _, data = decode_data_uri(value, param)
        try:
            with Image.open(io.BytesIO(data)) as im:
                if im.size[0] * im.size[1] > width * height * 4 + 16:
                    raise ApiError(f"{param}: mask is {im.size[0]}x{im.size[1]}, the image {width}x{height}", param)
                im.load()
                arr = np.asarray(im.convert("LA" if "A" in im.getbands() else "L"))
        except ApiError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ApiError(f"{param}: cannot decode the mask PNG ({exc})", param) from None
        if arr.ndim == 3:  # a transparent PNG: the opaque pixels are the region
            return arr[..., 1] > 127 if (arr[..., 1] < 255).any() else arr[..., 0] > 127
        return arr > 127
    raise ApiError(f"{param}: a mask is a COCO RLE object or a PNG data URI", param)


def _decode_rle(size: list[int], counts, param: str) -> np.ndarray:
    from pycocotools import mask as mask_utils

    h, w = size
    # pycocotools decodes a short or empty counts string into garbage instead of failing, so the
    # runs are checked to cover exactly h*w pixels first.
    if isinstance(counts, list):
        ok = all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts) and sum(counts) == h * w
    else:
        ok = bool(counts) and _rle_covers(counts, h * w)
    if not ok:
        raise ApiError(f"{param}: broken RLE counts (the runs must cover the {w}x{h} mask exactly)", param)
    try:
        rle = (mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w) if isinstance(counts, list)
               else {"size": [h, w], "counts": counts.encode("ascii")})
        return mask_utils.decode(rle).astype(bool)
    except Exception as exc:  # noqa: BLE001 - pycocotools raises assorted errors on broken counts
        raise ApiError(f"{param}: broken RLE counts ({exc})", param) from None


def _rle_covers(counts: str, total: int) -> bool:
    """Whether a compressed COCO counts string decodes to runs summing to ``total`` pixels."""
    runs, p = [], 0
    try:
        while p < len(counts):
            x, k, more = 0, 0, True
            while more:
                c = ord(counts[p]) - 48
                x |= (c & 0x1F) << (5 * k)
                more = bool(c & 0x20)
                p += 1
                k += 1
                if not more and (c & 0x10):
                    x |= -1 << (5 * k)
            if len(runs) > 2:
                x += runs[-2]
            runs.append(x)
    except (IndexError, TypeError):
        return False
    return all(r >= 0 for r in runs) and sum(runs) == total


def regions_from_json(items: Any, width: int, height: int, settings: ServerSettings, param: str = "regions"):
    """The request's regions (box / points+labels / mask as RLE or PNG data URI) as checked ``Region``s."""
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list) or not items:
        raise ApiError(f"{param} must be a non-empty list of regions ({{'box': [x1, y1, x2, y2]}}, "
                       "{'points': [[x, y]], 'labels': [1]} or {'mask': RLE})", param)
    if len(items) > settings.max_regions:
        raise ApiError(f"{param}: {len(items)} regions, the limit is {settings.max_regions}", param)
    converted = []
    for i, item in enumerate(items):
        where = f"{param}[{i}]"
        if not isinstance(item, dict):
            raise ApiError(f"{where} must be an object with 'box', 'points' (+ 'labels') or 'mask'", where)
        item = dict(item)
        for key in ("box", "points"):
            if key in item and not _finite_numbers(item[key]):
                raise ApiError(f"{where}.{key} must hold finite numbers (no NaN, infinity or strings)", f"{where}.{key}")
        if "mask" in item and item["mask"] is not None:
            item["mask"] = _mask_from_json(item["mask"], width, height, f"{where}.mask")
        converted.append(item)
    try:
        return parse_regions(converted, width, height)
    except RegionError as err:
        from .errors import from_value_error

        raise from_value_error(err, param, param) from None


def _finite_numbers(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    if isinstance(value, list):
        return bool(value) and all(_finite_numbers(v) for v in value)
    return False


def check_tasks(tasks: Any, media: str, param: str = "tasks") -> list[str]:
    names = [tasks] if isinstance(tasks, str) else tasks
    if not isinstance(names, list) or not names or not all(isinstance(t, str) for t in names):
        raise ApiError(f"{param} must be a task name or a non-empty list of them", param)
    allowed = [n for n, t in text_proc.TASKS.items() if t.media in (media, "any") and n != "stream_caption"]
    for t in names:
        if t not in allowed:
            raise ApiError(f"{param}: unknown {media} task {t!r}; valid: {', '.join(allowed)}", param)
    return names


def check_lang(lang: Any, param: str = "lang") -> str:
    if not isinstance(lang, str):
        raise ApiError(f"{param} must be 'en' or 'zh'", param)
    try:
        text_proc.task_prompt("label", lang)
    except ValueError as err:
        raise ApiError(str(err), param) from None
    return "zh" if lang.strip().lower() in ("zh", "ch", "cn", "zh-cn", "zh_cn") else "en"


def check_question(question: Any, tasks: list[str], settings: ServerSettings, param: str = "question") -> str | None:
    if question is None:
        if "question" in tasks:
            raise ApiError("task 'question' needs a non-empty 'question'", param)
        return None
    if not isinstance(question, str) or not question.strip():
        raise ApiError(f"{param} must be a non-empty string", param)
    if "question" not in tasks:
        raise ApiError(f"{param} is given but tasks do not include 'question'", param)
    if len(question) > settings.max_question_chars:
        raise ApiError(f"{param} is {len(question)} characters; the limit is {settings.max_question_chars}", param)
    if text_proc.IMAGE_TOKEN in question:
        raise ApiError(f"{param} must not contain {text_proc.IMAGE_TOKEN!r}", param)
    return question


def generation_overrides(body: dict, settings: ServerSettings) -> dict[str, Any]:
    """``max_new_tokens``, ``temperature``, ``top_k``, ``top_p``, ``seed`` checked into predictor overrides."""
    out: dict[str, Any] = {}
    mnt = body.get("max_new_tokens")
    if mnt is not None:
        if not isinstance(mnt, int) or isinstance(mnt, bool) or not 1 <= mnt <= settings.max_new_tokens_limit:
            raise ApiError(f"max_new_tokens must be an integer in 1..{settings.max_new_tokens_limit}", "max_new_tokens")
        out["max_new_tokens"] = mnt
    temp = body.get("temperature")
    if temp is not None:
        if not _finite_numbers(temp) or not 0 <= temp <= 5:
            raise ApiError("temperature must be a number in 0..5 (0 = greedy)", "temperature")
        if temp > 0:
            out.update(do_sample=True, temperature=float(temp))
    top_k = body.get("top_k")
    if top_k is not None:
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
            raise ApiError("top_k must be a non-negative integer", "top_k")
        out["top_k"] = top_k
    top_p = body.get("top_p")
    if top_p is not None:
        if not _finite_numbers(top_p) or not 0 < top_p <= 1:
            raise ApiError("top_p must be a number in (0, 1]", "top_p")
        out["top_p"] = float(top_p)
    seed = body.get("seed")
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ApiError("seed must be an integer", "seed")
        out["seed"] = seed
    return out
