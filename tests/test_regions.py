import re

import numpy as np
import pytest

from perceive_anything.processing.regions import Region, RegionError, box, mask, parse_regions, points

W, H = 320, 240


def test_accepts_every_prompt_form():
    m = np.zeros((H, W), bool)
    m[10:20, 30:40] = True
    regs = parse_regions(
        [
            [10, 20, 100, 120],
            {"box": [0, 0, W, H]},
            {"points": [[5, 6]], "labels": [1]},
            {"points": [5, 6]},  # a single flat click is accepted (the official code crashes on it)
            {"box": [10, 10, 50, 50], "points": [[20, 20], [40, 40]], "labels": [1, 0]},
            box(1, 2, 3, 4),
            points([[1, 1], [2, 2]], [1, 0]),
            mask(m),
        ],
        W,
        H,
    )
    assert [r.kind for r in regs] == ["box", "box", "points", "points", "box+points", "box", "points", "mask"]
    xy, lab = regs[4].sam_points()
    # box corners come first with SAM's labels 2 and 3, then the clicks
    assert lab.tolist() == [2, 3, 1, 0]
    assert xy.tolist() == [[10, 10], [50, 50], [20, 20], [40, 40]]


def test_single_flat_box_is_one_region():
    regs = parse_regions([1, 2, 30, 40], W, H)
    assert len(regs) == 1 and regs[0].box == (1, 2, 30, 40)


@pytest.mark.parametrize(
    "region, message",
    [
        ([10, 10, 10, 50], "zero area or is inverted"),
        ([50, 10, 10, 50], "zero area or is inverted"),
        ([10, 10, 400, 50], "outside the 320x240 image"),
        ([-5, 10, 40, 50], "outside the 320x240 image"),
        ({"points": [[10, 10]], "labels": [2]}, "unknown point label"),
        ({"points": [[10, 10], [400, 10]], "labels": [1, 1]}, "outside the 320x240 image"),
        ({"points": [[10, 10]], "labels": [0]}, "at least one positive click"),
        ({"points": [[10, 10]], "labels": [1, 1]}, "1 points but 2 labels"),
        ({"mask": np.ones((10, 10), bool)}, "mask is 10x10 (WxH) but the image is 320x240"),
        ({"mask": np.zeros((H, W), bool)}, "mask is empty"),
        ({"boxx": [1, 2, 3, 4]}, "unknown key"),
        ("hello", "cannot read str"),
    ],
)
def test_bad_regions_name_the_problem(region, message):
    with pytest.raises(RegionError, match=re.escape(message)):
        parse_regions([{"box": [0, 0, 10, 10]}, region], W, H)


def test_error_names_the_region_index():
    with pytest.raises(RegionError, match="region 1"):
        parse_regions([[0, 0, 10, 10], [5, 5, 1, 1]], W, H)


def test_empty_region_list():
    with pytest.raises(RegionError, match="empty"):
        parse_regions([], W, H)
    with pytest.raises(RegionError, match="no region"):
        parse_regions(None, W, H)


def test_region_is_a_value():
    r = Region(box=(1.0, 2.0, 3.0, 4.0))
    assert r.describe() == {"kind": "box", "box": [1.0, 2.0, 3.0, 4.0]}
