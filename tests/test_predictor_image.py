"""The image API and CLI as a user runs them."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from perceive_anything import PerceiveAnything, RegionError, box, mask, points
from perceive_anything.training.synthetic import generate_scene


@pytest.fixture(scope="module")
def scene():
    return generate_scene(5, size=192, num_objects=3)


def _boxes(scene):
    return [[float(v) for v in o.box] for o in scene.objects]


def test_many_regions_in_one_call_match_one_by_one(tiny_pam, scene):
    img = Image.fromarray(scene.image)
    regions = [box(*_boxes(scene)[0]), points([[40, 50], [100, 120]], [1, 0]), mask(scene.objects[1].mask),
               box(*_boxes(scene)[2])]
    res = tiny_pam.perceive(img, regions, task=["label", "brief_caption"])
    assert len(res) == 4 and [r.prompt["kind"] for r in res] == ["box", "points", "mask", "box"]
    for i, reg in enumerate(regions):
        alone = tiny_pam.perceive(img, [reg], task=["label", "brief_caption"])[0]
        r = res[i]
        assert r.mask.shape == (192, 192)
        assert np.mean(alone.mask != r.mask) < 1e-3
        assert abs(alone.object_score - r.object_score) < 1e-4
        assert [o.token_ids for o in alone.outputs] == [o.token_ids for o in r.outputs]


def test_regions_in_small_batches_give_what_one_batch_gives(tiny_pam, scene):
    """region_batch only bounds how many regions share the heads and the perceiver at a time."""
    img = Image.fromarray(scene.image)
    regions = [box(*b) for b in _boxes(scene)] + [points([[40, 50]], [1]), mask(scene.objects[0].mask)]
    together = tiny_pam.perceive(img, regions, task="label", region_batch=len(regions))
    for batch in (1, 2, 4):
        res = tiny_pam.perceive(img, regions, task="label", region_batch=batch)
        assert [r.prompt["kind"] for r in res] == [r.prompt["kind"] for r in together]
        for a, b in zip(res, together):
            assert np.array_equal(a.mask, b.mask) and abs(a.object_score - b.object_score) < 1e-5
            assert a.outputs[0].token_ids == b.outputs[0].token_ids
        assert res.timings.segment > 0 and res.timings.perceive > 0
    seg_only = tiny_pam.segment(img, regions)
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(seg_only, together))


def test_encode_once_reuse_and_streaming_callback(tiny_pam, scene):
    enc = tiny_pam.encode(scene.image)
    pieces = []
    a = tiny_pam.perceive(enc, _boxes(scene)[:2], task="detailed_caption", on_token=lambda r, t, p: pieces.append((r, t, p)))
    b = tiny_pam.perceive(enc, _boxes(scene)[:2], task="detailed_caption")
    assert [r.outputs[0].text for r in a] == [r.outputs[0].text for r in b]
    for r in range(2):
        streamed = "".join(p for rr, _, p in pieces if rr == r)
        assert streamed.strip() == a[r].outputs[0].text
    assert a.timings.encode == enc.seconds


def test_free_question_and_chinese(tiny_pam, scene):
    res = tiny_pam.perceive(scene.image, _boxes(scene)[0], task="question", question="What colour is it?", lang="zh")
    assert res[0].outputs[0].task == "question" and res[0].outputs[0].lang == "zh"


def test_generation_overrides(tiny_pam, scene):
    res = tiny_pam.perceive(scene.image, _boxes(scene)[0], task="brief_caption", max_new_tokens=3)
    assert len(res[0].outputs[0].token_ids) <= 3
    s1 = tiny_pam.perceive(scene.image, _boxes(scene)[0], preset="official", seed=1, max_new_tokens=6)
    s2 = tiny_pam.perceive(scene.image, _boxes(scene)[0], preset="official", seed=1, max_new_tokens=6)
    assert s1[0].outputs[0].token_ids == s2[0].outputs[0].token_ids  # seeded sampling is reproducible


def test_bfloat16_runs_on_cpu(tiny_pam_dir, scene):
    pam = PerceiveAnything.from_pretrained(tiny_pam_dir, dtype="bfloat16")
    res = pam.perceive(scene.image, _boxes(scene)[:2], task="label", max_new_tokens=4)
    assert pam.dtype.is_floating_point and len(res) == 2 and res[0].mask.dtype == bool


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(regions=[[10, 10, 10, 40]]), RegionError, "zero area"),
        (dict(regions=[[0, 0, 500, 40]]), RegionError, "outside the 192x192 image"),
        (dict(regions={"points": [[5, 5]], "labels": [7]}), RegionError, "unknown point label"),
        (dict(regions={"mask": np.ones((10, 10), bool)}), RegionError, "mask is 10x10"),
        (dict(regions=[]), RegionError, "empty"),
        (dict(regions=[[0, 0, 20, 20]], task="colour"), ValueError, "unknown task"),
        (dict(regions=[[0, 0, 20, 20]], lang="fr"), ValueError, "language"),
        (dict(regions=[[0, 0, 20, 20]], task="video_caption"), ValueError, "video task"),
        (dict(regions=[[0, 0, 20, 20]], task="question"), ValueError, "needs question"),
        (dict(regions=[[0, 0, 20, 20]], preset="creative"), ValueError, "unknown generation preset"),
        (dict(regions=[[0, 0, 20, 20]], region_batch=0), ValueError, "region_batch must be at least 1"),
    ],
)
def test_bad_input_is_named(tiny_pam, scene, kwargs, error, message):
    with pytest.raises(error, match=message):
        tiny_pam.perceive(scene.image, **kwargs)


def test_unreadable_image_files(tiny_pam, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        tiny_pam.perceive(tmp_path / "nope.jpg", [[0, 0, 5, 5]])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.jpg"):
        tiny_pam.perceive(bad, [[0, 0, 5, 5]])


def _pam(*args):
    return subprocess.run([sys.executable, "-m", "perceive_anything.cli", *args], capture_output=True, text=True)


def test_cli_image_with_tiny_model(tiny_pam_dir, scene, tmp_path):
    img = tmp_path / "scene.png"
    Image.fromarray(scene.image).save(img)
    m = tmp_path / "m.png"
    Image.fromarray((scene.objects[0].mask * 255).astype(np.uint8)).save(m)
    b = ",".join(str(int(v)) for v in _boxes(scene)[1])
    out, ov = tmp_path / "r.json", tmp_path / "o.png"
    r = _pam("image", str(img), "--box", b, "--point", "30,40", "--point", "60,70,0", "--mask", str(m),
             "--task", "label,brief_caption", "--model", str(tiny_pam_dir), "--json", str(out), "--overlay", str(ov))
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert [x["prompt"]["kind"] for x in d["regions"]] == ["box", "points", "mask"]
    assert [o["task"] for o in d["regions"][0]["outputs"]] == ["label", "brief_caption"]
    w, h = Image.open(ov).size
    assert h == 192 and w > 192  # the image, with the captions' legend beside it
    assert "[pam] loading" in r.stderr  # progress while loading weights


@pytest.mark.parametrize(
    "args, message",
    [
        (["--box", "1,2,3"], "expected 4 numbers"),
        (["--box", "5,5,1,1"], "zero area or is inverted"),
        (["--point", "3,4,2"], "unknown label 2"),
        ([], "give at least one region"),
        (["--box", "1,1,9,9", "--lang", "de"], "language"),
        (["--box", "1,1,9,9", "--task", "poem"], "unknown task"),
    ],
)
def test_cli_errors_are_one_clear_line(tiny_pam_dir, scene, tmp_path, args, message):
    img = tmp_path / "s.png"
    Image.fromarray(scene.image).save(img)
    r = _pam("image", str(img), *args, "--model", str(tiny_pam_dir), "--quiet")
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_cli_missing_image_and_model(tiny_pam_dir, tmp_path):
    r = _pam("image", str(tmp_path / "missing.jpg"), "--box", "1,1,2,2", "--model", str(tiny_pam_dir))
    assert r.returncode == 2 and "missing.jpg" in r.stderr
    img = tmp_path / "s.png"
    Image.new("RGB", (8, 8)).save(img)
    r = _pam("image", str(img), "--box", "1,1,2,2", "--model", str(tmp_path / "no_model"))
    assert r.returncode == 2 and "no_model" in r.stderr


# ----------------------------------------------------------------- released-format weights (golden fixtures)


def test_cli_on_the_24_megapixel_photo_with_official_weights(shared_dir, tmp_path):
    """An official-format PAM folder + SAM 2.1 .pt, several regions of the 3969x5954 sample photo."""
    w = shared_dir / "golden" / "weights"
    photo = shared_dir / "media" / "exp_1.jpg"
    if not photo.exists():
        pytest.skip("sample photo absent")
    out, ov = tmp_path / "r.json", tmp_path / "o.jpg"
    r = _pam("image", str(photo), "--box", "847,2691,2188,3905", "--point", "1175,3669", "--point", "1705,3198",
             "--point", "1434,3404,0", "--task", "detailed_caption,label", "--max-new-tokens", "6",
             "--model", str(w / "pam_model"), "--sam2", str(w / "sam2" / "sam2.1_hiera_parity.pt"),
             "--json", str(out), "--overlay", str(ov))
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["image_size"] == {"width": 3969, "height": 5954}
    assert len(d["regions"]) == 2
    for reg in d["regions"]:
        assert reg["mask_rle"]["size"] == [5954, 3969]
        assert [o["task"] for o in reg["outputs"]] == ["detailed_caption", "label"]
    w, h = Image.open(ov).size
    assert h == 5954 and w > 3969  # a portrait photo gets its legend beside it
