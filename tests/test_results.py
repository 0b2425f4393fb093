import json

import numpy as np

from perceive_anything.results import ImageResult, RegionResult, TaskOutput, mask_to_bbox, mask_to_rle, rle_to_mask


def test_rle_round_trip_and_bbox():
    rng = np.random.default_rng(0)
    m = rng.random((37, 53)) > 0.6
    rle = mask_to_rle(m)
    assert rle["size"] == [37, 53] and isinstance(rle["counts"], str)
    assert np.array_equal(rle_to_mask(rle), m)
    e = np.zeros((10, 10), bool)
    e[2:5, 3:9] = True
    assert mask_to_bbox(e) == [3, 2, 9, 5]
    assert mask_to_bbox(np.zeros((4, 4), bool)) is None


def test_result_json_is_complete_and_unicode():
    m = np.zeros((20, 30), bool)
    m[5:10, 6:16] = True
    out = TaskOutput(task="label", lang="zh", text="勺子", label="勺子")
    r = RegionResult(index=0, prompt={"kind": "box", "box": [6, 5, 16, 10]}, mask=m, object_score=2.5, iou=0.9, outputs=[out])
    res = ImageResult(image_size=(30, 20), regions=[r])
    d = json.loads(res.to_json())
    reg = d["regions"][0]
    assert reg["bbox"] == [6, 5, 16, 10] and reg["area"] == 50 and reg["present"] is True
    assert np.array_equal(rle_to_mask(reg["mask_rle"]), m)
    assert reg["outputs"][0]["label"] == "勺子"
    assert "勺子" in res.to_json()  # not escaped
    assert r.label == "勺子" and r.output("label").text == "勺子"


def test_draw_accepts_a_path_and_keeps_the_image_at_the_top_left(tmp_path):
    from PIL import Image

    m = np.zeros((200, 300), bool)
    m[120:180, 60:160] = True
    r = RegionResult(index=0, prompt={"kind": "box", "box": [60, 120, 160, 180]}, mask=m, object_score=1.0, iou=0.9,
                     outputs=[TaskOutput(task="label", lang="en", text="cup", label="cup")])
    path = tmp_path / "img.png"
    Image.new("RGB", (300, 200), (10, 10, 10)).save(path)
    res = ImageResult(image_size=(300, 200), regions=[r])
    plain = res.draw(path, legend=False)
    assert plain.size == (300, 200)
    px = np.asarray(plain).astype(int)
    assert px[150, 100].sum() > 100 and px[20, 250].sum() == 30  # the mask is tinted, the rest is not
    with_legend = res.draw(path)
    # a landscape image gets its legend below
    assert with_legend.width == 300 and with_legend.height > 200
    assert (np.asarray(with_legend)[:200, :300] == np.asarray(plain)).all()
