"""Overlays: captions never hide a mask, and text reads on a small scene and a large photo alike."""

from __future__ import annotations

import numpy as np
import pytest

from perceive_anything.training.synthetic import generate_scene
from perceive_anything.visualize import _CJK_FONTS, _mask_edges, blend_mask, draw_overlay, palette

LONG = "a long caption that would cover half of a small scene if it were drawn on top of the image itself"


@pytest.fixture(scope="module")
def scene():
    return generate_scene(7, size=256, num_objects=(4, 5))


def _swatch_side(panel: np.ndarray, color) -> int:
    """Side of the square legend swatch drawn in ``color`` (its tallest run of exact-colour pixels)."""
    hit = (panel == np.asarray(color, np.uint8)).all(-1)
    assert hit.any(), f"no legend entry in colour {color}"
    return int(hit.sum(0).max())


def test_captions_go_to_a_legend_and_badges_cover_little_of_each_mask(scene):
    masks = [o.mask for o in scene.objects]
    h, w = scene.image.shape[:2]
    out = np.asarray(draw_overlay(scene.image, masks, [LONG] * len(masks)))
    plain = np.asarray(draw_overlay(scene.image, masks, [LONG] * len(masks), legend=False))
    assert out.shape[1] > w
    assert (out[:h, :w] == plain).all(), "caption text was drawn over the image"
    tinted = scene.image
    for i, m in enumerate(masks):  # masks and outlines alone, as the overlay draws them
        tinted = blend_mask(tinted, m, palette(i))
        tinted[_mask_edges(m)] = palette(i)
    for i, m in enumerate(masks):
        hidden = (plain[m] != tinted[m]).any(-1).mean()
        assert hidden < 0.1, f"region {i}: {hidden:.0%} of its mask is covered"
    panel = out[:, w:]
    for i in range(len(masks)):
        _swatch_side(panel, palette(i))


def test_text_size_follows_the_image_size(scene):
    small = np.asarray(draw_overlay(scene.image, [scene.objects[0].mask], ["circle"]))
    side_small = _swatch_side(small[:, 256:], palette(0))
    H, W = 4000, 6000  # a 24-megapixel frame
    big_img = np.full((H, W, 3), 90, np.uint8)
    m = np.zeros((H, W), bool)
    m[1000:2500, 1500:3500] = True
    big = np.asarray(draw_overlay(big_img, [m], ["a cat"]))
    # a wide photo gets its legend below the image
    assert big.shape[1] == W and big.shape[0] > H
    side_big = _swatch_side(big[H:], palette(0))
    assert side_small >= 11  # readable at 1:1 on a 256-pixel scene
    assert side_big >= 0.015 * W  # still readable when a 6000-pixel photo is shown at screen size


def test_chinese_captions_render_real_glyphs(scene):
    from PIL import ImageFont

    if not any(_loads(name) for name in _CJK_FONTS):
        pytest.skip("no CJK font installed (e.g. Debian's fonts-wqy-microhei)")
    m = [scene.objects[0].mask]
    a = np.asarray(draw_overlay(scene.image, m, ["圆形"]))[:, 256:]
    b = np.asarray(draw_overlay(scene.image, m, ["方形"]))[:, 256:]
    assert (a != b).any(), "two different Chinese words were drawn identically (missing glyphs)"


def _loads(name: str) -> bool:
    from PIL import ImageFont

    try:
        ImageFont.truetype(name, 12)
        return True
    except OSError:
        return False
