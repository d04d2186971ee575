"""Permutation null and bootstrap of the unit scores: the draws, the sums they add, their statistics.

:class:`probes.aggregate.UnitScoreAccumulator` keeps these sums next to the real ones, as the
same fixed-point integers (:mod:`probes.unit_scores`), so they merge and resume exactly as the
scores do; this module draws the permutations and weights, turns one image's null columns and
bootstrap weights into integer increments, and reads the statistics off the sums.

Permutation null (``n_null = P > 0``), statistics and definitions:

* The caller scores each image's unit maps also against the regions of the image paired with
  it by permutation ``p`` (:func:`null_permutation`: a uniformly random permutation of the
  dataset's images, seeded by ``(seed, p, N)``) and passes those scores with their category and
  ``p``. Per ``p``, unit ``j`` and category ``c`` the accumulator keeps the same fixed-point sum
  and live count as for the real pairing, so the *permuted unit score* ``s_j^p(c)`` is defined
  exactly like ``s_j(c)`` (same dead-unit rule; a permutation moves every region once, so
  ``n_regions`` is the real one).
* per-unit ``p_value`` = ``(1 + #{p : s_j^p(c) >= s_j(c)}) / (1 + P_j)``, ``P_j`` = the
  permutations in which the unit is ranked (all ``P`` with ``"zero"``); Phipson & Smyth's +1
  keeps it valid for random permutations. ``q_value``: Benjamini-Hochberg over the ranked units
  of a layer x category (statsmodels ``multipletests(method="fdr_bh")``).
* the top-k mean of the permuted scores, per permutation ``p``: ``T^p(c)`` = the mean of the k
  largest ``s_j^p(c)`` over the units ranked in ``p`` (each permutation is one fake dataset,
  and the maximum over units is taken inside it, exactly as for the observed ``T(c)``).
  ``null_top_k_mean`` = mean of ``T^p`` over ``p``; ``null_top_k_p95`` = its 95th percentile
  (``numpy.percentile``, linear); ``p_top_k`` = ``(1 + #{p : T^p >= T}) / (1 + P)``.
* ``count_significant`` = ranked units with ``q < alpha`` (0.05).
* Ties: "reaches" means ``>= observed - TIE_TOL`` (``1e-9``). A permutation that leaves the
  images a unit is live on in place reproduces the observed score, but through differently
  rounded sums (the null sums a category's regions before rounding, the real scores after);
  such a tie must count, conservatively, and 1e-9 is far above that rounding (``2**-33``) and
  far below any real difference of mean NSS.
* Memory: ``C x P x K`` int64 sums and int32 counts per layer (12 bytes each: 512 units, 100
  permutations, 1 category = 0.6 MB; 12 categories = 7.4 MB).

Bootstrap over images (``n_bootstrap = B > 0``): image ``i`` gets the Poisson(1) weight
``w_i^b`` (:func:`bootstrap_weights`, seeded by ``(seed, i)`` only) in replicate ``b``; the
accumulator keeps ``sum_i w_i^b S_i`` and ``sum_i w_i^b n_i`` (integers, so still exact and
order-free) per unit and category, plus the weighted region counts. Replicate ``b`` is a
resampled dataset: its unit scores, ranking, top-k mean and count above threshold follow the
same definitions. ``top_k_mean_lo/hi``, ``count_lo/hi`` = the 2.5th and 97.5th percentiles over
replicates (percentile interval, 95 %; counts: ``method="lower"`` / ``"higher"`` so the bounds
are counts); replicates where a category got no region are left out. The top-k mean is a
maximum-type statistic, and resampling duplicates images, so its bootstrap distribution sits
above the observed value: read the interval as the spread over resampled datasets, not as a
bias-corrected interval.
Memory: ``C x B x K`` int64 + int32 per layer (1.2 MB for 512 units, 200 replicates, 1 category).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from probes.unit_scores import check_sums, group_sums, means_and_ranked, to_fixed_point, top_k_means

__all__ = ["TIE_TOL", "bootstrap_array", "bootstrap_columns", "bootstrap_updates", "bootstrap_weights",
           "null_columns", "null_permutation", "null_top_k_columns", "null_unit_stats", "null_updates"]

# Stream tags: the null's permutations and the bootstrap's weights never share a random stream.
_TAG_NULL, _TAG_BOOT = 0x6E756C6C, 0x626F6F74
# A permuted statistic within TIE_TOL of the observed one "reaches" it (module docstring).
TIE_TOL = 1e-9


# --------------------------------------------------------------------------- draws


def null_permutation(seed: int, replicate: int, n_images: int) -> np.ndarray:
    """Permutation ``p`` of the null: image ``i`` is scored against the regions of image ``perm[i]``.

    A uniformly random permutation of ``range(n_images)`` drawn from
    ``numpy.random.default_rng([seed, replicate, n_images, tag])``: it depends only on the seed,
    the replicate and the dataset size, never on batches or shards. A fixed point (about one
    per permutation) pairs an image with its own regions, as a uniform permutation must.
    """
    rng = np.random.default_rng([int(seed), int(replicate), int(n_images), _TAG_NULL])
    return rng.permutation(int(n_images))


def bootstrap_weights(seed: int, image: int, n_bootstrap: int) -> np.ndarray:
    """Poisson(1) weights of global image ``image`` in replicates ``0 .. n_bootstrap - 1`` (int64).

    Drawn from ``numpy.random.default_rng([seed, image, tag])``: a function of the seed and the
    image's global index only, so shards and resumed runs give the same weights.
    """
    rng = np.random.default_rng([int(seed), int(image), _TAG_BOOT])
    return rng.poisson(1.0, int(n_bootstrap)).astype(np.int64)


# --------------------------------------------------------------------------- sums


def bootstrap_array(n_units: int, n_boot: int, k: int, dtype, values: np.ndarray | None = None) -> np.ndarray:
    """A ``C x B x K`` bootstrap array (zeros, or a copy of ``values``) whose memory is ``C x K x B``.

    An image adds to a few categories for every replicate: in this layout each unit's ``B``
    replicates of a category are one contiguous run, where ``C x B x K`` memory would touch one
    cache line per entry (8 categories: 8x the memory traffic). Everything reads it as the
    ``C x B x K`` view; saved states are ``C x B x K`` as before.
    """
    out = np.zeros((n_units, k, n_boot), dtype).transpose(0, 2, 1)
    if values is not None:
        out[...] = values
    return out


def null_columns(null_scores, null_categories: Sequence[str] | None, null_replicates, null_sizes, layer: str,
                 n_units: int, n_null: int) -> tuple[tuple, float]:
    """One image's validated null columns, ``((fixed, valid, categories, replicates, sizes), max |score|)``.

    Args: as :meth:`probes.aggregate.UnitScoreAccumulator.add` (``n_units``: its scores' ``C``).

    Raises:
        ValueError: bad scores (:func:`probes.unit_scores.to_fixed_point`), lengths that do not
            match, a size below 1, a replicate outside ``[0, n_null)``.
    """
    nfixed, nvalid, ntop = to_fixed_point(null_scores, layer, "null_scores")
    ncats = [str(c) for c in (null_categories if null_categories is not None else [])]
    reps = np.asarray(null_replicates if null_replicates is not None else [], dtype=np.int64).reshape(-1)
    sizes = (np.ones(reps.size, dtype=np.int64) if null_sizes is None
             else np.asarray(null_sizes, dtype=np.int64).reshape(-1))
    if (nfixed.shape[0] != n_units or len(ncats) != nfixed.shape[1] or reps.size != nfixed.shape[1]
            or sizes.size != nfixed.shape[1] or (sizes.size and sizes.min() < 1)):
        raise ValueError(
            f"null_scores are {nfixed.shape} with {len(ncats)} categories, {reps.size} replicates and "
            f"{sizes.size} sizes; give {n_units} units and one category, replicate and size >= 1 per column"
        )
    if reps.size and (reps.min() < 0 or reps.max() >= n_null):
        raise ValueError(f"null_replicates must lie in [0, {n_null}), got {reps.min()}..{reps.max()}")
    return (nfixed, nvalid, ncats, reps, sizes), ntop


def bootstrap_updates(sums: np.ndarray, counts: np.ndarray, n_reg: np.ndarray, present: np.ndarray,
                      weights: np.ndarray, current: np.ndarray | None, layer: str) -> list:
    """``(key, index, increment)`` of one image's bootstrap sums, counts and region counts.

    Args:
        sums, counts, n_reg: the image's fixed-point sums and live counts (``C x n``) and region
            counts (``n``) of the ``present`` categories.
        weights: the image's ``B`` weights (:func:`bootstrap_weights`).
        current: the layer's ``boot_sums`` on the would-be category layout, to check the range
            against; ``None``: no check needed.

    Raises:
        ValueError: a sum would leave the fixed-point range.
    """
    bsums = sums[:, None, :] * weights[None, :, None]
    at = (slice(None), slice(None), present)
    if current is not None:
        check_sums(current[at], np.abs(bsums).astype(np.float64), layer)
    return [("boot_sums", at, bsums),
            ("boot_counts", at, (counts[:, None, :] * weights[None, :, None]).astype(np.int32)),
            ("boot_n_regions", (slice(None), present), weights[:, None] * n_reg[None, :])]


def null_updates(null: tuple, index: dict, k: int, n_null: int, current: np.ndarray | None, layer: str) -> list:
    """``(key, index, increment)`` of one image's null sums and counts, one per (replicate, category).

    Args:
        null: from :func:`null_columns`.
        index: category -> column, ``k`` columns.
        current: the layer's ``null_sums`` on that layout, to check the range against; ``None``:
            no check needed.

    Raises:
        ValueError: a sum would leave the fixed-point range.
    """
    nfixed, nvalid, ncats, reps, sizes = null
    groups = reps * k + np.array([index[c] for c in ncats], dtype=np.int64)
    present, nsums = group_sums(nfixed, groups, n_null * k)
    _, ncounts = group_sums(nvalid.astype(np.int64) * sizes[None, :], groups, n_null * k)
    at = (slice(None), present // k, present % k)
    if current is not None:
        check_sums(current[at], np.abs(nsums).astype(np.float64), layer)
    return [("null_sums", at, nsums), ("null_counts", at, ncounts.astype(np.int32))]


# --------------------------------------------------------------------------- statistics


def null_unit_stats(scores: np.ndarray, ranked: np.ndarray, null_sums: np.ndarray, null_counts: np.ndarray,
                    n_regions: np.ndarray, dead_units: str, min_valid: float) -> tuple[np.ndarray, ...]:
    """Permuted unit scores and their ranked mask (``C x P x K``), per-unit p and q values (``C x K``).

    Args:
        scores, ranked: the observed unit scores and ranked mask (``C x K``).
        null_sums, null_counts: the layer's null sums; ``n_regions``: its ``K`` region counts.
        dead_units, min_valid: the dead-unit policy (:mod:`probes.unit_scores`).

    Returns:
        ``(null_scores, null_ranked, p_values, q_values)`` (module docstring; NaN where not ranked).
    """
    from statsmodels.stats.multitest import multipletests

    q_values = np.full(scores.shape, np.nan)
    null_scores, null_ranked = means_and_ranked(null_sums, null_counts, n_regions[None, None, :], dead_units,
                                                min_valid)
    usable = null_ranked & np.isfinite(null_scores)
    reach = np.count_nonzero(usable & (null_scores >= scores[:, None, :] - TIE_TOL), axis=1)
    n_perm = np.count_nonzero(usable, axis=1)
    p_values = np.where(ranked, (1.0 + reach) / (1.0 + n_perm), np.nan)
    for j in range(scores.shape[1]):
        ok = np.isfinite(p_values[:, j])
        if ok.any():
            q_values[ok, j] = multipletests(p_values[ok, j], method="fdr_bh")[1]
    return null_scores, null_ranked, p_values, q_values


def null_top_k_columns(null_scores: np.ndarray, null_ranked: np.ndarray, q_values: np.ndarray,
                       observed: np.ndarray, top_k: int, alpha: float) -> list[dict]:
    """Per category: ``null_top_k_mean, null_top_k_p95, p_top_k, count_significant`` (module docstring).

    ``observed``: the ``K`` observed top-k means; the first three are NaN where it is NaN or no
    permutation ranked a unit.
    """
    null_t = top_k_means(null_scores, null_ranked, top_k)  # P x K
    nan = float("nan")
    columns = []
    for j in range(observed.size):
        column = {"null_top_k_mean": nan, "null_top_k_p95": nan, "p_top_k": nan}
        t = null_t[:, j]
        finite = t[np.isfinite(t)]
        if finite.size and np.isfinite(observed[j]):
            column["null_top_k_mean"] = float(finite.mean())
            column["null_top_k_p95"] = float(np.percentile(finite, 95))
            reach = np.count_nonzero(finite >= observed[j] - TIE_TOL)
            column["p_top_k"] = float((1 + reach) / (1 + finite.size))
        column["count_significant"] = int(np.count_nonzero(q_values[:, j] < alpha))
        columns.append(column)
    return columns


def bootstrap_columns(boot_sums: np.ndarray, boot_counts: np.ndarray, boot_n_regions: np.ndarray, top_k: int,
                      threshold: float, dead_units: str, min_valid: float) -> list[dict]:
    """Per category: ``top_k_mean_lo, top_k_mean_hi, count_lo, count_hi`` over the replicates (module docstring)."""
    bscores, branked = means_and_ranked(boot_sums, boot_counts, boot_n_regions[None], dead_units, min_valid)
    boot_t = top_k_means(bscores, branked, top_k)  # B x K
    boot_count = np.count_nonzero(branked & (bscores > threshold), axis=0).astype(np.float64)
    boot_count[boot_n_regions == 0] = np.nan
    boot_t[boot_n_regions == 0] = np.nan
    columns = []
    for j in range(boot_n_regions.shape[1]):
        column = {}
        column["top_k_mean_lo"], column["top_k_mean_hi"] = _interval(boot_t[:, j])
        column["count_lo"], column["count_hi"] = _interval(boot_count[:, j], integer=True)
        columns.append(column)
    return columns


def _interval(values: np.ndarray, integer: bool = False) -> tuple[float, float]:
    """2.5th and 97.5th percentiles of the finite values (linear; counts: the order statistics
    just below and above, so the bounds are counts too); NaN when there are none."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    if integer:
        return float(np.percentile(finite, 2.5, method="lower")), float(np.percentile(finite, 97.5, method="higher"))
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return float(lo), float(hi)
