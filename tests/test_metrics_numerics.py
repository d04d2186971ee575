"""probes.metrics on the whole finite float64 range, argument checks, and the fast paths
against their literal formulas (bit for bit)."""
import math

import numpy as np
import pytest

from probes import metrics as M

FIX = np.array([[0, 1]], dtype=bool)


def test_extreme_magnitudes_score_like_the_unit_scale_map(rng):
    base = rng.random((20, 30))
    fix = rng.random((20, 30)) < 0.1
    fix[0, 0] = True
    dens = rng.random((20, 30))
    for scale in (1e-310, 1e-300, 1e-200, 1e155, 1e300, 1e306, 2.0 ** 1000):
        big = base * scale
        assert M.nss(big, fix) == pytest.approx(M.nss(base, fix), rel=1e-12)
        assert M.cc(big, dens * scale) == pytest.approx(M.cc(base, dens), rel=1e-12)
        assert M.kld(big, dens * scale) == pytest.approx(M.kld(base, dens), rel=1e-9)
        assert M.sim(big, dens) == pytest.approx(M.sim(base, dens), rel=1e-12)
        assert M.mae(big, dens) == pytest.approx(M.mae(base, dens), rel=1e-12)
        assert M.auc_judd(big, fix) == M.auc_judd(base, fix)
        assert M.fmeasure(big, fix) == pytest.approx(M.fmeasure(base, fix), rel=1e-12)


def test_the_issue_cases():
    assert M.nss([[0, 1e155]], FIX) == pytest.approx(1.0)
    assert M.nss([[0, 1e-300]], FIX) == pytest.approx(1.0)
    assert M.cc([[0, 1e300, 5e299]], [[1e300, 0, 5e299]]) == pytest.approx(-1.0)
    full = np.array([[-1e308, 1e308, 0.0, 5e307]])
    mask = np.array([[0, 1, 0, 1]], dtype=bool)
    half = np.array([[0.0, 1.0, 0.5, 0.75]])  # the same map min-maxed
    assert M.sim(full, half) == pytest.approx(1.0)
    assert M.mae(full, half) == pytest.approx(0.0, abs=1e-15)
    assert M.fmeasure(full, mask) == pytest.approx(M.fmeasure(half, mask))
    assert M.nss(full, mask) == pytest.approx(M.nss(half, mask))
    assert not M.is_constant(full)
    assert M.kld(np.array([[1e306, 2e306]]), np.array([[1.0, 2.0]])) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("call, name", [
    (lambda: M.fmeasure([[0.0, 1.0]], FIX, threshold=math.nan), "threshold"),
    (lambda: M.fmeasure([[0.0, 1.0]], FIX, threshold=math.inf), "threshold"),
    (lambda: M.fmeasure([[0.0, 1.0]], FIX, beta2=math.inf), "beta2"),
    (lambda: M.fmeasure([[0.0, 1.0]], FIX, beta2=math.nan), "beta2"),
    (lambda: M.auc_borji([[0.0, 1.0]], FIX, n_splits=math.inf), "n_splits"),
    (lambda: M.auc_borji([[0.0, 1.0]], FIX, n_splits=math.nan), "n_splits"),
    (lambda: M.sauc([[0.0, 1.0]], FIX, FIX, n_splits=2.5), "n_splits"),
    (lambda: M.fmeasure_max([[0.0, 1.0]], FIX, n_thresholds=math.inf), "n_thresholds"),
    (lambda: M.fmeasure_max([[0.0, 1.0]], FIX, n_thresholds=math.nan), "n_thresholds"),
])
def test_bad_arguments_name_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        call()


def test_fast_paths_equal_the_literal_formulas(rng):
    s = rng.random((37, 41))
    fix = rng.random((37, 41)) < 0.1
    z = (s - s.mean()) / s.std()
    assert np.array_equal(M._zscore(s), z)
    assert M.nss(s, fix) == float(z[fix].mean())
    g = rng.random((37, 41))
    assert M.cc(s, g) == float(np.clip(np.mean(z * ((g - g.mean()) / g.std())), -1, 1))
    neg = rng.random((50, 7))
    thr = M._step_thresholds(0.1)[::-1]
    assert np.array_equal(M._fraction_at_or_above(neg, thr), (neg[None] >= thr[:, None, None]).mean(axis=1))


def test_exact_sauc_is_the_mann_whitney_statistic(rng):
    s = np.round(rng.random((30, 40)) * 20) / 20  # ties count one half
    fix = rng.random((30, 40)) < 0.05
    other = rng.random((30, 40)) < 0.2
    pos, neg = s[fix], s[other]
    expected = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert M.sauc(s, fix, other, exact=True) == pytest.approx(expected, abs=1e-12)
    assert abs(M.sauc(s, fix, other) - expected) < 0.05  # MIT's sampled estimate of the same quantity
