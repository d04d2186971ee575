"""Itti, Koch and Niebur 1998 (IEEE PAMI 20(11)): centre-surround feature pyramids and N(.).

The paper's recipe (``docs/classical-saliency-and-popout.md`` §2.1), with the blanks filled from
Walther's SaliencyToolbox as the GBVS package ships it:

1. ``I = (r + g + b) / 3``; ``r, g, b`` divided by ``I`` where ``I > max(I) / 10`` (0 elsewhere);
   broadly tuned colours ``R = r - (g + b) / 2``, ``G = g - (r + b) / 2``,
   ``B = b - (r + g) / 2``, ``Y = (r + g) / 2 - |r - g| / 2 - b``, negatives clipped to 0.
2. Dyadic Gaussian pyramids with 9 scales (0 = the image, 8 = 1/256) of ``I, R, G, B, Y``
   (Burt-Adelson 5-tap ``[1 4 6 4 1] / 16``, OpenCV ``pyrDown``); orientation pyramids
   ``O(s, theta) = |I(s) * g_0| + |I(s) * g_90|`` for theta = 0, 45, 90, 135 degrees
   (SaliencyToolbox Gabor filters: std 2, elongation 2, period pi px, 27 x 27).
3. Centre scales ``c = 2, 3, 4``, surround ``s = c + delta``, ``delta = 3, 4``; the surround is
   interpolated bilinearly to the centre's size and subtracted: ``|I(c) - I(s)|``,
   ``|(R(c) - G(c)) - (G(s) - R(s))|``, ``|(B(c) - Y(c)) - (Y(s) - B(s))|``,
   ``|O(c, theta) - O(s, theta)|``: 42 feature maps.
4. ``N(.)`` (:func:`dissect.classical._common.max_normalize`): min-max to [0, 10], times
   ``(10 - m)^2`` with ``m`` the mean of the local maxima >= 1 (SaliencyToolbox's version).
5. Conspicuity maps at scale 4 (each map resized to scale 4 and added):
   ``I = sum N(I(c, s))``, ``C = sum N(RG(c, s)) + N(BY(c, s))``,
   ``O = sum_theta N(sum_{c, s} N(O(c, s, theta)))``; ``S = (N(I) + N(C) + N(O)) / 3``.
6. ``S`` is resized bicubically (MATLAB ``imresize``) to the image and min-maxed to [0, 1].
   No winner-take-all scanpath and, by default, no final blur (the GBVS package's
   ``ittiblurfrac = 0``; SMILER's IKN uses ``blurfrac = 0.03``: a Gaussian of std
   ``blurfrac * max(map size)`` on the scale-4 map, replicated borders).
"""
from __future__ import annotations

import cv2
import numpy as np

from dissect.classical._common import filter2d, gabor_kernel, imresize, mat2gray, max_normalize, with_defaults

__all__ = ["itti", "DEFAULTS"]

DEFAULTS = {
    "centers": (2, 3, 4),
    "deltas": (3, 4),
    "angles": (0, 45, 90, 135),
    "output_scale": 4,
    "blurfrac": 0.0,
}


def _pyramid(a: np.ndarray, n: int) -> list[np.ndarray]:
    out = [a]
    for _ in range(n - 1):
        out.append(cv2.pyrDown(out[-1]))
    return out


def _to(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if a.shape == shape:
        return a
    return cv2.resize(a, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def itti(rgb: np.ndarray, **options) -> np.ndarray:
    """Itti-Koch-Niebur map of an ``H x W x 3`` uint8 image, ``H x W`` float64 in [0, 1].

    Options: ``centers`` (2, 3, 4), ``deltas`` (3, 4), ``angles`` (0, 45, 90, 135),
    ``output_scale`` (4), ``blurfrac`` (0: no final blur).
    """
    opts = with_defaults("itti", options, DEFAULTS)
    h, w = rgb.shape[:2]
    img = rgb.astype(np.float64) / 255.0
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    intensity = (r + g + b) / 3.0
    keep = intensity > intensity.max() / 10.0
    safe = np.where(keep, intensity, 1.0)
    r, g, b = (np.where(keep, c / safe, 0.0) for c in (r, g, b))
    red = np.maximum(r - (g + b) / 2, 0)
    green = np.maximum(g - (r + b) / 2, 0)
    blue = np.maximum(b - (r + g) / 2, 0)
    yellow = np.maximum((r + g) / 2 - np.abs(r - g) / 2 - b, 0)
    centers = tuple(int(c) for c in opts["centers"])
    deltas = tuple(int(d) for d in opts["deltas"])
    n_scales = max(centers) + max(deltas) + 1
    pyr = {name: _pyramid(np.ascontiguousarray(ch), n_scales)
           for name, ch in (("I", intensity), ("R", red), ("G", green), ("B", blue), ("Y", yellow))}
    out_scale = int(opts["output_scale"])
    target = pyr["I"][out_scale].shape
    used = sorted({c for c in centers} | {c + d for c in centers for d in deltas})
    orient = {}
    for angle in opts["angles"]:
        g0, g90 = gabor_kernel(angle, 0.0), gabor_kernel(angle, 90.0)
        orient[angle] = {s: np.abs(filter2d(pyr["I"][s], g0)) + np.abs(filter2d(pyr["I"][s], g90)) for s in used}

    def across(center_maps, surround_maps) -> list[np.ndarray]:
        maps = []
        for c in centers:
            for d in deltas:
                s = c + d
                maps.append(np.abs(center_maps(c) - _to(surround_maps(s), pyr["I"][c].shape)))
        return maps

    def conspicuity(maps) -> np.ndarray:
        return sum(_to(max_normalize(m), target) for m in maps)

    i_bar = conspicuity(across(lambda c: pyr["I"][c], lambda s: pyr["I"][s]))
    rg = across(lambda c: pyr["R"][c] - pyr["G"][c], lambda s: pyr["G"][s] - pyr["R"][s])
    by = across(lambda c: pyr["B"][c] - pyr["Y"][c], lambda s: pyr["Y"][s] - pyr["B"][s])
    c_bar = conspicuity(rg + by)
    o_bar = sum(max_normalize(conspicuity(across(lambda c, a=a: orient[a][c], lambda s, a=a: orient[a][s])))
                for a in opts["angles"])
    saliency = (max_normalize(i_bar) + max_normalize(c_bar) + max_normalize(o_bar)) / 3.0
    if float(opts["blurfrac"]) > 0:
        std = float(opts["blurfrac"]) * max(saliency.shape)
        saliency = cv2.GaussianBlur(saliency, (0, 0), std, std, borderType=cv2.BORDER_REPLICATE)
    return mat2gray(imresize(saliency, (h, w)))
