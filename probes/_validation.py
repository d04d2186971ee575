"""Input validation of :mod:`probes.metrics` (package-private): a map checked once, and argument checks.

:func:`as_float_map` reads a map (numpy array, torch tensor or nested list) into a :class:`Map`:
its values, min, max and whether it is constant, which :func:`probes.metrics.prepare` hands out
so that several metrics validate a map once. The checks themselves (real, finite, non-empty,
2-D) and the dtype-aware constancy rule are :func:`datasets.fixations.checked_map` and
:func:`datasets.fixations.is_constant_range`, shared with :func:`datasets.fixations.resize_map`.
:func:`validated_maps` validates the maps of one call and their common shape, :func:`as_support` reads a
binary map, :func:`check_count` and :func:`check_real` check scalar arguments. The rules are
documented in :mod:`probes.metrics`.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from datasets.fixations import checked_map, is_constant_range

__all__ = ["RESIZE_HINT", "Map", "SAFE_MAX", "SAFE_MIN", "rescale", "as_float_map", "validated_maps", "as_support",
           "check_count", "check_real"]

RESIZE_HINT = (
    "maps must be at the same resolution: resize the saliency map to the fixation map's size "
    "with bilinear interpolation and half-pixel centres "
    "(torch.nn.functional.interpolate(..., mode='bilinear', align_corners=False))"
)


class Map:
    """A validated map: its input array, min, max, constancy, and float64 values on demand.

    ``values`` is the float64 map, multiplied by a power of two when its magnitude is extreme
    (:func:`rescale`): exact, and every metric of :mod:`probes.metrics` is invariant to the map's scale, so the
    whole finite float64 range scores as the same map scaled to order 1 would.
    """

    __slots__ = ("raw", "lo", "hi", "constant", "_values")

    def __init__(self, raw: np.ndarray, lo: float, hi: float, constant: bool) -> None:
        self.raw, self.lo, self.hi, self.constant = raw, lo, hi, constant
        self._values = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.raw.shape

    @property
    def values(self) -> np.ndarray:
        if self._values is None:
            self._values = rescale(self.raw.astype(np.float64, copy=False), self.lo, self.hi)
        return self._values

    def value_range(self) -> tuple[float, float]:
        """Min and max of :attr:`values` (known from validation: no pass over the map)."""
        lo, hi = rescale(np.array([self.lo, self.hi]), self.lo, self.hi)
        return float(lo), float(hi)

    def minmaxed_at(self, index: np.ndarray) -> np.ndarray:
        """``minmaxed()[index]`` (the same values) without min-maxing the whole map.

        ``index``: a bool map of the map's shape, or flat (row-major) pixel indices of any shape."""
        lo, hi = self.value_range()
        v = self.values
        out = v[index] if index.dtype == np.bool_ else v.ravel()[index]
        out = np.subtract(out, lo)
        out /= hi - lo
        return out

    def minmaxed(self) -> np.ndarray:
        """``(values - min) / (max - min)``, a new array (caller excludes constant maps)."""
        lo, hi = self.value_range()
        out = np.subtract(self.values, lo)
        out /= hi - lo
        return out


# Beyond these magnitudes, squares or sums of a map's values could overflow or underflow.
SAFE_MAX, SAFE_MIN = 2.0 ** 100, 2.0 ** -100


def rescale(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``arr`` times ``2^-e`` so that ``max |arr|`` lies in [0.5, 1) when it is outside
    ``[2^-100, 2^100]``; unchanged otherwise. A power of two scales exactly (no rounding) and
    every metric of :mod:`probes.metrics` is scale-invariant, so ordinary maps keep bit-identical results
    while maps up to 1.8e308 (or down to subnormals) no longer overflow when squared or summed."""
    big = max(abs(lo), abs(hi))
    if big == 0.0 or SAFE_MIN <= big <= SAFE_MAX:
        return arr
    return np.ldexp(arr, -int(np.frexp(big)[1]))


def as_float_map(x: Any, name: str) -> Map:
    """Validate ``x`` as a finite 2-D real map (its float64 values, min, max and constancy).

    :func:`datasets.fixations.checked_map` checks it (the constancy tolerance uses the dtype
    ``x`` arrives in); every finite float64 value is valid (extreme magnitudes are rescaled
    exactly, :class:`Map`). A :class:`Map` is returned as it is (validated once by ``prepare``).

    Raises:
        ValueError: naming ``name``: not real numeric, not 2-D, empty, NaN or inf.
    """
    if isinstance(x, Map):  # validated once by prepare()
        return x
    arr, lo, hi, eps = checked_map(x, name)
    return Map(arr, lo, hi, is_constant_range(lo, hi, eps))


def validated_maps(**named: Any) -> list[Map]:
    """Validate several maps with :func:`as_float_map` and check that they share one shape."""
    checked = [as_float_map(x, name) for name, x in named.items()]
    names = list(named)
    first = checked[0].shape
    for name, m in zip(names[1:], checked[1:]):
        if m.shape != first:
            raise ValueError(
                f"{names[0]} has shape {first} but {name} has shape {m.shape}; "
                + RESIZE_HINT
            )
    return checked


def as_support(m: Map, name: str) -> np.ndarray:
    """Binary map (nonzero = on) from a validated map; an empty map is a ``ValueError``."""
    on = m.raw if m.raw.dtype == np.bool_ else m.raw != 0
    if not (m.lo != 0 or m.hi != 0):
        raise ValueError(f"{name} is empty (no nonzero pixel); the metric needs at least one")
    return on


def check_count(value: Any, name: str, minimum: int) -> int:
    """An integer-valued real ``>= minimum`` (inf, NaN, bools, strings: ``ValueError`` naming ``name``)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not ok or not math.isfinite(value) or value != math.floor(value) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def check_real(value: Any, name: str, positive: bool = False) -> float:
    """A finite real number (``> 0`` if ``positive``); otherwise ``ValueError`` naming ``name``."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not ok or not math.isfinite(value) or (positive and not value > 0):
        need = "a finite number > 0" if positive else "a finite number"
        raise ValueError(f"{name} must be {need}, got {value!r}")
    return float(value)
