"""Classical saliency models: known answers, NaN rule, determinism, file round trips, and the
vectorised kernels against literal loop versions."""
import io
import math

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from dissect import classical
from dissect.classical import _common, bms, gbvs
from probes import metrics

IMAGE_MODELS = ("gbvs", "itti", "bms", "spectral_residual")


def odd_item_array(size=256, n=4, odd=(2, 1), radius=12):
    """A uniform 4 x 4 array of dull green discs on grey with one saturated red disc."""
    img = np.full((size, size, 3), 128, np.uint8)
    yy, xx = np.mgrid[:size, :size]
    cell = size / n
    target = None
    for r in range(n):
        for c in range(n):
            disc = (yy - (r + 0.5) * cell) ** 2 + (xx - (c + 0.5) * cell) ** 2 <= radius ** 2
            img[disc] = (230, 30, 30) if (r, c) == odd else (110, 140, 110)
            if (r, c) == odd:
                target = disc
    return img, target


def _argmax_in(saliency, region):
    r, c = np.unravel_index(np.argmax(saliency), saliency.shape)
    return bool(region[r, c])


# Itti's 9-scale pyramid needs >= 256 px (scale 8 = 1/256); GBVS and BMS work on fixed-size
# internal maps (32 px graph, 400 px Boolean maps), so the smallest GBVS input keeps the test fast.
_SIZE = {"gbvs": (128, 6), "itti": (256, 12), "bms": (128, 6)}


@pytest.mark.parametrize("odd", [(2, 1), (0, 3)])
@pytest.mark.parametrize("method", ["gbvs", "itti", "bms"])
def test_odd_item_gets_the_maximum(method, odd):
    size, radius = _SIZE[method]
    img, target = odd_item_array(size=size, odd=odd, radius=radius)
    sal = classical.saliency_map(img, method)
    assert sal.shape == img.shape[:2] and sal.dtype == np.float64
    assert sal.min() == 0.0 and sal.max() == 1.0
    assert _argmax_in(sal, ndimage.binary_dilation(target, iterations=3))
    # and the target is more salient than any distractor (mean over each disc)
    assert metrics.nmm(sal, target) > 1.0


@pytest.mark.parametrize("defect", [(9, 5), (3, 12)])
def test_spectral_residual_finds_the_defect_in_a_periodic_texture(defect):
    size, period = 256, 16
    yy, xx = np.mgrid[:size, :size]
    on = ((yy % period) < period // 2) & ((xx % period) < period // 2)
    img = np.full((size, size, 3), 60, np.uint8)
    img[on] = 200
    cell = (yy // period == defect[0]) & (xx // period == defect[1])
    img[cell & on] = 60  # one square of the texture missing
    sal = classical.saliency_map(img, "spectral_residual")
    assert _argmax_in(sal, ndimage.binary_dilation(cell, iterations=8))


@pytest.mark.parametrize("method", IMAGE_MODELS)
def test_uniform_image_gives_a_constant_map_and_nan_scores(method):
    img = np.full((128, 160, 3), 77, np.uint8)
    sal = classical.saliency_map(img, method)
    assert sal.shape == (128, 160) and np.all(sal == sal[0, 0])
    fix = np.zeros((128, 160), bool)
    fix[40, 50] = fix[90, 100] = True
    assert math.isnan(metrics.nss(sal, fix)) and math.isnan(metrics.nmm(sal, fix))


def test_centre_bias_is_the_gaze_floor():
    from datasets.fixations import center_bias_map

    img = np.zeros((60, 80, 3), np.uint8)
    assert np.array_equal(classical.saliency_map(img, "centre_bias"), center_bias_map((60, 80)))


@pytest.mark.parametrize("method", IMAGE_MODELS)
def test_deterministic_and_png_round_trip_is_exact(method, rng):
    img, _ = odd_item_array(size=128, radius=6)
    img = np.clip(img.astype(int) + rng.integers(-10, 11, img.shape), 0, 255).astype(np.uint8)
    first = classical.saliency_map(img, method)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    from_png = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    # a second call on an equal array (read back from PNG): the same map, bit for bit
    assert np.array_equal(first, classical.saliency_map(from_png, method))


@pytest.mark.parametrize("method", ["gbvs", "itti", "bms"])
def test_jpeg_path_changes_the_map_only_slightly(method):
    size, radius = _SIZE[method]
    img, target = odd_item_array(size=size, radius=radius)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    from_jpeg = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    assert not np.array_equal(from_jpeg, img)  # the JPEG path really is lossy
    a, b = classical.saliency_map(img, method), classical.saliency_map(from_jpeg, method)
    assert metrics.cc(a, b) > 0.95
    assert _argmax_in(b, ndimage.binary_dilation(target, iterations=3))


def test_grey_image_is_converted_with_a_warning():
    grey = np.tile(np.arange(160, dtype=np.uint8), (128, 1))
    with pytest.warns(UserWarning, match="grey image converted"):
        sal = classical.saliency_map(grey, "itti")
    assert np.array_equal(sal, classical.saliency_map(np.repeat(grey[..., None], 3, axis=2), "itti"))


def test_bad_input_is_a_clear_error():
    img = np.zeros((128, 128, 3), np.uint8)
    with pytest.raises(ValueError, match="unknown classical saliency method 'gvbs'.*gbvs, itti"):
        classical.saliency_map(img, "gvbs")
    with pytest.raises(ValueError, match="does not take option"):
        classical.saliency_map(img, "bms", sigma_blur=3)
    with pytest.raises(ValueError, match="uint8"):
        classical.saliency_map(img.astype(float), "itti")
    with pytest.raises(ValueError, match="at least 128"):
        classical.saliency_map(np.zeros((64, 300, 3), np.uint8) + np.arange(300, dtype=np.uint8)[None, :, None],
                               "gbvs")


# --------------------------------------------------------------------------- kernels vs literal loops


def _bench():
    """The loop-based versions of bench/classical_speed.py (the benchmark's baseline)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "classical_speed.py"
    spec = importlib.util.spec_from_file_location("classical_speed", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gbvs_graph_matches_a_literal_markov_chain(rng):
    maps = rng.random((2, 4, 5))
    sigma = 1.3
    weights = gbvs.activation_weights(maps, sigma, dtype=np.float64)
    np.testing.assert_allclose(weights, _bench().loop_activation_weights(maps, sigma), rtol=1e-12, atol=1e-15)
    got = gbvs.stationary_distribution(weights, tol=1e-12)
    fast = gbvs.stationary_distribution(gbvs.activation_weights(maps, sigma), tol=1e-4)  # float32, package tol
    np.testing.assert_allclose(fast, got, rtol=1e-3)
    for k in range(2):  # the equilibrium is the principal eigenvector of the column-stochastic matrix
        vals, vecs = np.linalg.eig(weights[k])
        v = np.real(vecs[:, np.argmax(np.real(vals))])
        np.testing.assert_allclose(got[k], v / v.sum(), rtol=1e-8, atol=1e-12)


def test_local_maxima_and_normalisation_match_a_loop(rng):
    a = rng.random((9, 11)) * 10
    np.testing.assert_array_equal(np.sort(_common.local_maxima(a, 1.0)), np.sort(_bench().loop_local_maxima(a, 1.0)))
    d = (a - a.min()) / (a.max() - a.min()) * 10
    peaks = _common.local_maxima(d, 1.0)
    np.testing.assert_allclose(_common.max_normalize(a), d * (10 - peaks.mean()) ** 2)


def test_bms_surroundedness_matches_a_flood_fill(rng):
    mask = rng.random((30, 40)) > 0.55
    want = _bench().loop_surrounded(mask)
    assert want.any() and not want.all()
    np.testing.assert_array_equal(bms.surrounded(mask), want)


def test_imresize_matches_pillow_bicubic_away_from_the_borders(rng):
    a = rng.random((48, 64))
    for shape in ((12, 16), (24, 32), (96, 128)):
        got = _common.imresize(a, shape)
        want = np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize(shape[::-1], Image.BICUBIC))
        m = 6 if shape[0] > a.shape[0] else 3
        np.testing.assert_allclose(got[m:-m, m:-m], want[m:-m, m:-m], atol=2e-5)
