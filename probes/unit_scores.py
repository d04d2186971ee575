"""Unit scores as exact fixed-point sums, and what is read off them: means, ranking, top-k means.

The arithmetic shared by :class:`probes.aggregate.UnitScoreAccumulator` and its permutation
null and bootstrap (:mod:`probes.null_bootstrap`): the same integers and the same definitions
serve the real scores, the permuted ones and the resampled ones.

Exactness (we fix): sums are stored as int64 fixed-point numbers in units of ``2**-32``. Each
score is rounded to the nearest multiple of ``2**-32`` before it is added (error <= ``2**-33``
~ 1.2e-10 per score and per mean, far below the 1e-5 agreement we promise), so adding and
merging are integer additions: shards merged in any order, a resumed run and a single pass give
bit-identical tables. Scores must satisfy ``|score| <= 2**20`` (a region NSS is bounded by
``sqrt(H W)``, a few hundred for 800 x 600 images); larger values raise ``ValueError``, and so
does a sum that would reach ``2**62`` in magnitude (``2**30`` in score units, well inside int64:
the guard is checked in float64 before adding, so sums never wrap).

Dead units (table time, ``dead_units=``): a NaN score (the unit's map was constant on that
image) is never added. ``"skip"``: the unit's score is the mean over the regions where it was
live (``n_valid`` of the category's ``n_regions``); a unit is *ranked* (enters top-k, counts,
p-values, labels) when ``n_valid >= max(1, min_valid * n_regions)``. ``"zero"`` (He et al.'s
code): a dead region scores 0, the score is ``sum / n_regions`` and every unit of a category
with regions is ranked.
"""
from __future__ import annotations

import numpy as np

__all__ = ["SCALE_BITS", "SCALE", "MAX_ABS_SCORE", "SUM_LIMIT", "DEAD_UNIT_POLICIES", "add_into",
           "as_slice", "check_dead_unit_policy", "check_sums", "group_sums", "means_and_ranked", "to_fixed_point",
           "top_k_means"]

SCALE_BITS = 32
MAX_ABS_SCORE = 2.0 ** 20
SCALE = 2.0 ** SCALE_BITS
SUM_LIMIT = 2.0 ** 62  # guard well inside int64 (2**63 - 1)
DEAD_UNIT_POLICIES = ("skip", "zero")


# --------------------------------------------------------------------------- fixed point


def check_sums(sums: np.ndarray, increment_bound: np.ndarray, layer: str) -> None:
    """Refuse an addition after which some ``|sum|`` could reach ``2**62`` (bound in float64).

    Sums and bounds are multiples of ``2**-32`` below ``2**63``, so the float64 test is exact
    where it matters (at the powers of two around the limit).

    Raises:
        ValueError: some ``|sum| + increment_bound`` reaches ``2**62``.
    """
    if sums.size and np.any(np.abs(sums).astype(np.float64) + increment_bound >= SUM_LIMIT):
        raise ValueError(
            f"layer {layer!r}: accumulated score sums would exceed the fixed-point range "
            f"(2**{62 - SCALE_BITS} in score units); split the dataset into shards and report them separately"
        )


def to_fixed_point(scores, layer: str, what: str = "scores") -> tuple[np.ndarray, np.ndarray, float]:
    """Validated ``(fixed, valid, max |score|)``: int64 multiples of ``2**-32`` (0 where NaN), the non-NaN mask.

    Raises:
        ValueError: scores not 2-D, infinite, or ``|score| > 2**20``.
    """
    if hasattr(scores, "detach"):  # torch tensor
        scores = scores.detach().cpu().numpy()
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"{what} must be C x R (units x regions), got shape {scores.shape}")
    if np.isinf(scores).any():
        raise ValueError(f"layer {layer!r}: {what} contain inf; a score is a finite number or NaN (dead unit)")
    valid = ~np.isnan(scores)
    values = np.where(valid, scores, 0.0)
    top = float(np.abs(values).max()) if values.size else 0.0
    if top > MAX_ABS_SCORE:
        raise ValueError(
            f"layer {layer!r}: |score| {top:.6g} exceeds {MAX_ABS_SCORE:.0f} (2**20), the "
            "fixed-point range; such a score signals a broken map, not a real NSS"
        )
    # Scaling by a power of two is exact; rint rounds half to even, deterministically.
    return np.rint(values * SCALE).astype(np.int64), valid, top


def group_sums(values: np.ndarray, groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Column sums of ``values`` (``C x n``) per group id: ``(present group ids, C x len(ids))``."""
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    if starts.size == g.size:  # one column per group (the null's columns are): no sums to take
        return g, (values if np.array_equal(order, np.arange(order.size)) else values[:, order])
    return g[starts], np.add.reduceat(values[:, order], starts, axis=1)


def as_slice(index):
    """Strictly ascending integers without a gap as a slice (else the index unchanged)."""
    if isinstance(index, np.ndarray) and index.ndim == 1 and index.size and index[-1] - index[0] == index.size - 1:
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


def add_into(a: np.ndarray, at: tuple, inc: np.ndarray) -> None:
    """``a[at] += inc`` for STRICTLY ASCENDING index arrays (as :func:`group_sums` gives), without
    fancy-indexed read-modify-write copies where a slice does: an index without gaps becomes a
    slice, and the null's two index arrays (``(:, replicate, category)``) one flat index on a
    ``C x (P K)`` view. Integer arithmetic, so the result is the same whichever way it is indexed."""
    arrays = [i for i, x in enumerate(at) if isinstance(x, np.ndarray)]
    if arrays == [1, 2] and a.ndim == 3 and a.flags.c_contiguous and isinstance(at[0], slice) and at[0] == slice(None):
        at = (slice(None), at[1] * a.shape[2] + at[2])
        a = a.reshape(a.shape[0], -1)  # a view (C-contiguous)
    at = tuple(as_slice(x) for x in at)
    arrays = [i for i, x in enumerate(at) if isinstance(x, np.ndarray)]
    if len(arrays) == 1 and all(x == slice(None) for i, x in enumerate(at) if i != arrays[0]):
        # One index array, whole slices elsewhere: np.take reads the entries ~7x faster than the
        # fancy read of ``a[at] += inc`` (the null's C x n scattered columns: 2.5 -> 0.4 ms).
        part = np.take(a, at[arrays[0]], axis=arrays[0])
        part += inc
        a[at] = part
        return
    a[at] += inc


# --------------------------------------------------------------------------- score definitions


def check_dead_unit_policy(dead_units: str, min_valid: float) -> float:
    """``min_valid`` as a float, after checking ``dead_units`` (``"skip"`` or ``"zero"``) and that
    ``min_valid`` is a fraction in ``[0, 1]``; ``ValueError`` naming the argument otherwise."""
    if dead_units not in DEAD_UNIT_POLICIES:
        raise ValueError(f"dead_units must be 'skip' or 'zero', got {dead_units!r}")
    min_valid = float(min_valid)
    if not 0.0 <= min_valid <= 1.0:
        raise ValueError(f"min_valid must be a fraction in [0, 1], got {min_valid}")
    return min_valid


def means_and_ranked(sums: np.ndarray, counts: np.ndarray, n_regions: np.ndarray, dead_units: str,
                     min_valid: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit scores (NaN where undefined) and the ranked mask, under a dead-unit policy.

    ``n_regions`` broadcasts against ``counts`` (the category's region count, real or weighted).
    """
    n_regions = np.broadcast_to(n_regions, counts.shape)
    denominator = counts if dead_units == "skip" else n_regions
    with np.errstate(divide="ignore", invalid="ignore"):
        means = sums.astype(np.float64) / SCALE / denominator
    means[denominator == 0] = np.nan
    if dead_units == "skip":
        ranked = (counts > 0) & (counts >= min_valid * n_regions)
    else:
        ranked = n_regions > 0
    return means, ranked


def top_k_means(scores: np.ndarray, ranked: np.ndarray, top_k: int) -> np.ndarray:
    """Mean of the ``top_k`` largest ranked scores along axis 0 (fewer: all of them; none: NaN)."""
    ordered = -np.sort(-np.where(ranked, scores, np.nan), axis=0)[:top_k]  # NaN sort last
    n = np.count_nonzero(np.isfinite(ordered), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.nansum(ordered, axis=0) / n, np.nan)
