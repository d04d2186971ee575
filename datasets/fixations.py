"""Fixations -> maps: everything that turns human fixations into maps (it scores nothing: :mod:`probes`).

* points -> pixels: :func:`fixation_pixels`, :func:`fixations_in_image`, :func:`rescale_points`;
* binary fixation maps: :func:`fixation_map`, :func:`resize_fixation_map`; a dataset's maps kept
  compactly (:class:`FixationMaps`, :func:`sample_fixation_map`, :func:`fixation_pool`) and the
  other images' fixations, s-AUC's negatives (:func:`other_images_fixations`);
* densities: :func:`density_map`, :func:`duration_density_map`, :func:`human_density` (OSIE or
  Ebrahimpour et al.'s recipe, from a Sample or a fixation table); centre bias: :func:`center_bias_map`;
* the inter-observer maps that :func:`probes.gaze.leave_one_subject_out` scores: :func:`loso_pairs`
  (one subject's fixations, the others' density), :func:`split_half_pairs` (two half-groups' densities);
* resizing maps: :func:`resize_map` (bilinear, half-pixel centres; torch is imported there only),
  with the rule that a map is constant (:func:`is_constant`), shared with :mod:`probes.metrics`.

Conventions (digest section 1): ``x`` is the column, ``y`` the row, shapes are ``(H, W)``.
Raw coordinates are 1-based (OSIE / MATLAB) unless ``one_based=False``; 0-based coordinates
are pixel centres (pixel ``i`` covers ``[i - 0.5, i + 0.5)``).

A point becomes a pixel by MATLAB's ``round`` (half away from zero, i.e. ``floor(x + 0.5)``
for the non-negative coordinates of an image), as OSIE's ``computeFixationMaps.m`` does; a
point rounded one pixel beyond the border is clamped to it, a point further outside is dropped
and counted (:func:`fixations_in_image`). ``np.round`` rounds half to even and would move every
``.5`` coordinate with an even integer part by one pixel.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence as SequenceABC
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

__all__ = [
    "fixation_pixels", "fixations_in_image", "dropped_fixations_message", "rescale_points",
    "fixation_map", "resize_fixation_map", "density_map", "duration_density_map", "center_bias_map",
    "check_fixation_table", "human_density", "loso_pairs", "split_half_pairs",
    "FixationMaps", "sample_fixation_map", "fixation_pool", "other_images_fixations",
    "CONSTANT_ULPS", "dtype_eps", "is_constant_range", "checked_map", "is_constant", "resize_map",
]

# scipy.ndimage boundary modes accepted by density_map(mode=...).
_MODES = ("constant", "nearest", "reflect", "mirror", "wrap")


def _shape(shape: Sequence[int], name: str = "shape") -> tuple[int, int]:
    """Validate an ``(H, W)`` pair of positive integers."""
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (H, W) of positive integers, got {shape!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive (H, W), got {shape!r}")
    return h, w


def _points(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Validate matching, finite 1-D coordinate arrays."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("fixation coordinates contain NaN or inf; drop those fixations first")
    return x, y


def _sigma(sigma: float, name: str = "sigma") -> float:
    sigma = float(sigma)
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"{name} must be positive, got {sigma}")
    return sigma


def _minmax(a: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] (OSIE ``normalise.m``); a constant map becomes all ones."""
    lo, hi = a.min(), a.max()
    if hi == lo:
        # Only reachable when every pixel gets the same mass (e.g. a fully fixated map with a
        # kernel of radius 0): every pixel is equally, maximally fixated.
        return np.ones_like(a)
    return (a - lo) / (hi - lo)


def _rounded_pixels(x: Sequence[float], y: Sequence[float], shape: Sequence[int],
                    one_based: bool) -> tuple[int, int, np.ndarray, np.ndarray]:
    """``(H, W, rows, cols)``: 0-based pixel indices by MATLAB rounding, not yet clamped."""
    h, w = _shape(shape)
    x, y = _points(x, y)
    offset = 1 if one_based else 0
    # MATLAB round == floor(v + 0.5) for v >= -0.5; np.round would round half to even.
    col = np.floor(x + 0.5).astype(np.int64) - offset
    row = np.floor(y + 0.5).astype(np.int64) - offset
    return h, w, row, col


def fixation_pixels(x: Sequence[float], y: Sequence[float], shape: Sequence[int],
                    one_based: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """Pixel indices of fixation points by MATLAB rounding, clamped to the image.

    1-based input: ``col = clamp(floor(x + 0.5), 1, W) - 1`` (OSIE ``computeFixationMaps.m``);
    0-based input: ``col = clamp(floor(x + 0.5), 0, W - 1)``; rows likewise with ``y`` and ``H``.
    Duplicates are kept (one entry per point).

    Args:
        x, y: column and row coordinates, shape ``(N,)`` each.
        shape: image ``(H, W)``.
        one_based: whether the coordinates are 1-based (OSIE, MATLAB) or 0-based pixel centres.

    Returns:
        ``(rows, cols, n_clamped)``: 0-based int64 indices, shape ``(N,)`` each, and the number of
        points with at least one coordinate outside the image that were clamped to its border.
        "Outside" follows the pixel-area convention: 1-based ``x`` outside ``[0.5, W + 0.5)``
        (0-based: ``[-0.5, W - 0.5)``). OSIE has none; SALICON-style data may.

    Raises:
        ValueError: mismatched lengths, NaN/inf coordinates, or a non-positive shape.
    """
    h, w, row, col = _rounded_pixels(x, y, shape, one_based)
    outside = (col < 0) | (col > w - 1) | (row < 0) | (row > h - 1)
    return np.clip(row, 0, h - 1), np.clip(col, 0, w - 1), int(outside.sum())


def fixations_in_image(x: Sequence[float], y: Sequence[float], shape: Sequence[int],
                       one_based: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Pixels of the fixation points that lie in the image; points far outside are dropped.

    Points are rounded as in :func:`fixation_pixels`. A point whose rounded pixel is at most one
    pixel beyond the border (MATLAB rounding of a point on the edge, e.g. 1-based ``x = 800.6``
    on an 800-px-wide image) is clamped to the border and counted; a point further out is
    dropped: clamping it would put a fixation in a corner that nobody looked at (all points at
    (5000, 9000) would all "fixate" the bottom-right pixel).

    Returns:
        ``(rows, cols, keep, n_clamped)``: 0-based pixel indices of the kept points, the
        boolean mask of kept points over the input (``(N,)``), and how many kept points were
        clamped. ``int((~keep).sum())`` points were dropped.

    Raises:
        ValueError: as in :func:`fixation_pixels`.
    """
    h, w, row, col = _rounded_pixels(x, y, shape, one_based)
    keep = (col >= -1) & (col <= w) & (row >= -1) & (row <= h)
    col, row = col[keep], row[keep]
    clamped = (col < 0) | (col > w - 1) | (row < 0) | (row > h - 1)
    return np.clip(row, 0, h - 1), np.clip(col, 0, w - 1), keep, int(clamped.sum())


def dropped_fixations_message(n_dropped: int, n_fixations: int, n_images: int | None = None) -> list[str]:
    """Console lines for fixations dropped outside their image (none when nothing was dropped);
    a second, louder line when more than 5% were dropped."""
    if not n_dropped:
        return []
    share = n_dropped / max(n_fixations, 1)
    where = f" of {n_images} images" if n_images is not None else ""
    lines = [f"{n_dropped} of {n_fixations} fixations ({share:.1%}) lay more than a pixel outside their image{where} "
             "and were dropped"]
    if share > 0.05:
        lines.append(f"more than 5% of the fixations ({share:.1%}) were outside their image: check the coordinate "
                     "convention (0- or 1-based: --one-based) and that the fixations belong to these image sizes")
    return lines


def fixation_map(x: Sequence[float], y: Sequence[float], shape: Sequence[int], one_based: bool = True) -> np.ndarray:
    """Binary ``H x W`` map of the fixated pixels; duplicates collapse (digest section 1).

    Points more than a pixel outside the image are dropped with a warning that counts them;
    points within a pixel of the border are clamped (:func:`fixations_in_image`).

    Args:
        x, y, shape, one_based: as in :func:`fixation_pixels`.

    Returns:
        bool array ``H x W``; all False when there are no points.

    Raises:
        ValueError: as in :func:`fixation_pixels`.
    """
    h, w = _shape(shape)
    rows, cols, keep, _ = fixations_in_image(x, y, (h, w), one_based)
    if not keep.all():
        warnings.warn(f"{int((~keep).sum())} of {keep.size} fixation points lie more than a pixel outside the "
                      f"{h} x {w} image and were dropped", UserWarning, stacklevel=2)
    out = np.zeros((h, w), dtype=bool)
    out[rows, cols] = True
    return out


def density_map(fixations: np.ndarray, sigma: float = 24.0, *, weights: np.ndarray | None = None,
                normalize: bool = True, truncate: float = 3.5, mode: str = "constant") -> np.ndarray:
    """Fixation density map: a fixation (count, weight) map blurred with a Gaussian.

    ``D = G_sigma * (F . weights)`` (correlation, ``same`` size), then min-max to [0, 1] when
    ``normalize``. OSIE recipe: binary map, ``sigma = 24``, zero padding (``imfilter(map, g, 0)``),
    min-max. We use ``scipy.ndimage.gaussian_filter``: a separable, sum-1, odd-size kernel of radius
    ``int(truncate * sigma + 0.5)`` px. The default ``truncate = 3.5`` gives radius 84 at sigma 24,
    the 3.5 sigma per side that OSIE's 168 x 168 ``fspecial`` kernel covers; beyond 3.5 sigma the
    Gaussian is < 0.22% of its peak. OSIE's even-size kernel is off-centre by half a pixel; ours is
    centred, so we differ from OSIE's JPEGs by that half-pixel shift (and by their JPEG quantisation).

    Args:
        fixations: ``H x W`` binary, count or non-negative float weight map.
        sigma: Gaussian standard deviation in pixels (> 0).
        weights: optional non-negative ``H x W`` map multiplied into ``fixations`` before blurring.
        normalize: min-max the result to [0, 1] (a constant result becomes all ones).
        truncate: kernel radius in units of sigma (> 0).
        mode: scipy.ndimage boundary mode; ``"constant"`` is OSIE's zero padding, ``"nearest"``
            pysaliency's.

    Returns:
        float64 ``H x W`` density map.

    Raises:
        ValueError: non-2-D or NaN/negative input, shape mismatch with ``weights``, an empty
            (all-zero) map, ``sigma <= 0``, ``truncate <= 0`` or an unknown ``mode``.
    """
    raw = np.asarray(fixations)
    if raw.ndim != 2 or raw.size == 0:
        raise ValueError(f"fixations must be a non-empty H x W map, got shape {raw.shape}")
    sigma = _sigma(sigma)
    truncate = _sigma(truncate, "truncate")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if raw.dtype == bool and weights is None and mode == "constant":
        # A binary map (the usual case): its fixated pixels weigh 1, nothing to validate, and the
        # float64 copy of the whole map is only needed if scipy has to blur it.
        ys, xs = np.divmod(np.flatnonzero(raw), raw.shape[1])
        if ys.size == 0:
            raise ValueError(_EMPTY_FIXATIONS)
        d = _sparse_gaussian_density(raw.shape, ys, xs, np.ones(ys.size), sigma, truncate)
        if d is None:
            d = ndimage.gaussian_filter(raw.astype(np.float64), sigma, mode=mode, cval=0.0, truncate=truncate)
    else:
        f = np.asarray(raw, dtype=np.float64)
        if weights is not None:
            wts = np.asarray(weights, dtype=np.float64)
            if wts.shape != f.shape:
                raise ValueError(f"weights have shape {wts.shape} but fixations {f.shape}; pass an H x W map")
            if not np.all(np.isfinite(wts)) or np.any(wts < 0):
                raise ValueError("weights must be finite and non-negative")
            f = f * wts
        if not np.all(np.isfinite(f)) or np.any(f < 0):
            raise ValueError("fixations must be finite and non-negative (a binary, count or weight map)")
        if not np.any(f > 0):
            raise ValueError(_EMPTY_FIXATIONS)
        d = _gaussian_density(f, sigma, truncate, mode)
    return _minmax(d) if normalize else d


_EMPTY_FIXATIONS = "fixation map is empty (no fixated pixel with positive weight); a density map needs one"


def _gaussian_kernel(sigma: float, truncate: float) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian: radius ``int(truncate * sigma + 0.5)``, divided by its sum."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / (sigma * sigma) * x ** 2)
    return phi / phi.sum()


def _gaussian_density(f: np.ndarray, sigma: float, truncate: float, mode: str) -> np.ndarray:
    """``ndimage.gaussian_filter(f, sigma, mode, cval=0, truncate)``, fast for sparse maps.

    With zero padding the blurred map is a sum over the fixated pixels ``p`` of
    ``f_p k(y - y_p) k(x - x_p)`` (``k`` the truncated, sum-1 kernel of scipy), i.e. the
    ``H x n`` by ``n x W`` product ``A B`` with ``A[y, p] = f_p k(y - y_p)``,
    ``B[p, x] = k(x - x_p)``: ``O(n H W)`` instead of scipy's ``O((2 r + 1) H W)``. Fixated
    pixels in the same row share one row of ``B`` (their column kernels are summed first).
    Equal to scipy up to float64 rounding (a few 1e-16 relative); other boundary modes and
    dense maps use scipy itself.
    """
    if mode == "constant":
        ys, xs = np.divmod(np.flatnonzero(f), f.shape[1])  # as np.nonzero, faster
        d = _sparse_gaussian_density(f.shape, ys, xs, f[ys, xs], sigma, truncate)
        if d is not None:
            return d
    return ndimage.gaussian_filter(f, sigma, mode=mode, cval=0.0, truncate=truncate)


def _sparse_gaussian_density(shape, ys: np.ndarray, xs: np.ndarray, values: np.ndarray, sigma: float,
                             truncate: float) -> np.ndarray | None:
    """The zero-padded blur of the pixels ``(ys, xs)`` (raster order) weighing ``values``, as
    the ``A B`` product of :func:`_gaussian_density`; ``None`` where scipy is cheaper (dense maps)."""
    k = _gaussian_kernel(sigma, truncate)
    radius = k.size // 2
    h, w = shape
    rows = np.unique(ys)
    if rows.size >= 2 * radius + 1:  # scipy is cheaper for dense maps
        return None
    # kpad[radius + d] = k(d) for |d| <= radius, 0 elsewhere, for any offset d in (-H, H) or (-W, W).
    n = max(h, w)
    kpad = np.zeros(2 * n + 2 * radius + 1)
    kpad[n: n + 2 * radius + 1] = k
    centre = n + radius
    # B: one row per fixated image row, the column blur of that row's fixations.
    row_of = np.searchsorted(rows, ys)
    b = np.zeros((rows.size, w))
    cols = np.arange(w)
    np.add.at(b, row_of, values[:, None] * kpad[centre + cols[None, :] - xs[:, None]])
    a = kpad[centre + np.arange(h)[:, None] - rows[None, :]]  # H x n_rows: the row blur
    return a @ b


def duration_density_map(x: Sequence[float], y: Sequence[float], durations: Sequence[float], shape: Sequence[int],
                         sigma: float = 20.0, one_based: bool = True, *, truncate: float = 3.5) -> np.ndarray:
    """Duration-weighted fixation density map (Ebrahimpour et al. 2019 human heat maps).

    ``w_i = d_i / max(d)``; ``F[p] = sum of w_i over fixations i at pixel p`` (duplicates add);
    ``D = minmax(G_sigma * F)`` with zero padding, as :func:`density_map`.

    Args:
        x, y: fixation coordinates, shape ``(N,)``, N >= 1 (points far outside the image are
            dropped, those within a pixel clamped: :func:`fixations_in_image`).
        durations: fixation durations (any unit, e.g. ms), non-negative, shape ``(N,)``.
        shape: image ``(H, W)``.
        sigma: Gaussian standard deviation in pixels ([Ebr19]: 20).
        one_based: coordinate convention, as in :func:`fixation_pixels`.
        truncate: kernel radius in units of sigma, as in :func:`density_map`.

    Returns:
        float64 ``H x W`` map in [0, 1].

    Raises:
        ValueError: no fixations, mismatched lengths, NaN coordinates or durations, negative
            durations, all durations zero, non-positive shape or ``sigma <= 0``.
    """
    h, w = _shape(shape)
    xa, ya = _points(x, y)
    d = np.asarray(durations, dtype=np.float64).ravel()
    if d.size != xa.size:
        raise ValueError(f"durations must have one entry per fixation: {d.size} durations for {xa.size} fixations")
    if xa.size == 0:
        raise ValueError("no fixations: a density map needs at least one")
    if not np.all(np.isfinite(d)) or np.any(d < 0):
        raise ValueError("durations must be finite and non-negative")
    if d.max() == 0:
        raise ValueError("all durations are zero: no fixation carries weight")
    sigma = _sigma(sigma)
    rows, cols, keep, _ = fixations_in_image(xa, ya, (h, w), one_based)
    if not keep.any():
        raise ValueError(f"all {keep.size} fixations lie more than a pixel outside the {h} x {w} image")
    f = np.zeros((h, w), dtype=np.float64)
    np.add.at(f, (rows, cols), d[keep] / d.max())  # Ebrahimpour et al.: weights normalised by the max
    return density_map(f, sigma, truncate=truncate)


def center_bias_map(shape: Sequence[int], sigma_frac: float = 0.25) -> np.ndarray:
    """Centre-bias prior: a Gaussian centred on the image, isotropic in relative units.

    ``B[r, c] = exp(-(r - r0)^2 / (2 (s H)^2) - (c - c0)^2 / (2 (s W)^2))`` with the centre
    ``(r0, c0) = ((H - 1) / 2, (W - 1) / 2)`` in 0-based pixel centres and ``s = sigma_frac``,
    divided by its maximum (for even sizes the peak falls between pixels).

    Args:
        shape: ``(H, W)``.
        sigma_frac: standard deviation as a fraction of the height (rows) and width (columns).

    Returns:
        float64 ``H x W`` map, symmetric under flips, maximum exactly 1.

    Raises:
        ValueError: non-positive shape or ``sigma_frac <= 0``.
    """
    h, w = _shape(shape)
    s = _sigma(sigma_frac, "sigma_frac")
    gy = np.exp(-((np.arange(h) - (h - 1) / 2) ** 2) / (2 * (s * h) ** 2))
    gx = np.exp(-((np.arange(w) - (w - 1) / 2) ** 2) / (2 * (s * w) ** 2))
    b = np.outer(gy, gx)
    return b / b.max()


def rescale_points(x: Sequence[float], y: Sequence[float], from_shape: Sequence[int], to_shape: Sequence[int],
                   one_based: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Scale fixation coordinates from one image size to another (pixel-area convention).

    Pixel edges map to pixel edges: 1-based ``x2 = (x - 0.5) * W2 / W1 + 0.5``; 0-based
    ``x2 = (x + 0.5) * W2 / W1 - 0.5``; rows likewise with ``H``. Same geometry as bilinear
    resizing with ``align_corners=False``.

    Args:
        x, y: coordinates, shape ``(N,)``.
        from_shape: ``(H1, W1)`` the coordinates refer to.
        to_shape: ``(H2, W2)`` to map them to.
        one_based: coordinate convention (kept in the output).

    Returns:
        ``(x2, y2)`` float64 arrays, shape ``(N,)`` (not rounded, not clamped).

    Raises:
        ValueError: mismatched lengths, NaN coordinates or a non-positive shape.
    """
    h1, w1 = _shape(from_shape, "from_shape")
    h2, w2 = _shape(to_shape, "to_shape")
    x, y = _points(x, y)
    half = 0.5 if one_based else -0.5
    return (x - half) * (w2 / w1) + half, (y - half) * (h2 / h1) + half


def resize_fixation_map(fixation_map: np.ndarray, to_shape: Sequence[int]) -> np.ndarray:
    """Move a binary fixation map to another size, point by point.

    Each fixated pixel centre is moved with :func:`rescale_points` and rounded with the MATLAB
    rule (:func:`fixation_pixels`); pixels landing on the same target collapse. Unlike image
    interpolation this keeps a binary map binary and never smears one fixation over 4 pixels.

    Args:
        fixation_map: ``H x W`` map; nonzero = fixated.
        to_shape: ``(H2, W2)``.

    Returns:
        bool ``H2 x W2`` map.

    Raises:
        ValueError: a map that is not 2-D or a non-positive ``to_shape``.
    """
    f = np.asarray(fixation_map)
    if f.ndim != 2 or f.size == 0:
        raise ValueError(f"fixation_map must be a non-empty H x W map, got shape {f.shape}")
    h2, w2 = _shape(to_shape, "to_shape")
    rows, cols = np.nonzero(f)
    x2, y2 = rescale_points(cols, rows, f.shape, (h2, w2), one_based=False)
    r2, c2, _ = fixation_pixels(x2, y2, (h2, w2), one_based=False)
    out = np.zeros((h2, w2), dtype=bool)
    out[r2, c2] = True
    return out


# --------------------------------------------------------------------------- human densities


def check_fixation_table(fixations: Any) -> pd.DataFrame:
    """``fixations`` if it is a non-empty DataFrame with 1-based ``x, y`` columns; else ``ValueError``."""
    if not isinstance(fixations, pd.DataFrame) or not {"x", "y"} <= set(fixations.columns):
        raise ValueError("fixations must be a pandas DataFrame with 1-based columns x, y (plus subject, duration), "
                         f"got {type(fixations).__name__}")
    if len(fixations) == 0:
        raise ValueError("fixations table is empty: a density map needs at least one fixation")
    return fixations


def _density_from_table(table: pd.DataFrame, shape: tuple[int, int], sigma: float,
                        duration_weighted: bool) -> np.ndarray:
    x, y = table["x"].to_numpy(), table["y"].to_numpy()
    if duration_weighted:
        if "duration" not in table.columns:
            raise ValueError("duration_weighted=True needs a 'duration' column in the fixations table")
        # Ebrahimpour et al. 2019: each fixation weighted by duration / max duration.
        return duration_density_map(x, y, table["duration"].to_numpy(), shape, sigma=sigma)
    # OSIE recipe: binary map of the unique fixated pixels, blurred, min-maxed.
    return density_map(fixation_map(x, y, shape), sigma)


def human_density(source: Any, sigma: float = 24.0, *, duration_weighted: bool = False) -> np.ndarray:
    """Human fixation density map of one image, at the image's resolution.

    OSIE recipe (default): the binary map of the unique fixated pixels blurred with a Gaussian of
    ``sigma`` px, zero padding, min-maxed to [0, 1] (:func:`density_map`).
    ``duration_weighted=True``: Ebrahimpour et al.'s recipe (duration / max duration weights,
    :func:`duration_density_map`; they used ``sigma = 20``).

    Args:
        source: a :class:`datasets.base.Sample` (its ``fixation_map``, or its ``fixations`` table
            when there is no map or ``duration_weighted``), or a pair ``(fixations, shape)`` with a
            DataFrame of 1-based ``x, y`` (and ``duration``) and the image ``(H, W)``.
        sigma: Gaussian standard deviation in pixels.
        duration_weighted: weight fixations by duration (needs the table's ``duration`` column).

    Returns:
        float64 ``H x W`` map in [0, 1].

    Raises:
        ValueError: no fixations, an empty map or table, a missing ``duration`` column, or a bad sigma.
    """
    if isinstance(source, tuple):
        if len(source) != 2:
            raise ValueError("human_density takes a Sample or a pair (fixations, shape)")
        table, shape = source
        return _density_from_table(check_fixation_table(table), tuple(shape), sigma, duration_weighted)
    shape = tuple(np.asarray(source.image).shape[:2])
    fix_map = getattr(source, "fixation_map", None)
    table = getattr(source, "fixations", None)
    if fix_map is not None and not duration_weighted:
        return density_map(np.asarray(fix_map, dtype=bool), sigma)
    if table is None:
        raise ValueError(f"image {getattr(source, 'image_id', '?')!r} has no fixations"
                         + (" table (duration_weighted needs one)" if fix_map is not None else "")
                         + "; a human density map needs a dataset with fixations")
    return _density_from_table(check_fixation_table(table), shape, sigma, duration_weighted)


# --------------------------------------------------------------------------- inter-observer maps


def _subjects(fixations: Any, shape: Sequence[int]) -> tuple[pd.DataFrame, np.ndarray, tuple[int, int]]:
    """The checked table, its subjects in order of first appearance (at least 2), ``(H, W)``."""
    table = check_fixation_table(fixations)
    if "subject" not in table.columns:
        raise ValueError("the fixations table has no 'subject' column: inter-observer maps need subjects")
    subjects = pd.unique(table["subject"])
    if len(subjects) < 2:
        raise ValueError(f"the fixations table has {len(subjects)} subject(s); inter-observer maps need 2 or more")
    return table, subjects, (int(shape[0]), int(shape[1]))


def loso_pairs(fixations: pd.DataFrame, shape: Sequence[int], sigma: float = 24.0, *,
               duration_weighted: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Leave one subject out: each subject's fixations and the density of everyone else's.

    For each subject ``s`` of the ``subject`` column, in order of first appearance, yields
    ``(held, others)``: ``held`` the bool ``H x W`` :func:`fixation_map` of ``s``'s fixations,
    ``others`` the :func:`human_density` of the other subjects' fixations (OSIE recipe with
    ``sigma``, or duration-weighted). A predictor ``others`` scored against ``held`` and averaged
    over subjects is the inter-observer ceiling of the fixation metrics (OSIE
    ``computeInterSubjectAUC.m``). Lazy: one pair in memory at a time.

    Args:
        fixations: DataFrame with 1-based ``x, y`` and ``subject`` (``duration`` if weighted).
        shape: image ``(H, W)``.
        sigma: Gaussian standard deviation of the densities, in pixels.
        duration_weighted: Ebrahimpour et al.'s duration weights for the densities.

    Raises:
        ValueError: (at the call) a table without ``x, y`` or empty, without ``subject`` or with
            < 2 subjects; (while iterating) a bad shape or sigma, a missing ``duration``.
    """
    table, subjects, shape = _subjects(fixations, shape)

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for subject in subjects:
            held = table[table["subject"] == subject]
            others = _density_from_table(table[table["subject"] != subject], shape, sigma, duration_weighted)
            yield fixation_map(held["x"].to_numpy(), held["y"].to_numpy(), shape), others
    return pairs()


def split_half_pairs(fixations: pd.DataFrame, shape: Sequence[int], sigma: float = 24.0, *, n_splits: int = 10,
                     seed: int = 0, duration_weighted: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Split half: the densities of two random half-groups of the subjects, ``n_splits`` times.

    ``rng = np.random.default_rng(seed)``; for each draw ``perm = rng.permutation(n)`` over the
    ``n`` subjects in order of first appearance; half A = the subjects at ``perm[:n // 2]``, half
    B = the rest. Yields ``(density_a, density_b)`` (:func:`human_density` recipe), the map
    ceiling's predictor and target. Lazy: one pair in memory at a time.

    Args:
        fixations, shape, sigma, duration_weighted: as in :func:`loso_pairs`.
        n_splits: number of draws (>= 1).
        seed: seed of the draws.

    Raises:
        ValueError: as :func:`loso_pairs`, or ``n_splits`` not a positive integer.
    """
    if isinstance(n_splits, bool) or int(n_splits) != n_splits or n_splits < 1:
        raise ValueError(f"n_splits must be a positive integer, got {n_splits!r}")
    table, subjects, shape = _subjects(fixations, shape)

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        n = len(subjects)
        rng = np.random.default_rng(seed)
        for _ in range(int(n_splits)):
            perm = rng.permutation(n)
            in_a = table["subject"].isin(subjects[perm[: n // 2]])
            yield (_density_from_table(table[in_a], shape, sigma, duration_weighted),
                   _density_from_table(table[~in_a], shape, sigma, duration_weighted))
    return pairs()


# --------------------------------------------------------------------------- a dataset's fixations

_NO_FIXATIONS = "the gaze comparison needs a dataset with fixations (osie, salicon, folder with fixations.csv)"


class FixationMaps(SequenceABC):
    """A dataset's binary fixation maps, stored as their fixated pixels (OSIE: ~140 indices per
    image instead of 480,000 booleans); item ``i`` is rebuilt as a bool ``H x W`` map on access.
    ``append(fix)`` adds a map (nonzero = fixated); ``n_points(i)`` counts its fixated pixels.
    ``datasets.base.Subset(maps, indices)`` views some of the maps (:func:`fixation_pool`)."""

    def __init__(self) -> None:
        self._items: list[tuple[np.ndarray, np.ndarray, tuple[int, int]]] = []

    def append(self, fix: np.ndarray) -> None:
        rows, cols = np.nonzero(fix)
        self._items.append((rows.astype(np.int32), cols.astype(np.int32), fix.shape))

    def __len__(self) -> int:
        return len(self._items)

    def n_points(self, index: int) -> int:
        return len(self._items[index][0])

    def __getitem__(self, index: int) -> np.ndarray:
        rows, cols, shape = self._items[index]
        out = np.zeros(shape, dtype=bool)
        out[rows, cols] = True
        return out


def sample_fixation_map(sample: Any) -> np.ndarray | None:
    """A Sample's bool fixation map: its ``fixation_map``, else :func:`fixation_map` of its
    ``fixations`` table (1-based ``x, y``) at ``sample.shape``, else ``None`` (no fixations)."""
    fix = getattr(sample, "fixation_map", None)
    if fix is not None:
        return np.asarray(fix, dtype=bool)
    table = getattr(sample, "fixations", None)
    if table is None:
        return None
    return fixation_map(table["x"].to_numpy(), table["y"].to_numpy(), sample.shape)


def fixation_pool(dataset: Any) -> tuple[FixationMaps, list[int]]:
    """Every image's fixated pixels (compactly) and the indices of the images that have any.

    One pass over ``dataset`` (:func:`sample_fixation_map` of each Sample). Returns ``(maps,
    usable)``: a :class:`FixationMaps` with one map per image, in dataset order, and the indices
    of the images with at least one fixated pixel. Every image's s-AUC negatives come from the
    others (``other_images_fixations(Subset(maps, usable), ...)``), so a study computes the pool
    once, before it scores, and hands it to each shard.

    Raises:
        ValueError: an empty dataset, an image without fixations, every fixation map empty.
    """
    n_total = len(dataset)
    if n_total == 0:
        raise ValueError(f"dataset {getattr(dataset, 'name', '')!r} has no images: check the data root")
    all_maps = FixationMaps()
    for i in range(n_total):
        sample = dataset[i]
        fix = sample_fixation_map(sample)
        if fix is None:
            raise ValueError(f"image {sample.image_id!r} has no fixations: {_NO_FIXATIONS}")
        all_maps.append(fix)
    usable = [i for i in range(n_total) if all_maps.n_points(i) > 0]
    if not usable:
        raise ValueError(f"every image's fixation map is empty: {_NO_FIXATIONS}")
    return all_maps, usable


def _binary_map(item: Any, index: int) -> np.ndarray:
    """The binary fixation map of a Sample or of a 2-D map."""
    fix = getattr(item, "fixation_map", item)
    if fix is None:
        raise ValueError(f"image {index} has no fixation map; s-AUC needs fixations on every image")
    fix = np.asarray(fix)
    if fix.ndim != 2:
        raise ValueError(f"item {index} must be a Sample or an H x W fixation map, got shape {fix.shape}")
    return fix != 0


def other_images_fixations(samples_or_maps: Sequence[Any], index: int, shape: Sequence[int], n_other: int = 10,
                           seed: int = 0) -> np.ndarray:
    """Union of the fixations of ``n_other`` other images, rescaled to this image (s-AUC negatives).

    Borji's shuffled AUC (MIT ``AUC_shuffled.m``, M = 10 other images). The other images are
    ``n = min(n_other, N - 1)`` distinct indices drawn without replacement from every index but
    ``index`` with ``numpy.random.default_rng([seed, index])`` (one reproducible, independent draw
    per image). Each one's binary fixation map is moved to ``shape`` point by point with
    :func:`resize_fixation_map` (pixel-area geometry, MATLAB rounding) and the maps are OR-ed.
    As in MIT, the current image's own fixations are not removed.

    Args:
        samples_or_maps: indexable sequence (or dataset) of Samples or ``H x W`` binary maps
            (e.g. a :class:`FixationMaps`).
        index: the current image's position (excluded from the draw).
        shape: the current image's ``(H, W)``.
        n_other: how many other images to pool (>= 1).
        seed: seed of the draw.

    Returns:
        bool ``H x W`` map.

    Raises:
        ValueError: fewer than 2 images, ``index`` out of range, ``n_other < 1``, an item without
            a fixation map.
    """
    n = len(samples_or_maps)
    if n < 2:
        raise ValueError(f"s-AUC needs at least 2 images (other images' fixations), got {n}")
    if not 0 <= int(index) < n:
        raise ValueError(f"index {index} out of range for {n} images")
    if int(n_other) != n_other or n_other < 1:
        raise ValueError(f"n_other must be a positive integer, got {n_other!r}")
    others = np.delete(np.arange(n), int(index))
    rng = np.random.default_rng([int(seed), int(index)])
    chosen = rng.choice(others, size=min(int(n_other), others.size), replace=False)
    shape = (int(shape[0]), int(shape[1]))
    out = np.zeros(shape, dtype=bool)
    for j in sorted(int(c) for c in chosen):
        fix = _binary_map(samples_or_maps[j], j)
        out |= fix if fix.shape == shape else resize_fixation_map(fix, shape)
    return out


# --------------------------------------------------------------------------- constancy and resizing

# Constancy tolerance in units of the input dtype's eps (probes.metrics docstring). float32
# bilinear upsampling of a constant map (F.interpolate, 7..56 px -> 37..800 px, values 1e-8..7e5)
# leaves at most 2.3 ulps of range; 16 gives margin and stays ~4e-15 relative in float64, far
# below any real dynamic range.
CONSTANT_ULPS = 16.0


def dtype_eps(dtype: Any) -> float:
    """Machine epsilon of a numpy or torch floating dtype; 0 (exact comparison) otherwise."""
    if getattr(dtype, "is_floating_point", None) is not None:  # torch.dtype
        if not dtype.is_floating_point:
            return 0.0
        import torch  # already loaded: the caller holds a tensor
        return float(torch.finfo(dtype).eps)
    return float(np.finfo(dtype).eps) if np.issubdtype(dtype, np.floating) else 0.0


def is_constant_range(lo: float, hi: float, eps: float) -> bool:
    """``max - min <= 16 eps max(|max|, |min|)`` (16 = ``CONSTANT_ULPS``), ``eps`` of the input
    dtype (0: exact). Evaluated with both sides halved, so that ``max - min`` cannot overflow for
    maps spanning the whole float64 range."""
    return hi / 2 - lo / 2 <= CONSTANT_ULPS * eps * max(abs(hi), abs(lo)) / 2


def checked_map(x: Any, name: str = "map") -> tuple[np.ndarray, float, float, float]:
    """Validate ``x`` as a finite, non-empty 2-D real map: ``(values, min, max, eps)``.

    Torch tensors are read with ``.detach().cpu()`` (torch is not imported); floating values
    come back as float64, integer and bool maps as they are. ``eps`` is :func:`dtype_eps` of the
    dtype ``x`` arrives in (before the float64 conversion), the precision its constancy is judged
    in; nested lists read as numpy reads them (floats: float64, ints: exact).

    Raises:
        ValueError: naming ``name``: not real numeric, not 2-D, empty, NaN or inf.
    """
    eps = None  # from the numpy dtype, once it is known to be numeric
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        t = x.detach().cpu()
        eps = dtype_eps(t.dtype)
        if t.is_floating_point():  # also covers float16 / bfloat16, which numpy cannot hold
            t = t.double()
        x = t.numpy()
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)) \
            or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if eps is None:
        eps = dtype_eps(arr.dtype)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D H x W map, got shape {tuple(arr.shape)}; "
                         "squeeze batch/channel axes and call the metric once per map")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {tuple(arr.shape)}); pass an H x W map with H, W >= 1")
    if arr.dtype != np.float64 and np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)  # float16/32 inputs: convert once (float64 maps are used as they are)
    # NaN and inf reach the min or the max: two passes instead of an isfinite map.
    lo, hi = float(arr.min()), float(arr.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ValueError(f"{name} contains NaN or inf in {bad} of {arr.size} pixels; "
                         "replace them (e.g. np.nan_to_num) before scoring")
    return arr, lo, hi, eps


def is_constant(x: Any) -> bool:
    """Whether a map is constant by the metrics' dtype-aware rule (:mod:`probes.metrics`).

    :func:`is_constant_range` of its min and max with ``eps`` of ``x``'s own floating dtype
    (numpy or torch), exact for integer and bool maps. Use it to count dead maps exactly as the
    metrics read them; pass the map in the dtype it was computed in. A map prepared by
    :func:`probes.metrics.prepare` is read from what it already knows. Raises ``ValueError``
    for what is not a finite, non-empty, 2-D real map (:func:`checked_map`).
    """
    known = getattr(x, "constant", None)
    if isinstance(known, bool):  # probes.metrics.prepare()d: validated once already
        return known
    _, lo, hi, eps = checked_map(x)
    return is_constant_range(lo, hi, eps)


def resize_map(saliency: Any, shape: Sequence[int]) -> np.ndarray:
    """``h x w`` map (numpy or torch) -> ``H x W`` float64, bilinear with half-pixel centres
    (``align_corners=False``, identical to PIL's bilinear; digest section 1).

    Computed in float64. A map that is constant by :func:`is_constant` (judged in the map's own
    dtype) comes back exactly constant: interpolation weights that do not sum to exactly 1 would
    otherwise turn a dead map into rounding noise with a finite, meaningless NSS instead of NaN.
    Raises ``ValueError`` as :func:`is_constant`.
    """
    import torch
    import torch.nn.functional as F

    shape = (int(shape[0]), int(shape[1]))
    if isinstance(saliency, torch.Tensor):
        saliency = saliency.detach().cpu()
    if is_constant(saliency):
        return np.full(shape, float(saliency.reshape(-1)[0]))
    t = torch.as_tensor(np.asarray(saliency), dtype=torch.float64)
    if tuple(t.shape) != shape:
        t = F.interpolate(t[None, None], size=shape, mode="bilinear", align_corners=False)[0, 0]
    return t.numpy()
