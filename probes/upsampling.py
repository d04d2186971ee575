"""Exact bilinear upsampling algebra: interpolation matrices, per-axis factors, the upsampled std.

For a unit map ``A`` (``h x w``) and an image of ``H x W`` pixels, ``up(A) = Uy A Ux^T`` where
``Uy`` (``H x h``) and ``Ux`` (``W x w``) are the interpolation matrices of bilinear resizing with
half-pixel centres and edge clamping (``torch.nn.functional.interpolate(mode="bilinear",
align_corners=False)``, no antialias; digest section 1). The statistics of ``up(A)`` are small
``h x w`` contractions (digest section 3):

* mean: ``mu = cy^T A cx / (H W)`` with ``cy = Uy^T 1``, ``cx = Ux^T 1``;
* variance: ``||Uy B Ux^T||_F^2 / (H W)`` with ``B = A - mu`` (bilinear weights sum to 1 per pixel,
  so ``up(A) - mu = up(B)``). With ``Uy^T Uy = Ry^T Ry`` this is ``||Ry B Rx^T||_F^2 / (H W)``:
  a sum of squares (never negative, no cancellation). ``Uy^T Uy`` is tridiagonal, so ``Ry`` is its
  upper-bidiagonal Cholesky factor and the product costs ``O(h w)`` per unit (when an axis is
  *down*sampled, ``Uy^T Uy`` is singular and ``Ry`` is ``Uy``'s dense QR factor instead).

The std is the population std of the whole upsampled map (digest section 2).

Dead units (we fix): a unit is *dead* on an image when its ``h x w`` map is exactly constant
(``max == min``, the rule of He et al.'s demo), or when the std of its upsampled map is at most
``DEAD_RTOL * max|A|``. The second clause only catches maps whose upsampled variation is at the
level of float64 rounding of their values (e.g. a checkerboard that bilinear *down*sampling
averages out); no map coming from float32 activations with any real variation is that flat, and
the z-score of such a map would be rounding noise.

:class:`probes.regions.RegionScorer` builds its region kernels from these factors, and
:class:`probes.regions_torch.TorchRegionScorer` redoes the std on a device with them. All
arithmetic is float64.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = ["DEAD_RTOL", "ResizedAxis", "interpolation_matrix", "resized_axis", "std_and_dead", "upsampled_std"]

# A unit whose upsampled std is <= DEAD_RTOL * max|A| is dead (see the module docstring).
DEAD_RTOL = 1e-12


# --------------------------------------------------------------------------- interpolation


def _source_indices(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Left/right source index and weight of every output sample, as PyTorch computes them.

    ATen (``area_pixel_compute_source_index``, ``guard_index_and_lambda``) with
    ``align_corners=False`` and an output size (no scale factor): ``scale = n_in / n_out``,
    ``src = max(scale * (i + 0.5) - 0.5, 0)``, ``i0 = min(floor(src), n_in - 1)``,
    ``i1 = i0 + 1`` clamped to ``n_in - 1``, ``w1 = clip(src - i0, 0, 1)``, ``w0 = 1 - w1``.
    """
    scale = np.float64(n_in) / np.float64(n_out)
    src = scale * (np.arange(n_out, dtype=np.float64) + 0.5) - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = np.clip(src - i0, 0.0, 1.0)
    w0 = 1.0 - w1
    return i0, i1, w0, w1


@functools.lru_cache(maxsize=64)
def interpolation_matrix(n_out: int, n_in: int) -> np.ndarray:
    """The ``n_out x n_in`` matrix of 1-D bilinear resizing with half-pixel centres.

    ``interpolation_matrix(H, h) @ A @ interpolation_matrix(W, w).T`` equals
    ``F.interpolate(A[None, None], size=(H, W), mode="bilinear", align_corners=False)`` (no
    antialias) up to float64 rounding. Each row holds at most two adjacent non-zero weights that
    sum to 1; at the borders the source index is clamped (edge replication).

    Args:
        n_out: output length (image pixels), >= 1.
        n_in: input length (map cells), >= 1.

    Returns:
        float64 array, read-only (it is cached and shared).

    Raises:
        ValueError: a length below 1.
    """
    n_out, n_in = int(n_out), int(n_in)
    if n_out < 1 or n_in < 1:
        raise ValueError(f"interpolation sizes must be >= 1, got n_out={n_out}, n_in={n_in}")
    i0, i1, w0, w1 = _source_indices(n_out, n_in)
    u = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(u, (rows, i0), w0)
    np.add.at(u, (rows, i1), w1)
    u.setflags(write=False)
    return u


@dataclass(frozen=True, eq=False)
class ResizedAxis:
    """Everything about one resized axis (``n_in`` map cells -> ``n_out`` pixels)."""

    n_out: int
    n_in: int
    i0: np.ndarray  # n_out: left source index of each pixel
    i1: np.ndarray
    w0: np.ndarray  # n_out: its weight
    w1: np.ndarray
    colsum: np.ndarray  # n_in: U^T 1
    r_diag: np.ndarray | None  # Cholesky factor of U^T U (upper bidiagonal) ...
    r_super: np.ndarray | None
    r_dense: np.ndarray | None  # ... or, when U^T U is singular (downsampling), U's QR factor
    identity: bool  # n_out == n_in: U = I exactly (R = I: its step is skipped, bit-identically)


@functools.lru_cache(maxsize=64)
def resized_axis(n_out: int, n_in: int) -> ResizedAxis:
    """Source indices, weights, column sums and ``R`` factor of resizing ``n_in`` cells to ``n_out`` (cached)."""
    u = interpolation_matrix(n_out, n_in)
    i0, i1, w0, w1 = _source_indices(n_out, n_in)
    gram = u.T @ u  # tridiagonal: a pixel mixes two adjacent cells only
    r_diag = r_super = r_dense = None
    if n_out >= n_in:
        try:
            # The Cholesky factor of a tridiagonal SPD matrix is bidiagonal (no fill-in).
            low = np.linalg.cholesky(gram)
            if np.all(np.isfinite(low)) and np.all(np.diag(low) > 0):
                r_diag = np.ascontiguousarray(np.diag(low))
                r_super = np.ascontiguousarray(np.diag(low, -1))
        except np.linalg.LinAlgError:
            pass
    if r_diag is None:
        # Downsampling: U^T U is singular; U's own QR factor keeps ||R B|| accurate even for
        # maps in (or near) U's null space, which the dead-unit rule must recognise.
        r_dense = np.linalg.qr(u, mode="r")
    identity = bool(n_out == n_in and np.array_equal(u, np.eye(n_in)))
    return ResizedAxis(n_out, n_in, i0, i1, w0, w1, u.sum(axis=0), r_diag, r_super, r_dense, identity)


def _apply_r(ax: ResizedAxis, x: np.ndarray, dim: int) -> np.ndarray:
    """``R @ x`` along ``dim`` (1 = rows, 2 = columns) of a ``C x h x w`` stack."""
    if ax.r_dense is None:
        if dim == 1:
            out = ax.r_diag[None, :, None] * x
            out[:, :-1, :] += ax.r_super[None, :, None] * x[:, 1:, :]
        else:
            out = ax.r_diag[None, None, :] * x
            out[:, :, :-1] += ax.r_super[None, None, :] * x[:, :, 1:]
        return out
    if dim == 1:
        return np.einsum("ih,chw->ciw", ax.r_dense, x, optimize=True)
    return np.einsum("jw,chw->chj", ax.r_dense, x, optimize=True)



# --------------------------------------------------------------------------- upsampled std


# Units per block in std_and_dead: ~512 KB of float64 per buffer keeps every pass in cache and
# avoids page-faulting fresh multi-megabyte temporaries on each call (measured 2-5x slower).
_BLOCK_ELEMENTS = 1 << 16


@functools.lru_cache(maxsize=32)
def _band_weights(ay: ResizedAxis, ax: ResizedAxis, n_units: int) -> tuple[np.ndarray, ...]:
    """Bidiagonal ``Ry``/``Rx`` entries tiled over ``n_units`` flattened ``h x w`` maps.

    On the flat array ``x`` (unit, row, column order), ``Ry`` along rows is
    ``d_row * x + e_row * x[w:]`` and ``Rx`` along columns ``d_col * x + e_col * x[1:]``. The
    super-diagonal weight is 0 on the last row/column, so a shifted read that crosses into the
    next row or unit contributes nothing.
    """
    h, w = ay.n_in, ax.n_in
    d_row = np.tile(np.repeat(ay.r_diag, w), n_units)
    e_row = np.tile(np.repeat(np.append(ay.r_super, 0.0), w), n_units)[:-w]
    d_col = np.tile(ax.r_diag, n_units * h)
    e_col = np.tile(np.append(ax.r_super, 0.0), n_units * h)[:-1]
    return d_row, e_row, d_col, e_col


def _sum_squares_band(centred: np.ndarray, ay: ResizedAxis, ax: ResizedAxis, weights: tuple, bufs: tuple) -> np.ndarray:
    """``||Ry B Rx^T||_F^2`` per unit for bidiagonal ``Ry``, ``Rx``, on contiguous flat buffers."""
    n, h, w = centred.shape
    m = n * h * w
    d_row, e_row, d_col, e_col = weights
    x = centred.reshape(-1)
    t1, t2, tmp = (b[:m] for b in bufs)
    # An identity axis (map as large as the image along it) has R = I: d = 1, e = 0, and
    # x * 1 + 0 * y == x exactly (up to the sign of a zero, which squaring drops), so its step
    # is skipped without changing a bit.
    if ay.identity:
        t1 = x
    else:
        np.multiply(x, d_row[:m], out=t1)
        np.multiply(x[w:], e_row[:m - w], out=tmp[:m - w])
        t1[:m - w] += tmp[:m - w]
    if ax.identity:
        t2 = t1
    else:
        np.multiply(t1, d_col[:m], out=t2)
        np.multiply(t1[1:], e_col[:m - 1], out=tmp[:m - 1])
        t2[:m - 1] += tmp[:m - 1]
    t = t2.reshape(n, h * w)
    return np.einsum("ij,ij->i", t, t)


def std_and_dead(arr: np.ndarray, mean: np.ndarray, hi: np.ndarray, lo: np.ndarray,
                 ay: ResizedAxis, ax: ResizedAxis) -> tuple[np.ndarray, np.ndarray]:
    """Std of every upsampled map and the dead flags, given each map's upsampled mean and max/min.

    ``var = ||Ry (A - mu) Rx^T||_F^2 / (H W)``: centring first keeps the sum of squares free of
    the ``E[up^2] - mu^2`` cancellation (activations can be huge and nearly flat).

    Args:
        arr: ``C x h x w`` float64 maps (finite, C-ordered).
        mean, hi, lo: ``C`` upsampled means, and the maps' max and min.
        ay, ax: :func:`resized_axis` of the rows (``H``, ``h``) and the columns (``W``, ``w``).

    Returns:
        ``(std, dead)``, ``C`` float64 and ``C`` bool.
    """
    n_units, h, w = arr.shape
    n_pix = float(ay.n_out) * float(ax.n_out)
    sq = np.empty(n_units, dtype=np.float64)
    step = min(n_units, max(1, _BLOCK_ELEMENTS // (h * w)))
    band = ay.r_dense is None and ax.r_dense is None
    if band:
        weights = _band_weights(ay, ax, step)
        bufs = tuple(np.empty(step * h * w) for _ in range(3))
    for start in range(0, n_units, step):
        stop = min(start + step, n_units)
        centred = arr[start:stop] - mean[start:stop, None, None]
        if band:
            sq[start:stop] = _sum_squares_band(centred, ay, ax, weights, bufs)
        else:
            t = _apply_r(ax, _apply_r(ay, centred, 1), 2)
            sq[start:stop] = np.einsum("cij,cij->c", t, t)
    std = np.sqrt(sq / n_pix)
    dead = (hi == lo) | (std <= DEAD_RTOL * np.maximum(np.abs(hi), np.abs(lo)))
    return std, dead


def upsampled_std(unit_maps: np.ndarray, mean: np.ndarray, image_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Population std of every bilinearly upsampled map, and the dead-unit flags (module docstring).

    Args:
        unit_maps: ``C x h x w`` float64 maps (finite).
        mean: ``C`` means of the upsampled maps (the last column of the projection).
        image_shape: ``(H, W)`` of the image.

    Returns:
        ``(std, dead)``, ``C`` float64 and ``C`` bool.
    """
    arr = np.asarray(unit_maps, dtype=np.float64)
    n_units, h, w = arr.shape
    flat = arr.reshape(n_units, h * w)
    hi, lo = flat.max(axis=1, initial=-np.inf), flat.min(axis=1, initial=np.inf)
    ay, ax = resized_axis(int(image_shape[0]), h), resized_axis(int(image_shape[1]), w)
    return std_and_dead(arr, np.asarray(mean, dtype=np.float64), hi, lo, ay, ax)
