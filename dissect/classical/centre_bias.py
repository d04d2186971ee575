"""The centre-bias baseline: the Gaussian the gaze reports use as their floor.

:func:`datasets.fixations.center_bias_map` with ``sigma_frac = 0.25`` of the image's height and
width; it ignores the image content (only its size matters).
"""
from __future__ import annotations

import numpy as np

from datasets.fixations import center_bias_map
from dissect.classical._common import with_defaults

__all__ = ["centre_bias", "DEFAULTS"]

DEFAULTS = {"sigma_frac": 0.25}


def centre_bias(rgb: np.ndarray, **options) -> np.ndarray:
    """Centre-bias map of the image's size, ``H x W`` float64 with maximum 1."""
    o = with_defaults("centre_bias", options, DEFAULTS)
    return center_bias_map(rgb.shape[:2], float(o["sigma_frac"]))
