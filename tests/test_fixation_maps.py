"""datasets.fixations, the maps moved there from probes and dissect: a dataset's fixation pool,
the inter-observer pairs, resize_map and the constancy rule, against naive references."""
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import ndimage

from datasets.base import Sample, Subset
from datasets.fixations import (
    FixationMaps,
    check_fixation_table,
    checked_map,
    fixation_map,
    fixation_pool,
    human_density,
    is_constant,
    loso_pairs,
    other_images_fixations,
    resize_map,
    sample_fixation_map,
    split_half_pairs,
)

SHAPE = (30, 36)


def _table(rng, n_subjects=4, per_subject=7, shape=SHAPE):
    h, w = shape
    rows = [{"x": round(float(rng.uniform(1, w)), 1), "y": round(float(rng.uniform(1, h)), 1), "subject": s,
             "duration": float(rng.uniform(50, 400))}
            for s in (7, 3, 9, 1)[:n_subjects] for _ in range(per_subject)]  # subjects not sorted
    table = pd.DataFrame(rows)
    return table.sample(frac=1.0, random_state=0).reset_index(drop=True)  # interleaved rows


def _naive_fixmap(table, shape=SHAPE):
    # the rounding itself is checked against the literal formula in test_fixations / test_gaze
    return fixation_map(table["x"].to_numpy(), table["y"].to_numpy(), shape)


def _naive_density(fix, sigma):
    # OSIE recipe: Gaussian blur of the binary map, zero padding, min-max.
    d = ndimage.gaussian_filter(fix.astype(float), sigma, mode="constant", truncate=3.5)
    return (d - d.min()) / (d.max() - d.min())


def _first_seen(values):
    out = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


# --------------------------------------------------------------------------- inter-observer pairs


def test_loso_pairs_equal_a_naive_per_subject_loop(rng):
    table = _table(rng)
    pairs = list(loso_pairs(table, SHAPE, sigma=3.0))
    subjects = _first_seen(table["subject"].tolist())
    assert len(pairs) == len(subjects) == 4
    for (held, others), s in zip(pairs, subjects):
        assert held.dtype == bool and held.shape == SHAPE
        assert np.array_equal(held, _naive_fixmap(table[table.subject == s]))
        # scipy's own blur vs the sparse product: float64 rounding only (a few 1e-16)
        np.testing.assert_allclose(others, _naive_density(_naive_fixmap(table[table.subject != s]), 3.0),
                                   rtol=0, atol=1e-12)
    # duration weighted: the others' density is human_density's Ebrahimpour recipe of the others
    for (held, others), s in zip(loso_pairs(table, SHAPE, sigma=3.0, duration_weighted=True), subjects):
        rest = table[table.subject != s]
        assert np.array_equal(others, human_density((rest, SHAPE), sigma=3.0, duration_weighted=True))
        assert not np.array_equal(others, human_density((rest, SHAPE), sigma=3.0))


def test_split_half_pairs_equal_the_documented_draws(rng):
    table = _table(rng, n_subjects=4)
    subjects = _first_seen(table["subject"].tolist())
    draws = np.random.default_rng(11)
    pairs = list(split_half_pairs(table, SHAPE, sigma=3.0, n_splits=5, seed=11))
    assert len(pairs) == 5
    for a_density, b_density in pairs:
        perm = draws.permutation(4)
        half_a = {subjects[i] for i in perm[:2]}
        in_a = table.subject.isin(half_a)
        np.testing.assert_allclose(a_density, _naive_density(_naive_fixmap(table[in_a]), 3.0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(b_density, _naive_density(_naive_fixmap(table[~in_a]), 3.0), rtol=0, atol=1e-12)
    # the seed decides the halves: another seed gives other pairs somewhere
    other = list(split_half_pairs(table, SHAPE, sigma=3.0, n_splits=5, seed=12))
    assert any(not np.array_equal(p[0], q[0]) for p, q in zip(pairs, other))


def test_inter_observer_pairs_refuse_what_has_no_two_subjects(rng):
    table = _table(rng, n_subjects=1)
    for make in (loso_pairs, split_half_pairs):
        with pytest.raises(ValueError, match="1 subject"):
            make(table, SHAPE)  # at the call, not at the first pair
        with pytest.raises(ValueError, match="no 'subject' column"):
            make(table.drop(columns="subject"), SHAPE)
        with pytest.raises(ValueError, match="pandas DataFrame"):
            make(table[["x", "y"]].to_numpy(), SHAPE)
        with pytest.raises(ValueError, match="empty"):
            make(table.iloc[:0], SHAPE)
    with pytest.raises(ValueError, match="n_splits must be a positive integer"):
        split_half_pairs(_table(rng), SHAPE, n_splits=0)
    with pytest.raises(ValueError, match="duration"):
        next(loso_pairs(_table(rng).drop(columns="duration"), SHAPE, duration_weighted=True))


def test_check_fixation_table():
    table = pd.DataFrame({"x": [1.0], "y": [2.0]})
    assert check_fixation_table(table) is table
    with pytest.raises(ValueError, match="columns x, y"):
        check_fixation_table(pd.DataFrame({"x": [1.0]}))


# --------------------------------------------------------------------------- a dataset's fixation pool


def _samples(rng, shapes=((12, 16), (20, 14), (9, 9), (16, 16))):
    out = []
    for i, (h, w) in enumerate(shapes):
        img = np.zeros((h, w, 3), np.uint8)
        fix = rng.random((h, w)) < 0.1
        fix[i % h, i % w] = True
        if i == 1:  # fixations only as a table (1-based points): the map is built from them
            rows, cols = np.nonzero(fix)
            table = pd.DataFrame({"x": cols + 1.0, "y": rows + 1.0})
            out.append(Sample(f"s{i}", img, np.zeros((0, h, w), bool), [], fixations=table))
        else:
            out.append(Sample(f"s{i}", img, np.zeros((0, h, w), bool), [], fixation_map=fix))
    return out


def test_fixation_pool_round_trips_the_dense_maps(rng):
    samples = _samples(rng)
    empty = Sample("empty", np.zeros((8, 10, 3), np.uint8), np.zeros((0, 8, 10), bool), [],
                   fixation_map=np.zeros((8, 10), bool))
    data = samples[:2] + [empty] + samples[2:]
    dense = [sample_fixation_map(s) for s in data]
    maps, usable = fixation_pool(data)
    assert isinstance(maps, FixationMaps) and len(maps) == len(data)
    assert usable == [0, 1, 3, 4]  # the image without a fixated pixel is left out
    for i, d in enumerate(dense):
        got = maps[i]
        assert got.dtype == bool and got.shape == d.shape and np.array_equal(got, d)
        assert maps.n_points(i) == int(d.sum())
    # the table sample's map is the fixation map of its points; the map samples' maps are theirs
    assert np.array_equal(dense[1], fixation_map(data[1].fixations["x"], data[1].fixations["y"], data[1].shape))
    assert np.array_equal(dense[0], data[0].fixation_map)
    # s-AUC negatives from the compact pool equal those from the dense maps (datasets.base.Subset
    # is the view over the usable images)
    pool = Subset(maps, usable)
    dense_usable = [dense[i] for i in usable]
    for k in range(len(usable)):
        for n_other in (1, 2, 10):
            assert np.array_equal(other_images_fixations(pool, k, (13, 17), n_other=n_other, seed=4),
                                  other_images_fixations(dense_usable, k, (13, 17), n_other=n_other, seed=4))


def test_fixation_pool_errors(rng):
    no_gaze = Sample("a", np.zeros((4, 4, 3), np.uint8), np.zeros((0, 4, 4), bool), [])
    assert sample_fixation_map(no_gaze) is None
    with pytest.raises(ValueError, match="has no images"):
        fixation_pool([])
    with pytest.raises(ValueError, match="image 'a' has no fixations"):
        fixation_pool(_samples(rng)[:1] + [no_gaze])
    empty = Sample("e", np.zeros((4, 4, 3), np.uint8), np.zeros((0, 4, 4), bool), [],
                   fixation_map=np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="every image's fixation map is empty"):
        fixation_pool([empty, empty])


# --------------------------------------------------------------------------- resize_map and constancy


def test_resize_map_is_pil_and_torch_bilinear(rng):
    small = rng.random((7, 9))
    got = resize_map(small, (40, 31))
    assert got.dtype == np.float64 and got.shape == (40, 31)
    ref = torch.nn.functional.interpolate(torch.from_numpy(small)[None, None], size=(40, 31), mode="bilinear",
                                          align_corners=False)[0, 0].numpy()
    assert np.array_equal(got, ref)  # the same float64 computation
    # PIL's bilinear (upsampling: no antialias support widening) in float32 mode 'F': its output is
    # float32, so agreement is to float32 rounding of values in [0, 1] (~6e-8).
    pil = np.asarray(Image.fromarray(small.astype(np.float32), mode="F").resize((31, 40), Image.BILINEAR))
    np.testing.assert_allclose(got, pil, rtol=0, atol=1e-6)
    # align_corners=True is the wrong geometry: it moves values far beyond that tolerance
    corners = torch.nn.functional.interpolate(torch.from_numpy(small)[None, None], size=(40, 31), mode="bilinear",
                                              align_corners=True)[0, 0].numpy()
    assert np.abs(got - corners).max() > 1e-2
    # a tensor (float32) is computed in float64 as well; the same shape is returned unchanged
    t = torch.from_numpy(small.astype(np.float32))
    assert np.array_equal(resize_map(t, (40, 31)), resize_map(small.astype(np.float32), (40, 31)))
    assert np.array_equal(resize_map(small, small.shape), small)


def test_resize_map_keeps_a_dead_map_exactly_constant():
    # float32 bilinear weights do not sum to exactly 1: a constant map upsampled in float32 carries
    # rounding noise, which the dtype-aware rule reads as constant
    up = torch.nn.functional.interpolate(torch.full((1, 1, 7, 9), 0.7), size=(32, 40), mode="bilinear",
                                         align_corners=False)[0, 0]
    assert float(up.max()) > float(up.min()) and is_constant(up)
    out = resize_map(up, (64, 80))
    assert out.shape == (64, 80) and np.all(out == out.flat[0]) and out.flat[0] == pytest.approx(0.7, abs=1e-6)
    assert not is_constant(up.double())  # the same values as float64: a real (tiny) range


def test_is_constant_is_the_metrics_rule():
    from probes import metrics

    assert metrics.is_constant is is_constant  # one rule, defined once
    x = np.full((3, 4), 2.0)
    x[0, 0] = np.nextafter(2.0, 3.0)  # 1 ulp: constant within 16 ulps
    assert is_constant(x) and is_constant(metrics.prepare(x))
    y = np.arange(12.0).reshape(3, 4)
    assert not is_constant(y) and not is_constant(metrics.prepare(y))
    assert is_constant(np.ones((2, 2), np.int64)) and not is_constant(np.eye(2, dtype=bool))
    with pytest.raises(ValueError, match="^map contains NaN or inf"):
        is_constant(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="^saliency must be a 2-D"):
        checked_map(np.ones(3), "saliency")
    arr, lo, hi, eps = checked_map(torch.ones(2, 3, dtype=torch.float16) * 3, "m")
    assert arr.dtype == np.float64 and (lo, hi) == (3.0, 3.0) and eps == float(torch.finfo(torch.float16).eps)


def test_probes_gaze_reexports_the_moved_maps():
    from probes import gaze

    assert gaze.human_density is human_density and gaze.other_images_fixations is other_images_fixations
    assert {"human_density", "other_images_fixations"} <= set(gaze.__all__)
