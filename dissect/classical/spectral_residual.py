"""Spectral residual (Hou and Zhang, CVPR 2007) through OpenCV contrib.

``cv2.saliency.StaticSaliencySpectralResidual`` (package ``opencv-contrib-python-headless``):
grey image resized to 64 x 64 (aspect ratio not kept), log amplitude spectrum minus its 3 x 3
mean, inverse transform with the original phase, magnitude, 5 x 5 Gaussian (sigma 8), squared,
divided by its maximum, resized bilinearly to the image. This differs from Hou's MATLAB code
(width 64 with the aspect kept, 10 x 10 Gaussian of sigma 2.5 after squaring); see
``docs/classical-saliency-and-popout.md`` §2.4. Returned min-maxed to [0, 1] as float64.
"""
from __future__ import annotations

import cv2
import numpy as np

from dissect.classical._common import mat2gray, with_defaults

__all__ = ["spectral_residual", "DEFAULTS"]

DEFAULTS = {"width": 64, "height": 64}


def spectral_residual(rgb: np.ndarray, **options) -> np.ndarray:
    """OpenCV spectral-residual map of an ``H x W x 3`` uint8 image, ``H x W`` float64 in [0, 1].

    Options: ``width``, ``height`` of OpenCV's working image (64 x 64).
    """
    o = with_defaults("spectral_residual", options, DEFAULTS)
    sr = cv2.saliency.StaticSaliencySpectralResidual_create()
    sr.setImageWidth(int(o["width"]))
    sr.setImageHeight(int(o["height"]))
    ok, sal = sr.computeSaliency(np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise RuntimeError("OpenCV StaticSaliencySpectralResidual.computeSaliency failed")
    sal = np.asarray(sal, dtype=np.float64)
    if sal.shape != rgb.shape[:2]:
        sal = cv2.resize(sal, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    if not np.isfinite(sal).all():
        raise RuntimeError("OpenCV spectral residual returned NaN/inf (an image without any contrast?)")
    return mat2gray(sal)
