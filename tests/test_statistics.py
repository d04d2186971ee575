"""Issue 9: the permutation null, bootstrap intervals, unit labels, human ceiling, dead-unit rule.

Every number is checked against an independent, literal computation: a loop that rescores each
permuted pairing by upsampling every map, a loop that resamples the images with the same Poisson
weights, a hand-made unit table, blurred leave-one-out density maps.
"""
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy import stats as scipy_stats
from torch import nn

from datasets.base import ListDataset, Sample
from datasets.fixations import fixation_map
from dissect.models.inputs import preprocess
from dissect.studies.dissection import DissectionStudy, run_dissection
from dissect.models.hooks import ActivationRecorder
from dissect.reports.tables import format_summary
from dissect.reports import figures
from probes.aggregate import UnitScoreAccumulator, bootstrap_weights, null_permutation
from probes.ceiling import region_loso_nss, region_loso_nss_naive
from probes.labels import unit_labels
from probes.regions import RegionScorer

SCALE = 2.0 ** 32


class WideNet(nn.Module):
    """One random conv layer of ``n`` units at the input's resolution, and a pooled one."""

    def __init__(self, n=48, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, n, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(n, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x):
        return self.relu2(self.conv2(self.pool(self.relu(self.conv(x)))))


def _noise_sample(rng, i, h, w, with_fix=True, subjects=False):
    """Regions and fixations placed independently of the (noise) content."""
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    masks = np.zeros((2, h, w), dtype=bool)
    for r in range(2):
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        masks[r, y0:y0 + h // 2, x0:x0 + w // 2] = True
    fixations, fix = None, None
    if with_fix:
        n = 30
        fixations = pd.DataFrame({"x": rng.uniform(0.5, w + 0.4, n), "y": rng.uniform(0.5, h + 0.4, n),
                                  "subject": rng.integers(1, 4, n) if subjects else np.ones(n, dtype=int)})
        fix = fixation_map(fixations["x"], fixations["y"], (h, w))
    return Sample(image_id=f"n{i}", image=image, masks=masks, categories=["face", "text"], fixation_map=fix,
                  fixations=fixations)


# --------------------------------------------------------------------------- calibration and power


def test_null_is_calibrated_on_content_free_regions():
    rng = np.random.default_rng(3)
    data = ListDataset([_noise_sample(rng, i, 24, 24) for i in range(30)], name="noise")
    result = run_dissection(WideNet(64), "relu", data, image_size=24, batch_size=10, null=199, bootstrap=0,
                            progress=False)
    p = result.units["p_value"].dropna().to_numpy()
    assert p.size == 64 * 2
    # Uniform under the null: KS at the 1 % level, and about 5 % of units below 0.05.
    assert scipy_stats.kstest(p, "uniform").pvalue > 0.01
    assert np.mean(p < 0.05) <= 0.10
    assert (result.summary["p_top_k"] > 0.05).all()


def test_null_detects_a_bright_square_under_the_gaze():
    rng = np.random.default_rng(4)
    samples = []
    for i in range(20):
        image = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
        y0, x0 = rng.integers(0, 24, 2)
        image[y0:y0 + 8, x0:x0 + 8] = rng.integers(200, 256, (8, 8, 3), dtype=np.uint8)
        mask = np.zeros((1, 32, 32), dtype=bool)
        mask[0, y0:y0 + 8, x0:x0 + 8] = True
        fix = np.zeros((32, 32), dtype=bool)
        fix[y0 + rng.integers(0, 8, 6), x0 + rng.integers(0, 8, 6)] = True
        samples.append(Sample(image_id=f"sq{i}", image=image, masks=mask, categories=["square"], fixation_map=fix))
    result = run_dissection(WideNet(48), "relu", ListDataset(samples), image_size=32, batch_size=10, null=299,
                            bootstrap=0, progress=False)
    assert (result.units["q_value"] < 0.01).sum() >= 5
    row = result.summary.iloc[0]
    assert row.p_top_k == pytest.approx(1 / 300) and row.top_k_mean > row.null_top_k_p95
    assert row.count_significant == (result.units["q_value"] < 0.05).sum()


# --------------------------------------------------------------------------- null vs a literal loop


def _upsampled_z(model, layer, sample, image_size):
    with ActivationRecorder(model, layer) as rec, torch.inference_mode():
        model(preprocess([sample.image], image_size))
    acts = rec.activations[layer][0].double()
    up = F.interpolate(acts[None], size=sample.shape, mode="bilinear", align_corners=False)[0].numpy()
    z = []
    for m in up:
        z.append(None if m.max() == m.min() else (m - m.mean()) / m.std())
    return z


def _rescaled(pixels, shape, points):
    """A partner's pixel set at this image's size (points: centres to the nearest pixel; masks: nearest-exact)."""
    if pixels.shape == tuple(shape):
        return pixels
    h0, w0 = pixels.shape
    if points:
        ys, xs = np.nonzero(pixels)
        out = np.zeros(shape, dtype=bool)
        out[np.minimum(((ys + 0.5) * shape[0] / h0).astype(int), shape[0] - 1),
            np.minimum(((xs + 0.5) * shape[1] / w0).astype(int), shape[1] - 1)] = True
        return out
    t = torch.from_numpy(pixels.astype(np.float32))[None, None]
    return F.interpolate(t, size=tuple(shape), mode="nearest-exact")[0, 0].numpy() > 0.5


@pytest.mark.parametrize("with_fix", [True, False])
def test_null_equals_a_literal_rescoring_loop(with_fix):
    rng = np.random.default_rng(5)
    sizes = [(24, 32), (24, 32), (30, 20), (24, 32), (28, 28), (24, 32)]
    data = ListDataset([_noise_sample(rng, i, h, w, with_fix) for i, (h, w) in enumerate(sizes)])
    model, layer, n_perm, seed = WideNet(6), "relu2", 5, 3
    result = run_dissection(model, layer, data, image_size=32, batch_size=1, null=n_perm, bootstrap=0, seed=seed,
                            categories=["face", "text"], progress=False)
    state = result.accumulator.state_dict()
    n = len(data)
    z = [_upsampled_z(model, layer, s, 32) for s in data]
    sums = np.zeros((8, n_perm, 2))
    n_regions = np.zeros(2)
    for p in range(n_perm):
        perm = null_permutation(seed, p, n)
        for i in range(n):
            partner = data[int(perm[i])]
            for mask, cat in zip(partner.masks, partner.categories):
                c = ["face", "text"].index(cat)
                pixels = mask & partner.fixation_map if with_fix else mask
                pixels = _rescaled(pixels, data[i].shape, with_fix)
                if p == 0:
                    n_regions[c] += 1
                for j, zj in enumerate(z[i]):
                    sums[j, p, c] += 0.0 if zj is None else zj[pixels].mean()  # He et al.: a dead map scores 0
    naive = sums / n_regions
    ours = state["null_sums"][0] / SCALE / state["n_regions"][0]
    np.testing.assert_allclose(ours, naive, atol=1e-6)
    # the per-unit p-values and the summary's null follow from those scores
    units = result.units
    for c, cat in enumerate(["face", "text"]):
        obs = units.loc[units.category == cat, "score"].to_numpy()
        # "reaches" = within 1e-9 (a fixed point of a permutation reproduces a score up to rounding)
        want = (1 + (naive[:, :, c] >= obs[:, None] - 1e-9).sum(axis=1)) / (1 + n_perm)
        np.testing.assert_allclose(units.loc[units.category == cat, "p_value"], want)
        top = np.sort(naive[:, :, c], axis=0)[::-1][:10].mean(axis=0)
        row = result.summary[result.summary.category == cat].iloc[0]
        assert row.null_top_k_mean == pytest.approx(top.mean(), abs=1e-6)
        assert row.null_top_k_p95 == pytest.approx(np.percentile(top, 95), abs=1e-6)
        assert row.p_top_k == (1 + (top >= row.top_k_mean - 1e-9).sum()) / (1 + n_perm)


# --------------------------------------------------------------------------- bootstrap vs resampling


def test_bootstrap_equals_a_literal_resampling_loop():
    rng = np.random.default_rng(6)
    data = ListDataset([_noise_sample(rng, i, 24, 24) for i in range(5)])
    model, layer, n_boot, seed, cats = WideNet(6), "relu2", 4, 11, ["face", "text"]
    kw = {"image_size": 24, "batch_size": 1, "categories": cats, "progress": False, "top_k": 3, "threshold": 0.05}
    result = run_dissection(model, layer, data, null=0, bootstrap=n_boot, seed=seed, **kw)
    state = result.accumulator.state_dict()
    tops, counts = [], []
    for b in range(n_boot):
        weights = [int(bootstrap_weights(seed, i, n_boot)[b]) for i in range(len(data))]
        resampled = ListDataset([s for s, w in zip(data, weights) for _ in range(w)])
        literal = run_dissection(model, layer, resampled, null=0, bootstrap=0, **kw)
        ours = state["boot_sums"][0][:, b, :] / SCALE / state["boot_n_regions"][0][b]
        np.testing.assert_allclose(ours.reshape(-1), literal.units["score"], atol=1e-9)
        tops.append(literal.summary["top_k_mean"].to_numpy())
        counts.append(literal.summary["count_above_threshold"].to_numpy())
    tops, counts = np.array(tops), np.array(counts)
    s = result.summary
    np.testing.assert_allclose(s["top_k_mean_lo"], np.percentile(tops, 2.5, axis=0), atol=1e-9)
    np.testing.assert_allclose(s["top_k_mean_hi"], np.percentile(tops, 97.5, axis=0), atol=1e-9)
    np.testing.assert_array_equal(s["count_lo"], np.percentile(counts, 2.5, axis=0, method="lower"))
    np.testing.assert_array_equal(s["count_hi"], np.percentile(counts, 97.5, axis=0, method="higher"))


# --------------------------------------------------------------------------- shards, resume


def test_interleaved_shards_merge_bit_exactly_with_null_and_bootstrap():
    rng = np.random.default_rng(7)
    data = ListDataset([_noise_sample(rng, i, 24, 24, subjects=True) for i in range(6)])
    model, layers, cats = WideNet(6), ["relu", "relu2"], ["face", "text"]
    full = run_dissection(model, layers, data, image_size=24, batch_size=1, categories=cats, progress=False,
                          null=7, bootstrap=5, seed=2)
    # What a shard does: score some GLOBAL image indices with the same bank and permutations.
    study = DissectionStudy(model, layers, data, image_size=24, batch_size=1, categories=cats, progress=False,
                            null=7, bootstrap=5, seed=2)

    def shard(indices):
        state = study.new_state()
        study.begin(state, range(len(data)))  # the bank of every image's regions, the permutations
        with study.running():
            for i in indices:
                loaded = study.load(range(i, i + 1))
                study.score(state, loaded, study.forward(loaded))  # adds into the accumulator
        return state.acc

    a, b = shard([0, 2, 4]), shard([5, 3, 1])
    want = full.accumulator.state_dict()
    for first, second in ((a, b), (b, a)):
        merged = UnitScoreAccumulator.from_state_dict(first.state_dict()).merge(second)
        got = merged.state_dict()
        for key, value in want.items():
            if isinstance(value, list) and value and isinstance(value[0], np.ndarray):
                for x, y in zip(got[key], value):
                    np.testing.assert_array_equal(x, y, err_msg=key)
            elif isinstance(value, np.ndarray):
                np.testing.assert_array_equal(got[key], value, err_msg=key)
    with pytest.raises(ValueError, match="same --null"):
        a.merge(UnitScoreAccumulator(categories=cats, n_null=3, n_bootstrap=5, seed=2))


# --------------------------------------------------------------------------- ceiling


def test_human_ceiling_equals_blurred_leave_one_out_maps():
    rng = np.random.default_rng(8)
    data = ListDataset([_noise_sample(rng, i, 40, 48, subjects=True) for i in range(3)])
    for s in data:
        fast = region_loso_nss(s.fixations, s.shape, s.masks, sigma=5.0)
        slow = region_loso_nss_naive(s.fixations, s.shape, s.masks, sigma=5.0)
        np.testing.assert_allclose(fast, slow, atol=1e-9)
    result = run_dissection(WideNet(4), "relu", data, image_size=32, null=0, bootstrap=0, ceiling_sigma=5.0,
                            progress=False)
    values = np.array([region_loso_nss_naive(s.fixations, s.shape, s.masks, sigma=5.0) for s in data])
    for c, cat in enumerate(["face", "text"]):
        got = result.summary.loc[result.summary.category == cat, "human_region_nss"].iloc[0]
        assert got == pytest.approx(np.nanmean(values[:, c]), abs=1e-9)
    # The engine reads the kept masks at the subjects' pixels only: the same bits as on masks[keep].
    from probes.ceiling import region_loso_nss_at

    for s in data:
        keep = np.array([1])
        flat = s.masks.reshape(len(s.masks), -1)
        np.testing.assert_array_equal(
            region_loso_nss_at(s.fixations, s.shape, lambda px: flat[:, px][keep], keep.size, sigma=5.0),
            region_loso_nss(s.fixations, s.shape, s.masks[keep], sigma=5.0))
    # no subjects (one observer, or pop-out arrays): NaN, documented
    one = ListDataset([_noise_sample(rng, 0, 24, 24)])
    assert run_dissection(WideNet(4), "relu", one, image_size=24, null=0, bootstrap=0,
                          progress=False).summary["human_region_nss"].isna().all()


# --------------------------------------------------------------------------- dead units, labels


def test_dead_unit_policies_and_min_valid_by_hand():
    nan = np.nan
    acc = UnitScoreAccumulator(categories=["a"])
    # unit 0 live on all 4 regions, unit 1 on 1 of 4 (a high score), unit 2 never
    acc.add("L", np.array([[1.0, 2.0], [9.0, nan], [nan, nan]]), ["a", "a"])
    acc.add("L", np.array([[3.0, 2.0], [nan, nan], [nan, nan]]), ["a", "a"])
    skip = acc.unit_table(dead_units="skip", min_valid=0.5)
    assert skip["score"].tolist()[:2] == [2.0, 9.0] and skip["ranked"].tolist() == [True, False, False]
    zero = acc.unit_table(dead_units="zero")
    assert zero["score"].tolist() == [2.0, 9.0 / 4, 0.0] and zero["ranked"].all()
    assert zero["n_valid"].tolist() == [4, 1, 0] and zero["dead"].tolist() == [False, False, True]
    # the mostly-dead unit cannot top the table under either rule
    assert acc.summary(top_k=1, dead_units="skip", min_valid=0.5)["top_k_mean"].iloc[0] == 2.0
    assert acc.summary(top_k=1, dead_units="zero")["top_k_mean"].iloc[0] == 2.25
    assert acc.summary(top_k=1, dead_units="skip", min_valid=0.0)["top_k_mean"].iloc[0] == 9.0
    with pytest.raises(ValueError, match="min_valid"):
        acc.summary(dead_units="skip", min_valid=2)


def test_labels_by_hand():
    units = pd.DataFrame({
        "layer": ["L"] * 9 + ["M"] * 3,
        "unit": [0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0],
        "category": ["a", "b", "c"] * 4,
        "score": [1.0, 3.0, 2.0, 5.0, 5.0, 1.0, 4.0, 7.0, 1.0, 0.5, 0.2, 0.1],
        "n_valid": [4, 5, 6, 1, 2, 3, 7, 8, 9, 1, 1, 1],
        "ranked": [True, True, True, True, True, True, True, False, True, False, False, False],
        "q_value": [0.5, 0.01, 0.2, 0.03, 0.04, 0.9, 0.02, 0.001, 0.7, 1, 1, 1],
    })
    labels = unit_labels(units)
    assert labels.columns.tolist() == ["layer", "unit", "best_category", "score", "q_value", "selectivity", "n_valid"]
    # unit L0: best b (3), others a, c -> 3 - 1.5; L1: a tie of 5, 5 -> the first (a), 5 - (5 + 1) / 2;
    # L2: b is not ranked -> a (4), 4 - 1; M0 is ranked nowhere.
    assert labels["best_category"].tolist() == ["b", "a", "a", ""]
    np.testing.assert_allclose(labels["score"], [3.0, 5.0, 4.0, np.nan])
    np.testing.assert_allclose(labels["selectivity"], [1.5, 2.0, 3.0, np.nan])
    np.testing.assert_allclose(labels["q_value"], [0.01, 0.03, 0.02, np.nan])
    assert labels["n_valid"].tolist() == [5, 1, 7, 0]


def test_labels_equal_a_unit_by_unit_reference():
    rng = np.random.default_rng(4)
    n = 60
    units = pd.DataFrame({
        "layer": np.repeat(["L", "M"], [36 * 4, (n - 36) * 4]),
        "unit": np.concatenate([np.repeat(np.arange(36), 4), np.repeat(np.arange(n - 36), 4)]),
        "category": ["a", "b", "c", "d"] * n,
        "score": np.round(rng.normal(size=n * 4), 1),  # rounded: ties
        "n_valid": rng.integers(0, 9, n * 4),
        "ranked": rng.random(n * 4) < 0.6,  # some units ranked on one category only, some nowhere
        "q_value": rng.random(n * 4),
    })
    units.loc[5, "score"] = np.nan
    got = unit_labels(units)
    for i, ((layer, unit), rows) in enumerate(units.groupby(["layer", "unit"], sort=False)):
        ok = rows[rows["ranked"] & rows["score"].notna()]
        row = got.iloc[i]
        assert (row["layer"], row["unit"]) == (layer, unit)
        if ok.empty:
            assert row["best_category"] == "" and np.isnan(row["score"]) and row["n_valid"] == 0
            continue
        best = ok.loc[ok["score"].idxmax()]  # idxmax: the first of tied maxima, in table order
        others = ok.drop(best.name)["score"]
        assert row["best_category"] == best["category"] and row["score"] == best["score"]
        assert row["q_value"] == best["q_value"] and row["n_valid"] == best["n_valid"]
        want = best["score"] - others.mean() if len(others) else np.nan
        np.testing.assert_allclose(row["selectivity"], want, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- console and figures


def _summary_with_null():
    return pd.DataFrame({"layer": ["L", "L", "M", "M"], "category": ["a", "b", "a", "b"],
                         "top_k_mean": [0.7, 0.4, 1.2, 0.3], "count_above_threshold": [0, 0, 1, 0],
                         "null_top_k_mean": [0.46, 0.41, 0.5, 0.3], "p_top_k": [0.01, 0.6, 0.02, 0.5],
                         "top_k_mean_lo": [0.6, 0.3, 1.0, 0.2], "top_k_mean_hi": [0.9, 0.5, 1.4, 0.4]})


def test_console_prints_the_null_beside_each_top_k_mean():
    text = format_summary(_summary_with_null())
    assert "0.70 (0.46)*" in text and "0.40 (0.41) " in text and "permutation null" in text
    assert "(" not in format_summary(_summary_with_null().drop(columns=["null_top_k_mean"]))


def test_figures_mark_significant_cells_and_draw_interval_and_null(tmp_path, monkeypatch, no_figure_leak):
    drawn = []
    real = figures.save_png
    monkeypatch.setattr(figures, "save_png", lambda fig, path: (drawn.append(fig), real(fig, path))[1])
    figures.summary_heatmap(_summary_with_null(), tmp_path / "heat.png", figsize=(4, 3), dpi=40)
    texts = [t.get_text() for t in drawn[0].axes[0].texts]
    assert sorted(texts) == ["0.30", "0.40", "0.70*", "1.20*"]
    assert len(drawn[0].axes[0].patches) == 2  # the two outlined cells
    units = pd.DataFrame({"layer": "L", "unit": np.repeat(np.arange(3), 2), "category": ["a", "b"] * 3,
                          "score": [0.7, 0.4, 0.5, 0.3, 0.1, 0.2], "dead": False, "ranked": True})
    figures.category_bars(units, "L", tmp_path / "bars.png", top_k=1, summary=_summary_with_null(), dpi=40)
    ax = drawn[1].axes[0]
    assert ax.get_legend() is not None
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("bootstrap" in t for t in labels) and any("null" in t for t in labels)
