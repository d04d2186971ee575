"""BMS: Boolean Map Saliency (Zhang and Sclaroff, ICCV 2013; TPAMI 2016 v2 code).

Follows the authors' released v2 code (``BMS.cpp`` / ``main.cpp``, parameters of ``BMS.m``;
``docs/classical-saliency-and-popout.md`` §2.3):

1. Resize so that the longer side is ``max_dim = 400`` (OpenCV ``INTER_AREA``, sizes truncated).
2. CIE Lab (OpenCV 8-bit Lab). The released code reads BGR and converts with ``CV_RGB2Lab``,
   i.e. with red and blue swapped; ``bgr_quirk=True`` (default) reproduces that.
3. Whitening: pixels ``X`` (N x 3), ``C = cov(X)`` (1/N) ``+ 50 I``, ``C = U diag(w) U^T``,
   ``X U diag(1 / sqrt(w))``; each channel min-maxed to 0..255 (uint8) and 3 x 3 median blurred.
4. Boolean maps ``F > theta`` for ``theta = min(F), min(F) + delta, ... < max(F)``, ``delta = 8``.
5. Attention map of each Boolean map ``B``: the pixels of the components of ``B`` and of
   ``not B`` (8-connected) that do not touch the image border (the code's flood fill from
   every border pixel); ``B`` and ``not B`` parts separately dilated by an ``omega = 7`` square,
   each L2-normalised (an empty part stays 0), summed.
6. ``S`` = sum of all attention maps, min-maxed to uint8, dilated by a ``kappa = 9`` square,
   Gaussian blurred (``sigma = 9``, 37 x 37), resized bilinearly to the image; returned
   min-maxed to [0, 1] as float64 (``quantize=False`` skips the uint8 steps).

The components are found with OpenCV's ``connectedComponents`` (one call per Boolean map and
polarity), equivalent to the code's flood fill.
"""
from __future__ import annotations

import cv2
import numpy as np

from dissect.classical._common import mat2gray, with_defaults

__all__ = ["bms", "DEFAULTS", "surrounded"]

DEFAULTS = {
    "delta": 8,
    "max_dim": 400,
    "omega": 7,
    "kappa": 9,
    "sigma": 9.0,
    "whitening": True,
    "bgr_quirk": True,
    "quantize": True,
}
_COV_REG = 50.0


def surrounded(mask: np.ndarray) -> np.ndarray:
    """Pixels of the 8-connected components of ``mask`` that do not touch the border."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    touches = np.zeros(n, dtype=bool)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        touches[edge] = True
    return mask & ~touches[labels]


def _features(small: np.ndarray, whitening: bool, bgr_quirk: bool) -> list[np.ndarray]:
    src = small[..., ::-1] if bgr_quirk else small
    lab = cv2.cvtColor(np.ascontiguousarray(src), cv2.COLOR_RGB2Lab).astype(np.float64)
    x = lab.reshape(-1, 3)
    if whitening:
        cov = np.cov(x, rowvar=False, bias=True) + _COV_REG * np.eye(3)
        u, wv, _ = np.linalg.svd(cov)
        x = x @ u @ np.diag(1.0 / np.sqrt(wv))
    chans = []
    for k in range(3):
        ch = np.round(mat2gray(x[:, k].reshape(small.shape[:2])) * 255.0).astype(np.uint8)
        chans.append(cv2.medianBlur(ch, 3))
    return chans


def bms(rgb: np.ndarray, **options) -> np.ndarray:
    """BMS map of an ``H x W x 3`` uint8 image (module docstring), ``H x W`` float64 in [0, 1].

    Options (defaults in :data:`DEFAULTS`): ``delta``, ``max_dim``, ``omega``, ``kappa``,
    ``sigma``, ``whitening``, ``bgr_quirk``, ``quantize``.
    """
    o = with_defaults("bms", options, DEFAULTS)
    h, w = rgb.shape[:2]
    scale = float(o["max_dim"]) / max(h, w)
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    omega = np.ones((int(o["omega"]),) * 2, np.uint8)
    total = np.zeros(small.shape[:2])
    for ch in _features(small, bool(o["whitening"]), bool(o["bgr_quirk"])):
        lo, hi = int(ch.min()), int(ch.max())
        for theta in range(lo, hi, int(o["delta"])):
            boolean = ch > theta
            for part in (surrounded(boolean), surrounded(~boolean)):
                if not part.any():
                    continue
                a = cv2.dilate(part.astype(np.uint8), omega).astype(np.float64)
                total += a / np.sqrt((a * a).sum())
    if o["quantize"]:
        sal = np.round(mat2gray(total) * 255.0).astype(np.uint8)
    else:
        sal = mat2gray(total)
    kappa = int(o["kappa"])
    if kappa > 1:
        sal = cv2.dilate(sal, np.ones((kappa, kappa), np.uint8))
    sigma = float(o["sigma"])
    if sigma > 0:
        width = int(min(np.floor(sigma) * 4 + 1, 51))
        sal = cv2.GaussianBlur(sal, (width, width), sigma, sigma)
    sal = cv2.resize(sal, (w, h), interpolation=cv2.INTER_LINEAR)
    return mat2gray(sal)
