"""Images -> network inputs: resized, RGB uint8, ImageNet-normalised batches (He et al.'s preprocessing)."""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from datasets.base import as_rgb_uint8
from dissect.checks import check_count
from dissect.models.backbones import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["preprocess", "network_input", "resized_input", "warn_converted"]


def preprocess(images: Sequence[np.ndarray], image_size: int | None = 224,
               mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Turn ``H x W x 3`` uint8 images into a normalised ``N x 3 x S x S`` batch.

    Images are resized to ``image_size x image_size`` without keeping the aspect ratio, as
    He et al. did (OSIE 800 x 600 -> 224 x 224), with PIL's bilinear filter (fixed explicitly:
    their code relied on PIL's version-dependent default). ``image_size=None`` keeps the size
    (all images must then share it). Grayscale, RGBA and float [0, 1] images are converted to
    RGB uint8 first (:func:`datasets.base.as_rgb_uint8`), with one warning saying which.
    """
    if image_size is not None:
        image_size = check_count("image_size", image_size)
    arrays, converted = [], []
    for i, img in enumerate(images):
        array, note = network_input(img, image_size, i)
        arrays.append(array)
        if note:
            converted.append(note)
    warn_converted(converted, stacklevel=3)
    if not arrays:
        raise ValueError("preprocess got no images")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images of different sizes {sorted(shapes)} with image_size=None; "
                         "pass image_size (e.g. 224) to resize them")
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (batch - m) / s


def network_input(img, image_size: int | None, index: int) -> tuple[np.ndarray, str]:
    """Image ``index`` as its uint8 network input: RGB uint8 first (:func:`datasets.base.as_rgb_uint8`),
    then resized; and the conversion note (``""`` when it was already RGB uint8)."""
    img, note = as_rgb_uint8(img, f"image {index}")
    return resized_input(img, image_size), f"{index} ({note})" if note else ""


def warn_converted(converted: list[str], stacklevel: int = 2) -> None:
    """One warning listing the images :func:`network_input` converted."""
    if converted:
        warnings.warn(f"preprocess converted {len(converted)} image(s) to RGB uint8: {', '.join(converted[:5])}"
                      + (", ..." if len(converted) > 5 else ""), UserWarning, stacklevel=stacklevel)


def resized_input(img: np.ndarray, image_size: int | None) -> np.ndarray:
    """The uint8 network input of one image: resized to ``image_size`` (PIL bilinear) or as is."""
    if image_size is not None and img.shape[:2] != (image_size, image_size):
        img = np.asarray(Image.fromarray(img).resize((image_size, image_size), Image.BILINEAR))
    return img
