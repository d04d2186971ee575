"""Saliency metrics: one saliency map against human data, one number per image.

Every function takes 2-D ``H x W`` maps as numpy arrays or torch tensors (tensors are read with
``.detach().cpu()``), computes in float64 and returns a Python ``float``. Conventions follow the
project digest (section 2) and the MIT saliency benchmark (``cvzoya/saliency``):

* ``z(S) = (S - mean(S)) / std(S)`` with the *population* std (ddof = 0; MATLAB's ``std`` uses
  ddof = 1, which changes NSS by a factor ``sqrt((N-1)/N)``).
* A *fixation map* is binary: nonzero = fixated. Metrics that "average over fixations" average
  over the **unique fixated pixels** (MIT / He et al. 2019), not over every fixation.
* ``eps = 2.2204e-16`` (MATLAB ``eps``) regularises KL and IG; IG is in bits (log2).
* All maps of one call must share one resolution. Resize the saliency map to the fixation map's
  size first, bilinearly with half-pixel centres
  (``torch.nn.functional.interpolate(..., mode="bilinear", align_corners=False)``, as
  :func:`datasets.fixations.resize_map` does).

Valid inputs: any finite float64 values (numpy or torch, any real dtype). Maps whose magnitude
is beyond ``2^+-100`` are multiplied by an exact power of two before anything is squared or
summed (every metric here is scale-invariant), so ``1e-300``- or ``1e308``-scale maps score as
the same map at unit scale would; ordinary maps are untouched (bit-identical results). The
checks live in ``probes/_validation.py`` (package-private; :func:`prepare` is its public face)
and the constancy rule below in :mod:`datasets.fixations` (:func:`is_constant`, re-exported
here), which :func:`datasets.fixations.resize_map` applies too.

Degenerate inputs (one rule per family, each tested):

* NaN/inf anywhere, a map that is not 2-D, mismatched shapes, an empty fixation map / mask /
  other-image map: ``ValueError`` naming the argument.
* *Constant* is judged in the precision of the INPUT's dtype, because a map upsampled in float32
  (as ``F.interpolate`` gives) is not exactly constant: float32 interpolation weights do not sum
  to exactly 1, which leaves rounding noise of a few ulps on a dead map. A map is constant when
  ``max - min <= 16 * eps(dtype) * max(|max|, |min|)`` with ``eps`` of the input's floating
  dtype (float16, bfloat16, float32 or float64; numpy or torch), and exactly constant
  (``max == min``) for integer and bool inputs. A float64 map with a tiny but real dynamic range
  (e.g. ``1 + 1e-12 * noise``) is therefore not constant. One rule for every metric below.
* z-score and min-max metrics (NSS, NMM, CC, MAE, F-measure): a constant map has no scale, so the
  metric is undefined and returns ``NaN`` (CC is symmetric: NaN if either map is constant).
* Distribution metrics (KL, SIM, IG): a constant map (including an all-zero map) is read as the
  uniform distribution. MIT's code instead returns NaN (SIM, constant non-zero map), 0 (SIM,
  all-zero map) or a large eps-driven penalty (KL, all-zero map); we pick one reading for all.
* ROC metrics (AUC-Judd, AUC-Borji, sAUC): a constant map ties every positive with every negative,
  which gives the chance diagonal, ``0.5``.
* AUC-Judd with a fixation map covering every pixel has no negatives: ``ValueError``.
* Scalar arguments (``threshold``, ``beta2``, ``n_splits``, ``n_thresholds``, ``step``) that are
  NaN, infinite or out of range: ``ValueError`` naming the argument.
* A single fixated pixel: AUC-Borji (sampled, MIT) returns ``NaN`` as MIT's ``AUC_Borji.m`` does
  (each split would hold one random negative); AUC-Judd, the exact AUC-Borji, sAUC, NSS and IG
  are computed (MIT's ``AUC_Judd.m`` / ``AUC_shuffled.m`` likewise only refuse an empty map).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from datasets.fixations import CONSTANT_ULPS, dtype_eps, is_constant
from probes._validation import (
    SAFE_MAX,
    SAFE_MIN,
    Map,
    as_float_map,
    as_support,
    check_count,
    check_real,
    validated_maps,
)

__all__ = [
    "EPS",
    "prepare",
    "is_constant",
    "nss",
    "nmm",
    "nmm_ceiling",
    "mask_fraction",
    "cc",
    "kld",
    "sim",
    "mae",
    "auc_judd",
    "auc_borji",
    "sauc",
    "info_gain",
    "fmeasure",
    "fmeasure_max",
]

EPS = 2.2204e-16  # MATLAB eps, as in the MIT KLdiv.m and InfoGain.m


# --------------------------------------------------------------------------- prepared maps, shared arithmetic


def prepare(x: Any, name: str = "map") -> Map:
    """Validate a map once, for several metrics (the batched form of a per-image loop).

    Every metric of this module accepts the returned object in place of the array and skips
    its own validation (dtype, finiteness, min/max and constancy: two passes over the map per
    metric), with the same result bit for bit. Metrics never modify it. An error names ``name``.

    Example::

        s = metrics.prepare(saliency, "saliency")
        scores = {"nss": metrics.nss(s, fix), "cc": metrics.cc(s, density), "sim": metrics.sim(s, density)}

    Raises:
        ValueError: not a finite, non-empty, 2-D real map.
    """
    return as_float_map(x, name)


def _zscore(s: np.ndarray) -> np.ndarray:
    """``(S - mean) / std`` with the population std (ddof = 0); caller excludes constant maps.

    The same float64 operations as ``(s - s.mean()) / s.std()`` (numpy's ``std`` is
    ``sqrt(sum((s - mean)^2) / n)`` with the same ``mean``), bit for bit, with one pass and
    one temporary fewer."""
    centred = s - s.mean()
    sq = np.multiply(centred, centred)
    std = np.sqrt(np.add.reduce(sq, axis=None) / s.size)
    centred /= std
    return centred


def _mean_and_std(s: np.ndarray) -> tuple[float, float]:
    """``s.mean()`` and ``s.std()`` exactly as numpy computes them."""
    mean = s.mean()
    centred = s - mean
    np.multiply(centred, centred, out=centred)
    return mean, np.sqrt(np.add.reduce(centred, axis=None) / s.size)


def _minmax(s: np.ndarray) -> np.ndarray:
    """Rescale to [0, 1]; caller excludes constant maps."""
    lo, hi = s.min(), s.max()
    return (s - lo) / (hi - lo)


def _as_distribution(m: Map, minmax: bool) -> np.ndarray:
    """Sum-normalised map (optionally min-maxed first); a constant map becomes uniform."""
    s = m.values
    if m.constant:
        return np.full(s.shape, 1.0 / s.size)
    if minmax:
        s = m.minmaxed()
        s /= s.sum()
        return s
    return s / s.sum()


def _check_nonnegative(m: Map, name: str) -> None:
    if m.lo < 0:
        raise ValueError(
            f"{name} has negative values (min {m.lo:.4g}); KL needs non-negative maps: "
            "clip or min-max the map first"
        )


# --------------------------------------------------------------------------- location metrics


def _mean_z_fast(saliency: Any, region: Any) -> float | None:
    """:func:`_mean_z_over` for a float64 map and a bool region of its shape, without the
    validation passes (min and max of the map), or ``None`` where that does not apply.

    Bit-identical to the validated path: the same mean, std and z values. It applies only when
    the mean and std alone prove what validation would find: both finite (so no NaN or inf),
    no rescaling (``max(|mean|, std) <= max|S| <= |mean| + sqrt(n) std`` inside the safe range)
    and not constant (``max - min >= 2 std``, Popoviciu, well above ``16 eps max|S|``). Anything
    else (other dtypes, tensors, a near-constant map, an empty region) takes the validated path,
    which raises the errors.
    """
    if not (type(saliency) is np.ndarray and saliency.dtype == np.float64 and saliency.ndim == 2
            and saliency.size and type(region) is np.ndarray and region.dtype == np.bool_
            and region.shape == saliency.shape):
        return None
    with np.errstate(over="ignore", invalid="ignore"):  # NaN, inf or overflow: the validated path says why
        mean, std = _mean_and_std(saliency)
    mean, std = float(mean), float(std)
    if not (math.isfinite(mean) and math.isfinite(std)):
        return None
    top = (abs(mean) + math.sqrt(saliency.size) * std) * (1 + 1e-9)  # >= max |S|, with rounding margin
    if not (max(abs(mean), std) * (1 - 1e-9) >= SAFE_MIN and top <= SAFE_MAX):
        return None
    if not (std > 1e-8 * abs(mean) and 2 * std > 2 * CONSTANT_ULPS * dtype_eps(np.float64) * top):
        return None
    z = saliency[region]
    if z.size == 0:
        return None
    z -= mean
    z /= std
    return float(z.mean())


def _mean_z_over(saliency: Any, region: Any, region_name: str) -> float:
    fast = _mean_z_fast(saliency, region)
    if fast is not None:
        return fast
    s, r = validated_maps(saliency=saliency, **{region_name: region})
    on = as_support(r, region_name)
    if s.constant:
        return math.nan
    # z at the region's pixels only: the same values as z(S)[on], without the full z map.
    v = s.values
    mean, std = _mean_and_std(v)
    z = v[on]
    z -= mean
    z /= std
    return float(z.mean())


def nss(saliency: Any, fixation_map: Any) -> float:
    """Normalized Scanpath Saliency: mean z-scored saliency at the fixated pixels.

    ``NSS = mean_{p in F} z(S)_p`` with ``z`` using the population std over the whole map and
    ``F`` the set of unique fixated pixels (MIT benchmark, He et al. 2019). pysaliency instead
    counts every fixation (duplicates too).

    Args:
        saliency: ``H x W`` saliency map.
        fixation_map: ``H x W`` binary fixation map, nonzero = fixated.

    Returns:
        NSS in standard deviations; ``NaN`` for a constant saliency map.

    Raises:
        ValueError: non-2-D, non-finite or mismatched maps; empty fixation map.
    """
    return _mean_z_over(saliency, fixation_map, "fixation_map")


def nmm(saliency: Any, mask: Any) -> float:
    """Normalized Map Mean [He et al. 2019, eq. 4]: mean z-scored saliency over a mask's pixels.

    Its largest possible value for a mask covering a fraction ``p`` of the image is
    :func:`nmm_ceiling` ``= sqrt((1 - p) / p)`` (report ``p`` alongside, :func:`mask_fraction`).

    Args:
        saliency: ``H x W`` saliency or activation map.
        mask: ``H x W`` binary target mask, nonzero = target.

    Returns:
        NMM in standard deviations; ``NaN`` for a constant saliency map.

    Raises:
        ValueError: non-2-D, non-finite or mismatched maps; empty mask.
    """
    return _mean_z_over(saliency, mask, "mask")


def mask_fraction(mask: Any) -> float:
    """Fraction ``p`` of the image covered by a binary mask (nonzero = on).

    Raises:
        ValueError: non-2-D or non-finite mask; empty mask.
    """
    m = as_support(as_float_map(mask, "mask"), "mask")
    return float(m.mean())


def nmm_ceiling(mask: Any) -> float:
    """Largest NMM any map can reach on ``mask``: ``sqrt((1 - p) / p)``, ``p`` = mask fraction.

    Reached by the map that is 1 on the mask and 0 elsewhere; 0 for a mask covering every pixel.

    Raises:
        ValueError: non-2-D or non-finite mask; empty mask.
    """
    p = mask_fraction(mask)
    return math.sqrt((1.0 - p) / p)


# --------------------------------------------------------------------------- map-vs-map metrics


def cc(saliency: Any, density: Any) -> float:
    """Pearson linear correlation coefficient of the saliency map and the fixation density map.

    ``CC = mean(z(S) * z(G))`` (population std), equal to ``np.corrcoef``. Symmetric.

    Returns:
        CC in [-1, 1]; ``NaN`` if either map is constant (pysaliency returns 0 or NaN depending
        on the argument order; we do not).

    Raises:
        ValueError: non-2-D, non-finite or mismatched maps.
    """
    s, g = validated_maps(saliency=saliency, density=density)
    if s.constant or g.constant:
        return math.nan
    z = _zscore(s.values)
    z *= _zscore(g.values)
    return float(np.clip(np.mean(z), -1.0, 1.0))


def kld(saliency: Any, density: Any) -> float:
    """Kullback-Leibler divergence of the density map from the saliency map (MIT ``KLdiv.m``).

    ``KL = sum G * ln(eps + G / (S + eps))`` with S and G each divided by its sum and
    ``eps = 2.2204e-16``; natural log (nats). Lower is better; 0 for identical distributions.
    A constant map (including all-zero) is read as the uniform distribution (MIT leaves an
    all-zero saliency map at zero, which gives a large eps-driven penalty instead).

    Args:
        saliency: ``H x W`` non-negative saliency map.
        density: ``H x W`` non-negative fixation density map (human ground truth).

    Returns:
        KL divergence in nats.

    Raises:
        ValueError: non-2-D, non-finite or mismatched maps; negative values in either map.
    """
    s, g = validated_maps(saliency=saliency, density=density)
    _check_nonnegative(s, "saliency")
    _check_nonnegative(g, "density")
    p = _as_distribution(s, minmax=False)
    q = _as_distribution(g, minmax=False)
    # q * ln(eps + q / (p + eps)), in place on one temporary (same operations, same order).
    t = np.add(p, EPS)
    np.divide(q, t, out=t)
    t += EPS
    np.log(t, out=t)
    t *= q
    return float(np.sum(t))


def sim(saliency: Any, density: Any) -> float:
    """Similarity (histogram intersection, MIT ``similarity.m``).

    Each map is min-maxed to [0, 1], divided by its sum, then ``SIM = sum min(S, G)``. A constant
    map is read as the uniform distribution (MIT returns NaN for a constant non-zero map and 0 for
    an all-zero one). Symmetric.

    Returns:
        SIM in [0, 1]; 1 for identical maps.

    Raises:
        ValueError: non-2-D, non-finite or mismatched maps.
    """
    s, g = validated_maps(saliency=saliency, density=density)
    p = _as_distribution(s, minmax=True)
    q = _as_distribution(g, minmax=True)
    return float(np.sum(np.minimum(p, q, out=p if p is not q else None)))


def mae(saliency: Any, density: Any) -> float:
    """Mean absolute error [Ebrahimpour et al. 2019, eq. 15; Lai et al. 2020, eq. 6].

    ``MAE = mean |S - G|`` with both maps min-maxed to [0, 1]. Lower is better.

    Returns:
        MAE in [0, 1]; ``NaN`` if either map is constant (min-max undefined).

    Raises:
        ValueError: non-2-D, non-finite or mismatched maps.
    """
    s, g = validated_maps(saliency=saliency, density=density)
    if s.constant or g.constant:
        return math.nan
    d = s.minmaxed()
    d -= g.minmaxed()
    return float(np.mean(np.abs(d, out=d)))


# --------------------------------------------------------------------------- ROC metrics


def _trapezoid(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Trapezoid rule along axis 0, as MATLAB ``trapz(x, y)`` (``np.trapz`` is deprecated in
    numpy 2 and ``np.trapezoid`` missing before it)."""
    return np.sum(np.diff(x, axis=0) * (y[1:] + y[:-1]) / 2.0, axis=0)


def _step_thresholds(step: float) -> np.ndarray:
    """MIT's ``0:step:max`` on a min-maxed map. Thresholds above the sampled maximum add the point
    (0, 0) twice and no area, so the grid can always run to 1."""
    if not (0.0 < step <= 1.0):
        raise ValueError(f"step must be in (0, 1], got {step!r}")
    n = int(math.floor(1.0 / step + 1e-9))
    return np.arange(n + 1) * step


def _check_splits(n_splits: int) -> None:
    check_count(n_splits, "n_splits", 1)


def _split_aucs(pos: np.ndarray, neg: np.ndarray, step: float) -> np.ndarray:
    """Trapezoid ROC area per split (MIT AUC_Borji/AUC_shuffled inner loop), vectorised.

    Args:
        pos: ``(Npos,)`` min-maxed saliency at the fixated pixels.
        neg: ``(Nneg, n_splits)`` min-maxed saliency at each split's negative locations.
        step: threshold step on [0, 1].
    """
    thr = _step_thresholds(step)[::-1]  # descending, as MATLAB's fliplr
    return _split_aucs_from_counts(pos, _threshold_bin_counts(neg, thr), neg.shape[0], thr)


def _split_aucs_from_counts(pos: np.ndarray, neg_counts: np.ndarray, n_neg: int, thr: np.ndarray) -> np.ndarray:
    """:func:`_split_aucs` given each split's negatives only as counts per threshold bin.

    ``neg_counts``: ``n_splits x (T + 1)`` (:func:`_threshold_bin_counts` with the descending
    thresholds ``thr``): the FP rate at a threshold depends on a split's negatives only through
    how many lie in each bin.
    """
    tp = _fraction_at_or_above(pos[:, None], thr)[:, 0]  # (T,)
    fp = _at_or_above(neg_counts, n_neg)  # (T, n_splits)
    n_splits = neg_counts.shape[0]
    tp = np.concatenate(([0.0], tp, [1.0]))[:, None].repeat(n_splits, axis=1)
    fp = np.concatenate((np.zeros((1, n_splits)), fp, np.ones((1, n_splits))))
    return _trapezoid(tp, fp)


def _threshold_bin_counts(values: np.ndarray, thr_desc: np.ndarray) -> np.ndarray:
    """``n_cols x (T + 1)`` int counts of an ``N x n_cols`` array's values per threshold bin.

    Bin ``j`` holds the values with exactly ``j`` thresholds at or below them (``searchsorted``
    on the ascending grid): a value is ``>= thr_asc[i]`` iff its bin is above ``i``."""
    n_thr = thr_desc.size
    n_cols = values.shape[1]
    k = np.searchsorted(thr_desc[::-1], values, side="right")  # value >= thr_asc[j]  <=>  j < k
    return np.bincount((k + (n_thr + 1) * np.arange(n_cols)[None, :]).ravel(),
                       minlength=(n_thr + 1) * n_cols).reshape(n_cols, n_thr + 1)


def _at_or_above(counts: np.ndarray, n: int) -> np.ndarray:
    """``T x n_cols`` fractions of values ``>=`` each descending threshold, from bin counts."""
    n_thr = counts.shape[1] - 1
    at_or_above = np.cumsum(counts[:, ::-1], axis=1)[:, :n_thr]  # [c, t]: values >= thr_desc[t]
    return at_or_above.T / n


def _fraction_at_or_above(values: np.ndarray, thr_desc: np.ndarray) -> np.ndarray:
    """``(values[None] >= thr_desc[:, None, None]).mean(axis=1)`` for ``N x S`` values, by counting.

    Each value's number of thresholds at or below it is histogrammed per column
    (:func:`_threshold_bin_counts`) and summed from the top: the same counts, so the same
    fractions, as comparing every value with every threshold, in ``O(N S)`` instead of
    ``O(T N S)``."""
    return _at_or_above(_threshold_bin_counts(values, thr_desc), values.shape[0])


def _exact_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Exact ROC area with every distinct value as a threshold (ties count one half): the
    Mann-Whitney statistic ``P(pos > neg) + 0.5 P(pos == neg)``."""
    neg = np.sort(neg)
    below = np.searchsorted(neg, pos, side="left")
    at_or_below = np.searchsorted(neg, pos, side="right")
    return float((below + 0.5 * (at_or_below - below)).sum() / (pos.size * neg.size))


def auc_judd(saliency: Any, fixation_map: Any, jitter: bool = False, seed: int = 0) -> float:
    """AUC-Judd (MIT ``AUC_Judd.m``): ROC area, fixated pixels vs every other pixel.

    Thresholds are the saliency values at the (unique) fixated pixels, descending; at each, the
    TP rate is the fraction of fixated pixels ``>=`` it and the FP rate the fraction of
    non-fixated pixels ``>=`` it; the curve is closed with (0, 0) and (1, 1) and integrated with
    the trapezoid rule. When fixated values tie we count all tied pixels at their shared threshold
    (a proper ROC); MATLAB's loop (``fp = (#S>=thr - i) / (Npix - Nfix)``) instead steps the FP
    rate backwards within a tie. Both agree whenever fixated values are distinct, which jitter
    ensures.

    Args:
        saliency: ``H x W`` saliency map.
        fixation_map: ``H x W`` binary fixation map, nonzero = fixated.
        jitter: add ``U(0, 1) * 1e-7`` noise to the min-maxed map to break ties (MATLAB's default
            is on, added to the raw map; ours is scale-free and off by default).
        seed: seed of ``numpy.random.default_rng`` for the jitter.

    A single fixated pixel is scored (one threshold: ``AUC = 1 - fp / 2``, MIT ``AUC_Judd.m``
    only refuses an empty map); it is a coarse number, but a defined one.

    Returns:
        AUC in [0, 1]; 0.5 for a constant saliency map (with or without jitter).

    Raises:
        ValueError: non-2-D, non-finite or mismatched maps; empty fixation map; a fixation map
            covering every pixel (no negatives, the ROC is undefined).
    """
    sm, f = validated_maps(saliency=saliency, fixation_map=fixation_map)
    fix = as_support(f, "fixation_map")
    if fix.all():
        raise ValueError(
            "fixation_map covers every pixel: AUC-Judd needs non-fixated pixels as negatives"
        )
    if sm.constant:
        return 0.5
    s = sm.minmaxed()
    if jitter:
        s = s + np.random.default_rng(seed).random(s.shape) / 1e7
    pos = np.sort(s[fix])
    neg = np.sort(s[~fix])
    thresholds = np.unique(pos)[::-1]
    # number of values >= t in a sorted array = n - searchsorted(left)
    tp = (pos.size - np.searchsorted(pos, thresholds, side="left")) / pos.size
    fp = (neg.size - np.searchsorted(neg, thresholds, side="left")) / neg.size
    tp = np.concatenate(([0.0], tp, [1.0]))
    fp = np.concatenate(([0.0], fp, [1.0]))
    return float(_trapezoid(tp, fp))


def auc_borji(
    saliency: Any,
    fixation_map: Any,
    n_splits: int = 100,
    step: float = 0.1,
    seed: int = 0,
    exact: bool = False,
) -> float:
    """AUC-Borji (MIT ``AUC_Borji.m``): ROC area, fixated pixels vs uniformly random pixels.

    The map is min-maxed. Each split draws as many negatives as there are fixated pixels,
    uniformly with replacement from all pixels:
    ``rng = np.random.default_rng(seed); idx = rng.integers(0, H * W, size=(Nfix, n_splits))``
    (row-major pixel index; column ``k`` is split ``k``). Thresholds run ``0, step, 2 step, ...``;
    TP rate = fraction of fixated values ``>=`` threshold, FP rate = fraction of the split's
    negatives ``>=`` threshold; trapezoid with (0, 0) and (1, 1); the score is the mean over
    splits.

    Args:
        saliency: ``H x W`` saliency map.
        fixation_map: ``H x W`` binary fixation map, nonzero = fixated.
        n_splits: number of random negative sets (MIT: 100).
        step: threshold step on the min-maxed map (MIT: 0.1).
        seed: seed of ``numpy.random.default_rng`` for the draws.
        exact: if True, use every pixel (fixated ones included) as a negative and every distinct
            value as a threshold (pysaliency ``AUC`` with uniform non-fixations); no randomness.

    With exactly one fixated pixel the sampled variant returns ``NaN``, as MIT's
    ``AUC_Borji.m`` does (``sum(fixationMap(:)>0) <= 1``): every split would compare one
    positive with one random pixel. The exact variant has no such problem and is computed.

    Returns:
        AUC in [0, 1]; 0.5 for a constant saliency map; ``NaN`` for a single fixated pixel
        unless ``exact``.

    Raises:
        ValueError: non-2-D, non-finite or mismatched maps; empty fixation map; bad step/n_splits.
    """
    sm, f = validated_maps(saliency=saliency, fixation_map=fixation_map)
    fix = as_support(f, "fixation_map")
    _check_splits(n_splits)
    _step_thresholds(step)  # validate before any early return
    if not exact and np.count_nonzero(fix) <= 1:
        return math.nan  # MIT AUC_Borji.m, checked before the map is looked at
    if sm.constant:
        return 0.5
    pos = sm.minmaxed_at(fix)
    if exact:
        return _exact_auc(pos, sm.minmaxed().ravel())
    idx = np.random.default_rng(seed).integers(0, fix.size, size=(pos.size, int(n_splits)))
    return float(_split_aucs(pos, sm.minmaxed_at(idx), step).mean())


def sauc(
    saliency: Any,
    fixation_map: Any,
    other_fixation_map: Any,
    n_splits: int = 100,
    step: float = 0.1,
    seed: int = 0,
    exact: bool = False,
) -> float:
    """Shuffled AUC (MIT ``AUC_shuffled.m``): negatives are other images' fixated pixels.

    Same ROC as :func:`auc_borji`, but each split's negatives are
    ``n = min(Nfix, Nother)`` locations drawn without replacement from the ``Nother`` fixated
    pixels of ``other_fixation_map`` (MIT: ``randperm``, keep the first ``n``). Because negatives
    share the images' centre bias, a pure centre-bias map scores near 0.5. As in MIT, the current
    image's own fixations are not removed from the other map.

    A split's FP rates depend on its negatives only through how many fall in each threshold bin
    (values in ``[t_j, t_{j+1})`` of the min-maxed map), and the bin counts of ``n`` locations
    drawn without replacement follow the multivariate hypergeometric law. So the splits draw
    those counts directly: ``np.random.default_rng(seed).multivariate_hypergeometric(colors, n,
    size=n_splits)``, ``colors`` = the number of other-map pixels per bin (bins in ascending
    order). This is the same estimator as drawing the locations (the same distribution of every
    split's ROC), without shuffling all ``Nother`` locations for each split (1.3 of the 1.8 ms
    the metric took per OSIE map; now 0.35 ms in all). Versions before 2026-12 drew the locations
    (``ind[rng.permutation(Nother)[:n]]``): the same seed then gave another sample of splits, so
    scores differ from theirs by Monte-Carlo noise, not in expectation, as two independent draws
    of the estimator do: on 100 OSIE images with 100 splits, by 0.0012 (median; at most 0.0063),
    against a seed-to-seed standard deviation of the score of 0.0015 (``bench/metrics_speed.py``'s
    maps); coarser maps vary more (Grad-CAM of a random-weight VGG16 on 12 OSIE images: moved by
    0.0023, at most 0.0096; 14 x 14 maps upsampled: seed-to-seed sd 0.0021).

    Args:
        saliency: ``H x W`` saliency map.
        fixation_map: ``H x W`` binary fixation map of this image, nonzero = fixated.
        other_fixation_map: ``H x W`` binary map, the union of the fixations of other images
            (Borji: 10 random images), already rescaled to this image's size
            (``datasets.fixations.resize_fixation_map`` does the rescaling).
        n_splits: number of random negative sets (MIT: 100).
        step: threshold step on the min-maxed map (MIT: 0.1).
        seed: seed of ``numpy.random.default_rng`` for the permutations.
        exact: if True, every fixated pixel of ``other_fixation_map`` is a negative and every
            distinct value a threshold (the Mann-Whitney statistic, ties one half; pysaliency's
            shuffled AUC, and the limit of MIT's estimate over infinitely many splits up to
            the threshold grid); no randomness, and fast.

    Returns:
        sAUC in [0, 1]; 0.5 for a constant saliency map.

    Raises:
        ValueError: non-2-D, non-finite or mismatched maps; empty fixation or other map;
            bad step/n_splits.
    """
    sm, f, o = validated_maps(saliency=saliency, fixation_map=fixation_map, other_fixation_map=other_fixation_map)
    fix = as_support(f, "fixation_map")
    other = as_support(o, "other_fixation_map")
    _check_splits(n_splits)
    _step_thresholds(step)
    if sm.constant:
        return 0.5
    pos = sm.minmaxed_at(fix)
    neg = sm.minmaxed_at(other)
    if exact:
        return _exact_auc(pos, neg)
    n = min(pos.size, neg.size)
    thr = _step_thresholds(step)[::-1]
    colors = _threshold_bin_counts(neg[:, None], thr)[0]
    counts = np.random.default_rng(seed).multivariate_hypergeometric(colors, n, size=int(n_splits))
    return float(_split_aucs_from_counts(pos, counts, n, thr).mean())


# --------------------------------------------------------------------------- information gain


def info_gain(saliency: Any, fixation_map: Any, baseline: Any) -> float:
    """Information gain over a baseline map (MIT ``InfoGain.m``; Kuemmerer et al. 2015).

    ``IG = mean_{p in F} [log2(eps + P_p) - log2(eps + B_p)]`` where P and B are the saliency and
    baseline maps, each min-maxed and divided by its sum, ``F`` the unique fixated pixels and
    ``eps = 2.2204e-16``. A constant map is read as the uniform distribution, so a constant
    baseline gives IG over a uniform model, and a constant saliency map over a uniform baseline
    gives 0. Note that min-max sends the least salient pixel to 0: a fixation there costs about
    ``log2(eps) = -52`` bits (MIT behaviour).

    Args:
        saliency: ``H x W`` saliency map.
        fixation_map: ``H x W`` binary fixation map, nonzero = fixated.
        baseline: ``H x W`` baseline map (centre bias, or other images' fixations, blurred).

    Returns:
        Information gain in bits per fixated pixel (positive = better than the baseline).

    Raises:
        ValueError: non-2-D, non-finite or mismatched maps; empty fixation map.
    """
    s, f, b = validated_maps(saliency=saliency, fixation_map=fixation_map, baseline=baseline)
    fix = as_support(f, "fixation_map")
    p = _as_distribution(s, minmax=True)[fix]
    q = _as_distribution(b, minmax=True)[fix]
    return float(np.mean(np.log2(EPS + p) - np.log2(EPS + q)))


# --------------------------------------------------------------------------- salient objects


def _f_beta(predicted: np.ndarray, true_positive: np.ndarray, n_mask: int, beta2: float) -> np.ndarray:
    """``(1 + b2) P R / (b2 P + R)`` from counts; 0 where nothing is predicted or P + R = 0."""
    predicted = np.asarray(predicted, dtype=np.float64)
    true_positive = np.asarray(true_positive, dtype=np.float64)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(predicted), where=predicted > 0)
    recall = true_positive / n_mask
    denom = beta2 * precision + recall
    num = (1.0 + beta2) * precision * recall
    return np.divide(num, denom, out=np.zeros_like(num), where=denom > 0)


def _object_inputs(saliency: Any, mask: Any, beta2: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Validated min-maxed saliency and binary mask, or ``None`` if the saliency is constant."""
    ok = isinstance(beta2, (int, float, np.integer, np.floating)) and not isinstance(beta2, (bool, np.bool_))
    if not ok or not math.isfinite(beta2) or not beta2 > 0:
        raise ValueError(f"beta2 must be > 0 and finite, got {beta2!r} (salient-object convention: 0.3)")
    s, m = validated_maps(saliency=saliency, mask=mask)
    on = as_support(m, "mask")
    if s.constant:
        return None
    return s.minmaxed(), on


def fmeasure(saliency: Any, mask: Any, beta2: float = 0.3, threshold: float | None = None) -> float:
    """F-measure of a binarised saliency map against an object mask [Lai et al. 2020, eq. 5].

    The map is min-maxed to [0, 1] (salient-object convention, so the threshold does not depend
    on an arbitrary offset) and binarised as ``S >= t`` with the adaptive threshold
    ``t = min(2 * mean(S), 1)`` (Achanta et al. 2009; clipped at 1 as in the salient-object
    benchmarks, e.g. PySODMetrics, so that a broad map with mean > 0.5 still predicts its
    maximum instead of nothing) unless ``threshold`` is given. Then
    ``F = (1 + b2) P R / (b2 P + R)``; precision is 0 when nothing is predicted and F is 0 when
    ``P + R = 0``.

    Args:
        saliency: ``H x W`` saliency map.
        mask: ``H x W`` binary object mask, nonzero = object.
        beta2: ``beta^2``, the weight of precision (0.3 in the salient-object literature).
        threshold: fixed threshold on the min-maxed map instead of the adaptive one.

    Returns:
        F in [0, 1]; ``NaN`` for a constant saliency map.

    Raises:
        ValueError: non-2-D, non-finite or mismatched maps; empty mask; beta2 <= 0.
    """
    if threshold is not None:
        threshold = check_real(threshold, "threshold")
    prepared = _object_inputs(saliency, mask, beta2)
    if prepared is None:
        return math.nan
    s, on = prepared
    t = min(2.0 * float(s.mean()), 1.0) if threshold is None else threshold
    pred = s >= t
    return float(_f_beta(pred.sum(), (pred & on).sum(), int(on.sum()), beta2))


def fmeasure_max(saliency: Any, mask: Any, beta2: float = 0.3, n_thresholds: int = 256) -> float:
    """Maximum F-measure over fixed thresholds (Fmax) [Lai et al. 2020].

    Thresholds ``np.linspace(0, 1, n_thresholds)`` on the min-maxed map (256 = every 8-bit grey
    level), binarisation ``S >= t``, F as in :func:`fmeasure`.

    Returns:
        Fmax in [0, 1]; ``NaN`` for a constant saliency map.

    Raises:
        ValueError: non-2-D, non-finite or mismatched maps; empty mask; beta2 <= 0;
            n_thresholds < 2.
    """
    n_thresholds = check_count(n_thresholds, "n_thresholds", 2)
    prepared = _object_inputs(saliency, mask, beta2)
    if prepared is None:
        return math.nan
    s, on = prepared
    thr = np.linspace(0.0, 1.0, int(n_thresholds))
    all_sorted = np.sort(s.ravel())
    obj_sorted = np.sort(s[on])
    predicted = all_sorted.size - np.searchsorted(all_sorted, thr, side="left")
    true_positive = obj_sorted.size - np.searchsorted(obj_sorted, thr, side="left")
    return float(_f_beta(predicted, true_positive, int(on.sum()), beta2).max())
