"""Synthetic shapes world: determinism, exact masks, occlusion, bilingual texts, video motion."""

from __future__ import annotations

import re

import numpy as np
import pytest

from perceive_anything.training import _vocab as V
from perceive_anything.training import synthetic as S

CJK = re.compile(r"[\u4e00-\u9fff]")


def _scene_bytes(sc: S.Scene) -> bytes:
    parts = [sc.image.tobytes()]
    for o in sc.objects:
        parts += [o.mask.tobytes(), o.full_mask.tobytes(), repr(o.box).encode()]
        for f in ("label", "definition", "brief_caption", "detailed_caption"):
            parts += [getattr(o, f)[lang].encode() for lang in S.LANGS]
    return b"".join(parts)


def _video_bytes(v: S.VideoSample) -> bytes:
    parts = [v.frames.tobytes()]
    for o in v.objects:
        parts += [o.masks.tobytes(), repr(o.boxes).encode()]
        parts += [e.caption[lang].encode() for e in o.events for lang in S.LANGS]
    return b"".join(parts)


# ----------------------------------------------------------------------------------- scenes

def test_scene_is_deterministic_by_seed():
    a, b = S.generate_scene(123, size=128), S.generate_scene(123, size=128)
    assert _scene_bytes(a) == _scene_bytes(b)
    c = S.generate_scene(124, size=128)
    assert _scene_bytes(a) != _scene_bytes(c)


def test_scene_basic_structure():
    sc = S.generate_scene(5, size=128, num_objects=4)
    assert sc.image.shape == (128, 128, 3) and sc.image.dtype == np.uint8
    assert 1 <= len(sc.objects) <= 4
    for i, o in enumerate(sc.objects):
        assert o.index == i
        assert o.mask.shape == (128, 128) and o.mask.dtype == bool
        assert o.shape in S.SHAPE_CLASSES and o.color in S.PALETTE and o.texture in S.TEXTURES
        assert o.box == S.mask_to_box(o.mask)
    pairs = [(o.shape, o.color) for o in sc.objects]
    assert len(set(pairs)) == len(pairs), "(shape, colour) must be unique so references are unambiguous"


def _check_pixels(img: np.ndarray, o) -> None:
    px = img[o.mask].astype(int)
    base = np.array(o.color_rgb)
    if o.texture == "solid":
        assert (px == base).all()
    elif o.texture == "gradient":
        light, dark = (np.array(c) for c in S.gradient_endpoints(o.color_rgb))
        lo, hi = np.minimum(light, dark), np.maximum(light, dark)
        assert ((px >= lo) & (px <= hi)).all()
    else:  # two-tone patterns
        sec = np.array(S.secondary_color(o.color_rgb))
        assert ((px == base).all(1) | (px == sec).all(1)).all()


def test_masks_are_exact_and_occlusion_consistent():
    """Every visible-mask pixel shows its object's texture colours; visible = full minus the union
    of the full masks above; visible masks are disjoint; boxes are tight."""
    seen_textures = set()
    for seed in range(25):
        sc = S.generate_scene(seed, size=128)
        covered = np.zeros((128, 128), bool)
        for o in reversed(sc.objects):
            assert np.array_equal(o.mask, o.full_mask & ~covered)
            covered |= o.full_mask
            _check_pixels(sc.image, o)
            seen_textures.add(o.texture)
        union = np.zeros((128, 128), int)
        for o in sc.objects:
            union += o.mask
        assert union.max() <= 1
    assert seen_textures == set(S.TEXTURES)


def test_occlusion_keeps_minimum_visible_area():
    occluded = 0
    for seed in range(30):
        sc = S.generate_scene(seed, size=128, num_objects=6, min_visible_fraction=0.5, min_visible_pixels=40)
        for o in sc.objects:
            full = int(o.full_mask.sum())
            assert o.area >= 40 and o.area >= 0.5 * full
            occluded += o.area < full
    assert occluded > 5, "the generator should actually produce occlusions"


def test_every_class_texture_and_background_renders():
    for i, cls in enumerate(S.SHAPE_CLASSES):
        sc = S.generate_scene(1000 + i, size=96, num_objects=1, shapes=[cls])
        assert len(sc.objects) == 1 and sc.objects[0].shape == cls and sc.objects[0].area > 50
        assert sc.objects[0].label == {"en": cls, "zh": V.LABEL_ZH[cls]}
    for tex in S.TEXTURES:
        o = S.generate_scene(7, size=96, num_objects=1, textures=[tex]).objects[0]
        assert o.texture == tex
    for bg in S.BACKGROUND_KINDS:
        assert S.generate_scene(7, size=96, background=bg).background == bg
    # ring / crescent really have holes: the full mask is not the filled outline
    ring = S.generate_scene(3, size=128, num_objects=1, shapes=["ring"]).objects[0]
    cy, cx = (int(round(v)) for v in ring.center[::-1])
    assert not ring.full_mask[cy, cx]


def test_texts_bilingual_and_consistent_with_scene():
    for seed in range(20):
        for o in S.generate_scene(seed, size=128).objects:
            for field in ("label", "definition", "brief_caption", "detailed_caption"):
                en, zh = getattr(o, field)["en"], getattr(o, field)["zh"]
                assert en.strip() and zh.strip()
                assert CJK.search(zh) and not CJK.search(en)
            assert o.label["en"] == o.shape
            assert o.explanation("en") == f"{o.shape}: {V.DEFINITION_EN[o.shape]}"
            assert o.explanation("zh").startswith(V.LABEL_ZH[o.shape] + "：")
            # captions always name the object's own colour and (a synonym of) its class
            for cap in (o.brief_caption["en"], o.detailed_caption["en"]):
                low = cap.lower()
                assert any(c in low for c in V.COLOR_EN[o.color]), cap
                assert any(s in low for s in V.SYNONYMS_EN[o.shape]), cap
            for cap in (o.brief_caption["zh"], o.detailed_caption["zh"]):
                assert V.COLOR_ZH[o.color] in cap and any(s in cap for s in V.SYNONYMS_ZH[o.shape]), cap


def test_template_variety():
    """Same class, same colour, same texture: captions still vary (template/synonym/attribute order)."""
    briefs = {"en": set(), "zh": set()}
    details = set()
    for seed in range(50):
        o = S.generate_scene(seed, size=128, num_objects=1, shapes=["star"], colors=["red"], textures=["solid"]).objects[0]
        for lang in S.LANGS:
            briefs[lang].add(o.brief_caption[lang])
        details.add(o.detailed_caption["en"])
    assert len(briefs["en"]) >= 5 and len(briefs["zh"]) >= 5
    assert len(details) >= 10


def test_sample_points_inside_and_outside():
    o = S.generate_scene(2, size=128, num_objects=1).objects[0]
    pts, labs = S.sample_points(o.mask, np.random.default_rng(0), 4, 2)
    assert labs.count(1) == 4 and labs.count(0) == 2
    for (x, y), lab in zip(pts, labs):
        assert o.mask[y, x] == bool(lab)


# ----------------------------------------------------------------------------------- videos

def test_video_is_deterministic_by_seed():
    a, b = S.generate_video(9, num_frames=8, size=96), S.generate_video(9, num_frames=8, size=96)
    assert _video_bytes(a) == _video_bytes(b)
    assert _video_bytes(a) != _video_bytes(S.generate_video(10, num_frames=8, size=96))
    s1, s2 = (S.generate_stream(4, num_clips=2, frames_per_clip=6, size=96) for _ in range(2))
    assert _video_bytes(s1) == _video_bytes(s2)


def test_video_structure_and_captions():
    v = S.generate_video(3, num_frames=10, size=96)
    assert v.frames.shape == (10, 96, 96, 3) and v.clips == [(0, 10)]
    assert any(o.events[0].kind != "static" for o in v.objects), "every clip shows some motion"
    for o in v.objects:
        assert o.masks.shape == (10, 96, 96) and len(o.boxes) == 10 and len(o.events) == 1
        assert o.masks[0].any(), "all objects are visible on the prompt frame"
        for t in range(10):
            assert o.boxes[t] == S.mask_to_box(o.masks[t])
        cap = o.caption()
        assert cap["en"].strip() and CJK.search(cap["zh"])
        assert any(c in cap["en"].lower() for c in V.COLOR_EN[o.color])


def _centroid(m: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(m)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("seed", range(6))
def test_slide_motion_is_reflected_in_masks(seed):
    v = S.generate_video(seed, num_frames=12, size=128, num_objects=1, motions=["slide"])
    o = v.objects[0]
    ev = o.events[0]
    assert ev.kind == "slide"   # a lone object must move (a clip is never all static)
    disp = _centroid(o.masks[-1]) - _centroid(o.masks[0])
    d = np.array(V.DIR_VECTORS[ev.params["direction"]])
    assert np.linalg.norm(disp) >= 2 and disp @ d > 0.8 * np.linalg.norm(disp)
    assert V.MOVE_DIR_EN[ev.params["direction"]] in ev.caption["en"]
    assert V.MOVE_DIR_ZH[ev.params["direction"]] in ev.caption["zh"]


def test_other_motions_are_reflected_in_masks():
    checked = set()
    for seed in range(40):
        v = S.generate_video(seed, num_frames=10, size=128, num_objects=1,
                             motions=["grow", "shrink", "exit", "rotate", "color", "bounce"], textures=["solid"])
        o = v.objects[0]
        ev = o.events[0]
        a0, a1 = o.masks[0].sum(), o.masks[-1].sum()
        if ev.kind == "grow":
            assert a1 > 1.3 * a0
        elif ev.kind == "shrink":
            assert a1 < 0.7 * a0
        elif ev.kind == "exit":
            assert a1 == 0 and o.boxes[-1] is None
            assert ev.params["edge"] in ev.caption["en"] or "leaves the frame" in ev.caption["en"] or "exits" in ev.caption["en"]
        elif ev.kind == "rotate":
            assert np.linalg.norm(_centroid(o.masks[-1]) - _centroid(o.masks[0])) < 2.5
            assert not np.array_equal(o.masks[0], o.masks[-1])
        elif ev.kind == "color":
            last = v.frames[-1][o.masks[-1]].astype(int)
            assert (last == np.array(S.PALETTE[ev.params["to"]])).all()
            assert ev.params["from_color"] == o.color
        elif ev.kind == "bounce":
            axis = 0 if ev.params["direction"] in (0, 4) else 1
            track = [_centroid(m)[axis] for m in o.masks]
            sign = 1 if ev.params["direction"] in (0, 2) else -1
            steps = np.sign(np.diff(track)) * sign
            assert (steps > 0).any() and (steps < 0).any(), "goes toward the edge then comes back"
        checked.add(ev.kind)
    assert checked >= {"grow", "exit", "rotate", "color", "bounce"}


def test_occlusion_event_caption():
    """Find a clip where an object passes behind / in front of another; the caption names the other."""
    found = 0
    for seed in range(40):
        v = S.generate_video(seed, num_frames=16, size=128, num_objects=(3, 4))
        for o in v.objects:
            inter = o.events[0].interaction
            if inter is None:
                continue
            other = v.objects[inter["other"]]
            assert any(c in o.events[0].caption["en"] for c in V.COLOR_EN[other.color])
            assert V.COLOR_ZH[other.color] in o.events[0].caption["zh"]
            found += 1
        if found >= 3:
            break
    assert found >= 1


def test_stream_clips_are_continuous_and_captioned():
    v = S.generate_stream(11, num_clips=3, frames_per_clip=6, size=96)
    assert v.num_clips == 3 and v.clips == [(0, 6), (6, 12), (12, 18)] and v.num_frames == 18
    for o in v.objects:
        assert [(e.start, e.end) for e in o.events] == v.clips
        assert all(e.caption["en"] and e.caption["zh"] for e in o.events)
        assert all(e.kind != "exit" for e in o.events), "exit is off by default in streams"
        # continuity: consecutive frames across a clip boundary barely differ
        for _, b in v.clips[:-1]:
            m0, m1 = o.masks[b - 1], o.masks[b]
            if m0.sum() > 30 and m1.sum() > 30:
                assert np.linalg.norm(_centroid(m0) - _centroid(m1)) < 8


def test_stream_captions_refer_to_previous_clip():
    """'continues'/'keeps'/'starts' style captions appear (that is what the history is for)."""
    hits = 0
    for seed in range(30):
        v = S.generate_stream(seed, num_clips=3, frames_per_clip=6, size=96, motions=["slide", "rotate"])
        for o in v.objects:
            for e in o.events[1:]:
                hits += bool(re.search(r"continues|keeps|still|starts|begins", e.caption["en"]))
    assert hits > 3


def test_speed():
    import time
    t = time.perf_counter()
    for seed in range(10):
        S.generate_scene(seed, size=256)
    assert (time.perf_counter() - t) / 10 < 0.1   # typically ~10 ms


def test_first_color_word():
    from perceive_anything.training.synthetic import first_color_word

    assert first_color_word("A small Red star left of the blue ring.") == "red"
    assert first_color_word("reddish redder") is None  # whole words only
    assert first_color_word("a star") is None and first_color_word(None) is None


def test_first_shape_word_reads_every_generated_caption():
    from perceive_anything.training.synthetic import first_shape_word

    # a longer synonym wins over the class name it contains, and whole words only
    assert first_shape_word("A red crescent moon shape beside a star.") == "crescent"
    assert first_shape_word("the half disk") == "semicircle"
    assert first_shape_word("A blue Five-Sided Polygon.") == "pentagon"
    assert first_shape_word("starry squares") is None and first_shape_word(None) is None
    for seed in range(30):  # the generator's own captions name the object's shape first
        for obj in S.generate_scene(seed, size=256).objects:
            assert first_shape_word(obj.brief_caption["en"]) == obj.shape, obj.brief_caption["en"]


def test_motion_kind_reads_every_generated_event_caption():
    from perceive_anything.training.synthetic import MOTION_KINDS, motion_kind

    seen = set()
    for seed in range(40):
        for obj in S.generate_video(seed, num_frames=16, size=256).objects:
            for event in obj.events:
                assert motion_kind(event.caption["en"]) == event.kind, event.caption["en"]
                seen.add(event.kind)
    assert seen == set(MOTION_KINDS)  # every kind was generated and read back
    assert motion_kind("The red star turns clockwise without moving.") == "rotate"
    assert motion_kind("A red star.") is None
