"""GBVS: Graph-Based Visual Saliency (Harel, Koch and Perona, NIPS 2006).

Follows the authors' MATLAB package (``gbvs.m`` with ``makeGBVSParams.m`` defaults, last revised
2012), not the paper where the two differ (see ``docs/classical-saliency-and-popout.md`` §2.2):

1. The uint8 image is read as doubles in [0, 1]. A pyramid is built with the iNVT 6-tap
   low-pass ``[1 5 10 10 5 1] / 32`` (truncated and renormalised at the borders) and decimation
   by 2, in x then y; pyramid level 1 is half size, so the default ``levels = (2, 3, 4)`` are
   1/4, 1/8 and 1/16 of the image.
2. Feature maps at each level: **D** (DKL colour: luminance and two chromatic axes, the package's
   matrices and scale factors), **I** (intensity ``max(R, G, B)``) and **O** (orientation
   ``|I * g_0| + |I * g_90|`` for Gabor angles 0, 45, 90, 135 degrees, SaliencyToolbox filters,
   borders attenuated over 13 px). Every map is resized bicubically (MATLAB ``imresize``,
   antialiased) to the working size whose longer side is ``salmapmaxsize = 32`` (24 x 32 for a
   640 x 480 image).
3. Activation of each map ``A`` (min-maxed): a fully connected graph over the map pixels with
   edge weight ``w(j -> i) = exp(-d_ij^2 / (2 sigma^2)) |A_i - A_j|`` (the package's default
   algtype 2, the absolute difference; the paper's ``|log(A_i / A_j)|`` is not the default),
   ``sigma = 0.15 * mean(map size)``, columns normalised to sum 1, and the equilibrium
   distribution by power iteration from the uniform vector until the L2 change is <= ``tol``
   (1e-4). All maps iterate together as one batched matrix product.
4. Normalisation: the package default ``normalizationType = 1``, the activation raised to the
   power 1.5 (no second graph).
5. The normalised maps are **summed** within each channel (the package does not divide by
   their number), channels summed with weight 1, borders attenuated over 4 map pixels,
   min-maxed, blurred with a Gaussian of std ``0.02 * 32`` map pixels (3 taps, replicated
   borders), min-maxed, resized bicubically to the image and min-maxed (``master_map_resized``).

Documented departures from the package: the DKL step uses a power law (gamma 1.6) instead of
the package's measured 256-entry display table (best power-law fit 1.5..1.7, RMSE ~0.03); a
feature map that is constant (no contrast) has no edges and contributes nothing (the package
would divide 0 by 0); images smaller than 128 px on a side are refused, as in the package.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from dissect.classical._common import attenuate_borders, filter2d, gabor_kernel, imresize, mat2gray, with_defaults

__all__ = ["gbvs", "DEFAULTS", "activation_weights", "stationary_distribution"]

#: ``makeGBVSParams.m`` defaults used here.
DEFAULTS = {
    "salmapmaxsize": 32,
    "levels": (2, 3, 4),
    "gaborangles": (0, 45, 90, 135),
    "sigma_frac_act": 0.15,
    "tol": 1e-4,
    "normalization_power": 1.5,
    "border_attenuation": 4,
    "blurfrac": 0.02,
    "channels": "DIO",
    "dkl_gamma": 1.6,
    "max_iterations": 10000,
}

_LOWPASS6 = np.array([1.0, 5.0, 10.0, 10.0, 5.0, 1.0])

# rgb2dkl.m of the GBVS package: cone matrix, background LMS and per-component scale factors.
_RGB2LMS = np.array([[18.32535, 44.60077, 7.46216],
                     [4.09544, 28.20135, 6.66066],
                     [0.02114, 0.10325, 1.05258]])
_LMS0 = np.array([34.9185, 19.3148, 0.5856])
_DKL_SCALE = np.array([0.5774, 2.7525, 0.4526])


def _dkl_matrix() -> np.ndarray:
    l0, m0, s0 = _LMS0
    fac = 1.0 / (l0 + m0)
    return np.array([
        [math.sqrt(3.0) * fac, math.sqrt(3.0) * fac, 0.0],
        [math.sqrt(l0 ** 2 + m0 ** 2) / l0 * fac, -math.sqrt(l0 ** 2 + m0 ** 2) / m0 * fac, 0.0],
        [-fac, -fac, (l0 + m0) / s0 * fac],
    ])


def rgb2dkl(rgb: np.ndarray, gamma: float = DEFAULTS["dkl_gamma"]) -> np.ndarray:
    """``H x W x 3`` RGB in [0, 1] -> the three scaled DKL components (``H x W x 3``)."""
    lin = np.power(np.clip(rgb, 0.0, 1.0), gamma)
    lms = lin @ _RGB2LMS.T - _LMS0
    return (lms @ _dkl_matrix().T) * _DKL_SCALE


def _subsample_axis(a: np.ndarray, axis: int) -> np.ndarray:
    n = a.shape[axis]
    out_n = n // 2
    pad = [(0, 0)] * a.ndim
    pad[axis] = (2, 3)
    padded = np.pad(a, pad)
    ones = np.pad(np.ones(n), (2, 3))
    idx = 2 * np.arange(out_n)  # output j covers input 2j-2 .. 2j+3
    acc = sum(k * np.take(padded, idx + t, axis=axis) for t, k in enumerate(_LOWPASS6))
    norm = sum(k * ones[idx + t] for t, k in enumerate(_LOWPASS6))
    shape = [1] * a.ndim
    shape[axis] = out_n
    return acc / norm.reshape(shape)


def _subsample(a: np.ndarray) -> np.ndarray:
    """iNVT ``lowPass6`` + decimation by 2 along both axes; ``a`` is ``H x W [x C]``.

    Output ``j`` of an axis is ``sum_t k_t a[2j - 2 + t] / sum_t k_t`` over the taps that fall
    inside the image (``k = [1 5 10 10 5 1]``: the truncated, renormalised edge kernels of iNVT).
    An axis of <= 10 samples is left as it is (as the package does).
    """
    h, w = a.shape[:2]
    if h <= 10 or w <= 10:
        for axis in (1, 0):
            if a.shape[axis] > 10:
                a = _subsample_axis(a, axis)
        return a
    # both axes at once in OpenCV (zero border, anchor at tap 2), then decimate and renormalise
    k = (_LOWPASS6 / _LOWPASS6.sum()).reshape(-1, 1)
    f = cv2.sepFilter2D(a, cv2.CV_64F, k, k, anchor=(2, 2), borderType=cv2.BORDER_CONSTANT)
    f = f[: 2 * (h // 2): 2, : 2 * (w // 2): 2]

    def norm(n: int) -> np.ndarray:
        ones = np.pad(np.ones(n), (2, 3))
        idx = 2 * np.arange(n // 2)
        return sum(kk * ones[idx + t] for t, kk in enumerate(_LOWPASS6)) / _LOWPASS6.sum()

    scale = np.outer(norm(h), norm(w))
    return f / (scale[..., None] if f.ndim == 3 else scale)


def _working_size(h: int, w: int, maxsize: int) -> tuple[int, int]:
    if w >= h:
        return max(1, int(round(h / w * maxsize))), maxsize
    return maxsize, max(1, int(round(w / h * maxsize)))


def _feature_maps(rgb: np.ndarray, opts: dict) -> list[tuple[str, np.ndarray]]:
    levels = tuple(int(x) for x in opts["levels"])
    size = _working_size(rgb.shape[0], rgb.shape[1], int(opts["salmapmaxsize"]))
    pyramid = [rgb]
    for _ in range(max(levels)):
        nxt = _subsample(pyramid[-1])
        if min(nxt.shape[:2]) < 3:
            break
        pyramid.append(nxt)
    gabors = {angle: (gabor_kernel(angle, 0.0), gabor_kernel(angle, 90.0)) for angle in opts["gaborangles"]}
    maps: list[tuple[str, np.ndarray]] = []
    for level in levels:
        if level >= len(pyramid):
            continue
        img = pyramid[level]
        intensity = img.max(axis=2)
        if "D" in opts["channels"]:
            dkl = rgb2dkl(img, float(opts["dkl_gamma"]))
            for k in range(3):
                maps.append(("D", imresize(dkl[..., k], size)))
        if "I" in opts["channels"]:
            maps.append(("I", imresize(intensity, size)))
        if "O" in opts["channels"]:
            for angle, (g0, g90) in gabors.items():
                o = np.abs(filter2d(intensity, g0)) + np.abs(filter2d(intensity, g90))
                maps.append(("O", imresize(attenuate_borders(o, 13), size)))
    return maps


def activation_weights(maps: np.ndarray, sigma: float, dtype=np.float32) -> np.ndarray:
    """Markov matrices of a stack of ``K x h x w`` min-maxed maps, ``K x n x n`` (``n = h w``).

    ``M[k, i, j] = exp(-|p_i - p_j|^2 / (2 sigma^2)) |A_k[i] - A_k[j]|`` (edge j -> i, pixel
    positions in map pixels, row-major), each column divided by its sum (a column of zeros, a
    pixel equal to every other, stays zero). Stored in ``dtype``: float32 by default (half the
    memory traffic of the K x n x n stack; the equilibrium changes by ~1e-7 relative, far below
    the package's tol = 1e-4).
    """
    k, h, w = maps.shape
    rr, cc = np.divmod(np.arange(h * w), w)
    d2 = (rr[:, None] - rr[None, :]) ** 2 + (cc[:, None] - cc[None, :]) ** 2
    proximity = np.exp(-d2 / (2.0 * sigma ** 2)).astype(dtype)
    flat = maps.reshape(k, h * w).astype(dtype)
    m = np.abs(flat[:, :, None] - flat[:, None, :])
    m *= proximity[None]
    col = m.sum(axis=1, keepdims=True)
    np.divide(m, col, out=m, where=col > 0)
    return m


def stationary_distribution(markov: np.ndarray, tol: float, max_iterations: int = 10000) -> np.ndarray:
    """Equilibrium of each column-stochastic ``n x n`` matrix of a ``K x n x n`` stack
    (``principalEigenvectorRaw.m``): ``v <- M v`` from ``1 / n`` until ``||v_old - v||_2 <= tol``,
    per matrix, then ``v / sum(v)``. Returns ``K x n`` (float64).

    The chains step together as one batched product; once at most half of the chains in the
    working stack are still running, the stack is cut down to those (a converged chain is frozen
    at the value of the step that met the tolerance, as in the package).
    """
    k, n, _ = markov.shape
    v = np.full((k, n), 1.0 / n, dtype=markov.dtype)
    idx = np.arange(k)  # chains in the working stack
    stack = markov
    alive = np.ones(k, dtype=bool)  # ... and which of them still run
    for _ in range(int(max_iterations)):
        if not alive.any():
            break
        if 2 * int(alive.sum()) <= idx.size:
            idx, stack, alive = idx[alive], stack[alive], np.ones(int(alive.sum()), dtype=bool)
        current = v[idx]
        new = np.einsum("kij,kj->ki", stack, current)
        df = np.sqrt(((new - current) ** 2).sum(axis=1))
        v[idx[alive]] = new[alive]
        alive &= df > tol
    v = v.astype(np.float64)
    s = v.sum(axis=1, keepdims=True)
    return np.divide(v, s, out=np.zeros_like(v), where=s > 0)


def _gauss3(std: float) -> np.ndarray:
    half = max(1, int(math.ceil(1.5 * std)))
    x = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-x ** 2 / (2 * std ** 2))
    return g / g.sum()


def gbvs(rgb: np.ndarray, **options) -> np.ndarray:
    """GBVS map of an ``H x W x 3`` uint8 image (module docstring), ``H x W`` float64 in [0, 1].

    Options (defaults in :data:`DEFAULTS`): ``salmapmaxsize``, ``levels``, ``gaborangles``,
    ``sigma_frac_act``, ``tol``, ``normalization_power``, ``border_attenuation``, ``blurfrac``,
    ``channels`` (a subset of ``"DIO"``), ``dkl_gamma``, ``max_iterations``.
    """
    opts = with_defaults("gbvs", options, DEFAULTS)
    h, w = rgb.shape[:2]
    if min(h, w) < 128:
        raise ValueError(f"gbvs needs an image of at least 128 x 128 pixels (as the authors' code), got {h} x {w}")
    img = rgb.astype(np.float64) / 255.0
    named = _feature_maps(img, opts)
    stack = np.stack([mat2gray(m) for _, m in named])
    live = stack.reshape(len(stack), -1).max(axis=1) > 0  # a constant feature map has no edges
    size = stack.shape[1:]
    activation = np.zeros(stack.shape)
    if live.any():
        sigma = float(opts["sigma_frac_act"]) * float(np.mean(size))
        markov = activation_weights(stack[live], sigma)
        v = stationary_distribution(markov, float(opts["tol"]), int(opts["max_iterations"]))
        activation[live] = v.reshape((-1, *size))
    normalised = activation ** float(opts["normalization_power"])
    master = np.zeros(size)
    for channel in dict.fromkeys(c for c, _ in named):
        master += sum(normalised[i] for i, (c, _) in enumerate(named) if c == channel)
    master = mat2gray(attenuate_borders(master, int(opts["border_attenuation"])))
    k = _gauss3(float(opts["blurfrac"]) * max(size))
    master = mat2gray(filter2d(master, np.outer(k, k)))
    return mat2gray(imresize(master, (h, w)))
