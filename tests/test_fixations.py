"""Tests for datasets.fixations against hand-computed cases and brute-force references."""
import math

import numpy as np
import pytest

from datasets.fixations import (
    center_bias_map,
    density_map,
    duration_density_map,
    fixation_map,
    fixation_pixels,
    rescale_points,
    resize_fixation_map,
)


# --------------------------------------------------------------------------- references
def _gauss_sum(weights: np.ndarray, sigma: float) -> np.ndarray:
    """Literal sum of unnormalised Gaussians centred on every weighted pixel (zero padding:
    nothing outside the map contributes)."""
    h, w = weights.shape
    out = np.zeros((h, w))
    for pr in range(h):
        for pc in range(w):
            if weights[pr, pc] == 0:
                continue
            for r in range(h):
                for c in range(w):
                    out[r, c] += weights[pr, pc] * math.exp(-((r - pr) ** 2 + (c - pc) ** 2) / (2 * sigma**2))
    return out


def _minmax(a: np.ndarray) -> np.ndarray:
    return (a - a.min()) / (a.max() - a.min())


def _matlab_pixel(v: float, n: int) -> int:
    """MATLAB max(1, min(round(v), n)) - 1 for v > 0, written out."""
    return min(max(int(math.floor(v + 0.5)), 1), n) - 1


# --------------------------------------------------------------------------- rounding
def test_matlab_rounding_one_based_halves():
    x = [1.0, 1.4, 1.5, 2.49, 2.5, 3.5, 4.5]
    y = [1.0] * len(x)
    rows, cols, n = fixation_pixels(x, y, (5, 6))
    # MATLAB round: 1, 1, 2, 2, 3, 4, 5 -> 0-based columns:
    assert cols.tolist() == [0, 0, 1, 1, 2, 3, 4]
    assert rows.tolist() == [0] * len(x)
    assert n == 0
    assert rows.dtype == np.int64 and cols.dtype == np.int64
    # np.round (half to even) would give 2 -> col 1 for 2.5 and 4 -> col 3 for 4.5: the rule matters.
    assert (np.round([2.5, 4.5]) - 1).tolist() == [1, 3]


def test_matlab_rounding_rows_and_zero_based():
    rows, cols, n = fixation_pixels([0.5, 1.5, 2.5], [2.5, 0.49, 3.5], (5, 6), one_based=False)
    assert cols.tolist() == [1, 2, 3]  # np.round would give 0, 2, 2
    assert rows.tolist() == [3, 0, 4]  # np.round would give 2, 0, 4
    assert n == 0


def test_clamping_is_counted():
    h, w = 5, 6
    x = [0.2, w + 0.7, 0.5, w + 0.49, 3.0, -4.0, w + 0.5]
    y = [2.0, 3.0, 1.0, 1.0, h + 0.7, 0.1, 2.0]
    rows, cols, n = fixation_pixels(x, y, (h, w))
    assert cols.tolist() == [0, 5, 0, 5, 2, 0, 5]
    assert rows.tolist() == [1, 2, 0, 0, 4, 0, 1]
    # outside [0.5, W + 0.5): 0.2, W+0.7, row H+0.7, (-4, 0.1) counted once, W+0.5
    assert n == 5
    assert fixation_pixels([-0.6, -0.5, w - 0.5], [0, 0, 0], (h, w), one_based=False)[2] == 2


def test_fixation_map_duplicates_collapse():
    x = [1.2, 0.9, 1.0, 3.0, 3.4]
    y = [1.4, 1.0, 1.3, 2.0, 2.2]
    m = fixation_map(x, y, (4, 5))
    expected = np.zeros((4, 5), dtype=bool)
    expected[0, 0] = expected[1, 2] = True
    assert m.dtype == bool
    np.testing.assert_array_equal(m, expected)
    assert not fixation_map([], [], (4, 5)).any()


# --------------------------------------------------------------------------- density maps
@pytest.fixture
def small_counts():
    f = np.zeros((12, 15))
    f[0, 0] = 1  # corner: zero padding matters here
    f[5, 7] = 2  # a count map: two fixations on one pixel
    f[11, 3] = 1
    f[6, 14] = 1
    return f


def test_density_map_matches_brute_force(small_counts):
    sigma = 2.0
    # radius int(7.5 * 2 + 0.5) = 15 >= max(12, 15) - 1: the kernel is never truncated inside the map,
    # so the only difference from the literal sum is scipy's kernel normalisation, removed by min-max.
    truncate = 7.5
    ref = _gauss_sum(small_counts, sigma)
    got = density_map(small_counts, sigma, truncate=truncate)
    np.testing.assert_allclose(got, _minmax(ref), rtol=0, atol=1e-10)
    assert got.min() == 0.0 and got.max() == 1.0

    # unnormalised: divide by the discrete kernel's sum (separable, per axis)
    r = int(truncate * sigma + 0.5)
    z = sum(math.exp(-(k**2) / (2 * sigma**2)) for k in range(-r, r + 1)) ** 2
    raw = density_map(small_counts, sigma, truncate=truncate, normalize=False)
    np.testing.assert_allclose(raw, ref / z, rtol=0, atol=1e-12)


def test_density_map_weights_multiply(small_counts, rng):
    wts = rng.uniform(0.1, 2.0, small_counts.shape)
    got = density_map(small_counts, 2.0, weights=wts, truncate=7.5)
    np.testing.assert_allclose(got, _minmax(_gauss_sum(small_counts * wts, 2.0)), rtol=0, atol=1e-10)


def test_density_map_default_radius_is_3_5_sigma():
    # 1 x 201 impulse: the support of the response is the kernel, 2 * int(3.5 * 24 + 0.5) + 1 = 169 px
    f = np.zeros((1, 201))
    f[0, 100] = 1
    d = density_map(f, normalize=False)
    assert np.count_nonzero(d) == 169
    assert d.dtype == np.float64


def test_density_map_constant_result_is_ones():
    # radius int(3.5 * 0.1 + 0.5) = 0: the blur is the identity, a full map stays constant
    np.testing.assert_array_equal(density_map(np.ones((3, 4)), 0.1), np.ones((3, 4)))


def test_duration_density_map_literal():
    h, w, sigma = 12, 15, 2.0
    x = [1.0, 1.4, 7.5, 15.7, 3.0]
    y = [1.0, 0.8, 6.2, 7.0, 12.0]
    dur = [100.0, 300.0, 50.0, 400.0, 200.0]
    f = np.zeros((h, w))
    for xi, yi, di in zip(x, y, dur):
        f[_matlab_pixel(yi, h), _matlab_pixel(xi, w)] += di / 400.0  # duplicates (first two) add
    assert f[0, 0] == pytest.approx(1.0)
    got = duration_density_map(x, y, dur, (h, w), sigma, truncate=7.5)
    np.testing.assert_allclose(got, _minmax(_gauss_sum(f, sigma)), rtol=0, atol=1e-10)
    # default recipe: sigma 20, same pipeline as density_map on the weight map
    np.testing.assert_allclose(duration_density_map(x, y, dur, (h, w)), density_map(f, 20.0), atol=1e-12)


# --------------------------------------------------------------------------- centre bias
def test_center_bias_map():
    b = center_bias_map((5, 7))
    np.testing.assert_allclose(b, b[::-1, :], atol=0)
    np.testing.assert_allclose(b, b[:, ::-1], atol=0)
    assert b.max() == 1.0 and b[2, 3] == 1.0
    # literal: row 0 is 2 px above the centre, sigma_rows = 0.25 * 5
    assert b[0, 3] == pytest.approx(math.exp(-4 / (2 * 1.25**2)), rel=1e-12)
    assert b[0, 0] == pytest.approx(math.exp(-4 / (2 * 1.25**2) - 9 / (2 * 1.75**2)), rel=1e-12)
    e = center_bias_map((4, 6), sigma_frac=0.1)  # even: the peak falls between pixels
    assert e.max() == 1.0
    np.testing.assert_allclose(e, e[::-1, ::-1], atol=1e-15)
    np.testing.assert_array_equal(e[1:3, 2:4], np.ones((2, 2)))


# --------------------------------------------------------------------------- rescaling
def test_rescale_points_edges_and_centres():
    x2, y2 = rescale_points([0.5, 800.5, 1.0], [0.5, 600.5, 1.0], (600, 800), (480, 640))
    np.testing.assert_allclose(x2, [0.5, 640.5, 0.9], atol=1e-12)
    np.testing.assert_allclose(y2, [0.5, 480.5, 0.9], atol=1e-12)
    x0, y0 = rescale_points([-0.5, 0.0], [-0.5, 599.5], (600, 800), (480, 640), one_based=False)
    np.testing.assert_allclose(x0, [-0.5, -0.1], atol=1e-12)
    np.testing.assert_allclose(y0, [-0.5, 479.5], atol=1e-12)


@pytest.mark.parametrize("one_based", [True, False])
def test_rescale_round_trip_pixel_centres(one_based):
    off = 1 if one_based else 0
    cols, rows = np.meshgrid(np.arange(800) + off, np.arange(600) + off)
    x, y = cols.ravel().astype(float), rows.ravel().astype(float)
    xs, ys = rescale_points(x, y, (600, 800), (480, 640), one_based)
    xb, yb = rescale_points(xs, ys, (480, 640), (600, 800), one_based)
    r, c, n = fixation_pixels(xb, yb, (600, 800), one_based)
    np.testing.assert_array_equal(c, x - off)
    np.testing.assert_array_equal(r, y - off)
    assert n == 0


def test_resize_fixation_map_literal():
    big = np.zeros((4, 6), dtype=bool)
    big[0, 0] = big[0, 1] = True  # 0-based cols 0, 1 -> -0.25, 0.25 -> both col 0: collapse
    big[3, 5] = True  # -> (1.25, 2.25) -> (1, 2)
    big[2, 2] = True  # -> (0.75, 0.75) -> (1, 1)
    small = resize_fixation_map(big, (2, 3))
    expected = np.zeros((2, 3), dtype=bool)
    expected[0, 0] = expected[1, 2] = expected[1, 1] = True
    np.testing.assert_array_equal(small, expected)
    # upscale x2: 0-based c -> 2c + 0.5 -> pixel 2c + 1 (MATLAB rounds the half up)
    up = resize_fixation_map(expected, (4, 6))
    exp_up = np.zeros((4, 6), dtype=bool)
    exp_up[1, 1] = exp_up[3, 5] = exp_up[3, 3] = True
    np.testing.assert_array_equal(up, exp_up)


# --------------------------------------------------------------------------- errors
def test_value_errors():
    with pytest.raises(ValueError, match="NaN"):
        fixation_pixels([1.0, np.nan], [1.0, 2.0], (4, 4))
    with pytest.raises(ValueError, match="NaN"):
        rescale_points([1.0], [np.inf], (4, 4), (2, 2))
    with pytest.raises(ValueError, match="same length"):
        fixation_map([1.0, 2.0], [1.0], (4, 4))
    with pytest.raises(ValueError, match="shape must be positive"):
        fixation_pixels([1.0], [1.0], (0, 4))
    with pytest.raises(ValueError, match="shape must be a pair"):
        fixation_map([1.0], [1.0], (4,))
    with pytest.raises(ValueError, match="to_shape must be positive"):
        rescale_points([1.0], [1.0], (4, 4), (2, -1))
    with pytest.raises(ValueError, match="shape must be positive"):
        center_bias_map((3, 0))
    with pytest.raises(ValueError, match="empty"):
        density_map(np.zeros((4, 5)))
    with pytest.raises(ValueError, match="non-negative"):
        density_map(-np.eye(4))
    with pytest.raises(ValueError, match="sigma must be positive"):
        density_map(np.eye(4), 0.0)
    with pytest.raises(ValueError, match="truncate must be positive"):
        density_map(np.eye(4), truncate=-1.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        density_map(np.eye(4), mode="zeros")
    with pytest.raises(ValueError, match="weights have shape"):
        density_map(np.eye(4), weights=np.ones((4, 5)))
    with pytest.raises(ValueError, match="H x W map"):
        density_map(np.ones(4))
    with pytest.raises(ValueError, match="no fixations"):
        duration_density_map([], [], [], (4, 4))
    with pytest.raises(ValueError, match="one entry per fixation"):
        duration_density_map([1.0, 2.0], [1.0, 2.0], [100.0], (4, 4))
    with pytest.raises(ValueError, match="non-negative"):
        duration_density_map([1.0, 2.0], [1.0, 2.0], [100.0, -5.0], (4, 4))
    with pytest.raises(ValueError, match="all durations are zero"):
        duration_density_map([1.0], [1.0], [0.0], (4, 4))
    with pytest.raises(ValueError, match="sigma must be positive"):
        duration_density_map([1.0], [1.0], [10.0], (4, 4), sigma=-2.0)
    with pytest.raises(ValueError, match="sigma_frac must be positive"):
        center_bias_map((4, 4), sigma_frac=0.0)
    with pytest.raises(ValueError, match="fixation_map must be a non-empty"):
        resize_fixation_map(np.ones((2, 2, 2)), (4, 4))
