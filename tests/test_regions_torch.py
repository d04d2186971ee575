"""probes.regions_torch: the torch closed form equals the numpy RegionScorer (float64, CPU)."""
import numpy as np
import pytest
import torch

from probes.regions import RegionScorer
from probes.regions_torch import TorchRegionScorer


def _masks(rng, shape, n):
    masks = np.zeros((n,) + shape, dtype=bool)
    for r in range(n):
        y, x = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
        masks[r, y:y + rng.integers(2, shape[0] // 2), x:x + rng.integers(2, shape[1] // 2)] = True
    return masks


@pytest.mark.parametrize("shape, map_size, with_fixations", [
    ((48, 64), (7, 9), True),     # upsampling: bidiagonal factors
    ((40, 30), (7, 9), False),    # NMM, one axis upsampled, the other too
    ((20, 12), (28, 16), True),   # downsampling: dense QR factors
])
def test_torch_scores_equal_numpy(shape, map_size, with_fixations, rng):
    masks = _masks(rng, shape, 5)
    masks[4] = False  # an empty region: a NaN column on both paths
    fix = rng.random(shape) < 0.1 if with_fixations else None
    scorer = RegionScorer(masks, fix)
    maps = rng.normal(size=(12,) + map_size).astype(np.float32) * 5.0 + 3.0
    maps[2] = 1.5  # a dead unit: a NaN row
    maps[3, :, : map_size[1] // 2] = 0.0  # half dead, still live
    ref = scorer.score(maps)
    got = TorchRegionScorer(scorer).score(torch.from_numpy(maps))
    assert got.dtype == np.float64 and got.shape == ref.shape
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    assert np.isnan(ref[2]).all() and np.isnan(ref[:, 4]).all()
    assert np.allclose(got, ref, rtol=0, atol=1e-9, equal_nan=True)


def test_torch_scorer_follows_set_regions_and_rejects_bad_maps(rng):
    scorer = RegionScorer()
    device_scorer = TorchRegionScorer(scorer, device="cpu")
    for _ in range(3):  # new regions for every "image": never a stale kernel
        masks = _masks(rng, (30, 40), 3)
        fix = rng.random((30, 40)) < 0.2
        scorer.set_regions(masks, fix)
        maps = torch.randn(4, 5, 6)
        assert np.allclose(device_scorer.score(maps), scorer.score(maps), atol=1e-9, equal_nan=True)
    assert np.array_equal(device_scorer.n_pixels, scorer.n_pixels)  # the rest is the numpy scorer's
    bad = torch.randn(4, 5, 6)
    bad[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        device_scorer.score(bad)
    with pytest.raises(ValueError, match="C x h x w"):
        device_scorer.score(torch.randn(5, 6))
    with pytest.raises(ValueError, match="no regions"):
        TorchRegionScorer(RegionScorer()).score(torch.randn(2, 3, 3))


def test_dissection_batches_score_the_same_with_the_torch_scorer(rng):
    """The engine's per-batch scoring (as on a GPU run) with the torch scorer: the numpy tables."""
    from types import SimpleNamespace

    from dissect.dissection import _score_batch

    samples, acts = [], []
    for i in range(3):
        masks = _masks(rng, (32, 40), 4)
        fix = rng.random((32, 40)) < 0.15
        samples.append(SimpleNamespace(masks=masks, fixation_map=fix, categories=["a", "b", "a", "b"], meta={}))
    layer = torch.from_numpy(rng.normal(size=(3, 6, 4, 5)).astype(np.float32))
    runs = [_score_batch(s, samples, {"L": layer}, ["L"], None, 3, "skip")
            for s in (RegionScorer(), TorchRegionScorer(RegionScorer()))]
    ref, got = (r[0].unit_table() for r in runs)
    assert runs[0][1] == runs[1][1]  # the same counts
    assert ref.drop(columns="score").equals(got.drop(columns="score"))
    assert np.allclose(ref["score"], got["score"], rtol=0, atol=1e-9, equal_nan=True)
