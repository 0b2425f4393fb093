"""Image loading/preprocessing and prompt normalisation (official conventions, reference §3.2-3.3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from perceive_anything.processing.image import IMAGENET_MEAN, IMAGENET_STD, load_image, preprocess_image
from perceive_anything.processing.prompts import box_to_points, to_sam_points


def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")
    bad = tmp_path / "not_an_image.jpg"
    bad.write_bytes(b"hello")
    with pytest.raises(ValueError, match="not_an_image.jpg"):
        load_image(bad)
    with pytest.raises(ValueError, match="uint8"):
        load_image(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        load_image(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(TypeError):
        load_image(123)


def test_load_image_inputs(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    img = load_image(gray)
    assert img.mode == "RGB" and img.size == (4, 3)
    rgba = Image.new("RGBA", (5, 2), (10, 20, 30, 40))
    assert load_image(rgba).mode == "RGB"
    path = tmp_path / "x.png"
    Image.new("RGB", (7, 3), (1, 2, 3)).save(path)
    img = load_image(str(path))
    assert img.size == (7, 3) and img.getpixel((0, 0)) == (1, 2, 3)


def test_exif_orientation_is_opt_in(tmp_path):
    path = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    Image.new("RGB", (40, 20), (200, 10, 10)).save(path, exif=exif)
    assert load_image(path).size == (40, 20)  # official: no EXIF transpose
    assert load_image(path, exif_transpose=True).size == (20, 40)


def test_preprocess_image():
    img = Image.new("RGB", (30, 20), (128, 64, 255))
    x = preprocess_image(img, 64)
    assert x.shape == (1, 3, 64, 64) and x.dtype == torch.float32
    for ch, v in enumerate((128, 64, 255)):
        want = (np.float32(v / 255.0) - np.float32(IMAGENET_MEAN[ch])) / np.float32(IMAGENET_STD[ch])
        assert torch.allclose(x[0, ch], torch.tensor(want, dtype=torch.float32), atol=0, rtol=0)


def test_box_to_points():
    pts, lab = box_to_points([1, 2, 30, 40], [[5, 6]], [0])
    assert pts.tolist() == [[1, 2], [30, 40], [5, 6]] and lab.tolist() == [2, 3, 0]
    with pytest.raises(ValueError):
        box_to_points([1, 2, 3])


def test_to_sam_points_float32():
    coords, labels = to_sam_points([[160, 120], [0, 240]], [1, 0], (320, 240), 1024, torch.float32)
    assert coords.dtype == torch.float32 and labels.dtype == torch.int32
    assert coords.tolist() == [[512.0, 512.0], [0.0, 1024.0]] and labels.tolist() == [1, 0]
    with pytest.raises(ValueError, match="labels"):
        to_sam_points([[1, 2]], [5], (10, 10), 1024)
    with pytest.raises(ValueError, match="labels"):
        to_sam_points([[1, 2], [3, 4]], [1], (10, 10), 1024)


def test_to_sam_points_bfloat16_matches_reference_example():
    # reference §3.3 worked example (3969 x 5954 image): coordinates quantised in bf16, then +0.5 in bf16
    pts, lab = box_to_points([847, 2691, 2188, 3905])
    coords, _ = to_sam_points(pts, lab, (3969, 5954), 1024, torch.bfloat16)
    assert coords.dtype == torch.bfloat16
    assert coords.flatten().float().tolist() == [219.0, 462.0, 564.0, 672.0]
    assert (coords + 0.5).flatten().float().tolist() == [220.0, 462.0, 564.0, 672.0]
    coords, _ = to_sam_points([[1175, 3669], [1705, 3198], [1434, 3404]], [1, 1, 0], (3969, 5954), 1024, torch.bfloat16)
    assert (coords + 0.5).float().tolist() == [[304.0, 632.0], [440.0, 552.0], [370.0, 588.0]]
