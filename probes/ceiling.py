"""Human ceiling of region-wise NSS: leave one subject out, per region (``human_region_nss``).

For region ``r`` of an image and each subject ``s`` with at least one fixated pixel inside the
region: the density ``D_-s`` of the OTHER subjects (the OSIE recipe of
:func:`datasets.fixations.density_map`: the binary map of their unique fixated pixels blurred
with a Gaussian of ``sigma`` px, zero padding, kernel radius ``int(truncate * sigma + 0.5)``)
is z-scored over the whole image (population std) and averaged over ``s``'s unique fixated
pixels inside the mask: the region NSS a perfect model of "the others" gets on ``s``
(He et al. 2019 eq. 1 with the human density as the map). The region's value is the mean over
those subjects; a category's ``human_region_nss`` is the mean over its regions
(:meth:`probes.aggregate.UnitScoreAccumulator.add_ceiling`). Min-max normalisation does not
change an NSS, so it is skipped.

Exact closed form (no blurred map is materialised): with ``Gy`` (``H x H``) and ``Gx``
(``W x W``) the 1-D filter matrices of ``scipy.ndimage.gaussian_filter1d`` (same weights and
boundary), ``D = Gy F Gx^T`` and, for the others' pixels ``q``,
``mean = sum_q cy[y_q] cx[x_q] / (H W)`` (``c = G^T 1``),
``E[D^2] = sum_{q, q'} (Gy^T Gy)[y_q, y_q'] (Gx^T Gx)[x_q, x_q'] / (H W)`` and
``D(y, x) = sum_q Gy[y, y_q] Gx[x, x_q]``: ``O(n^2)`` per subject for ``n`` fixated pixels.

No ``subject`` column, fewer than two subjects, or no fixations table: every value is NaN
(datasets without subjects, e.g. pop-out arrays or a bare fixation map, have no ceiling).
"""
from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from datasets.fixations import fixation_pixels

__all__ = ["region_loso_nss", "region_loso_nss_at", "region_loso_nss_naive"]


@functools.lru_cache(maxsize=8)
def _filter_matrix(n: int, sigma: float, truncate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``G`` (``n x n``, ``G[:, j]`` = the filtered unit impulse at ``j``), ``G^T 1`` and ``G^T G``."""
    g = ndimage.gaussian_filter1d(np.eye(n), sigma, axis=0, mode="constant", cval=0.0, truncate=truncate)
    for a in (g,):
        a.setflags(write=False)
    gram = g.T @ g
    colsum = g.sum(axis=0)
    gram.setflags(write=False)
    colsum.setflags(write=False)
    return g, colsum, gram


def _subject_pixels(fixations, shape: tuple[int, int]) -> list[np.ndarray] | None:
    """Flat unique fixated-pixel indices of each subject (first-appearance order), or None."""
    if fixations is None or "subject" not in getattr(fixations, "columns", ()):
        return None
    height, width = shape
    subjects = fixations["subject"].to_numpy()
    # Rounding is per point, so all points at once, then split (no per-subject DataFrame copies).
    ys, xs, _ = fixation_pixels(fixations["x"].to_numpy(), fixations["y"].to_numpy(), shape)
    flat = ys * width + xs
    out = [np.unique(flat[subjects == subject]) for subject in dict.fromkeys(subjects.tolist())]
    return out if len(out) >= 2 else None


def region_loso_nss(fixations, shape, masks, sigma: float = 24.0, truncate: float = 3.5) -> np.ndarray:
    """Leave-one-subject-out region NSS of every region of one image (module docstring).

    Args:
        fixations: DataFrame with 1-based ``x, y`` and ``subject`` columns (a
            :class:`datasets.base.Sample`'s ``fixations``), or None.
        shape: image ``(H, W)``.
        masks: ``R x H x W`` bool region masks.
        sigma, truncate: the density's Gaussian (OSIE: 24 px, 3.5 sigma).

    Returns:
        ``R`` float64 values; NaN for a region no subject fixated (or with no ceiling at all).
    """
    shape = (int(shape[0]), int(shape[1]))
    masks = np.asarray(masks, dtype=bool).reshape(-1, *shape)
    flat_masks = masks.reshape(masks.shape[0], -1)
    return region_loso_nss_at(fixations, shape, lambda pixels: flat_masks[:, pixels], masks.shape[0], sigma, truncate)


def region_loso_nss_at(fixations, shape, masks_at, n_regions: int, sigma: float = 24.0,
                       truncate: float = 3.5) -> np.ndarray:
    """:func:`region_loso_nss` reading the masks only where it needs them (the subjects' pixels).

    ``masks_at(pixels)`` returns the ``R x n`` bool masks at flat (row-major) pixel indices, e.g.
    gathered from a larger stack and then row-selected, so no ``R x H x W`` copy is made.
    """
    shape = (int(shape[0]), int(shape[1]))
    out = np.full(int(n_regions), np.nan)
    per_subject = _subject_pixels(fixations, shape)
    if per_subject is None or n_regions == 0:
        return out
    height, width = shape
    gy, cy, gram_y = _filter_matrix(height, float(sigma), float(truncate))
    gx, cx, gram_x = _filter_matrix(width, float(sigma), float(truncate))
    totals = np.zeros(int(n_regions))
    n_subjects = np.zeros(int(n_regions), dtype=np.int64)
    n_pix = float(height) * float(width)
    for s, held in enumerate(per_subject):
        inside = masks_at(held)  # R x n_held
        if not inside.any():
            continue
        others = np.unique(np.concatenate([p for t, p in enumerate(per_subject) if t != s]))
        if others.size == 0:
            continue
        qy, qx = np.divmod(others, width)
        mean = float(cy[qy] @ cx[qx]) / n_pix
        second = float(np.einsum("ij,ij->", gram_y[np.ix_(qy, qy)], gram_x[np.ix_(qx, qx)])) / n_pix
        var = second - mean * mean
        if not var > 0:
            continue
        hy, hx = np.divmod(held, width)
        values = np.einsum("pq,pq->p", gy[np.ix_(hy, qy)], gx[np.ix_(hx, qx)])
        z = (values - mean) / np.sqrt(var)
        counts = inside.sum(axis=1)
        has = counts > 0
        totals[has] += (inside[has] @ z) / counts[has]
        n_subjects[has] += 1
    ok = n_subjects > 0
    out[ok] = totals[ok] / n_subjects[ok]
    return out


def region_loso_nss_naive(fixations, shape, masks, sigma: float = 24.0, truncate: float = 3.5) -> np.ndarray:
    """Reference for :func:`region_loso_nss` that blurs every leave-one-out map (slow; tests only)."""
    from datasets.fixations import density_map, fixation_map

    shape = (int(shape[0]), int(shape[1]))
    masks = np.asarray(masks, dtype=bool).reshape(-1, *shape)
    out = np.full(masks.shape[0], np.nan)
    if fixations is None or "subject" not in fixations.columns or fixations["subject"].nunique() < 2:
        return out
    values: list[list[float]] = [[] for _ in range(masks.shape[0])]
    for subject in fixations["subject"].unique():
        held = fixations[fixations["subject"] == subject]
        rest = fixations[fixations["subject"] != subject]
        d = density_map(fixation_map(rest["x"], rest["y"], shape), sigma, normalize=False, truncate=truncate)
        z = (d - d.mean()) / d.std()
        fix = fixation_map(held["x"], held["y"], shape)
        for r, m in enumerate(masks):
            if (fix & m).any():
                values[r].append(float(z[fix & m].mean()))
    for r, v in enumerate(values):
        if v:
            out[r] = float(np.mean(v))
    return out
