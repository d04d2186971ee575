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


def test_dissection_scores_the_same_with_the_torch_scorer(monkeypatch):
    """The engine with the torch scorer (as on a GPU run, here on CPU): the numpy tables to 1e-9."""
    from torch import nn

    from datasets.popout import PopoutDataset
    from dissect.studies import dissection

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, stride=2), nn.ReLU()).eval()
    kwargs = dict(image_size=32, batch_size=2, max_images=4, progress=False)
    ref = dissection.run_dissection(model, ["1", "3"], PopoutDataset(), **kwargs)
    monkeypatch.setattr(dissection, "RegionScorer", lambda: TorchRegionScorer(RegionScorer()))
    got = dissection.run_dissection(model, ["1", "3"], PopoutDataset(), **kwargs)
    assert ref.units.drop(columns="score").equals(got.units.drop(columns="score"))
    assert np.allclose(ref.units["score"], got.units["score"], rtol=0, atol=1e-9, equal_nan=True)
    numeric = ref.summary.select_dtypes("number").columns  # the permutation null's columns too
    assert np.allclose(ref.summary[numeric].to_numpy(float), got.summary[numeric].to_numpy(float),
                       rtol=0, atol=1e-9, equal_nan=True)
