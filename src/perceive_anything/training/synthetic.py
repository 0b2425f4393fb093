"""Synthetic "shapes world": deterministic scenes, videos and streams with exact masks and
bilingual (EN / ZH) region texts, for training and smoke-testing PAM without real data.

Why a synthetic world: it gives unlimited, perfectly annotated data (exact visible masks after
occlusion, boxes, labels, definitions, captions, per-clip event captions) whose text content is a
*function of the pixels*, so a small model trained on it can be checked for actually learning the
task.  Texts are drawn from several templates / synonyms per field (see ``_vocab``) so memorising
one sentence does not work, while every fact they state (shape, colour, size, texture, position,
orientation, neighbour relation, occlusion, motion) is determined by the scene.

Determinism: everything is drawn from two generators derived from ``seed`` with
``numpy.random.SeedSequence`` - one for geometry / appearance, one for wording - so changing the
wording code never moves the shapes, and the same seed always yields byte-identical images, masks
and texts.

Coordinates: images are ``H x W x 3`` uint8, masks ``H x W`` bool, boxes ``(x0, y0, x1, y1)`` ints
with *exclusive* max (``x1 - x0`` is the pixel width, as COCO's xywh), angles in degrees where
positive = clockwise on screen (y axis points down).
"""

from __future__ import annotations

import argparse
import math
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from . import _vocab as V

__all__ = [
    "LANGS", "SHAPE_CLASSES", "PALETTE", "REGION_ATTRIBUTES", "TEXTURES", "SIZES", "BACKGROUND_KINDS", "MOTION_KINDS",
    "SceneObject", "Scene", "Event", "VideoObject", "VideoSample",
    "generate_scene", "generate_video", "generate_stream",
    "format_label_definition", "first_color_word", "first_shape_word", "motion_kind", "secondary_color", "gradient_endpoints", "mask_to_box",
    "sample_points", "main",
]

LANGS: tuple[str, ...] = ("en", "zh")
SHAPE_CLASSES = V.SHAPE_CLASSES
PALETTE = V.PALETTE
TEXTURES = V.TEXTURES
SIZES = V.SIZES
# the attributes a region is named by, with their classes in a fixed order (the semantic and
# alignment training terms index them)
REGION_ATTRIBUTES: dict[str, tuple[str, ...]] = {"shape": tuple(SHAPE_CLASSES), "color": tuple(PALETTE)}
BACKGROUND_KINDS = V.BACKGROUND_KINDS
MOTION_KINDS: tuple[str, ...] = ("static", "slide", "bounce", "rotate", "grow", "shrink", "color", "exit")

# An object colour must differ clearly from the background, otherwise its mask would be
# (nearly) invisible in the pixels and the annotation would teach the model to hallucinate.
_MIN_BG_COLOR_DIST = 85.0


def format_label_definition(label: str, definition: str, lang: str) -> str:
    """Target text of the *explain* task (label + definition).

    PAM-data's exact phrasing is not public in the reference material, so one unambiguous format is
    fixed here: ``"{label}: {definition}"`` (EN) / ``"{label}：{definition}"`` (ZH, full-width colon,
    as Chinese punctuation).  The label is therefore always the text before the first colon, which
    keeps it trivially parseable from a model's output.
    """
    if lang == "en":
        return f"{label}: {definition}"
    if lang == "zh":
        return f"{label}：{definition}"
    raise ValueError(f"unknown language {lang!r}; expected one of {LANGS}")


def first_color_word(text: str | None) -> str | None:
    """The first palette colour named in an English ``text`` (None if it names none): how the
    benchmark and the CI tests check that a caption is about the prompted region."""
    return next((w for w in re.findall(r"[a-z]+", (text or "").lower()) if w in PALETTE), None)


# every English shape phrase with its class, longest first: "crescent moon shape" must win over
# "crescent", "half disk" over "disk"
_SHAPE_PHRASES = sorted(((syn, cls) for cls, syns in V.SYNONYMS_EN.items() for syn in syns),
                        key=lambda item: -len(item[0]))
_SHAPE_RE = re.compile(r"\b(" + "|".join(re.escape(p) for p, _ in _SHAPE_PHRASES) + r")\b")
_SHAPE_OF = dict(_SHAPE_PHRASES)


def first_shape_word(text: str | None) -> str | None:
    """The shape class of the first shape phrase (a class name or one of its caption synonyms) in an
    English ``text``, None if it names none: how the benchmark checks which shape a caption names."""
    m = _SHAPE_RE.search((text or "").lower())
    return _SHAPE_OF[m.group(1)] if m else None


# How the English event captions word each motion kind, checked in this order: an exit and a bounce
# also "move", a rotation "turns ... without moving", a static object "does not move".
_MOTION_CUES: tuple[tuple[str, str], ...] = (
    ("exit", r"leaves the frame|out of view|exits the frame"),
    ("bounce", r"bounce"),
    ("rotate", r"spin|rotat|clockwise"),
    ("color", r"colou?r|turns from|fades from"),
    ("grow", r"grow|expand|bigger"),
    ("shrink", r"shrink|smaller|contract"),
    ("static", r"still|motionless|does not move|stays in place|rests"),
    ("slide", r"slid|move|glid"),
)


def motion_kind(text: str | None) -> str | None:
    """The ``MOTION_KINDS`` entry an English event caption describes (None if none is recognised)."""
    low = (text or "").lower()
    return next((kind for kind, cue in _MOTION_CUES if re.search(cue, low)), None)


# =============================================================================================
# Geometry
# =============================================================================================

def _regular(n: int, radius: float = 1.0, phase_deg: float = -90.0) -> np.ndarray:
    a = np.deg2rad(phase_deg + 360.0 * np.arange(n) / n)
    return np.stack([np.cos(a), np.sin(a)], axis=1) * radius


# Classes whose drawn area is not symmetric about the local origin; they are re-centred on their
# area centroid so that "rotates in place" / "grows" keep the visible centre fixed.
_ASYMMETRIC = frozenset({"triangle", "crescent", "heart", "arrow", "trapezoid", "semicircle"})


def _shape_ops(shape: str, aspect: float) -> tuple[tuple[np.ndarray, bool], ...]:
    """Unit-size outline(s) of a class as polygons in local coordinates (y down).

    Returns (polygon, fill) pairs drawn in order; fill=False cuts holes (ring, crescent).  The first
    polygon is the outer outline; every shape fits in about the unit disk (exactly: ``_extent``).
    Local +x is the shape's "forward" direction (arrow tip, crescent opening, long axis of
    rectangle/ellipse); the origin is the area centroid.
    """
    if shape in _ASYMMETRIC:
        return _centred_ops(shape)
    return _raw_ops(shape, aspect)


@lru_cache(maxsize=None)
def _centred_ops(shape: str) -> tuple[tuple[np.ndarray, bool], ...]:
    ops = _raw_ops(shape, 1.0)
    n = 400  # rasterise once at high resolution to find the centroid of the filled area
    im = Image.new("L", (n, n), 0)
    d = ImageDraw.Draw(im)
    for pts, fill in ops:
        d.polygon([tuple(p) for p in ((pts + 1.5) * n / 3).tolist()], fill=255 if fill else 0)
    ys, xs = np.nonzero(np.asarray(im))
    c = np.array([xs.mean() + 0.5, ys.mean() + 0.5]) * 3 / n - 1.5
    return tuple((pts - c, fill) for pts, fill in ops)


def _raw_ops(shape: str, aspect: float) -> tuple[tuple[np.ndarray, bool], ...]:
    if shape == "circle":
        return ((_regular(64), True),)
    if shape == "ellipse":
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        return ((np.stack([np.cos(t), aspect * np.sin(t)], 1), True),)
    if shape == "square":
        s = 0.72
        return ((np.array([[-s, -s], [s, -s], [s, s], [-s, s]]), True),)
    if shape == "rectangle":
        w, h = 0.92, 0.92 * aspect
        return ((np.array([[-w, -h], [w, -h], [w, h], [-w, h]]), True),)
    if shape == "triangle":
        return ((_regular(3), True),)
    if shape == "star":
        pts = _regular(10)
        pts[1::2] *= 0.42
        return ((pts, True),)
    if shape == "pentagon":
        return ((_regular(5), True),)
    if shape == "hexagon":
        return ((_regular(6, phase_deg=0.0), True),)
    if shape == "diamond":
        return ((np.array([[0.0, -1.0], [0.62, 0.0], [0.0, 1.0], [-0.62, 0.0]]), True),)
    if shape == "ring":
        return ((_regular(64), True), (_regular(64, 0.55), False))
    if shape == "cross":
        w = 0.3
        return ((np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1],
                           [-w, w], [-1, w], [-1, -w], [-w, -w]], dtype=float), True),)
    if shape == "crescent":
        return ((_regular(64), True), (_regular(64, 0.82) + np.array([0.42, 0.0]), False))
    if shape == "heart":
        t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        x = 16 * np.sin(t) ** 3 / 17.0
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)) / 17.0
        return ((np.stack([x, y + 0.12], 1), True),)
    if shape == "arrow":
        return ((np.array([[-1, -0.22], [0.15, -0.22], [0.15, -0.55], [1, 0], [0.15, 0.55],
                           [0.15, 0.22], [-1, 0.22]], dtype=float), True),)
    if shape == "trapezoid":
        return ((np.array([[-1, 0.6], [1, 0.6], [0.55, -0.6], [-0.55, -0.6]]), True),)
    if shape == "semicircle":
        t = np.linspace(np.pi, 2 * np.pi, 33)
        return ((np.stack([np.cos(t), np.sin(t) + 0.45], 1), True),)
    raise ValueError(f"unknown shape class {shape!r}; expected one of {SHAPE_CLASSES}")


@lru_cache(maxsize=None)
def _extent(shape: str, aspect: float) -> float:
    """Max distance of the outline from the centre in units of the radius (for in-frame checks)."""
    return float(np.linalg.norm(_shape_ops(shape, aspect)[0][0], axis=1).max())


def _sample_orientation(shape: str, rng: np.random.Generator) -> tuple[float, str | None]:
    """(angle, orientation key).  Only classes whose orientation is nameable get a key; their angle
    stays close to the named direction so the caption is unambiguous from the pixels."""
    j = lambda w: float(rng.uniform(-w, w))  # noqa: E731 - tiny local jitter helper
    if shape in ("circle", "ring"):
        return float(rng.uniform(0, 360)), None  # invisible, only turns the texture
    if shape in ("rectangle", "ellipse"):
        return (0.0 + j(8), "horizontal") if rng.random() < 0.5 else (90.0 + j(8), "vertical")
    if shape == "triangle":
        return (0.0 + j(8), "up") if rng.random() < 0.5 else (180.0 + j(8), "down")
    if shape == "arrow":
        k = int(rng.integers(8))
        return k * 45.0 + j(4), f"point{k}"
    if shape == "crescent":
        return (0.0 + j(10), "open_right") if rng.random() < 0.5 else (180.0 + j(10), "open_left")
    if shape == "semicircle":
        return (0.0 + j(8), "flat_down") if rng.random() < 0.5 else (180.0 + j(8), "flat_up")
    # squares/diamonds must stay upright, or a rotated square would look like a diamond.
    return j(12), None


_ORIENT_EN: dict[str, tuple[list[str], list[str]]] = {
    # key: (participial phrases after the noun, full sentences)
    "horizontal": (["lying horizontally", "oriented horizontally"], ["It lies horizontally.", "It is oriented horizontally."]),
    "vertical": (["standing vertically", "oriented vertically"], ["It stands vertically.", "It is oriented vertically."]),
    "up": (["pointing up", "with its tip pointing up"], ["It points upward.", "Its tip points up."]),
    "down": (["pointing down", "with its tip pointing down"], ["It points downward.", "Its tip points down."]),
    "open_right": (["opening to the right"], ["Its opening faces right.", "It opens to the right."]),
    "open_left": (["opening to the left"], ["Its opening faces left.", "It opens to the left."]),
    "flat_down": (["with its flat side down"], ["Its flat side faces down.", "It rests on its flat side."]),
    "flat_up": (["with its flat side up"], ["Its flat side faces up.", "Its curved side faces down."]),
}
_ORIENT_ZH: dict[str, list[str]] = {
    "horizontal": ["横向放置"], "vertical": ["竖向放置"], "up": ["尖角朝上"], "down": ["尖角朝下"],
    "open_right": ["开口朝右"], "open_left": ["开口朝左"], "flat_down": ["平边朝下"], "flat_up": ["平边朝上"],
}
for _k in range(8):
    _ORIENT_EN[f"point{_k}"] = ([f"pointing {V.POINT_DIR_EN[_k]}"],
                                [f"It points {V.POINT_DIR_EN[_k]}.", f"Its head points {V.POINT_DIR_EN[_k]}."])
    _ORIENT_ZH[f"point{_k}"] = [f"指向{V.POINT_DIR_ZH[_k]}"]


# =============================================================================================
# Appearance
# =============================================================================================

def secondary_color(rgb: Sequence[float]) -> tuple[int, int, int]:
    """Second tone of stripes/dots/checker textures: a darker shade for light colours, a lighter one
    for dark colours (so the pattern is visible on black too).  Rounded like the rendered pixels."""
    c = np.asarray(rgb, dtype=np.float64)
    lum = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
    sec = c * 0.55 if lum > 110 else c + (255.0 - c) * 0.5
    return tuple(int(v) for v in np.clip(np.rint(sec), 0, 255))  # type: ignore[return-value]


def gradient_endpoints(rgb: Sequence[float]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(light, dark) end colours of the "gradient" texture; every pixel lies between them."""
    c = np.asarray(rgb, dtype=np.float64)
    light = np.clip(np.rint(c + (255.0 - c) * 0.45), 0, 255)
    dark = np.clip(np.rint(c * 0.55), 0, 255)
    return tuple(int(v) for v in light), tuple(int(v) for v in dark)  # type: ignore[return-value]


def _texture_colors(texture: str, rgb: np.ndarray, u: np.ndarray, v: np.ndarray, tex_angle: float) -> np.ndarray:
    """Per-pixel colours (h, w, 3) uint8 of a texture evaluated in object-local coordinates, so the
    pattern moves / rotates / scales with the object (a pattern fixed to the image would "slide
    through" moving objects)."""
    if texture == "solid":
        return _fill_rgb(u.shape, rgb)
    ca, sa = math.cos(math.radians(tex_angle)), math.sin(math.radians(tex_angle))
    if texture == "gradient":
        light, dark = (np.array(c, np.float64) for c in gradient_endpoints(rgb))
        return _lerp_rgb(light, dark, np.clip((u * ca + v * sa + 1.0) / 2.0, 0.0, 1.0))
    if texture == "stripes":
        sel = (np.floor((u * ca + v * sa) / 0.25) % 2) == 1
    elif texture == "dots":
        s = 0.5
        du, dv = np.mod(u, s) - s / 2, np.mod(v, s) - s / 2
        sel = du * du + dv * dv < 0.14 ** 2
    elif texture == "checker":
        sel = (np.floor(u / 0.4) + np.floor(v / 0.4)) % 2 == 1
    else:
        raise ValueError(f"unknown texture {texture!r}; expected one of {TEXTURES}")
    out = _fill_rgb(u.shape, rgb)
    out[sel] = np.array(secondary_color(rgb), np.uint8)
    return out


def _background(rng: np.random.Generator, size: int, kind: str | None) -> tuple[np.ndarray, str, list[tuple[int, int, int]]]:
    kind = kind or str(rng.choice(BACKGROUND_KINDS))
    if kind not in BACKGROUND_KINDS:
        raise ValueError(f"unknown background {kind!r}; expected one of {BACKGROUND_KINDS}")
    cols = V.BACKGROUND_COLORS
    c0 = np.array(cols[int(rng.integers(len(cols)))], np.float32)
    used = [tuple(int(x) for x in c0)]
    # float32, one channel at a time: numpy broadcasting over a trailing axis of length 3 is ~10x
    # slower, and the background dominates the cost of a scene.
    if kind == "flat":
        return _fill_rgb((size, size), c0), kind, used
    if kind == "gradient":
        c1 = np.array(cols[int(rng.integers(len(cols)))], np.float32)
        used.append(tuple(int(x) for x in c1))
        a = rng.uniform(0, 2 * np.pi)
        g = (np.arange(size, dtype=np.float32) / max(size - 1, 1) - 0.5)
        t = np.clip((g[None, :] * np.float32(math.cos(a)) + g[:, None] * np.float32(math.sin(a))) / np.float32(1.42)
                    + np.float32(0.5), 0, 1)
        return _lerp_rgb(c0, c1, t), kind, used
    if kind == "noise":
        noise = rng.standard_normal((size, size), dtype=np.float32) * np.float32(9.0)
        img = np.empty((size, size, 3), np.uint8)
        for k in range(3):
            img[..., k] = np.clip(np.rint(c0[k] + noise), 0, 255)
        return img, kind, used
    # texture: faint stripes or checks in two close tones
    period = int(rng.integers(6, 16))
    ar = np.arange(size)
    pat = ((ar[None, :] // period + ar[:, None] // period) % 2) if rng.random() < 0.5 \
        else ((ar[None, :] + ar[:, None]) // period % 2)
    hi, lo = (np.clip(c0 + d, 0, 255) for d in (14.0, -14.0))
    return _lerp_rgb(lo, hi, pat.astype(np.float32)), kind, used


def _fill_rgb(shape: tuple[int, int], c: np.ndarray) -> np.ndarray:
    row = np.tile(np.clip(np.rint(c), 0, 255).astype(np.uint8), (shape[1], 1))
    return np.repeat(row[None], shape[0], 0)


def _lerp_rgb(c0: np.ndarray, c1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """uint8 (h, w, 3) = round(c0 * (1 - t) + c1 * t) per channel, t in [0, 1]."""
    out = np.empty(t.shape + (3,), np.uint8)
    for k in range(3):
        out[..., k] = np.clip(np.rint(c0[k] * (1 - t) + c1[k] * t), 0, 255)
    return out


def _allowed_colors(bg_colors: list[tuple[int, int, int]], restrict: Sequence[str] | None) -> list[str]:
    names = list(restrict) if restrict else list(PALETTE)
    ok = [n for n in names
          if all(np.linalg.norm(np.subtract(PALETTE[n], b)) >= _MIN_BG_COLOR_DIST for b in bg_colors)]
    return ok or names  # never empty (tiny palettes may be all close to a background)


# =============================================================================================
# Rendering
# =============================================================================================

@dataclass
class _State:
    """Geometric / appearance state of one object at one instant (internal)."""
    shape: str
    cx: float
    cy: float
    r: float
    angle: float
    aspect: float
    rgb: np.ndarray
    texture: str
    tex_angle: float

    def copy(self) -> "_State":
        return _State(self.shape, self.cx, self.cy, self.r, self.angle, self.aspect, self.rgb.copy(),
                      self.texture, self.tex_angle)

    @property
    def ext(self) -> float:
        return _extent(self.shape, self.aspect) * self.r


def _layer(st: _State, size: int, colors: bool = True):
    """Rasterise one object in its clipped bounding box: (y0, y1, x0, x1, mask, colours|None) or None."""
    ops = _shape_ops(st.shape, st.aspect)
    a = math.radians(st.angle)
    c, s = math.cos(a), math.sin(a)
    rot = np.array([[c, -s], [s, c]]) * st.r
    world = [pts @ rot.T + (st.cx, st.cy) for pts, _ in ops]
    outer = world[0]
    x0 = max(0, math.floor(outer[:, 0].min())); x1 = min(size, math.ceil(outer[:, 0].max()) + 1)
    y0 = max(0, math.floor(outer[:, 1].min())); y1 = min(size, math.ceil(outer[:, 1].max()) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    im = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(im)
    # PIL puts integer coordinates on pixel centres; our continuous coordinates put pixel (i, j)'s
    # centre at (i + 0.5, j + 0.5), hence the half-pixel shift.
    for w, (_, fill) in zip(world, ops):
        draw.polygon([tuple(p) for p in (w - (x0 + 0.5, y0 + 0.5)).tolist()], fill=255 if fill else 0)
    mask = np.asarray(im) > 0
    if not mask.any():
        return None
    col = None
    if colors:
        dx = (np.arange(x0, x1) + 0.5 - st.cx)[None, :]
        dy = (np.arange(y0, y1) + 0.5 - st.cy)[:, None]
        u = (c * dx + s * dy) / st.r
        v = (-s * dx + c * dy) / st.r
        col = _texture_colors(st.texture, st.rgb, u, v, st.tex_angle)
    return y0, y1, x0, x1, mask, col


def _full_mask(layer, size: int) -> np.ndarray:
    m = np.zeros((size, size), bool)
    if layer is not None:
        y0, y1, x0, x1, mk, _ = layer
        m[y0:y1, x0:x1] = mk
    return m


def _overlap(Li, Lj) -> int:
    """Pixel count of the intersection of two layers (computed on their bounding-box overlap)."""
    if Li is None or Lj is None:
        return 0
    y0, y1 = max(Li[0], Lj[0]), min(Li[1], Lj[1])
    x0, x1 = max(Li[2], Lj[2]), min(Li[3], Lj[3])
    if y0 >= y1 or x0 >= x1:
        return 0
    a = Li[4][y0 - Li[0]:y1 - Li[0], x0 - Li[2]:x1 - Li[2]]
    b = Lj[4][y0 - Lj[0]:y1 - Lj[0], x0 - Lj[2]:x1 - Lj[2]]
    return int(np.count_nonzero(a & b))


def _visible(fulls: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Visible part of each full mask under painter's order (later = on top)."""
    out: list[np.ndarray] = [None] * len(fulls)  # type: ignore[list-item]
    covered = np.zeros_like(fulls[0]) if fulls else None
    for i in range(len(fulls) - 1, -1, -1):
        out[i] = fulls[i] & ~covered
        covered |= fulls[i]
    return out


def _render(bg: np.ndarray, states: Sequence[_State | None], size: int):
    img = bg.copy()
    layers = []
    for st in states:
        L = _layer(st, size) if st is not None else None
        if L is not None:
            y0, y1, x0, x1, mk, col = L
            np.copyto(img[y0:y1, x0:x1], col, where=mk[..., None])  # ~3x faster than fancy indexing
        layers.append(L)
    return img, layers


def mask_to_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box (x0, y0, x1, y1) with exclusive max, or None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _erode(mask: np.ndarray) -> np.ndarray:
    m = mask.copy()
    m[1:] &= mask[:-1]; m[:-1] &= mask[1:]; m[:, 1:] &= mask[:, :-1]; m[:, :-1] &= mask[:, 1:]
    return m


def sample_points(mask: np.ndarray, rng: np.random.Generator, n_pos: int, n_neg: int = 0,
                  margin: int = 2) -> tuple[list[list[int]], list[int]]:
    """Point prompts: ``n_pos`` distinct pixels inside ``mask`` (preferring pixels at least ``margin``
    px from its boundary, so a click is unambiguous) and ``n_neg`` outside, as ([[x, y], ...], labels)."""
    inner = mask
    for _ in range(margin):   # deepest erosion that still offers n_pos distinct pixels
        e = _erode(inner)
        if np.count_nonzero(e) < n_pos:
            break
        inner = e
    pts: list[list[int]] = []
    labels: list[int] = []
    for region, n, lab in ((inner, n_pos, 1), (~_dilate(mask, margin), n_neg, 0)):
        ys, xs = np.nonzero(region)
        if n <= 0 or ys.size == 0:
            continue
        idx = rng.choice(ys.size, size=min(n, ys.size), replace=False)
        for k in np.sort(idx):
            pts.append([int(xs[k]), int(ys[k])]); labels.append(lab)
    return pts, labels


def _dilate(mask: np.ndarray, n: int) -> np.ndarray:
    return ~_erode_n(~mask, n)


def _erode_n(mask: np.ndarray, n: int) -> np.ndarray:
    for _ in range(n):
        mask = _erode(mask)
    return mask


# =============================================================================================
# Object placement (shared by scenes and the first frame of videos)
# =============================================================================================

def _range(n: int | tuple[int, int], rng: np.random.Generator) -> int:
    if isinstance(n, int):
        return n
    lo, hi = n
    return int(rng.integers(lo, hi + 1))


def _place_objects(rng: np.random.Generator, size: int, n: int, colors: list[str],
                   shapes: Sequence[str] | None, textures: Sequence[str] | None,
                   min_visible_fraction: float, min_visible_pixels: int) -> tuple[list[_State], list[str], list[str]]:
    """Place ``n`` objects one on top of another by rejection sampling so that every object (the
    new one and all the ones it covers) keeps at least ``min_visible_fraction`` of its area and
    ``min_visible_pixels`` visible.  Objects that cannot be placed in 60 tries are dropped (the
    first one always fits).  (shape, colour) pairs are unique so "the red star" is unambiguous.
    Returns states plus parallel lists of colour names and size categories."""
    shapes = list(shapes) if shapes else list(SHAPE_CLASSES)
    textures = list(textures) if textures else list(TEXTURES)
    tex_p = np.array([0.4 if t == "solid" else 1.0 for t in textures]); tex_p /= tex_p.sum()
    states: list[_State] = []
    names: list[str] = []
    sizes: list[str] = []
    vis: list[np.ndarray] = []        # current visible masks (full image)
    vis_n: list[int] = []             # their pixel counts
    full_n: list[int] = []            # full-mask pixel counts
    for _ in range(n):
        for _try in range(60):
            shape = str(rng.choice(shapes))
            free = [c for c in colors if (shape, c) not in set(zip([s.shape for s in states], names))]
            if not free:
                continue
            cname = str(rng.choice(free))
            size_cat = str(rng.choice(SIZES))
            lo, hi = V.SIZE_RADIUS[size_cat]
            r = float(rng.uniform(lo, hi) * size)
            aspect = float(rng.uniform(0.45, 0.62)) if shape in ("rectangle", "ellipse") else 1.0
            angle, _ = _sample_orientation(shape, rng)
            ext = _extent(shape, aspect) * r
            if 2 * ext + 4 > size:
                continue
            cx = float(rng.uniform(ext + 2, size - ext - 2)); cy = float(rng.uniform(ext + 2, size - ext - 2))
            st = _State(shape, cx, cy, r, angle, aspect, np.array(PALETTE[cname], np.float64),
                        str(rng.choice(textures, p=tex_p)), float(rng.choice([0.0, 45.0, 90.0, 135.0])))
            L = _layer(st, size, colors=False)
            area = 0 if L is None else int(np.count_nonzero(L[4]))
            if area < min_visible_pixels:
                continue
            # Only pixels under the candidate's crop can be lost by the objects below it.
            y0, y1, x0, x1, mk = L[:5]
            lost = [int(np.count_nonzero(v[y0:y1, x0:x1] & mk)) for v in vis]
            if all(n - l >= max(min_visible_pixels, min_visible_fraction * f)
                   for n, l, f in zip(vis_n, lost, full_n)):
                for k, v in enumerate(vis):
                    v[y0:y1, x0:x1] &= ~mk
                    vis_n[k] -= lost[k]
                vis.append(_full_mask(L, size)); vis_n.append(area); full_n.append(area)
                states.append(st); names.append(cname); sizes.append(size_cat)
                break
    return states, names, sizes


def _grid_pos(cx: float, cy: float, size: int) -> tuple[int, int]:
    return min(2, max(0, int(3 * cy / size))), min(2, max(0, int(3 * cx / size)))


# =============================================================================================
# Still scenes
# =============================================================================================

@dataclass
class SceneObject:
    """One annotated region of a :class:`Scene` (index = z-order, 0 is the bottom-most)."""
    index: int
    shape: str
    color: str
    texture: str
    size: str
    center: tuple[float, float]
    radius: float
    angle: float
    orientation: str | None
    color_rgb: tuple[int, int, int]
    texture_angle: float
    mask: np.ndarray                      # visible part (after occlusion), H x W bool
    full_mask: np.ndarray                 # whole shape inside the image, ignoring occluders
    box: tuple[int, int, int, int]        # tight box of ``mask``, xyxy, exclusive max
    position: tuple[int, int]             # (row, col) of the visible centroid in a 3x3 grid
    relations: dict[str, Any]             # nearest / occluded_by / covers (object indices)
    label: dict[str, str]
    definition: dict[str, str]
    brief_caption: dict[str, str]
    detailed_caption: dict[str, str]

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def explanation(self, lang: str) -> str:
        """Target of the explain task (label + definition), see :func:`format_label_definition`."""
        return format_label_definition(self.label[lang], self.definition[lang], lang)


@dataclass
class Scene:
    image: np.ndarray                     # H x W x 3 uint8
    objects: list[SceneObject]
    seed: int
    size: int
    background: str


def _rngs(seed: int) -> tuple[np.random.Generator, random.Random]:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    geo, txt = np.random.SeedSequence(int(seed)).spawn(2)
    return np.random.default_rng(geo), random.Random(int(txt.generate_state(1)[0]))


def _layout(seed, size, num_objects, colors, shapes, textures, background, min_visible_fraction, min_visible_pixels):
    """Shared start of every generator: the two seeded RNGs, the background and the placed objects
    (in this order, so a seed keeps giving the same scene)."""
    grng, trng = _rngs(seed)
    if min_visible_pixels is None:
        min_visible_pixels = max(12, int(0.003 * size * size))
    bg, bg_kind, bg_cols = _background(grng, size, background)
    allowed = _allowed_colors(bg_cols, colors)
    states, names, sizes = _place_objects(grng, size, _range(num_objects, grng), allowed, shapes, textures,
                                          min_visible_fraction, min_visible_pixels)
    return grng, trng, bg, bg_kind, allowed, states, names, sizes


def generate_scene(seed: int, size: int = 256, num_objects: int | tuple[int, int] = (2, 6), *,
                   shapes: Sequence[str] | None = None, colors: Sequence[str] | None = None,
                   textures: Sequence[str] | None = None, background: str | None = None,
                   min_visible_fraction: float = 0.5, min_visible_pixels: int | None = None) -> Scene:
    """A still scene with ``num_objects`` (int or inclusive range) annotated shapes.

    ``shapes``/``colors``/``textures`` restrict the vocabularies (e.g. one class for tests);
    ``min_visible_pixels`` defaults to 0.3 % of the image (196 px at 256x256).
    """
    grng, trng, bg, bg_kind, allowed, states, names, sizes = _layout(
        seed, size, num_objects, colors, shapes, textures, background, min_visible_fraction, min_visible_pixels)
    img, layers = _render(bg, states, size)
    fulls = [_full_mask(L, size) for L in layers]
    vis = _visible(fulls)
    facts = _scene_facts(states, names, sizes, layers, vis, size)
    objects = []
    for i, st in enumerate(states):
        f = facts[i]
        texts = _object_texts(facts, i, trng)
        objects.append(SceneObject(
            index=i, shape=st.shape, color=names[i], texture=st.texture, size=sizes[i],
            center=(st.cx, st.cy), radius=st.r, angle=st.angle, orientation=f["orientation"],
            color_rgb=tuple(int(c) for c in st.rgb), texture_angle=st.tex_angle,  # type: ignore[arg-type]
            mask=vis[i], full_mask=fulls[i], box=mask_to_box(vis[i]),  # type: ignore[arg-type]
            position=f["position"], relations=f["relations"], **texts))
    return Scene(image=img, objects=objects, seed=int(seed), size=size, background=bg_kind)


def _orientation_key(st: _State) -> str | None:
    """Re-derive the nameable orientation from the angle (so video states can reuse it)."""
    a = st.angle % 360.0
    near = lambda t, w: min(abs(a - t), 360 - abs(a - t)) <= w  # noqa: E731
    if st.shape in ("rectangle", "ellipse"):
        return "horizontal" if near(0, 10) or near(180, 10) else ("vertical" if near(90, 10) or near(270, 10) else None)
    if st.shape in ("triangle",):
        return "up" if near(0, 10) else ("down" if near(180, 10) else None)
    if st.shape == "arrow":
        k = int(round(a / 45.0)) % 8
        return f"point{k}" if near(k * 45.0, 6) else None
    if st.shape == "crescent":
        return "open_right" if near(0, 12) else ("open_left" if near(180, 12) else None)
    if st.shape == "semicircle":
        return "flat_down" if near(0, 10) else ("flat_up" if near(180, 10) else None)
    return None


def _scene_facts(states, names, sizes, layers, vis, size) -> list[dict[str, Any]]:
    """Everything the captions may state, computed from the geometry (not from the wording RNG)."""
    cents = []
    for m, L in zip(vis, layers):
        y0, y1, x0, x1 = L[:4]   # the visible mask lies inside its layer's crop
        ys, xs = np.nonzero(m[y0:y1, x0:x1])
        cents.append((xs.mean() + x0 + 0.5, ys.mean() + y0 + 0.5))
    areas = [int(np.count_nonzero(L[4])) for L in layers]
    facts = []
    for i, st in enumerate(states):
        rel: dict[str, Any] = {"nearest": None, "relation": None, "occluded_by": None, "covers": None}
        if len(states) > 1:
            d = [math.hypot(cents[j][0] - cents[i][0], cents[j][1] - cents[i][1]) if j != i else math.inf
                 for j in range(len(states))]
            j = int(np.argmin(d))
            dx, dy = cents[i][0] - cents[j][0], cents[i][1] - cents[j][1]
            rel["nearest"] = j
            rel["relation"] = ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("below" if dy > 0 else "above")
            # Only clearly visible overlaps are mentioned (3 % of the covered shape).
            above = [(_overlap(layers[i], layers[k]), k) for k in range(i + 1, len(states))]
            above = [(o, k) for o, k in above if o > 0.03 * areas[i]]
            if above:
                rel["occluded_by"] = max(above)[1]
            below = [(_overlap(layers[i], layers[k]), k) for k in range(i)]
            below = [(o, k) for o, k in below if o > 0.03 * areas[k]]
            if below:
                rel["covers"] = max(below)[1]
        facts.append({"shape": st.shape, "color": names[i], "texture": st.texture, "size": sizes[i],
                      "orientation": _orientation_key(st), "position": _grid_pos(*cents[i], size),
                      "relations": rel})
    return facts


# =============================================================================================
# Wording (scenes)
# =============================================================================================

def _an(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeio" else "a ") + phrase


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _np_en(f: dict, r: random.Random) -> str:
    return f"{r.choice(V.COLOR_EN[f['color']])} {r.choice(V.SYNONYMS_EN[f['shape']])}"


def _np_zh(f: dict, r: random.Random) -> str:
    return f"{V.COLOR_ZH[f['color']]}{r.choice(V.SYNONYMS_ZH[f['shape']])}"


_TEX_PRED_EN = {"solid": "solid-coloured", "stripes": "striped", "dots": "dotted", "checker": "checkered",
                "gradient": "shaded with a gradient"}
_SIZE_NOUN_EN = {"small": "small", "medium": "medium", "large": "large"}
_SIZE_SHORT_ZH = {"small": "较小", "medium": "中等", "large": "较大"}


def _object_texts(facts: list[dict], i: int, r: random.Random) -> dict[str, dict[str, str]]:
    f = facts[i]
    rel = f["relations"]
    shape, tex, sz = f["shape"], f["texture"], f["size"]
    nb = facts[rel["nearest"]] if rel["nearest"] is not None else None
    occ = facts[rel["occluded_by"]] if rel["occluded_by"] is not None else None
    cov = facts[rel["covers"]] if rel["covers"] is not None else None
    ori = f["orientation"]

    c = lambda: r.choice(V.COLOR_EN[f["color"]])  # noqa: E731 - each call may pick a synonym
    s = lambda: r.choice(V.SYNONYMS_EN[shape])  # noqa: E731
    z = lambda: r.choice(V.SIZE_EN[sz])  # noqa: E731
    t = lambda: r.choice(V.TEXTURE_ADJ_EN[tex])  # noqa: E731
    p = lambda: r.choice(V.POSITION_EN[f["position"]])  # noqa: E731
    cz = V.COLOR_ZH[f["color"]]
    sz_ = lambda: r.choice(V.SYNONYMS_ZH[shape])  # noqa: E731
    zz = lambda: r.choice(V.SIZE_ZH[sz])  # noqa: E731
    tz = lambda: r.choice(V.TEXTURE_ADJ_ZH[tex])  # noqa: E731
    pz = lambda: r.choice(V.POSITION_ZH[f["position"]])  # noqa: E731

    # ---- brief (one short phrase; always names colour + shape) ----
    brief_en = [lambda: f"{_an(f'{z()} {c()} {s()}')}.",
                lambda: f"{_an(f'{c()} {s()}')} {p()}.",
                lambda: f"{_an(f'{t()} {c()} {s()}')}.",
                lambda: f"{_an(f'{z()} {s()}')} in {c()}.",
                lambda: f"{_an(f'{z()} {t()} {c()} {s()}')}."]
    brief_zh = [lambda: f"一个{zz()}{cz}{sz_()}。",
                lambda: f"位于{pz()}的{cz}{sz_()}。",
                lambda: f"一个{tz()}{cz}{sz_()}。",
                lambda: f"一个{cz}的{sz_()}，尺寸{_SIZE_SHORT_ZH[sz]}。",
                lambda: f"一个{zz()}{tz()}{cz}{sz_()}。"]
    if nb is not None:
        brief_en.append(lambda: f"{_an(f'{c()} {s()}')} {r.choice(V.RELATION_EN[rel['relation']])} the {_np_en(nb, r)}.")
        brief_zh.append(lambda: f"位于{_np_zh(nb, r)}{r.choice(V.RELATION_ZH[rel['relation']])}的{cz}{sz_()}。")
    if occ is not None:
        brief_en.append(lambda: f"{_an(f'{c()} {s()}')} partly hidden behind the {_np_en(occ, r)}.")
        brief_zh.append(lambda: f"被{_np_zh(occ, r)}部分遮挡的{cz}{sz_()}。")
    if ori is not None:
        brief_en.append(lambda: f"{_an(f'{c()} {s()}')} {r.choice(_ORIENT_EN[ori][0])}.")
        brief_zh.append(lambda: f"一个{r.choice(_ORIENT_ZH[ori])}的{cz}{sz_()}。")
    brief = {"en": _cap(r.choice(brief_en)()), "zh": r.choice(brief_zh)()}

    # ---- detailed (identity sentence first, then the other facts in a random order) ----
    first_en = r.choice([
        lambda: f"This is {_an(f'{z()} {c()} {s()}')} {r.choice(V.TEXTURE_WITH_EN[tex])}.",
        lambda: f"The region contains {_an(f'{c()} {s()}')}; it is {z()} and {_TEX_PRED_EN[tex]}.",
        lambda: f"{_cap(_an(f'{z()} {t()} {c()} {s()}'))} is shown here.",
        lambda: f"The subject is {_an(f'{c()} {s()}')} of {_SIZE_NOUN_EN[sz]} size, {r.choice(V.TEXTURE_WITH_EN[tex])}.",
    ])()
    first_zh = r.choice([
        lambda: f"这是一个{zz()}{cz}{sz_()}，{r.choice(V.TEXTURE_SENT_ZH[tex])}。",
        lambda: f"该区域是一个{tz()}{cz}{sz_()}，尺寸{_SIZE_SHORT_ZH[sz]}。",
        lambda: f"画面中的这个目标是一个{zz()}{tz()}{cz}{sz_()}。",
    ])()
    rest: list[tuple[str, str]] = [
        (r.choice(V.FACTS_EN[shape]), r.choice(V.FACTS_ZH[shape])),
        (r.choice([f"It is located {p()}.", f"It sits {p()}.", f"You can find it {p()}."]),
         r.choice([f"它位于{pz()}。", f"它处在{pz()}。"])),
    ]
    if ori is not None:
        rest.append((r.choice(_ORIENT_EN[ori][1]), f"它{r.choice(_ORIENT_ZH[ori])}。"))
    if nb is not None:
        re_, rz = r.choice(V.RELATION_EN[rel["relation"]]), r.choice(V.RELATION_ZH[rel["relation"]])
        rest.append((r.choice([f"It is {re_} the {_np_en(nb, r)}.", f"It appears {re_} the {_np_en(nb, r)}."]),
                     r.choice([f"它在{_np_zh(nb, r)}{rz}。", f"它位于{_np_zh(nb, r)}{rz}。"])))
    if occ is not None:
        o_en, o_zh = _np_en(occ, r), _np_zh(occ, r)
        rest.append((r.choice([f"Part of it is hidden behind the {o_en}.", f"The {o_en} overlaps it and covers part of it."]),
                     r.choice([f"它的一部分被{o_zh}挡住了。", f"{o_zh}压在它上面，遮住了它的一部分。"])))
    if cov is not None:
        c_en, c_zh = _np_en(cov, r), _np_zh(cov, r)
        rest.append((r.choice([f"It partly covers the {c_en}.", f"It lies in front of the {c_en}, hiding part of it."]),
                     r.choice([f"它遮住了{c_zh}的一部分。", f"它位于{c_zh}前面，挡住了后者的一部分。"])))
    r.shuffle(rest)
    detailed = {"en": " ".join([first_en] + [e for e, _ in rest]), "zh": "".join([first_zh] + [zh for _, zh in rest])}
    return {
        "label": {"en": shape, "zh": V.LABEL_ZH[shape]},
        "definition": {"en": V.DEFINITION_EN[shape], "zh": V.DEFINITION_ZH[shape]},
        "brief_caption": brief,
        "detailed_caption": detailed,
    }


# =============================================================================================
# Videos and streams
# =============================================================================================

@dataclass
class Event:
    """What one object does during one clip ``[start, end)`` (frame indices of the whole video)."""
    kind: str                              # one of MOTION_KINDS
    start: int
    end: int
    params: dict[str, Any]                 # direction index, speed, stop frame, colours, edge, ...
    interaction: dict[str, Any] | None     # occlusion change with another object, if any
    caption: dict[str, str]                # {"en": ..., "zh": ...}


@dataclass
class VideoObject:
    index: int                             # z-order (fixed for the whole video)
    shape: str
    color: str                             # colour name at frame 0 (may change, see events)
    texture: str
    size: str                              # size category at frame 0
    color_rgb: tuple[int, int, int]
    masks: np.ndarray                      # T x H x W bool, visible part per frame
    boxes: list[tuple[int, int, int, int] | None]   # per frame, None when not visible
    label: dict[str, str]
    definition: dict[str, str]
    events: list[Event]                    # one per clip

    def caption(self, clip: int = 0) -> dict[str, str]:
        return self.events[clip].caption

    def explanation(self, lang: str) -> str:
        return format_label_definition(self.label[lang], self.definition[lang], lang)

    def first_frame_gone(self) -> int | None:
        """The first frame on which no part of the object is visible (left the view, or hidden
        behind other objects), or None if it is visible on every frame."""
        return next((t for t, box in enumerate(self.boxes) if box is None), None)


@dataclass
class VideoSample:
    """A video (``len(clips) == 1``) or a long stream made of consecutive clips."""
    frames: np.ndarray                     # T x H x W x 3 uint8
    objects: list[VideoObject]
    clips: list[tuple[int, int]]           # [start, end) frame range of each clip
    seed: int
    size: int
    background: str

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_clips(self) -> int:
        return len(self.clips)


_ACTION_WEIGHTS: dict[str, float] = {"static": 0.16, "slide": 0.30, "bounce": 0.12, "rotate": 0.12,
                                     "grow": 0.06, "shrink": 0.06, "color": 0.11, "exit": 0.07}
# Kinds whose own motion can be said to "pass behind / in front of" something.  Growth can change an
# overlap too, but "grows and passes behind X" misdescribes it, so it is left out (an overlap caused
# only by growth is not mentioned).
_MOVING = frozenset({"slide", "bounce", "exit"})
_EDGE_OF_DIR = {0: "right", 2: "bottom", 4: "left", 6: "top"}


def _lerp_states(st: _State, n: int, *, cx=None, cy=None, r=None, angle=None, rgb=None) -> list[_State]:
    out = []
    for s in range(n + 1):
        q = st.copy()
        if cx is not None:
            q.cx, q.cy = float(cx[s]), float(cy[s])
        if r is not None:
            q.r = float(r[s])
        if angle is not None:
            q.angle = float(angle[s])
        if rgb is not None:
            q.rgb = rgb[s].copy()
        out.append(q)
    return out


def _try_action(kind: str, st: _State, n: int, size: int, rng: np.random.Generator,
                free_colors: list[str]) -> tuple[dict[str, Any], list[_State]] | None:
    """Plan ``kind`` from state ``st`` over ``n`` steps: (params, n+1 states) or None if it cannot
    happen here (e.g. it would leave the frame).  Feasibility is checked so that the caption
    ("slides to the right", "bounces off the left edge") is always true of the rendered frames."""
    ext = st.ext
    lo, hi = ext + 1.0, size - ext - 1.0
    steps = np.arange(n + 1, dtype=np.float64)
    if kind == "static":
        return {}, _lerp_states(st, n)
    if kind == "slide":
        fast = rng.random() < 0.4
        v = float(rng.uniform(*((0.011, 0.016) if fast else (0.004, 0.007)))) * size
        stop = int(round(n * rng.uniform(0.45, 0.65))) if (n >= 6 and rng.random() < 0.35) else None
        m = stop if stop is not None else n
        for k in rng.permutation(8):
            dx, dy = V.DIR_VECTORS[int(k)]
            ex, ey = st.cx + dx * v * m, st.cy + dy * v * m
            if lo <= ex <= hi and lo <= ey <= hi and v * m >= 2.0:
                d = np.minimum(steps, m) * v
                return ({"direction": int(k), "speed": "fast" if fast else "slow", "stop": stop},
                        _lerp_states(st, n, cx=st.cx + dx * d, cy=st.cy + dy * d))
        return None
    if kind == "bounce":
        v = float(rng.uniform(0.012, 0.02)) * size
        total = v * n
        for k in rng.permutation([0, 2, 4, 6]):
            k = int(k)
            dx, dy = V.DIR_VECTORS[k]
            axis_x = abs(dx) > 0.5
            sign = 1.0 if (dx if axis_x else dy) > 0 else -1.0
            pos = st.cx if axis_x else st.cy
            dist = (hi - pos) if sign > 0 else (pos - lo)
            if not (2 * v < dist < 0.7 * total and total - dist < hi - lo):
                continue
            p, sg, bounce_step = pos, sign, None
            track = [p]
            for s in range(1, n + 1):
                p += sg * v
                if p > hi or p < lo:
                    edge_v = hi if p > hi else lo
                    p = 2 * edge_v - p
                    sg = -sg
                    bounce_step = bounce_step or s
                track.append(p)
            tr = np.array(track)
            other = np.full(n + 1, st.cy if axis_x else st.cx)
            cx, cy = (tr, other) if axis_x else (other, tr)
            return ({"direction": k, "edge": _EDGE_OF_DIR[k], "bounce_step": bounce_step,
                     "final_direction": (k + 4) % 8}, _lerp_states(st, n, cx=cx, cy=cy))
        return None
    if kind == "rotate":
        if st.shape in ("circle", "ring"):   # rotation of a round outline is invisible
            return None
        w = float(rng.uniform(3.0, 6.0)) * (1 if rng.random() < 0.5 else -1)
        return {"clockwise": w > 0}, _lerp_states(st, n, angle=st.angle + w * steps)
    if kind in ("grow", "shrink"):
        room = min(st.cx, size - st.cx, st.cy, size - st.cy) - 1.0
        unit = _extent(st.shape, st.aspect)
        g = float(rng.uniform(1.35, 1.7)) if kind == "grow" else float(rng.uniform(0.5, 0.7))
        r_end = st.r * g
        if kind == "grow" and (r_end * unit > room or r_end > 0.25 * size):
            g = min(room / unit, 0.25 * size) / st.r
            if g < 1.25:
                return None
        if kind == "shrink" and r_end < max(3.0, 0.045 * size):
            return None
        return {"factor": g}, _lerp_states(st, n, r=st.r * (1 + (g - 1) * steps / n))
    if kind == "color":
        if not free_colors:
            return None
        to = str(rng.choice(free_colors))
        c1 = np.array(PALETTE[to], np.float64)
        t = (steps / n)[:, None]
        return {"to": to}, _lerp_states(st, n, rgb=st.rgb * (1 - t) + c1 * t)
    if kind == "exit":
        need = {0: size + ext - st.cx + 1, 4: st.cx + ext + 1, 2: size + ext - st.cy + 1, 6: st.cy + ext + 1}
        for k in sorted(need, key=lambda q: (need[q], q)):
            v = need[k] / (0.75 * n)
            if v <= 0.06 * size:
                dx, dy = V.DIR_VECTORS[k]
                return ({"direction": k, "edge": _EDGE_OF_DIR[k]},
                        _lerp_states(st, n, cx=st.cx + dx * v * steps, cy=st.cy + dy * v * steps))
        return None
    raise ValueError(f"unknown motion kind {kind!r}")


def _choose_action(st: _State, n: int, size: int, rng: np.random.Generator, free_colors: list[str],
                   allow_exit: bool, kinds: Sequence[str] | None, exclude_static: bool = False):
    weights = {k: w for k, w in _ACTION_WEIGHTS.items()
               if (kinds is None or k in kinds or k == "static") and (allow_exit or k != "exit")}
    if exclude_static:
        weights.pop("static", None)
    while weights:
        names = sorted(weights)
        p = np.array([weights[k] for k in names]); p /= p.sum()
        kind = str(rng.choice(names, p=p))
        res = _try_action(kind, st, n, size, rng, free_colors)
        if res is not None:
            return kind, res[0], res[1]
        weights.pop(kind)
    return None


def _generate_clips(seed: int, num_clips: int, frames_per_clip: int, size: int,
                    num_objects: int | tuple[int, int], *, allow_exit: bool, shapes, colors, textures,
                    motions: Sequence[str] | None, background: str | None,
                    min_visible_fraction: float, min_visible_pixels: int | None) -> VideoSample:
    if frames_per_clip < 2 or num_clips < 1:
        raise ValueError("need at least one clip of at least 2 frames")
    grng, trng, bg, bg_kind, allowed, states, names, sizes = _layout(
        seed, size, num_objects, colors, shapes, textures, background, min_visible_fraction, min_visible_pixels)
    n_obj, F = len(states), frames_per_clip
    T = num_clips * F
    frame_states: list[list[_State]] = [[None] * n_obj for _ in range(T)]  # type: ignore[list-item]
    plans: list[list[dict[str, Any]]] = [[] for _ in range(n_obj)]
    cur = [s.copy() for s in states]
    cur_names = list(names)
    for k in range(num_clips):
        a = k * F
        # Clip 0 starts exactly at the placed state (the prompt frame); later clips start one
        # step after the previous clip's last frame so motion stays continuous.
        off = 0 if k == 0 else 1
        n = F - 1 + off
        last = k == num_clips - 1
        chosen = []
        for i, st in enumerate(cur):
            free = [c for c in allowed if c != cur_names[i]
                    and all(not (cur[j].shape == st.shape and cur_names[j] == c) for j in range(n_obj) if j != i)]
            res = _choose_action(st, n, size, grng, free, allow_exit and last, motions)
            chosen.append(res)
            if res[0] == "color":
                cur_names[i] = res[1]["to"]   # reserve, so two objects of one shape never get one colour
        if n_obj and all(c[0] == "static" for c in chosen):
            # Every clip shows some motion, otherwise its captions would carry no event.
            for i in grng.permutation(n_obj):
                res = _choose_action(cur[int(i)], n, size, grng, [], allow_exit and last, motions, exclude_static=True)
                if res is not None:
                    chosen[int(i)] = res
                    break
        for i, (kind, params, traj) in enumerate(chosen):
            start_name = names[i] if k == 0 else plans[i][-1]["end_color"]
            plans[i].append({"kind": kind, "params": params, "start": a, "end": a + F, "color": start_name,
                             "end_color": params.get("to", start_name),
                             "pos": _grid_pos(traj[off].cx, traj[off].cy, size)})
            for f in range(F):
                frame_states[a + f][i] = traj[f + off]
            cur[i] = traj[n]

    frames = np.empty((T, size, size, 3), np.uint8)
    masks = np.zeros((n_obj, T, size, size), bool)
    areas = np.zeros((T, n_obj), np.int64)
    ov = np.zeros((T, n_obj, n_obj), np.int64)   # ov[t, i, j] = overlap of the full masks of i and j
    for t in range(T):
        img, layers = _render(bg, frame_states[t], size)
        frames[t] = img
        fulls = [_full_mask(L, size) for L in layers]
        for i, v in enumerate(_visible(fulls) if fulls else []):
            masks[i, t] = v
            areas[t, i] = 0 if layers[i] is None else int(np.count_nonzero(layers[i][4]))
        for i in range(n_obj):
            for j in range(i + 1, n_obj):
                ov[t, i, j] = ov[t, j, i] = _overlap(layers[i], layers[j])

    objects = []
    for i, st in enumerate(states):
        events = []
        for k, plan in enumerate(plans[i]):
            inter = _interaction(i, plan, plans, areas, ov)
            prev = plans[i][k - 1] if k > 0 else None
            cap = _event_texts(st.shape, plan, prev, inter, [(states[j].shape, plans[j][k]["color"]) for j in range(n_obj)], trng)
            events.append(Event(kind=plan["kind"], start=plan["start"], end=plan["end"],
                                params=dict(plan["params"], from_color=plan["color"]) if plan["kind"] == "color" else dict(plan["params"]),
                                interaction=inter, caption=cap))
        objects.append(VideoObject(
            index=i, shape=st.shape, color=names[i], texture=st.texture, size=sizes[i],
            color_rgb=tuple(int(c) for c in PALETTE[names[i]]),  # type: ignore[arg-type]
            masks=masks[i], boxes=[mask_to_box(m) for m in masks[i]],
            label={"en": st.shape, "zh": V.LABEL_ZH[st.shape]},
            definition={"en": V.DEFINITION_EN[st.shape], "zh": V.DEFINITION_ZH[st.shape]}, events=events))
    return VideoSample(frames=frames, objects=objects, clips=[(k * F, (k + 1) * F) for k in range(num_clips)],
                       seed=int(seed), size=size, background=bg_kind)


def _interaction(i: int, plan: dict, plans: list[list[dict]], areas: np.ndarray, ov: np.ndarray) -> dict[str, Any] | None:
    """The strongest occlusion change of object ``i`` in a clip, from the rendered masks.

    "behind j": a higher object j comes to hide >= 20 % of i (it hid < 5 % at the clip start);
    "front j": i comes to cover >= 20 % of a lower object j.  ``ends`` says whether the overlap is
    still there on the clip's last frame; ``self_moved`` whether i's own motion caused it (else the
    other object moved), which decides the wording ("passes behind" vs "gets covered by").
    """
    a, b = plan["start"], plan["end"]
    k = [p["start"] for p in plans[i]].index(a)
    best = None
    for j in range(areas.shape[1]):
        if j == i:
            continue
        denom = areas[a:b, i] if j > i else areas[a:b, j]
        frac = np.where(denom > 0, ov[a:b, i, j] / np.maximum(denom, 1), 0.0)
        if frac.max() < 0.2 or frac[0] >= 0.05:
            continue
        self_moved = plan["kind"] in _MOVING
        if not self_moved and plans[j][k]["kind"] not in _MOVING:
            continue
        cand = {"kind": "behind" if j > i else "front", "other": j, "ends": bool(frac[-1] >= 0.2),
                "self_moved": self_moved, "score": float(frac.max())}
        if best is None or cand["score"] > best["score"]:
            best = cand
    return best


# =============================================================================================
# Wording (events)
# =============================================================================================

def _event_texts(shape: str, plan: dict, prev: dict | None, inter: dict | None,
                 others: list[tuple[str, str]], r: random.Random) -> dict[str, str]:
    kind, prm = plan["kind"], plan["params"]
    cname = plan["color"]
    same_as_prev = prev is not None and prev["kind"] == kind and (
        (kind == "slide" and prev["params"]["direction"] == prm["direction"] and prev["params"]["stop"] is None)
        or (kind == "rotate" and prev["params"]["clockwise"] == prm["clockwise"])
        or kind in ("static", "grow", "shrink"))
    after_static = prev is not None and prev["kind"] == "static" and kind == "slide"

    other_en = other_zh = ""
    if inter is not None:
        osh, ocol = others[inter["other"]]
        other_en = f"{r.choice(V.COLOR_EN[ocol])} {r.choice(V.SYNONYMS_EN[osh])}"
        other_zh = f"{V.COLOR_ZH[ocol]}{r.choice(V.SYNONYMS_ZH[osh])}"

    en, zh = "", ""
    used_inter = False
    if kind == "static":
        if same_as_prev:
            en = r.choice(["still stays in place", "remains motionless", "continues to stay still"])
            zh = r.choice(["仍然保持静止", "依旧一动不动"])
        else:
            if r.random() < 0.5:
                en = r.choice(["stays still", "remains motionless", "does not move", "stays in place"])
                zh = r.choice(["保持静止", "一动不动", "停在原地没有移动"])
            else:  # with the (unchanging) position
                en = f"{r.choice(['stays still', 'remains motionless', 'rests'])} {r.choice(V.POSITION_EN[plan['pos']])}"
                zh = f"{r.choice(['保持静止', '一动不动'])}，位于{r.choice(V.POSITION_ZH[plan['pos']])}"
    elif kind in ("slide", "exit", "bounce"):
        d = prm["direction"]
        de, dz = V.MOVE_DIR_EN[d], V.MOVE_DIR_ZH[d]
        if kind == "slide":
            adv_en = {"slow": ["slowly"], "fast": ["quickly", "rapidly"]}[prm["speed"]]
            adv_zh = {"slow": ["缓慢地", "慢慢地"], "fast": ["快速地", "迅速地"]}[prm["speed"]]
            base = r.choice(["slide", "move", "glide"])
            zv = r.choice(["滑动", "移动"])
            if same_as_prev:
                en = r.choice([f"continues to {base} {de}", f"keeps moving {de}"])
                zh = f"继续{dz}{zv}"
            elif after_static:
                en = r.choice([f"starts to {base} {r.choice(adv_en)} {de}", f"begins moving {de}"])
                zh = f"开始{r.choice(adv_zh)}{dz}{zv}"
            else:
                verb = {"slide": "slides", "move": "moves", "glide": "glides"}[base]
                en = f"{verb} {r.choice(adv_en)} {de}" if r.random() < 0.7 else f"{verb} {de}"
                zh = f"{r.choice(adv_zh)}{dz}{zv}" if r.random() < 0.7 else f"{dz}{zv}"
            if prm["stop"] is not None:
                if inter is not None and inter["kind"] == "behind" and inter["self_moved"] and inter["ends"]:
                    en += f" and stops behind the {other_en}"
                    zh += f"，然后停在{other_zh}后面"
                    used_inter = True
                else:
                    en += r.choice([" and then stops", " before coming to a stop"])
                    zh += r.choice(["，然后停了下来", "，随后停住"])
        elif kind == "bounce":
            edge = prm["edge"]
            en = r.choice([f"moves {de}, bounces off the {edge} edge and comes back",
                           f"moves {de} until it hits the {edge} edge, then bounces back"])
            zh = r.choice([f"{dz}移动，碰到{V.EDGE_ZH[edge]}边缘后弹了回来", f"{dz}滑动，撞上{V.EDGE_ZH[edge]}边后反弹"])
        else:  # exit
            edge = prm["edge"]
            en = r.choice([f"moves {de} and leaves the frame", f"moves out of view on the {edge}",
                           f"slides {de} and exits the frame"])
            zh = r.choice([f"{dz}移动并离开了画面", f"从画面{V.EDGE_ZH[edge]}侧移出"])
    elif kind == "rotate":
        cw = prm["clockwise"]
        word_en, word_zh = ("clockwise", "顺时针") if cw else ("counter-clockwise", "逆时针")
        if same_as_prev:
            en, zh = f"keeps spinning {word_en}", f"继续{word_zh}旋转"
        else:
            en = r.choice([f"spins {word_en}", f"rotates {word_en} in place", f"turns {word_en} without moving"])
            zh = r.choice([f"{word_zh}旋转", f"在原地{word_zh}转动"])
    elif kind == "grow":
        en, zh = (("keeps growing", "继续变大") if same_as_prev else
                  (r.choice(["grows larger", "expands", "gets bigger"]), r.choice(["逐渐变大", "慢慢放大", "不断变大"])))
    elif kind == "shrink":
        en, zh = (("keeps shrinking", "继续缩小") if same_as_prev else
                  (r.choice(["shrinks", "gets smaller", "contracts"]), r.choice(["逐渐变小", "慢慢缩小"])))
    elif kind == "color":
        c0e, c1e = r.choice(V.COLOR_EN[cname]), r.choice(V.COLOR_EN[prm["to"]])
        c0z, c1z = V.COLOR_ZH[cname], V.COLOR_ZH[prm["to"]]
        en = r.choice([f"gradually changes colour from {c0e} to {c1e}", f"turns from {c0e} to {c1e}",
                       f"slowly fades from {c0e} into {c1e}"])
        zh = r.choice([f"颜色从{c0z}逐渐变为{c1z}", f"由{c0z}慢慢变成了{c1z}"])

    if inter is not None and not used_inter:
        o_en, o_zh = other_en, other_zh
        # "X moves left, bounces ... and comes back and passes behind Y" stacks "and"s: after a
        # phrase that already has one, only the participial form is used.
        pick = (lambda forms: forms[0]) if " and " in en else r.choice
        if inter["self_moved"]:
            if inter["kind"] == "behind":
                en += (pick([f", ending up partly behind the {o_en}", f" and ends up behind the {o_en}"]) if inter["ends"]
                       else pick([f", passing behind the {o_en}", f" and passes behind the {o_en}"]))
                zh += f"，最后移到了{o_zh}后面" if inter["ends"] else f"，从{o_zh}后面经过"
            else:
                en += (pick([f", ending up in front of the {o_en}", f" and ends up in front of the {o_en}"]) if inter["ends"]
                       else pick([f", passing in front of the {o_en}", f" and crosses in front of the {o_en}"]))
                zh += f"，最后挡在了{o_zh}前面" if inter["ends"] else f"，从{o_zh}前面经过"
        else:
            if inter["kind"] == "behind":
                en += (f", and the {o_en} moves over it and partly covers it" if inter["ends"]
                       else f" while the {o_en} passes in front of it")
                zh += f"，{o_zh}移过来挡住了它的一部分" if inter["ends"] else f"，{o_zh}从它前面经过"
            else:
                en += f" while the {o_en} moves behind it"
                zh += f"，{o_zh}从它后面经过"

    s_en = f"{r.choice(V.COLOR_EN[cname])} {r.choice(V.SYNONYMS_EN[shape])}"
    s_zh = f"{V.COLOR_ZH[cname]}{r.choice(V.SYNONYMS_ZH[shape])}"
    cap_en = r.choice([f"The {s_en} {en}.", f"This {s_en} {en}.", f"In this clip, the {s_en} {en}.",
                       f"Here the {s_en} {en}."])
    cap_zh = r.choice([f"{s_zh}{zh}。", f"这个{s_zh}{zh}。", f"在这段视频中，{s_zh}{zh}。", f"这段画面里，{s_zh}{zh}。"])
    return {"en": cap_en, "zh": cap_zh}


def generate_video(seed: int, num_frames: int = 32, size: int = 256, num_objects: int | tuple[int, int] = (2, 4), *,
                   allow_exit: bool = True, shapes: Sequence[str] | None = None, colors: Sequence[str] | None = None,
                   textures: Sequence[str] | None = None, motions: Sequence[str] | None = None,
                   background: str | None = None, min_visible_fraction: float = 0.5,
                   min_visible_pixels: int | None = None) -> VideoSample:
    """A single-clip video: every object does one thing (see :data:`MOTION_KINDS`), described by
    one event caption per object (``obj.events[0].caption``).  All objects are visible on frame 0
    (the prompt frame).  ``motions`` restricts the motion kinds ("static" is always allowed).
    The official PAM video encoder needs >= 16 frames; 32 matches PAM-data's "32f" files."""
    return _generate_clips(seed, 1, num_frames, size, num_objects, allow_exit=allow_exit, shapes=shapes,
                           colors=colors, textures=textures, motions=motions, background=background,
                           min_visible_fraction=min_visible_fraction, min_visible_pixels=min_visible_pixels)


def generate_stream(seed: int, num_clips: int = 3, frames_per_clip: int = 32, size: int = 256,
                    num_objects: int | tuple[int, int] = (2, 4), *, allow_exit: bool = False,
                    shapes: Sequence[str] | None = None, colors: Sequence[str] | None = None,
                    textures: Sequence[str] | None = None, motions: Sequence[str] | None = None,
                    background: str | None = None, min_visible_fraction: float = 0.5,
                    min_visible_pixels: int | None = None) -> VideoSample:
    """A long video made of ``num_clips`` consecutive events per object, continuous across clip
    boundaries, each clip with its own caption.  Captions of clip k may refer to clip k-1
    ("continues to slide to the right", "keeps spinning", "starts to move"), which is what makes
    the previous caption useful context for streaming captioning.  Leaving the frame is only
    possible in the last clip (and only with ``allow_exit``) so every clip has an object to prompt."""
    return _generate_clips(seed, num_clips, frames_per_clip, size, num_objects, allow_exit=allow_exit,
                           shapes=shapes, colors=colors, textures=textures, motions=motions,
                           background=background, min_visible_fraction=min_visible_fraction,
                           min_visible_pixels=min_visible_pixels)


# =============================================================================================
# Command line: export a synthetic data set in the PAM-data training format
# =============================================================================================

def main(argv: Sequence[str] | None = None) -> int:
    # Local imports: data.py imports this module.  Under ``python -m`` this file runs as
    # ``__main__``, so generate through the package's copy of the module, whose classes are the ones
    # ``write_pam_records`` dispatches on.
    from . import synthetic as S
    from .data import write_pam_records

    ap = argparse.ArgumentParser(prog="python -m perceive_anything.training.synthetic",
                                 description="Write a synthetic shapes-world data set in the PAM-data JSONL format.")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--images", type=int, default=100, help="number of still scenes")
    ap.add_argument("--videos", type=int, default=0, help="number of single-clip videos")
    ap.add_argument("--streams", type=int, default=0, help="number of multi-clip streams")
    ap.add_argument("--seed", type=int, default=0, help="base seed; sample i uses a seed derived from it")
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    ap.add_argument("--frames", type=int, default=32, help="frames per video / per stream clip")
    ap.add_argument("--clips", type=int, default=3, help="clips per stream")
    ap.add_argument("--prompt", choices=("box", "point", "boxNpoint"), default="boxNpoint",
                    help="which visual prompts the records carry")
    ap.add_argument("--image-format", choices=("png", "jpg"), default="png")
    args = ap.parse_args(argv)

    # Derive per-sample seeds so that scene i is the same whatever --videos/--streams are.
    def seeds(kind: int, n: int) -> list[int]:
        ss = np.random.SeedSequence([args.seed, kind])
        return [int(s.generate_state(1)[0]) for s in ss.spawn(n)]

    samples: list[Any] = [S.generate_scene(s, args.size) for s in seeds(0, args.images)]
    samples += [S.generate_video(s, args.frames, args.size) for s in seeds(1, args.videos)]
    samples += [S.generate_stream(s, args.clips, args.frames, args.size) for s in seeds(2, args.streams)]
    files = write_pam_records(samples, args.out, seed=args.seed, prompt_mode=args.prompt,
                              image_format=args.image_format)
    for name, path in sorted(files.items()):
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
