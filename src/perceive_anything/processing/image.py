"""Image loading and the SAM 2 input transform, exactly as the official PAM code does it (reference §3.2).

Official path: ``PIL.Image.open(path).convert("RGB").resize((S, S))`` (PIL's default bicubic filter,
aspect ratio not kept, 8-bit result), ``/255`` in float64, stored as float32, then
``(x - mean) / std`` in float32 with the ImageNet statistics. ``torch`` bicubic resizing uses another
kernel (a = -0.75 vs PIL's -0.5, no antialiasing) and does not reproduce the features, so PIL is used.
No EXIF orientation correction by default (the official code does none).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageInput", "load_image", "preprocess_image"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


def load_image(image: ImageInput, exif_transpose: bool = False) -> Image.Image:
    """An RGB ``PIL.Image`` from a path, a PIL image or a uint8 array (H, W), (H, W, 3) or (H, W, 4).

    Raises ``FileNotFoundError`` for a missing path and ``ValueError`` (naming the path) for a file
    PIL cannot decode. ``exif_transpose=True`` applies the EXIF orientation tag (the official code
    does not, so the default keeps parity).
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.exists():
            raise FileNotFoundError(f"image not found: {path}")
        if not path.is_file():
            raise ValueError(f"not an image file: {path}")
        try:
            with Image.open(path) as im:
                # finish decoding while the file is open (closing the image frees its pixels)
                return _to_rgb(im, exif_transpose)
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"cannot read image {path}: {exc}") from exc
    elif isinstance(image, Image.Image):
        img = image
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"image arrays must be uint8, got {image.dtype}")
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4)):
            img = Image.fromarray(np.ascontiguousarray(image))
        else:
            raise ValueError(f"image arrays must be (H, W), (H, W, 3) or (H, W, 4); got shape {image.shape}")
    else:
        raise TypeError(f"unsupported image type {type(image).__name__}; give a path, a PIL image or a uint8 array")
    if img.width == 0 or img.height == 0:
        raise ValueError(f"the image is empty ({img.width}x{img.height} pixels)")
    return _to_rgb(img, exif_transpose)


def _to_rgb(img: Image.Image, exif_transpose: bool) -> Image.Image:
    if exif_transpose:
        img = ImageOps.exif_transpose(img)
    return img.convert("RGB")  # always a new image (also for RGB input), like the official code


def preprocess_image(img: Image.Image, image_size: int) -> torch.Tensor:
    """(1, 3, S, S) float32 SAM 2 input: PIL bicubic resize to S x S, /255 (float64), ImageNet mean/std."""
    if not isinstance(img, Image.Image):
        img = load_image(img)
    if img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.asarray(img.resize((image_size, image_size)))  # PIL default filter for RGB: BICUBIC
    x = torch.from_numpy(arr / 255.0).permute(2, 0, 1).to(torch.float32)  # float64 divide, then fp32
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return ((x - mean) / std).unsqueeze(0).contiguous()
