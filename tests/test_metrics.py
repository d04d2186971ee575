"""Tests for probes.metrics.

Each metric is checked three ways: (1) against a literal, formula-by-formula reference written
below with loops and plain numpy, mirroring the MIT MATLAB code (cvzoya/saliency,
code_forMetrics/*.m), on seeded random maps; (2) on tiny maps whose values were computed by hand
(the arithmetic is in the comments); (3) on every degenerate input. Torch tensors must give the
same numbers as numpy arrays.

Tolerance: references and module differ only in float64 summation order (python loops vs numpy
pairwise sums), which moves results by ~1e-15 on these map sizes; ``TOL = 1e-12`` leaves three
orders of margin and still fails on any convention slip (ddof, eps, a threshold off by one: all
>= 1e-3 here). ROC references use the very same thresholds and random draws, so they also agree
to rounding.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from probes import metrics as M

TOL = 1e-12
EPS = 2.2204e-16
SHAPES = [(17, 23), (32, 48), (40, 30)]
SEEDS = [0, 1, 2]


# ------------------------------------------------------------------ naive references (MIT style)


def _pixels(a):
    """Row-major list of the pixel values (the references only use python loops over this)."""
    return [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def _mean(values):
    return sum(values) / len(values)


def _pop_std(values):
    m = _mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))  # ddof = 0


def ref_nss(sal, fix):
    # NSS.m with population std: z-score, then mean over the (unique) fixated pixels.
    s, f = _pixels(sal), _pixels(fix)
    m, sd = _mean(s), _pop_std(s)
    return _mean([(v - m) / sd for v, on in zip(s, f) if on != 0])


def ref_cc(sal, den):
    # CC.m: z-score both maps, then corr2 = sum(ab) / sqrt(sum(a^2) sum(b^2)) on centred maps.
    a, b = _pixels(sal), _pixels(den)
    ma, sa, mb, sb = _mean(a), _pop_std(a), _mean(b), _pop_std(b)
    za = [(v - ma) / sa for v in a]
    zb = [(v - mb) / sb for v in b]
    mza, mzb = _mean(za), _mean(zb)
    num = sum((x - mza) * (y - mzb) for x, y in zip(za, zb))
    den_ = math.sqrt(sum((x - mza) ** 2 for x in za) * sum((y - mzb) ** 2 for y in zb))
    return num / den_


def ref_kl(sal, den):
    # KLdiv.m: sum-normalise each (if nonzero), sum g * log(eps + g / (s + eps)).
    s, g = _pixels(sal), _pixels(den)
    ss, sg = sum(s), sum(g)
    s = [v / ss for v in s]
    g = [v / sg for v in g]
    return sum(gi * math.log(EPS + gi / (si + EPS)) for si, gi in zip(s, g))


def _minmax_list(values):
    lo, hi = min(values), max(values)
    return [(v - lo) / (hi - lo) for v in values]


def ref_sim(sal, den):
    # similarity.m: min-max each map, divide by its sum, sum of the pixel-wise minimum.
    s, g = _minmax_list(_pixels(sal)), _minmax_list(_pixels(den))
    ss, sg = sum(s), sum(g)
    return sum(min(a / ss, b / sg) for a, b in zip(s, g))


def ref_mae(sal, den):
    s, g = _minmax_list(_pixels(sal)), _minmax_list(_pixels(den))
    return _mean([abs(a - b) for a, b in zip(s, g)])


def ref_ig(sal, fix, base):
    # InfoGain.m: min-max, sum-normalise, mean over fixated pixels of log2(eps+s) - log2(eps+b).
    s, b, f = _minmax_list(_pixels(sal)), _minmax_list(_pixels(base)), _pixels(fix)
    ss, sb = sum(s), sum(b)
    return _mean(
        [math.log2(EPS + si / ss) - math.log2(EPS + bi / sb) for si, bi, fi in zip(s, b, f) if fi != 0]
    )


def _trapz(x, y):
    return sum((x[i + 1] - x[i]) * (y[i + 1] + y[i]) / 2 for i in range(len(x) - 1))


def ref_auc_judd(sal, fix, jitter=False, seed=0):
    # AUC_Judd.m loop, verbatim: thresholds = sorted fixated values; tp = i / Nfix;
    # fp = (#S >= thr - i) / (Npix - Nfix). Valid when fixated values are distinct (no ties).
    s = np.asarray(sal, dtype=np.float64)
    s = (s - s.min()) / (s.max() - s.min())
    if jitter:  # documented draw: default_rng(seed).random(shape) / 1e7 on the min-maxed map
        s = s + np.random.default_rng(seed).random(s.shape) / 1e7
    S, F = _pixels(s), _pixels(fix)
    sth = [v for v, f in zip(S, F) if f != 0]
    nfix, npix = len(sth), len(S)
    threshes = sorted(sth, reverse=True)
    tp, fp = [0.0], [0.0]
    for i, thr in enumerate(threshes, start=1):
        above = sum(1 for v in S if v >= thr)
        tp.append(i / nfix)
        fp.append((above - i) / (npix - nfix))
    tp.append(1.0)
    fp.append(1.0)
    return _trapz(fp, tp)


def _colon(step, mx):
    # MATLAB 0:step:mx (the elements are k * step).
    return [k * step for k in range(int(math.floor(mx / step + 1e-10)) + 1)]


def _borji_split_auc(sth, curfix, step):
    # Inner loop of AUC_Borji.m / AUC_shuffled.m for one split.
    threshes = list(reversed(_colon(step, max(sth + curfix))))
    tp, fp = [0.0], [0.0]
    for thr in threshes:
        tp.append(sum(1 for v in sth if v >= thr) / len(sth))
        fp.append(sum(1 for v in curfix if v >= thr) / len(curfix))
    tp.append(1.0)
    fp.append(1.0)
    return _trapz(fp, tp)


def ref_auc_borji(sal, fix, n_splits=100, step=0.1, seed=0):
    # AUC_Borji.m with the documented draws: idx = default_rng(seed).integers(0, Npix,
    # (Nfix, n_splits)), row-major pixel index, column k = split k.
    S = _minmax_list(_pixels(sal))
    sth = [v for v, f in zip(S, _pixels(fix)) if f != 0]
    r = np.random.default_rng(seed).integers(0, len(S), size=(len(sth), n_splits))
    aucs = [_borji_split_auc(sth, [S[i] for i in r[:, k]], step) for k in range(n_splits)]
    return _mean(aucs)


def ref_sauc(sal, fix, other, n_splits=100, step=0.1, seed=0):
    # AUC_shuffled.m with the documented draws: each split takes n = min(Nfix, Nother) of the
    # other map's fixated pixels without replacement. numpy draws how many of them fall in each
    # threshold bin (multivariate hypergeometric; colors = the other map's pixels per bin, bins
    # ascending), and the split takes that many of each bin's pixels (which ones cannot change a
    # split's ROC, whose thresholds are the bin edges). The ROC itself is MIT's literal loop.
    S = _minmax_list(_pixels(sal))
    sth = [v for v, f in zip(S, _pixels(fix)) if f != 0]
    negs = [S[i] for i, o in enumerate(_pixels(other)) if o != 0]
    n = min(len(sth), len(negs))
    grid = _colon(step, 1.0)
    bins = [[] for _ in range(len(grid) + 1)]
    for v in negs:
        bins[sum(1 for t in grid if v >= t)].append(v)
    counts = np.random.default_rng(seed).multivariate_hypergeometric([len(b) for b in bins], n, size=n_splits)
    aucs = [_borji_split_auc(sth, [v for b, c in zip(bins, row) for v in b[:c]], step) for row in counts]
    return _mean(aucs)


def ref_sauc_permutation_split(S, sth, ind, rng, step=0.1):
    # One split of AUC_shuffled.m as MATLAB draws it: randperm of the other map's pixels, first n.
    n = min(len(sth), len(ind))
    return _borji_split_auc(sth, [S[ind[j]] for j in rng.permutation(len(ind))[:n]], step)


def ref_exact_roc(pos, neg):
    # Exact ROC by brute force: every distinct value is a threshold (descending), tp / fp = rate
    # of values >= threshold, closed with (0, 0) and (1, 1), trapezoid. No sklearn.
    pos, neg = _pixels(pos), _pixels(neg)
    tp, fp = [0.0], [0.0]
    for thr in sorted(set(pos + neg), reverse=True):
        tp.append(sum(1 for v in pos if v >= thr) / len(pos))
        fp.append(sum(1 for v in neg if v >= thr) / len(neg))
    tp.append(1.0)
    fp.append(1.0)
    return _trapz(fp, tp)


def ref_fmeasure(sal, mask, beta2=0.3, threshold=None):
    s = _minmax_list(_pixels(sal))
    m = _pixels(mask)
    # adaptive threshold 2 mean(S), clipped at 1 (PySODMetrics: min(2 * mean, 1))
    t = min(2 * _mean(s), 1.0) if threshold is None else threshold
    pred = [v >= t for v in s]
    tp = sum(1 for p, o in zip(pred, m) if p and o != 0)
    npred, nobj = sum(pred), sum(1 for o in m if o != 0)
    prec = tp / npred if npred else 0.0
    rec = tp / nobj
    if prec + rec == 0:
        return 0.0
    return (1 + beta2) * prec * rec / (beta2 * prec + rec)


def ref_fmax(sal, mask, beta2=0.3, n=256):
    return max(ref_fmeasure(sal, mask, beta2, threshold=k / (n - 1)) for k in range(n))


# ------------------------------------------------------------------ seeded random inputs


def _case(shape, seed):
    """Saliency (smooth + noise, continuous: no ties), sparse fixations, a density map made from
    those fixations (Gaussian blur, as OSIE), an unrelated baseline and other-image fixations."""
    rng = np.random.default_rng(seed)
    sal = gaussian_filter(rng.random(shape), 2) + 0.05 * rng.random(shape)
    fix = rng.random(shape) < 0.06
    fix.flat[rng.integers(fix.size)] = True  # never empty
    den = gaussian_filter(fix.astype(float), 3)
    base = gaussian_filter(rng.random(shape), 4) + 0.1
    other = rng.random(shape) < 0.04
    other.flat[rng.integers(other.size)] = True
    return sal, fix, den, base, other


CASES = [(shape, seed) for shape in SHAPES for seed in SEEDS]


@pytest.mark.parametrize("shape,seed", CASES)
def test_location_metrics_match_reference(shape, seed):
    sal, fix, den, base, other = _case(shape, seed)
    assert M.nss(sal, fix) == pytest.approx(ref_nss(sal, fix), abs=TOL)
    assert M.nmm(sal, other) == pytest.approx(ref_nss(sal, other), abs=TOL)  # NMM = NSS over a mask
    assert M.info_gain(sal, fix, base) == pytest.approx(ref_ig(sal, fix, base), abs=TOL)
    p = fix.mean()
    assert M.mask_fraction(fix) == pytest.approx(p, abs=TOL)
    assert M.nmm_ceiling(fix) == pytest.approx(math.sqrt((1 - p) / p), abs=TOL)


@pytest.mark.parametrize("shape,seed", CASES)
def test_distribution_metrics_match_reference(shape, seed):
    sal, fix, den, base, other = _case(shape, seed)
    assert M.cc(sal, den) == pytest.approx(ref_cc(sal, den), abs=TOL)
    assert M.kld(sal, den) == pytest.approx(ref_kl(sal, den), abs=TOL)
    assert M.sim(sal, den) == pytest.approx(ref_sim(sal, den), abs=TOL)
    assert M.mae(sal, den) == pytest.approx(ref_mae(sal, den), abs=TOL)


@pytest.mark.parametrize("shape,seed", CASES)
def test_roc_metrics_match_reference(shape, seed):
    sal, fix, den, base, other = _case(shape, seed)
    assert M.auc_judd(sal, fix) == pytest.approx(ref_auc_judd(sal, fix), abs=TOL)
    assert M.auc_judd(sal, fix, jitter=True, seed=seed) == pytest.approx(
        ref_auc_judd(sal, fix, jitter=True, seed=seed), abs=TOL
    )
    assert M.auc_borji(sal, fix, n_splits=20, seed=seed) == pytest.approx(
        ref_auc_borji(sal, fix, n_splits=20, seed=seed), abs=TOL
    )
    assert M.auc_borji(sal, fix, n_splits=5, step=0.03, seed=seed) == pytest.approx(
        ref_auc_borji(sal, fix, n_splits=5, step=0.03, seed=seed), abs=TOL
    )
    assert M.auc_borji(sal, fix, exact=True) == pytest.approx(ref_exact_roc(sal[fix], sal), abs=TOL)
    assert M.sauc(sal, fix, other, n_splits=20, seed=seed) == pytest.approx(
        ref_sauc(sal, fix, other, n_splits=20, seed=seed), abs=TOL
    )


def test_exact_auc_with_ties_matches_brute_force():
    # Quantised maps have many ties: the exact variant must still equal the brute-force ROC.
    rng = np.random.default_rng(7)
    sal = np.round(rng.random((12, 15)) * 4)
    fix = rng.random((12, 15)) < 0.2
    assert M.auc_borji(sal, fix, exact=True) == pytest.approx(ref_exact_roc(sal[fix], sal), abs=TOL)


def test_auc_borji_default_splits_match_reference():
    sal, fix, *_ = _case((16, 20), 3)
    assert M.auc_borji(sal, fix) == pytest.approx(ref_auc_borji(sal, fix), abs=TOL)


@pytest.mark.parametrize("shape,seed", CASES)
def test_fmeasure_matches_reference(shape, seed):
    sal, fix, den, base, other = _case(shape, seed)
    mask = den > np.quantile(den, 0.8)
    assert M.fmeasure(sal, mask) == pytest.approx(ref_fmeasure(sal, mask), abs=TOL)
    assert M.fmeasure(sal, mask, beta2=1.0) == pytest.approx(ref_fmeasure(sal, mask, 1.0), abs=TOL)
    assert M.fmeasure_max(sal, mask) == pytest.approx(ref_fmax(sal, mask), abs=TOL)
    assert M.fmeasure_max(sal, mask, n_thresholds=11) == pytest.approx(
        ref_fmax(sal, mask, n=11), abs=TOL
    )


def test_auc_judd_is_between_exact_auc_and_one():
    # The chord through fixated thresholds lies above the full ROC staircase, so Judd >= exact
    # ROC of fixated vs non-fixated pixels (a property, not a reference: guards the tp/fp order).
    sal, fix, *_ = _case((32, 48), 5)
    exact = ref_exact_roc(sal[fix], sal[~fix])
    assert exact <= M.auc_judd(sal, fix) <= 1.0
    assert M.auc_judd(sal, fix) - exact < 0.01


# ------------------------------------------------------------------ hand-computed cases

S22 = np.array([[0.0, 1.0], [2.0, 3.0]])


def test_nss_hand():
    # mean 1.5, population var (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25: z(3) = 1.5 / sqrt(1.25)
    # = 3 / sqrt(5) = 1.3416407864998738 (MATLAB's ddof=1 would give 1.5 / sqrt(5/3) = 1.1619).
    assert M.nss(S22, [[0, 0], [0, 1]]) == pytest.approx(1.3416407864998738, abs=1e-15)
    # fixations on 3 and 0: z = +1.3416 and -1.3416, mean 0.
    assert M.nss(S22, [[1, 0], [0, 1]]) == pytest.approx(0.0, abs=1e-15)
    # fixation maps are binary: a count map (2 fixations on one pixel) counts that pixel once.
    assert M.nss(S22, [[0, 0], [1, 5]]) == pytest.approx((0.5 + 1.5) / 2 / math.sqrt(1.25), abs=1e-15)


def test_nmm_hand_and_ceiling():
    mask = np.array([[0, 0], [0, 1]])
    # p = 1/4, ceiling sqrt(3/4 / 1/4) = sqrt(3) = 1.7320508075688772, reached by the mask itself.
    assert M.mask_fraction(mask) == 0.25
    assert M.nmm_ceiling(mask) == pytest.approx(1.7320508075688772, abs=1e-15)
    assert M.nmm(mask, mask) == pytest.approx(1.7320508075688772, abs=1e-15)
    assert M.nmm(S22, mask) == pytest.approx(1.3416407864998738, abs=1e-15)
    assert M.nmm_ceiling(np.ones((2, 2))) == 0.0


def test_cc_hand():
    # S - mean = (-1.5, -0.5, 0.5, 1.5), G = (1, 2, 3, 5) - 2.75 = (-1.75, -0.75, 0.25, 2.25);
    # sum product 6.5, sum S^2 = 5, sum G^2 = 8.75: CC = 6.5 / sqrt(43.75) = 0.98270762...
    s, g = [[1, 2], [3, 4]], [[1, 2], [3, 5]]
    assert M.cc(s, g) == pytest.approx(6.5 / math.sqrt(43.75), abs=1e-15)
    assert M.cc(s, g) == pytest.approx(0.9827076298239907, abs=1e-15)
    assert M.cc(g, s) == M.cc(s, g)
    assert M.cc(s, [[4, 3], [2, 1]]) == pytest.approx(-1.0, abs=1e-15)


def test_kl_hand():
    # S / sum = (1/4, 3/4, 0, 0), G / sum = (1/2, 1/2, 0, 0):
    # KL = 1/2 ln(2) + 1/2 ln(2/3) = 1/2 ln(4/3) = 0.14384103622589045 (eps terms ~1e-16).
    assert M.kld([[1, 3], [0, 0]], [[1, 1], [0, 0]]) == pytest.approx(0.14384103622589045, abs=1e-14)
    assert M.kld(S22, S22) == pytest.approx(0.0, abs=1e-14)


def test_sim_and_mae_hand():
    # min-max S22 = (0, 1/3, 2/3, 1), / sum 2 -> (0, 1/6, 1/3, 1/2); G = reversed -> (1/2, 1/3,
    # 1/6, 0); min = (0, 1/6, 1/6, 0): SIM = 1/3. MAE: |(0,1/3,2/3,1) - (1,2/3,1/3,0)| -> mean 2/3.
    g = S22[::-1, ::-1]
    assert M.sim(S22, g) == pytest.approx(1 / 3, abs=1e-15)
    assert M.sim(S22, S22) == pytest.approx(1.0, abs=1e-15)
    assert M.mae(S22, g) == pytest.approx(2 / 3, abs=1e-15)
    assert M.mae(S22, 10 * S22 + 7) == pytest.approx(0.0, abs=1e-15)  # min-max: affine invariant


S23 = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
F23 = np.array([[0, 1, 0], [0, 1, 0]])  # fixated values 0.2 and 0.5


def test_auc_judd_hand():
    # thresholds 0.5, 0.2. At 0.5: tp 1/2, fp = #{0.6} / 4 = 1/4. At 0.2: tp 1, fp #{0.3, 0.4,
    # 0.6} / 4 = 3/4. Curve (0,0) (1/4,1/2) (3/4,1) (1,1): 1/16 + 3/8 + 1/4 = 0.6875.
    assert M.auc_judd(S23, F23) == pytest.approx(0.6875, abs=1e-15)


def test_auc_judd_ties():
    # A non-fixated pixel ties with the fixated one: (0,0) (1/3,1) (1,1) -> 1/6 + 2/3 = 5/6.
    assert M.auc_judd([[1, 1], [0, 0]], [[1, 0], [0, 0]]) == pytest.approx(5 / 6, abs=1e-15)
    # Two fixated pixels tie: one threshold, tp 1, fp 0 -> AUC 1. (MATLAB's loop gives 0.75 here:
    # it visits (1/2, 1/2) then walks fp backwards; we document and keep the proper ROC.)
    assert M.auc_judd([[1, 1], [0, 0]], [[1, 1], [0, 0]]) == pytest.approx(1.0, abs=1e-15)


def test_auc_exact_hand():
    # All 6 pixels are negatives (fixated ones too): 0.5 beats 4 and ties itself -> 4.5;
    # 0.2 beats 1 and ties itself -> 1.5; (4.5 + 1.5) / 12 = 0.5.
    assert M.auc_borji(S23, F23, exact=True) == pytest.approx(0.5, abs=1e-15)


def test_auc_borji_hand_with_documented_draws():
    s = np.array([[0.0, 0.25], [0.65, 1.0]])
    f = np.array([[0, 0], [1, 1]])  # fixated values 0.65, 1.0
    # The draw is part of the contract: default_rng(1).integers(0, 4, (2, 1)) -> pixels 1, 2.
    assert np.random.default_rng(1).integers(0, 4, size=(2, 1)).ravel().tolist() == [1, 2]
    # negatives (0.25, 0.65); step 0.5 -> thresholds 1, 0.5, 0:
    # (0,0) (fp 0, tp 1/2) (1/2, 1) (1, 1) (1, 1) -> 0 + 3/8 + 1/2 = 0.875.
    assert M.auc_borji(s, f, n_splits=1, step=0.5, seed=1) == pytest.approx(0.875, abs=1e-15)


def test_sauc_splits_are_the_permutation_estimator_in_distribution():
    # Drawing each bin's count (multivariate hypergeometric) instead of the locations must give
    # MIT's randperm estimator: the same mean and variance of one split's AUC. 40 negatives, 20 per
    # split: drawing with replacement would double the variance ((N - 1) / (N - n) = 1.95), and
    # counting in the wrong bins would move the mean.
    rng = np.random.default_rng(5)
    sal = rng.random((8, 10))
    fix = np.zeros((8, 10), dtype=bool)
    fix.flat[rng.choice(80, 20, replace=False)] = True
    other = np.zeros((8, 10), dtype=bool)
    other.flat[rng.choice(80, 40, replace=False)] = True
    S = _minmax_list(_pixels(sal))
    sth = [v for v, f in zip(S, _pixels(fix)) if f != 0]
    ind = [i for i, o in enumerate(_pixels(other)) if o != 0]
    perm_rng = np.random.default_rng(6)
    literal = np.array([ref_sauc_permutation_split(S, sth, ind, perm_rng) for _ in range(3000)])
    ours = np.array([M.sauc(sal, fix, other, n_splits=1, seed=k) for k in range(3000)])
    se = math.sqrt(literal.var() / literal.size + ours.var() / ours.size)
    assert abs(ours.mean() - literal.mean()) < 4 * se
    assert 0.85 < ours.var() / literal.var() < 1.15  # relative SE of each variance ~2.6%


def test_sauc_taking_every_negative_is_deterministic():
    # n = Nother: every split holds all the other map's pixels, whatever the seed: the grid ROC
    # of all of them (MIT's loop), for the permutation estimator and ours alike.
    rng = np.random.default_rng(7)
    sal = rng.random((9, 11))
    fix = rng.random((9, 11)) < 0.4
    other = ~fix & (rng.random((9, 11)) < 0.3)
    S = _minmax_list(_pixels(sal))
    sth = [v for v, f in zip(S, _pixels(fix)) if f != 0]
    negs = [v for v, o in zip(S, _pixels(other)) if o != 0]
    assert len(sth) >= len(negs)
    want = _borji_split_auc(sth, negs, 0.1)
    for seed in (0, 1, 2):
        assert M.sauc(sal, fix, other, n_splits=3, seed=seed) == pytest.approx(want, abs=1e-14)


def test_sauc_hand():
    # other map has exactly Nfix = 2 pixels, so every split takes both whatever the permutation:
    # negatives (0.25, 1.0), positives (0.65, 1.0). Thresholds 1.0 .. 0.7: tp 1/2, fp 1/2;
    # 0.6 .. 0.3: tp 1, fp 1/2; 0.2 .. 0: (1, 1). Area 1/8 + 1/2 = 0.625.
    s = np.array([[0.0, 0.25], [0.65, 1.0]])
    f = np.array([[0, 0], [1, 1]])
    other = np.array([[0, 1], [0, 1]])
    assert M.sauc(s, f, other) == pytest.approx(0.625, abs=1e-15)
    assert M.sauc(s, f, other, n_splits=3, seed=9) == pytest.approx(0.625, abs=1e-15)


def test_info_gain_hand():
    # P = (0, 1/6, 1/3, 1/2), constant baseline = uniform 1/4. Fixations on P = 1/2 and 1/3:
    # (log2(2) + log2(4/3)) / 2 = (1 + 0.41503749927884376) / 2 = 0.7075187496394219.
    fix = [[0, 0], [1, 1]]
    assert M.info_gain(S22, fix, np.ones((2, 2))) == pytest.approx(0.7075187496394219, abs=1e-14)
    assert M.info_gain(S22, fix, S22) == pytest.approx(0.0, abs=1e-15)


def test_fmeasure_hand():
    s = np.array([[0.0, 0.0, 0.0], [0.2, 0.9, 1.0]])
    mask = np.array([[0, 0, 0], [1, 0, 1]])
    # mean 0.35 -> t = 0.7, predicted {0.9, 1.0}, TP 1: P = R = 1/2, F = 1.3/4 / 0.65 = 0.5.
    assert M.fmeasure(s, mask) == pytest.approx(0.5, abs=1e-15)
    # Fmax: t = 0 -> P 1/3, R 1, F 0.3939; 0 < t <= 0.2 -> P 2/3, R 1, F 0.7222;
    # 0.2 < t <= 0.9 -> 0.5; 0.9 < t <= 1 -> P 1, R 1/2, F 0.65 / 0.8 = 0.8125.
    assert M.fmeasure_max(s, mask) == pytest.approx(0.8125, abs=1e-15)
    # A threshold above every value predicts nothing: F = 0.
    assert M.fmeasure(s, mask, threshold=1.5) == 0.0
    # Binarisation is S >= t: min-max (0, 1, .5, .5) has mean 0.5, t = 1.0 exactly, so the
    # maximum pixel is predicted (P = R = 1, F = 1); with S > t nothing would be (F = 0).
    assert M.fmeasure([[0, 0.5], [0.25, 0.25]], [[0, 1], [0, 0]]) == pytest.approx(1.0, abs=1e-15)


def test_fmeasure_adaptive_threshold_is_clipped_at_one():
    # A broad map: min-max (0, 1, 1, 0.8, 1, 1) has mean 4.8 / 6 = 0.8, so 2 mean = 1.6 would
    # predict nothing (F = 0). Clipped at 1 (PySODMetrics min(2 mean, 1)) it predicts the four
    # pixels equal to 1; mask = {pixel 1, pixel 3}: TP 1 (pixel 1), P = 1/4, R = 1/2,
    # F = 1.3 * (1/8) / (0.3 / 4 + 1/2) = 0.1625 / 0.575 = 0.28260869565217395.
    s = np.array([[0.0, 1.0, 1.0], [0.8, 1.0, 1.0]])
    mask = np.array([[0, 1, 0], [1, 0, 0]])
    assert M.fmeasure(s, mask) == pytest.approx(0.1625 / 0.575, abs=1e-15)
    assert M.fmeasure(s, mask, threshold=1.6) == 0.0  # the unclipped threshold, for contrast


# ------------------------------------------------------------------ degenerate inputs

CONST = np.full((3, 4), 0.7)
FIX = np.zeros((3, 4), dtype=bool)
FIX[1, 2] = FIX[0, 0] = True
DEN = np.arange(12.0).reshape(3, 4)


@pytest.mark.parametrize("fn", [M.nss, M.nmm, M.fmeasure, M.fmeasure_max])
def test_constant_saliency_is_nan(fn):
    assert math.isnan(fn(CONST, FIX))
    assert math.isnan(fn(np.zeros((3, 4)), FIX))


@pytest.mark.parametrize("fn", [M.cc, M.mae])
def test_constant_map_is_nan_symmetric(fn):
    assert math.isnan(fn(CONST, DEN))
    assert math.isnan(fn(DEN, CONST))


def test_constant_saliency_roc_is_chance():
    assert M.auc_judd(CONST, FIX) == 0.5
    assert M.auc_judd(CONST, FIX, jitter=True) == 0.5
    assert M.auc_borji(CONST, FIX) == 0.5
    assert M.auc_borji(CONST, FIX, exact=True) == 0.5
    assert M.sauc(CONST, FIX, ~FIX) == 0.5


def test_constant_maps_are_uniform_distributions():
    n = DEN.size
    g = DEN / DEN.sum()
    # KL(G || uniform) = sum g ln(g n) (the g = 0 pixel contributes 0); all-zero map = uniform too.
    expected = sum(v * math.log(v * n) for v in g.ravel() if v > 0)
    assert M.kld(CONST, DEN) == pytest.approx(expected, abs=1e-12)
    assert M.kld(np.zeros((3, 4)), DEN) == pytest.approx(expected, abs=1e-12)
    # 0 up to the eps regularisation and the rounding of 1/12 (~1e-15).
    assert M.kld(CONST, CONST) == pytest.approx(0.0, abs=1e-14)
    # SIM(uniform, G): G min-maxed (DEN already starts at 0) and sum-normalised.
    assert M.sim(CONST, DEN) == pytest.approx(np.minimum(1 / n, g).sum(), abs=1e-15)
    assert M.sim(CONST, np.zeros((3, 4))) == pytest.approx(1.0, abs=1e-15)
    # IG of a constant map over a constant baseline is 0 bits.
    assert M.info_gain(CONST, FIX, np.ones((3, 4))) == pytest.approx(0.0, abs=1e-15)


# Float32 bilinear upsampling of a constant map, as F.interpolate does it: the weights do not sum
# to exactly 1, so the "constant" map carries a few ulps of noise (checked in the test).
def _float32_upsampled_constant(value=0.7, small=(7, 9), shape=(32, 40)):
    t = torch.full((1, 1, *small), value, dtype=torch.float32)
    return torch.nn.functional.interpolate(t, size=shape, mode="bilinear", align_corners=False)[0, 0]


def test_float32_upsampled_constant_is_constant():
    up = _float32_upsampled_constant()
    rng = np.random.default_rng(3)
    fix = rng.random(up.shape) < 0.05
    den = gaussian_filter(fix.astype(float), 3)
    assert float(up.max()) > float(up.min())  # not exactly constant: the case being tested
    for x in (up, up.numpy()):  # the input dtype (float32) decides, tensor or array
        assert math.isnan(M.nss(x, fix)) and math.isnan(M.nmm(x, fix))
        assert math.isnan(M.cc(x, den)) and math.isnan(M.cc(den, x))
        assert math.isnan(M.mae(x, den)) and math.isnan(M.mae(den, x))
        assert math.isnan(M.fmeasure(x, fix)) and math.isnan(M.fmeasure_max(x, fix))
        assert M.auc_judd(x, fix) == 0.5 and M.auc_borji(x, fix) == 0.5
        assert M.auc_borji(x, fix, exact=True) == 0.5 and M.sauc(x, fix, ~fix) == 0.5
        # distribution metrics read it as the uniform distribution (an exactly flat map)
        flat = np.ones(up.shape)
        assert M.kld(x, den) == pytest.approx(ref_kl(flat, den), abs=TOL)
        assert M.sim(x, den) == pytest.approx(np.minimum(1 / den.size, ref_minmax_norm(den)).sum(), abs=TOL)
        assert M.info_gain(x, fix, flat) == pytest.approx(0.0, abs=1e-15)
        p = ref_minmax_norm(den)[fix]
        ig_uniform = np.mean(np.log2(EPS + p) - np.log2(EPS + 1 / den.size))
        assert M.info_gain(den, fix, x) == pytest.approx(ig_uniform, abs=TOL)
    # The same noise read as float64 is a real (if tiny) dynamic range: not constant.
    as64 = up.numpy().astype(np.float64)
    assert math.isfinite(M.nss(as64, fix))
    assert M.is_constant(up) and M.is_constant(up.numpy()) and not M.is_constant(as64)
    # A float16 tensor uses float16's eps: a constant of 0.7 with one ulp of float16 noise.
    h = torch.full((4, 5), 0.7, dtype=torch.float16)
    h[0, 0] = torch.nextafter(h[0, 0], torch.tensor(1.0, dtype=torch.float16))
    assert math.isnan(M.nss(h, np.eye(4, 5)))
    assert math.isfinite(M.nss(h.double(), np.eye(4, 5)))  # float64: a real 1e-3 step


def ref_minmax_norm(m):
    v = _minmax_list(_pixels(m))
    tot = sum(v)
    return np.array([x / tot for x in v]).reshape(np.shape(m))


def test_float64_tiny_dynamic_range_is_not_constant():
    # 1 + 1e-9 noise in float64: range 1e-9 >> 16 eps64 (3.6e-15) -> a real map. Its NSS must
    # equal the NSS of the noise itself (NSS is affine invariant); the float64 offset costs
    # ~eps / 1e-9 = 2e-7 of each z-score (a few 1e-7 seen), hence abs=1e-5.
    rng = np.random.default_rng(8)
    noise = rng.random((20, 24))
    fix = rng.random((20, 24)) < 0.1
    tiny = 1.0 + 1e-9 * noise
    assert M.nss(tiny, fix) == pytest.approx(M.nss(noise, fix), abs=1e-5)
    assert M.cc(tiny, noise) == pytest.approx(1.0, abs=1e-5)
    assert M.auc_judd(tiny, fix) == pytest.approx(M.auc_judd(noise, fix), abs=1e-12)
    # 1e-12 is still 280 float64 ulps of range: finite, not NaN.
    assert math.isfinite(M.nss(1.0 + 1e-12 * noise, fix))
    # The same map rounded to float32 is exactly constant (1e-9 < float32 spacing at 1).
    assert math.isnan(M.nss(tiny.astype(np.float32), fix))
    # Integer maps are compared exactly: a range of 1 on a level of 10**9 is real (the float64
    # z-score of 1e9 + {0, 1} keeps ~1e-7 of precision, hence abs=1e-6).
    big = np.full((20, 24), 10**9, dtype=np.int64)
    big[fix] += 1
    assert M.nss(big, fix) == pytest.approx(ref_nss(fix.astype(float), fix), abs=1e-6)


def test_single_fixated_pixel():
    # MIT AUC_Borji.m returns NaN for <= 1 fixated pixel; the exact variant and AUC-Judd score it.
    one = np.zeros((2, 3))
    one[1, 1] = 1  # fixated value 0.5 of S23 (min-max (0, .2, .4, .6, .8, 1))
    assert math.isnan(M.auc_borji(S23, one))
    assert math.isnan(M.auc_borji(CONST[:2, :3], one))  # the fixation count is checked first
    # exact: 0.5 beats 4 of 6 pixels and ties itself -> 4.5 / 6 = 0.75
    assert M.auc_borji(S23, one, exact=True) == pytest.approx(0.75, abs=1e-15)
    # Judd: one threshold 0.5 (min-maxed 0.8); fp = #{0.6} / 5 = 0.2: (0,0) (0.2,1) (1,1) -> 0.9
    assert M.auc_judd(S23, one) == pytest.approx(0.9, abs=1e-15)
    two = one.copy()
    two[0, 0] = 1
    assert math.isfinite(M.auc_borji(S23, two))


def test_full_fixation_map():
    full = np.ones((3, 4))
    assert M.nss(DEN, full) == pytest.approx(0.0, abs=1e-15)  # mean of z over all pixels
    with pytest.raises(ValueError, match="fixation_map covers every pixel"):
        M.auc_judd(DEN, full)
    assert M.auc_borji(DEN, full, exact=True) == pytest.approx(0.5, abs=1e-15)


_EMPTY = np.zeros((3, 4))
EMPTY_CASES = [
    (M.nss, (DEN, _EMPTY), "fixation_map is empty"),
    (M.nmm, (DEN, _EMPTY), "mask is empty"),
    (M.nmm_ceiling, (_EMPTY,), "mask is empty"),
    (M.mask_fraction, (_EMPTY,), "mask is empty"),
    (M.auc_judd, (DEN, _EMPTY), "fixation_map is empty"),
    (M.auc_borji, (DEN, _EMPTY), "fixation_map is empty"),
    (M.sauc, (DEN, _EMPTY, FIX), "fixation_map is empty"),
    (M.sauc, (DEN, FIX, _EMPTY), "other_fixation_map is empty"),
    (M.info_gain, (DEN, _EMPTY, DEN), "fixation_map is empty"),
    (M.fmeasure, (DEN, _EMPTY), "mask is empty"),
    (M.fmeasure_max, (DEN, _EMPTY), "mask is empty"),
]


@pytest.mark.parametrize("fn,args,msg", EMPTY_CASES, ids=lambda v: getattr(v, "__name__", None))
def test_empty_support_raises(fn, args, msg):
    with pytest.raises(ValueError, match=msg):
        fn(*args)


ALL_CALLS = [
    (M.nss, (DEN, FIX), ("saliency", "fixation_map")),
    (M.nmm, (DEN, FIX), ("saliency", "mask")),
    (M.cc, (DEN, DEN), ("saliency", "density")),
    (M.kld, (DEN, DEN), ("saliency", "density")),
    (M.sim, (DEN, DEN), ("saliency", "density")),
    (M.mae, (DEN, DEN), ("saliency", "density")),
    (M.auc_judd, (DEN, FIX), ("saliency", "fixation_map")),
    (M.auc_borji, (DEN, FIX), ("saliency", "fixation_map")),
    (M.sauc, (DEN, FIX, ~FIX), ("saliency", "fixation_map", "other_fixation_map")),
    (M.info_gain, (DEN, FIX, DEN), ("saliency", "fixation_map", "baseline")),
    (M.fmeasure, (DEN, FIX), ("saliency", "mask")),
    (M.fmeasure_max, (DEN, FIX), ("saliency", "mask")),
]
_IDS = [c[0].__name__ for c in ALL_CALLS]


@pytest.mark.parametrize("fn,args,names", ALL_CALLS, ids=_IDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_raises_naming_argument(fn, args, names, bad):
    for i, name in enumerate(names):
        a = [np.array(x, dtype=float) for x in args]
        a[i][1, 1] = bad
        with pytest.raises(ValueError, match=f"^{name} contains NaN or inf"):
            fn(*a)


@pytest.mark.parametrize("fn,args,names", ALL_CALLS, ids=_IDS)
def test_shape_mismatch_raises(fn, args, names):
    for i in range(1, len(args)):
        a = list(args)
        a[i] = np.zeros((4, 3))
        a[i][0, 0] = 1
        with pytest.raises(ValueError, match=r"\(3, 4\).*\(4, 3\).*same resolution.*bilinear"):
            fn(*a)


@pytest.mark.parametrize("fn,args,names", ALL_CALLS, ids=_IDS)
def test_not_2d_raises(fn, args, names):
    a = list(args)
    a[0] = np.asarray(a[0])[None]
    with pytest.raises(ValueError, match=r"saliency must be a 2-D H x W map, got shape \(1, 3, 4\)"):
        fn(*a)


def test_other_input_errors():
    with pytest.raises(ValueError, match="real numeric array"):
        M.nss(np.array([["a", "b"], ["c", "d"]]), FIX[:2, :2])
    with pytest.raises(ValueError, match="saliency is empty"):
        M.nss(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="saliency has negative values"):
        M.kld(DEN - 1, DEN)
    with pytest.raises(ValueError, match="density has negative values"):
        M.kld(DEN, DEN - 1)
    with pytest.raises(ValueError, match="step must be in"):
        M.auc_borji(DEN, FIX, step=0)
    with pytest.raises(ValueError, match="step must be in"):
        M.sauc(DEN, FIX, ~FIX, step=1.5)
    with pytest.raises(ValueError, match="n_splits must be a positive integer"):
        M.auc_borji(DEN, FIX, n_splits=0)
    with pytest.raises(ValueError, match="beta2 must be > 0"):
        M.fmeasure(DEN, FIX, beta2=0)
    with pytest.raises(ValueError, match="n_thresholds must be an integer >= 2"):
        M.fmeasure_max(DEN, FIX, n_thresholds=1)


# ------------------------------------------------------------------ torch inputs


@pytest.mark.parametrize("fn,args,names", ALL_CALLS, ids=_IDS)
def test_torch_matches_numpy(fn, args, names):
    sal, fix, den, base, other = _case((16, 20), 4)
    pools = {"saliency": sal, "fixation_map": fix, "mask": fix, "density": den,
             "baseline": base, "other_fixation_map": other}
    arrays = [pools[n].astype(np.float32) if pools[n].dtype != bool else pools[n] for n in names]
    tensors = [torch.from_numpy(a) for a in arrays]
    tensors[0].requires_grad_(True)  # a tensor that still carries autograd state
    assert fn(*tensors) == fn(*arrays)  # identical values in, identical float64 maths out
    assert isinstance(fn(*tensors), float)


def test_torch_half_precision_accepted():
    sal, fix, *_ = _case((16, 20), 4)
    t = torch.from_numpy(sal).to(torch.bfloat16)
    assert M.nss(t, torch.from_numpy(fix)) == pytest.approx(M.nss(t.double().numpy(), fix), abs=TOL)


# ------------------------------------------------------------------ peer library (optional)


@pytest.fixture(scope="module")
def pysal_metrics():
    with warnings.catch_warnings():  # pysaliency imports pkg_resources (deprecation warning)
        warnings.simplefilter("ignore")
        pytest.importorskip("pysaliency")
        from pysaliency import metrics as pm
    return pm


@pytest.mark.parametrize("shape,seed", CASES)
def test_against_pysaliency(pysal_metrics, shape, seed):
    pm = pysal_metrics
    sal, fix, den, *_ = _case(shape, seed)
    ys, xs = np.nonzero(fix)  # one entry per unique fixated pixel = our NSS convention
    # pysaliency uses the same float64 formulas in another order: agreement to rounding.
    assert M.nss(sal, fix) == pytest.approx(float(np.mean(pm.NSS(sal, xs, ys))), abs=TOL)
    assert M.cc(sal, den) == pytest.approx(float(pm.CC(sal, den)), abs=TOL)
    assert M.kld(sal, den) == pytest.approx(float(pm.MIT_KLDiv(sal, den)), abs=TOL)
    # pysaliency's SIM does not min-max; on maps whose minimum is 0 both definitions coincide.
    s0, d0 = sal - sal.min(), den - den.min()
    assert M.sim(s0, d0) == pytest.approx(float(pm.SIM(s0, d0)), abs=TOL)


@pytest.mark.filterwarnings("error")  # huge maps overflow in the fast path's std: silently, then validated
def test_nss_fast_path_equals_the_validated_path():
    """nss/nmm on a float64 map and a bool region skip the validation passes when the mean and
    std prove them unnecessary; the value must be the validated path's bit for bit (a uint8
    region takes that path), and near-constant, huge, tiny or broken maps must still get the
    validated path's NaN or error."""
    from probes import metrics as m

    rng = np.random.default_rng(11)
    used = 0
    for trial in range(200):
        h, w = int(rng.integers(1, 50)), int(rng.integers(1, 50))
        s = rng.standard_normal((h, w)) * 10.0 ** rng.uniform(-40, 40)
        if trial % 4 == 1:
            s = s + 1e12 * abs(s).max()  # variation far below the mean
        if trial % 4 == 2:
            s = np.full((h, w), 3.0)
            s.flat[0] = np.nextafter(3.0, 4.0)  # constant within 16 ulps: NaN
        fix = rng.random((h, w)) < 0.3
        if not fix.any():
            fix.flat[0] = True
        used += m._mean_z_fast(s, fix) is not None
        for fn in (m.nss, m.nmm):
            a, b = fn(s, fix), fn(s, fix.astype(np.uint8))
            assert (math.isnan(a) and math.isnan(b)) or a == b, (trial, a, b)
    assert used > 50  # ordinary maps (half the trials, most within 2**±100) take the fast path
    bad = np.ones((4, 4))
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        m.nss(bad, np.eye(4, dtype=bool))
    with pytest.raises(ValueError, match="is empty"):
        m.nss(np.arange(16.0).reshape(4, 4), np.zeros((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="shape"):
        m.nss(np.arange(16.0).reshape(4, 4), np.ones((4, 5), dtype=bool))
    huge = rng.standard_normal((8, 8)) * 1e300  # rescaled on the validated path: same value as scaled down
    assert m.nss(huge, np.eye(8, dtype=bool)) == m.nss(huge / 2.0 ** 997, np.eye(8, dtype=bool))
