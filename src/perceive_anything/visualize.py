"""Overlay drawing: masks, boxes, prompts and a caption per region, on images and video frames."""

from __future__ import annotations

import colorsys
import re
import textwrap
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .results import mask_to_bbox


def palette(i: int) -> tuple[int, int, int]:
    """A distinct, saturated colour per region index (golden-ratio hue steps)."""
    h = (0.08 + i * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


# Fonts tried in order; the CJK ones first when the text needs them (DejaVu has no Chinese glyphs).
_LATIN_FONTS = ("DejaVuSans.ttf", "Arial.ttf", "Helvetica.ttc")
_CJK_FONTS = ("NotoSansCJK-Regular.ttc", "NotoSansCJKsc-Regular.otf", "wqy-microhei.ttc", "wqy-zenhei.ttc",
              "DroidSansFallbackFull.ttf", "msyh.ttc", "simhei.ttf", "PingFang.ttc", "Arial Unicode.ttf")
_CJK = re.compile(r"[\u3000-\u30ff\u3400-\u9fff\uf900-\ufaff\uff00-\uffef]")


def _font(size: int, text: str = ""):
    names = (_CJK_FONTS + _LATIN_FONTS) if _CJK.search(text) else _LATIN_FONTS
    for name in names:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def blend_mask(image: np.ndarray, mask: np.ndarray, color, alpha: float = 0.45) -> np.ndarray:
    """Tint the pixels of ``mask`` in ``image`` (uint8 HxWx3, modified copy returned)."""
    out = image.copy()
    # only the masked pixels go through float: a 24-megapixel photo stays cheap
    px = out[mask].astype(np.float32)
    out[mask] = (px * (1 - alpha) + np.asarray(color, dtype=np.float32) * alpha).clip(0, 255).astype(np.uint8)
    return out


def _mask_edges(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


@dataclass(frozen=True)
class OverlayStyle:
    """Text sizes follow the image's longer side, so a 256-pixel scene and a 24-megapixel photo read alike.

    Captions go to a legend panel beside the image (below it for wide images) and each region gets a
    small numbered badge placed where it covers the fewest mask pixels, so no text hides a mask.
    """

    font_fraction: float = 0.022  # legend font height per pixel of the image's longer side
    min_font_px: int = 11
    legend_chars: int = 40  # characters per legend line beside the image
    max_lines: int = 4  # legend lines per region
    wide_ratio: float = 1.25  # images at least this wide (w / h) get the legend below instead of beside

    def font_px(self, w: int, h: int) -> int:
        return max(self.min_font_px, round(self.font_fraction * max(w, h)))


def _occupancy(masks: Sequence[np.ndarray | None], h: int, w: int, step: int) -> np.ndarray:
    """Union of the masks on a grid subsampled by ``step`` (placement does not need full resolution)."""
    occ = np.zeros(((h + step - 1) // step, (w + step - 1) // step), dtype=np.int32)
    for m in masks:
        if m is not None and m.any():
            occ |= m[::step, ::step].astype(np.int32)
    return occ


def _rect_sum(sat: np.ndarray, rect: tuple[int, int, int, int], step: int) -> int:
    """Sum of the occupancy grid under ``rect`` (x1, y1, x2, y2 in pixels) from its summed-area table."""
    gh, gw = sat.shape[0] - 1, sat.shape[1] - 1
    x1, y1 = min(gw, rect[0] // step), min(gh, rect[1] // step)
    x2, y2 = min(gw, -(-rect[2] // step)), min(gh, -(-rect[3] // step))
    return int(sat[y2, x2] - sat[y1, x2] - sat[y2, x1] + sat[y1, x1])


def _place_badge(bbox: list[int], size: tuple[int, int], wh: tuple[int, int], sat: np.ndarray, step: int,
                 taken: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    """The badge rectangle next to ``bbox`` that covers the fewest mask pixels and no other badge."""
    bw, bh = size
    w, h = wh
    x1, y1, x2, y2 = bbox
    g = max(1, bh // 4)
    candidates = [(x1, y1 - bh - g), (x2 - bw, y1 - bh - g), (x1, y2 + g), (x2 - bw, y2 + g),
                  (x1 - bw - g, y1), (x2 + g, y1), (x1 - bw - g, y2 - bh), (x2 + g, y2 - bh), (x1, y1)]
    best, best_cost = None, None
    for order, (cx, cy) in enumerate(candidates):
        cx, cy = int(min(max(cx, 0), max(0, w - bw))), int(min(max(cy, 0), max(0, h - bh)))
        rect = (cx, cy, cx + bw, cy + bh)
        clash = sum(1 for t in taken if rect[0] < t[2] and t[0] < rect[2] and rect[1] < t[3] and t[1] < rect[3])
        cost = (clash, _rect_sum(sat, rect, step), order)
        if best_cost is None or cost < best_cost:
            best, best_cost = rect, cost
    return best


def _wrap(text: str, chars: int, max_lines: int) -> list[str]:
    # CJK text has no spaces to break at and its glyphs are about two Latin characters wide
    width = max(8, chars // 2) if _CJK.search(text) else chars
    lines = textwrap.wrap(text, width=width, break_long_words=True) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(1, width - 1)] + "…"
    return lines


def draw_overlay(
    image: Image.Image | np.ndarray,
    masks: Sequence[np.ndarray],
    captions: Sequence[str | None],
    prompts: Sequence[dict | None] | None = None,
    colors: Iterable[tuple[int, int, int]] | None = None,
    alpha: float = 0.45,
    max_caption_chars: int = 160,
    legend: bool = True,
    style: OverlayStyle = OverlayStyle(),
) -> Image.Image:
    """Draw each mask tinted with its colour, its outline, its prompt (box / clicks) and a numbered badge.

    With ``legend`` (default) the captions are listed, numbered and coloured like their regions, in a
    panel added beside the image (below it for wide images): the returned image is larger than the
    input, whose pixels sit unchanged at its top-left. ``legend=False`` keeps the input size and draws
    no caption text.
    """
    if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        from .processing.image import load_image

        image = load_image(image)
    arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image).copy()
    h, w = arr.shape[:2]
    colors = list(colors) if colors is not None else [palette(i) for i in range(len(masks))]
    for m, c in zip(masks, colors):
        if m is not None and m.any():
            arr = blend_mask(arr, m, c, alpha)
            arr[_mask_edges(m)] = c
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    px = style.font_px(w, h)
    lw = max(1, px // 7)
    r = max(3, px // 3)
    for i, c in enumerate(colors[: len(masks)]):
        p = (prompts[i] if prompts is not None and i < len(prompts) else None) or {}
        if "box" in p:
            draw.rectangle(p["box"], outline=c, width=lw)
        for (x, y), lab in zip(p.get("points", []), p.get("labels", [])):
            fill = (40, 220, 40) if lab == 1 else (230, 40, 40)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=(255, 255, 255), width=max(1, lw // 2))

    badge_font = _font(px)
    step = max(1, max(w, h) // 1024)
    sat = np.pad(_occupancy(masks, h, w, step), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    taken: list[tuple[int, int, int, int]] = []
    for i, (m, c) in enumerate(zip(masks, colors)):
        bbox = mask_to_bbox(m) if m is not None else None
        if bbox is None:
            continue
        tb = draw.textbbox((0, 0), str(i), font=badge_font)
        pad = max(2, px // 5)
        size = (tb[2] - tb[0] + 2 * pad, tb[3] - tb[1] + 2 * pad)
        rect = _place_badge(bbox, size, (w, h), sat, step, taken)
        taken.append(rect)
        _leader_line(draw, rect, m, step, c, lw)
        draw.rectangle(rect, fill=c, outline=(0, 0, 0), width=max(1, lw // 2))
        draw.text((rect[0] + pad - tb[0], rect[1] + pad - tb[1]), str(i), fill=_ink(c), font=badge_font)

    if not legend:
        return img
    return _with_legend(img, captions, colors[: len(masks)], max_caption_chars, style, px)


def _ink(color: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads on ``color``."""
    return (0, 0, 0) if 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2] > 140 else (255, 255, 255)


def _leader_line(draw: ImageDraw.ImageDraw, rect, m: np.ndarray, step: int, color, lw: int) -> None:
    """A line from a badge that ended up away from its region to the region's nearest pixel."""
    ys, xs = np.nonzero(m[::step, ::step])
    cx, cy = (rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2
    k = int(np.argmin((xs * step - cx) ** 2 + (ys * step - cy) ** 2))
    tx, ty = float(xs[k] * step), float(ys[k] * step)
    # distance from the target to the badge rectangle; adjacent badges need no line
    dx = max(rect[0] - tx, 0.0, tx - rect[2])
    dy = max(rect[1] - ty, 0.0, ty - rect[3])
    if (dx * dx + dy * dy) ** 0.5 > (rect[3] - rect[1]):
        draw.line([(cx, cy), (tx, ty)], fill=color, width=lw)


def _with_legend(img: Image.Image, captions, colors, max_chars: int, style: OverlayStyle, px: int) -> Image.Image:
    w, h = img.size
    below = w >= style.wide_ratio * h
    probe = _font(px)
    char_w = max(1.0, probe.getlength("abcdefghijklmnopqrstuvwxyz") / 26)
    margin = px // 2
    panel_w = w if below else int(style.legend_chars * char_w + 2 * margin + 2 * px)
    chars = int((panel_w - 2 * margin - 2 * px) / char_w)
    entries = []
    for i, c in enumerate(colors):
        cap = captions[i] if i < len(captions) else None
        cap = cap or "(no text)"
        cap = cap if len(cap) <= max_chars else cap[: max_chars - 1] + "…"
        entries.append((i, c, _wrap(cap, chars, style.max_lines), _font(px, cap)))
    line_h = int(px * 1.3)
    body_h = sum(len(lines) * line_h + margin for *_, lines, _f in entries) + margin
    if below:
        canvas = Image.new("RGB", (w, h + body_h), (24, 24, 24))
        x0, y = margin, h + margin
    else:
        canvas = Image.new("RGB", (w + panel_w, max(h, body_h)), (24, 24, 24))
        x0, y = w + margin, margin
    canvas.paste(img, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, c, lines, font in entries:
        draw.rectangle([x0, y, x0 + px, y + px], fill=c)
        tb = draw.textbbox((0, 0), str(i), font=probe)
        draw.text((x0 + (px - (tb[2] - tb[0])) / 2 - tb[0], y + (px - (tb[3] - tb[1])) / 2 - tb[1]), str(i),
                  fill=_ink(c), font=probe)
        for k, line in enumerate(lines):
            draw.text((x0 + px + margin, y + k * line_h), line, fill=(235, 235, 235), font=font)
        y += len(lines) * line_h + margin
    return canvas


def draw_regions(image, regions, alpha: float = 0.45, legend: bool = True) -> Image.Image:
    """Overlay for :class:`~perceive_anything.results.RegionResult` objects (see :func:`draw_overlay`)."""
    captions = []
    for r in regions:
        parts = [x for x in (r.label, r.caption) if x]
        captions.append(" — ".join(parts) if parts else (r.outputs[0].text if r.outputs else None))
    return draw_overlay(
        image,
        [r.mask for r in regions],
        captions,
        prompts=[r.prompt for r in regions],
        alpha=alpha,
        legend=legend,
    )


def write_video_overlay(source, result, path, stride: int = 1, fps: float | None = None,
                        num_frames: int | None = None, alpha: float = 0.45) -> None:
    """Re-decode ``source`` with the sampling of ``result`` and write each frame with every object's mask
    and its caption drawn in (H.264 mp4 via PyAV)."""
    from .processing.video import Sampling, VideoWriter

    sampling = Sampling(stride=stride, fps=fps, count=num_frames)
    out_fps = fps or ((source.info.fps or 10.0) / stride)
    captions = [o.caption or (o.outputs[0].text if o.outputs else "") for o in result.objects]
    colors = [palette(i) for i in range(len(result.objects))]
    with VideoWriter(path, fps=out_fps) as writer:
        for t, frame in enumerate(source.frames(sampling)):
            if t >= result.num_frames:
                break
            masks = [o.mask(t) if t < len(o.rles) else None for o in result.objects]
            img = draw_overlay(frame.image, masks, captions, colors=colors, alpha=alpha)
            writer.write(img)
