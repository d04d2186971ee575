"""The sparse-sum density map (datasets.fixations) against scipy's gaussian_filter, and the region cache."""
import numpy as np
import pytest
from scipy import ndimage

from datasets import fixations
from datasets.fixations import density_map
from datasets.regions_from_fixations import cached_fixation_clusters, fixation_clusters


@pytest.mark.parametrize("shape, n, sigma, truncate", [
    ((60, 80), 12, 6.0, 3.5),    # OSIE-like: few fixations, kernel larger than the gaps
    ((37, 23), 5, 2.3, 1.2),     # odd sizes, short kernel
    ((50, 40), 3, 40.0, 3.5),    # kernel much larger than the image (zero padding matters)
    ((1, 30), 2, 3.0, 2.0),      # a single row
])
def test_sparse_density_equals_scipy(shape, n, sigma, truncate, rng):
    f = np.zeros(shape)
    f[rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)] += rng.random(n) + 0.5  # duplicates add
    ours = fixations._gaussian_density(f, sigma, truncate, "constant")
    ref = ndimage.gaussian_filter(f, sigma, mode="constant", cval=0.0, truncate=truncate)
    assert np.abs(ours - ref).max() <= 2e-15 * ref.max()
    assert np.allclose(density_map(f, sigma, truncate=truncate), (ref - ref.min()) / (ref.max() - ref.min()),
                       rtol=0, atol=1e-14)


def test_dense_map_and_other_modes_use_scipy(rng):
    f = rng.random((20, 30))  # every row fixated: the sparse sum would cost more
    ref = ndimage.gaussian_filter(f, 2.0, mode="constant", truncate=3.5)
    assert np.array_equal(fixations._gaussian_density(f, 2.0, 3.5, "constant"), ref)
    sparse = np.zeros((20, 30))
    sparse[3, 4] = 1
    assert np.array_equal(fixations._gaussian_density(sparse, 2.0, 3.5, "nearest"),
                          ndimage.gaussian_filter(sparse, 2.0, mode="nearest", truncate=3.5))


def _fix(rng, shape=(48, 64)):
    fix = np.zeros(shape, dtype=bool)
    for cy, cx in ((12, 15), (30, 45)):
        fix[np.clip(cy + rng.integers(-3, 4, 8), 0, shape[0] - 1), np.clip(cx + rng.integers(-3, 4, 8), 0, shape[1] - 1)] = True
    return fix


def test_region_cache_returns_the_computed_clusters(tmp_path, rng, monkeypatch):
    fix = _fix(rng)
    ref_masks, ref_cats = fixation_clusters(fix, sigma=4.0)
    assert len(ref_masks) == 2
    masks, cats = cached_fixation_clusters(fix, sigma=4.0, cache_dir=tmp_path)  # computed, stored
    assert len(list(tmp_path.glob("*.npz"))) == 1
    # A second call reads the entry: prove it by making the computation fail.
    monkeypatch.setattr("datasets.regions_from_fixations.fixation_clusters",
                        lambda *a, **k: pytest.fail("recomputed a cached entry"))
    again, cats2 = cached_fixation_clusters(fix, sigma=4.0, cache_dir=tmp_path)
    for got in (masks, again):
        assert got.dtype == bool and np.array_equal(got, ref_masks)
    assert cats == cats2 == ref_cats


def test_region_cache_key_changes_with_options_and_fixations(tmp_path, rng):
    fix = _fix(rng)
    cached_fixation_clusters(fix, sigma=4.0, cache_dir=tmp_path)
    cached_fixation_clusters(fix, sigma=5.0, cache_dir=tmp_path)  # another option: another entry
    moved = fix.copy()
    moved[0, 0] = True
    masks, _ = cached_fixation_clusters(moved, sigma=4.0, cache_dir=tmp_path)  # another fixation
    assert len(list(tmp_path.glob("*.npz"))) == 3
    assert np.array_equal(masks, fixation_clusters(moved, sigma=4.0)[0])


def test_region_cache_recovers_from_a_broken_entry(tmp_path, rng):
    fix = _fix(rng)
    cached_fixation_clusters(fix, sigma=4.0, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.npz")
    entry.write_bytes(b"not a zip file")
    masks, _ = cached_fixation_clusters(fix, sigma=4.0, cache_dir=tmp_path)
    assert np.array_equal(masks, fixation_clusters(fix, sigma=4.0)[0])
    with np.load(entry) as stored:  # replaced by a good entry
        assert int(stored["n"]) == len(masks)


def test_region_cache_off_without_a_folder(tmp_path, rng, monkeypatch):
    monkeypatch.setenv("SALIENCY_DISSECT_REGION_CACHE", "")
    masks, _ = cached_fixation_clusters(_fix(rng), sigma=4.0)
    assert len(masks) == 2
    assert not list(tmp_path.iterdir())


def test_binary_map_fast_path_equals_the_float_path(rng):
    fix = np.zeros((60, 80), dtype=bool)
    fix[rng.integers(0, 60, 25), rng.integers(0, 80, 25)] = True
    for normalize in (True, False):
        assert np.array_equal(density_map(fix, 6.0, normalize=normalize),
                              density_map(fix.astype(np.float64), 6.0, normalize=normalize))
    dense = rng.random((20, 30)) < 0.5  # every row fixated: scipy blurs it
    assert np.array_equal(density_map(dense, 2.0, normalize=False),
                          ndimage.gaussian_filter(dense.astype(np.float64), 2.0, mode="constant", truncate=3.5))
    with pytest.raises(ValueError, match="fixation map is empty"):
        density_map(np.zeros((5, 5), dtype=bool))
