"""Shared pieces of the classical saliency models: input checks, MATLAB-style resizing and
normalisation, Gabor filters, Itti's N(.) operator.

Every function is vectorised numpy / OpenCV; nothing loops over pixels in Python.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["with_defaults", "as_rgb", "mat2gray", "imresize", "gabor_kernel", "max_normalize", "local_maxima",
           "attenuate_borders", "filter2d"]


def with_defaults(method: str, options: dict, defaults: dict) -> dict:
    """``defaults`` updated with ``options``; an option ``method`` does not take is a ``ValueError``."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"{method} does not take option(s) {unknown}; it takes {sorted(defaults)}")
    return {**defaults, **options}


def as_rgb(image, name: str = "image") -> tuple[np.ndarray, bool]:
    """``image`` as an ``H x W x 3`` uint8 RGB array, and whether it was grey.

    A grey image (``H x W`` or ``H x W x 1``) is converted by repeating its channel (the colour
    channels of the models then carry nothing) and reported as ``True``; the caller records it.

    Raises:
        ValueError: not uint8, not 2-D / ``H x W x {1, 3}``, or empty.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"{name} must be a uint8 RGB array (0..255), got dtype {img.dtype}; "
                         "convert it first, e.g. (img * 255).round().astype(np.uint8) for floats in [0, 1]")
    grey = img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1)
    if grey:
        img = np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{name} must be an H x W x 3 RGB array (or H x W grey), got shape {img.shape}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"{name} is empty (shape {img.shape})")
    return np.ascontiguousarray(img), grey


def mat2gray(a: np.ndarray) -> np.ndarray:
    """MATLAB ``mat2gray``: min-max to [0, 1]; a constant map becomes all zeros."""
    a = np.asarray(a, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros_like(a)
    return (a - lo) / (hi - lo)


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic kernel with a = -0.5 (MATLAB ``imresize`` 'bicubic')."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2)))


_WEIGHTS_CACHE: dict[tuple[int, int], np.ndarray] = {}


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``n_out x n_in`` matrix of MATLAB ``imresize`` (bicubic, antialiased when shrinking,
    symmetric boundary), so that ``resized = Ry @ A @ Rx.T``."""
    key = (n_in, n_out)
    if key in _WEIGHTS_CACHE:
        return _WEIGHTS_CACHE[key]
    scale = n_out / n_in
    width = 4.0
    if scale < 1.0:  # antialiasing: the kernel stretched by 1 / scale
        kernel = lambda x: scale * _cubic(scale * x)  # noqa: E731
        width = width / scale
    else:
        kernel = _cubic
    x = np.arange(1, n_out + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    ind = left[:, None] + np.arange(taps)[None, :]  # 1-based source indices
    weights = kernel(u[:, None] - ind)
    weights /= weights.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(n_in), np.arange(n_in)[::-1]])  # symmetric padding
    src = aux[np.mod(ind.astype(np.int64) - 1, 2 * n_in)]
    mat = np.zeros((n_out, n_in))
    np.add.at(mat, (np.repeat(np.arange(n_out), taps), src.ravel()), weights.ravel())
    _WEIGHTS_CACHE[key] = mat
    return mat


def imresize(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of a 2-D map to ``(rows, cols)`` as MATLAB's ``imresize`` does
    (Keys a = -0.5, antialiased when shrinking, symmetric borders): two matrix products."""
    a = np.asarray(a, dtype=np.float64)
    rows, cols = int(shape[0]), int(shape[1])
    if a.shape == (rows, cols):
        return a.copy()
    return _resize_matrix(a.shape[0], rows) @ a @ _resize_matrix(a.shape[1], cols).T


def filter2d(a: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-D convolution (not correlation) with replicated borders, same size (OpenCV)."""
    return cv2.filter2D(np.asarray(a, dtype=np.float64), cv2.CV_64F, np.ascontiguousarray(kernel[::-1, ::-1]),
                        borderType=cv2.BORDER_REPLICATE)


def gabor_kernel(angle_deg: float, phase_deg: float, stddev: float = 2.0, elongation: float = 2.0,
                 period: float = math.pi) -> np.ndarray:
    """The Gabor filter of Walther's SaliencyToolbox as GBVS uses it (``makeGaborFilterGBVS``).

    ``cos(omega * major + psi) * exp(-major^2 / (2 s^2) - minor^2 / (2 (e s)^2))`` on a
    ``(2 r + 1)`` square with ``r = ceil(max(s, e s) * sqrt(10))`` (13 -> 27 x 27 for the
    defaults ``s = 2``, ``e = 2``), ``omega = 2 pi / period`` (period pi px), then made zero-mean
    and of unit L2 norm.
    """
    major_sd, minor_sd = stddev, stddev * elongation
    r = int(math.ceil(max(major_sd, minor_sd) * math.sqrt(10.0)))
    psi, theta = math.radians(phase_deg), math.radians(angle_deg)
    omega = 2.0 * math.pi / period
    co, si = math.cos(theta), -math.sin(theta)
    vec = np.arange(-r, r + 1, dtype=np.float64)
    major = vec[:, None] * co + vec[None, :] * si
    minor = vec[:, None] * si - vec[None, :] * co
    g = np.cos(omega * major + psi) * np.exp(-major ** 2 / (2 * major_sd ** 2) - minor ** 2 / (2 * minor_sd ** 2))
    g -= g.mean()
    return g / np.sqrt((g ** 2).sum())


def local_maxima(a: np.ndarray, thresh: float) -> np.ndarray:
    """Values of the interior local maxima of ``a`` (``>=`` their 4 neighbours and ``>= thresh``;
    border pixels excluded), as SaliencyToolbox's ``mexLocalMaximaGBVS``."""
    if a.shape[0] < 3 or a.shape[1] < 3:
        return np.empty(0)
    c = a[1:-1, 1:-1]
    ok = ((c >= thresh) & (c >= a[:-2, 1:-1]) & (c >= a[2:, 1:-1]) & (c >= a[1:-1, :-2]) & (c >= a[1:-1, 2:]))
    return c[ok]


def max_normalize(a: np.ndarray, top: float = 10.0) -> np.ndarray:
    """Itti's N(.) as SaliencyToolbox / GBVS implement it (``maxNormalizeStdGBVS``).

    The map is min-maxed to ``[0, top]`` (``top = 10``); ``m`` is the mean of its interior local
    maxima ``>= top / 10`` (:func:`local_maxima`, the global maximum included); the result is
    the map times ``(top - m)^2`` with more than one maximum, ``top^2`` with exactly one, the
    map itself with none (a constant map stays all zeros).
    """
    d = mat2gray(a) * top
    peaks = local_maxima(d, top / 10.0)
    if peaks.size > 1:
        return d * (top - peaks.mean()) ** 2
    if peaks.size == 1:
        return d * top ** 2
    return d


def attenuate_borders(a: np.ndarray, width: int) -> np.ndarray:
    """Linear border attenuation (SaliencyToolbox ``attenuateBordersGBVS``): the outer ``width``
    rows and columns are multiplied by ``1 / (width + 1), ..., width / (width + 1)``."""
    out = np.array(a, dtype=np.float64)
    h, w = out.shape
    width = int(min(width, h // 2, w // 2))
    if width < 1:
        return out
    coeff = np.arange(1, width + 1) / (width + 1.0)
    out[:width, :] *= coeff[:, None]
    out[h - width:, :] *= coeff[::-1, None]
    out[:, :width] *= coeff[None, :]
    out[:, w - width:] *= coeff[None, ::-1]
    return out

