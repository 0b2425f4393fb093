"""Overlay drawing: masks, boxes, prompts and a caption per region, on images and video frames."""

from __future__ import annotations

import colorsys
import textwrap
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def palette(i: int) -> tuple[int, int, int]:
    """A distinct, saturated colour per region index (golden-ratio hue steps)."""
    h = (0.08 + i * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def _font(size: int):
    for name in ("DejaVuSans.ttf", "NotoSansCJK-Regular.ttc", "Arial.ttf"):
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
    out = image.astype(np.float32)
    c = np.asarray(color, dtype=np.float32)
    out[mask] = out[mask] * (1 - alpha) + c * alpha
    return out.clip(0, 255).astype(np.uint8)


def _mask_edges(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def draw_overlay(
    image: Image.Image | np.ndarray,
    masks: Sequence[np.ndarray],
    captions: Sequence[str | None],
    prompts: Sequence[dict | None] | None = None,
    colors: Iterable[tuple[int, int, int]] | None = None,
    alpha: float = 0.45,
    max_caption_chars: int = 160,
) -> Image.Image:
    """Draw each mask tinted with its colour, its outline, its prompt (box / clicks) and a caption box."""
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
    scale = max(1.0, max(w, h) / 800)
    lw = max(1, int(2 * scale))
    font = _font(max(10, int(14 * scale)))
    r = max(3, int(5 * scale))
    for i, (m, c) in enumerate(zip(masks, colors)):
        p = (prompts[i] if prompts is not None and i < len(prompts) else None) or {}
        if "box" in p:
            draw.rectangle(p["box"], outline=c, width=lw)
        for (x, y), lab in zip(p.get("points", []), p.get("labels", [])):
            fill = (40, 220, 40) if lab == 1 else (230, 40, 40)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=(255, 255, 255), width=max(1, lw // 2))
        cap = captions[i] if i < len(captions) else None
        if not cap:
            continue
        cap = cap if len(cap) <= max_caption_chars else cap[: max_caption_chars - 1] + "…"
        text = "\n".join(textwrap.wrap(f"{i}: {cap}", width=max(20, int(w / (8 * scale))))[:4])
        ys, xs = np.nonzero(m) if m is not None and m.any() else (np.array([0]), np.array([0]))
        anchor = (int(xs.min()), max(0, int(ys.min()) - int(20 * scale)))
        bbox = draw.multiline_textbbox(anchor, text, font=font)
        dx = min(0, w - bbox[2]) - min(0, bbox[0])
        dy = min(0, h - bbox[3]) - min(0, bbox[1])
        anchor = (anchor[0] + dx, anchor[1] + dy)
        bbox = draw.multiline_textbbox(anchor, text, font=font)
        draw.rectangle([bbox[0] - 3, bbox[1] - 2, bbox[2] + 3, bbox[3] + 2], fill=(0, 0, 0))
        draw.multiline_text(anchor, text, fill=c, font=font)
    return img


def draw_regions(image, regions, alpha: float = 0.45) -> Image.Image:
    """Overlay for :class:`~perceive_anything.results.RegionResult` objects."""
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
