"""Fixation points -> pixels, binary fixation maps and fixation density maps.

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

from typing import Sequence

import warnings

import numpy as np
from scipy import ndimage

__all__ = [
    "fixation_pixels",
    "fixations_in_image",
    "dropped_fixations_message",
    "fixation_map",
    "density_map",
    "duration_density_map",
    "center_bias_map",
    "rescale_points",
    "resize_fixation_map",
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


def fixation_pixels(
    x: Sequence[float],
    y: Sequence[float],
    shape: Sequence[int],
    one_based: bool = True,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Pixel indices of fixation points by MATLAB rounding, clamped to the image.

    1-based input: ``col = clamp(floor(x + 0.5), 1, W) - 1`` (OSIE ``computeFixationMaps.m``);
    0-based input: ``col = clamp(floor(x + 0.5), 0, W - 1)``; rows likewise with ``y`` and ``H``.
    Duplicates are kept (one entry per point).

    Args:
        x: column coordinates, shape ``(N,)``.
        y: row coordinates, shape ``(N,)``.
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


def fixations_in_image(
    x: Sequence[float],
    y: Sequence[float],
    shape: Sequence[int],
    one_based: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
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


def fixation_map(
    x: Sequence[float],
    y: Sequence[float],
    shape: Sequence[int],
    one_based: bool = True,
) -> np.ndarray:
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


def density_map(
    fixations: np.ndarray,
    sigma: float = 24.0,
    *,
    weights: np.ndarray | None = None,
    normalize: bool = True,
    truncate: float = 3.5,
    mode: str = "constant",
) -> np.ndarray:
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


def duration_density_map(
    x: Sequence[float],
    y: Sequence[float],
    durations: Sequence[float],
    shape: Sequence[int],
    sigma: float = 20.0,
    one_based: bool = True,
    *,
    truncate: float = 3.5,
) -> np.ndarray:
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


def rescale_points(
    x: Sequence[float],
    y: Sequence[float],
    from_shape: Sequence[int],
    to_shape: Sequence[int],
    one_based: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
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
