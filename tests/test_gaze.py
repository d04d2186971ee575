"""probes.gaze: known answers, literal references for LOSO / other-image maps, summary vs pandas."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from datasets.base import Sample
from datasets.fixations import center_bias_map, fixation_map, resize_fixation_map
from probes import gaze

SHAPE = (40, 48)


def _table(rng, n_subjects=3, per_subject=6, shape=SHAPE):
    h, w = shape
    rows = []
    for s in range(1, n_subjects + 1):
        for _ in range(per_subject):
            rows.append({"x": round(float(rng.uniform(1, w)), 1), "y": round(float(rng.uniform(1, h)), 1),
                         "subject": s, "duration": float(rng.uniform(50, 400))})
    return pd.DataFrame(rows)


def _fixmap(table, shape=SHAPE):
    return fixation_map(table["x"].to_numpy(), table["y"].to_numpy(), shape)


def _literal_density(fix, sigma):
    # OSIE recipe written out: Gaussian blur of the binary map, zero padding, min-max.
    d = ndimage.gaussian_filter(fix.astype(float), sigma, mode="constant", truncate=3.5)
    return (d - d.min()) / (d.max() - d.min())


@pytest.fixture
def human(rng):
    table = _table(rng)
    fix = _fixmap(table)
    density = gaze.human_density((table, SHAPE), sigma=4.0)
    return table, fix, density


def test_map_equal_to_density_is_perfect(human, rng):
    _, fix, density = human
    other = rng.random(SHAPE) < 0.05
    s = gaze.gaze_scores(density, fix, density, other_fixation_map=other, baseline=center_bias_map(SHAPE))
    assert list(s) == list(gaze.GAZE_METRICS)
    assert s["cc"] == pytest.approx(1.0, abs=1e-12)
    assert s["mae"] == pytest.approx(0.0, abs=1e-12)
    assert s["kl"] == pytest.approx(0.0, abs=1e-9)  # eps-regularised log: ~1e-16 per pixel
    assert s["sim"] == pytest.approx(1.0, abs=1e-12)
    assert all(np.isfinite(v) for v in s.values())


def test_scores_match_literal_formulas(human, rng):
    _, fix, density = human
    sal = rng.random(SHAPE)
    s = gaze.gaze_scores(sal, fix, density)
    z = (sal - sal.mean()) / sal.std()  # population std, digest section 2
    assert s["nss"] == pytest.approx(z[fix].mean(), rel=1e-12)
    assert s["cc"] == pytest.approx(np.corrcoef(sal.ravel(), density.ravel())[0, 1], rel=1e-10)
    mm = (sal - sal.min()) / (sal.max() - sal.min())
    assert s["mae"] == pytest.approx(np.abs(mm - density).mean(), rel=1e-12)
    p, q = sal / sal.sum(), density / density.sum()
    assert s["kl"] == pytest.approx(np.sum(q * np.log(2.2204e-16 + q / (p + 2.2204e-16))), rel=1e-10)
    # not computable without their inputs: NaN, never 0
    assert math.isnan(s["sauc"]) and math.isnan(s["ig"])


def test_constant_and_signed_maps(human):
    _, fix, density = human
    s = gaze.gaze_scores(np.full(SHAPE, 3.0), fix, density, other_fixation_map=fix, baseline=center_bias_map(SHAPE))
    assert math.isnan(s["nss"]) and math.isnan(s["cc"]) and math.isnan(s["mae"])
    assert s["auc_judd"] == 0.5 and s["sauc"] == 0.5
    # a constant map reads as uniform for the distribution metrics
    uniform = np.full(SHAPE, 1.0 / density.size)
    q = density / density.sum()
    assert s["kl"] == pytest.approx(np.sum(q * np.log(2.2204e-16 + q / (uniform + 2.2204e-16))), rel=1e-10)
    signed = density - 0.5
    t = gaze.gaze_scores(signed, fix, density)
    assert math.isnan(t["kl"])
    assert t["cc"] == pytest.approx(1.0, abs=1e-12)  # CC is shift-invariant


def test_center_bias_map_equals_floor(human, rng):
    _, fix, density = human
    other = rng.random(SHAPE) < 0.05
    floor = gaze.center_bias_scores(fix, density, other_fixation_map=other)
    bias = center_bias_map(SHAPE)
    direct = gaze.gaze_scores(bias, fix, density, other_fixation_map=other, baseline=bias)
    assert floor == direct
    assert floor["ig"] == 0.0


def test_gaze_scores_errors(human):
    _, fix, density = human
    with pytest.raises(ValueError, match="same resolution"):
        gaze.gaze_scores(np.ones((10, 10)), fix, density)
    with pytest.raises(ValueError, match="empty"):
        gaze.gaze_scores(density, np.zeros(SHAPE), density)
    with pytest.raises(ValueError, match="other_fixation_map is empty"):
        gaze.gaze_scores(density, fix, density, other_fixation_map=np.zeros(SHAPE))


def test_human_density_single_fixation_is_the_gaussian():
    # One fixation far from the border: the min-maxed blur is exp(-d^2 / 2 sigma^2) exactly
    # inside the kernel radius (11 px at sigma 3, truncate 3.5) and 0 outside.
    table = pd.DataFrame({"x": [31.0], "y": [31.0], "subject": [1], "duration": [100.0]})
    d = gaze.human_density((table, (61, 61)), sigma=3.0)
    r, c = np.mgrid[:61, :61]
    expected = np.exp(-((r - 30) ** 2 + (c - 30) ** 2) / (2 * 9.0))
    inside = (np.abs(r - 30) <= 11) & (np.abs(c - 30) <= 11)
    np.testing.assert_allclose(d[inside], expected[inside], rtol=1e-9, atol=1e-12)
    assert np.all(d[~inside] == 0)


def test_human_density_sources_agree(human):
    table, fix, density = human
    img = np.zeros((*SHAPE, 3), np.uint8)
    sample = Sample("a", img, np.zeros((0, *SHAPE), bool), [], fixation_map=fix, fixations=table)
    np.testing.assert_array_equal(gaze.human_density(sample, sigma=4.0), density)
    np.testing.assert_allclose(density, _literal_density(fix, 4.0), rtol=0, atol=1e-12)
    no_map = Sample("b", img, np.zeros((0, *SHAPE), bool), [], fixations=table)
    np.testing.assert_array_equal(gaze.human_density(no_map, sigma=4.0), density)
    # Ebrahimpour et al.: duration weights (w = d / max d), duplicates add
    weighted = gaze.human_density(sample, sigma=4.0, duration_weighted=True)
    f = np.zeros(SHAPE)
    cols = np.floor(table["x"].to_numpy() + 0.5).astype(int) - 1
    rows = np.floor(table["y"].to_numpy() + 0.5).astype(int) - 1
    np.add.at(f, (rows, cols), table["duration"].to_numpy() / table["duration"].max())
    np.testing.assert_allclose(weighted, _literal_density(f, 4.0), atol=1e-12)
    with pytest.raises(ValueError, match="has no fixations"):
        gaze.human_density(Sample("c", img, np.zeros((0, *SHAPE), bool), []))


def test_leave_one_subject_out_literal(human, rng):
    table, _, _ = human
    other = rng.random(SHAPE) < 0.05
    bias = center_bias_map(SHAPE)
    got = gaze.leave_one_subject_out(table, SHAPE, sigma=4.0, other_fixation_map=other, baseline=bias, seed=3)
    assert got["n_subjects"] == 3
    per = []
    for s in (1, 2, 3):
        held, rest = table[table.subject == s], table[table.subject != s]
        pred = _literal_density(_fixmap(rest), 4.0)
        held_fix = _fixmap(held)
        per.append(gaze.gaze_scores(pred, held_fix, _literal_density(held_fix, 4.0),
                                    other_fixation_map=other, baseline=bias, seed=3))
    for key in gaze.GAZE_METRICS:
        assert got[key] == pytest.approx(np.mean([p[key] for p in per]), rel=1e-10, abs=1e-12), key
    # subjects who look at the same spot predict each other well
    clustered = table.assign(x=24 + (table["x"] - 24) * 0.1, y=20 + (table["y"] - 20) * 0.1)
    agree = gaze.leave_one_subject_out(clustered, SHAPE, sigma=4.0)
    assert agree["nss"] > 2 and agree["auc_judd"] > 0.9 and agree["cc"] > 0.5


def test_leave_one_subject_out_needs_two_subjects(rng):
    one = _table(rng, n_subjects=1)
    got = gaze.leave_one_subject_out(one, SHAPE)
    assert got["n_subjects"] == 1
    assert all(math.isnan(got[k]) for k in gaze.GAZE_METRICS)
    got = gaze.leave_one_subject_out(one.drop(columns="subject"), SHAPE)
    assert all(math.isnan(got[k]) for k in gaze.GAZE_METRICS)


def test_other_images_fixations():
    # image k fixates only pixel (k, k): the result shows exactly which images were pooled
    maps = []
    for k in range(6):
        m = np.zeros((8, 8), bool)
        m[k, k] = True
        maps.append(m)
    got = gaze.other_images_fixations(maps, 2, (8, 8), n_other=3, seed=1)
    pooled = [k for k in range(6) if got[k, k]]
    assert len(pooled) == 3 and 2 not in pooled and got.sum() == 3
    assert np.array_equal(got, gaze.other_images_fixations(maps, 2, (8, 8), n_other=3, seed=1))
    # all others, rescaled point by point to another size
    big = gaze.other_images_fixations(maps, 0, (16, 24), n_other=10)
    expected = np.zeros((16, 24), bool)
    for k in range(1, 6):
        expected |= resize_fixation_map(maps[k], (16, 24))
    np.testing.assert_array_equal(big, expected)
    with pytest.raises(ValueError, match="at least 2 images"):
        gaze.other_images_fixations(maps[:1], 0, (8, 8))
    with pytest.raises(ValueError, match="n_other"):
        gaze.other_images_fixations(maps, 0, (8, 8), n_other=0)


def test_summarize_against_pandas(rng):
    rows = []
    for img in range(7):
        for method, layer in (("gradcam", "conv5_3"), ("dense", "conv1_1"), ("dense", "conv1_1+"),
                              ("human_loso", ""), ("center_bias", "")):
            rows.append({"image": f"i{img}", "method": method, "layer": layer,
                         **{k: float(rng.normal()) for k in gaze.GAZE_METRICS}})
    df = pd.DataFrame(rows)
    df.loc[3, "nss"] = np.nan  # a constant map's NSS
    out = gaze.summarize_gaze(df)
    assert list(out["method"]) == ["gradcam", "dense", "dense", "center_bias", "human_loso"]
    ref = df.groupby(["method", "layer"])[list(gaze.GAZE_METRICS)]
    mean, sem, size = ref.mean(), ref.sem(), ref.size()
    for _, row in out.iterrows():
        key = (row["method"], row["layer"])
        assert row["n"] == size[key] == 7
        for m in gaze.GAZE_METRICS:
            vals = df.loc[(df.method == key[0]) & (df.layer == key[1]), m].dropna().to_numpy()
            assert row[f"{m}_mean"] == pytest.approx(mean.loc[key, m], rel=1e-12)
            assert row[f"{m}_se"] == pytest.approx(sem.loc[key, m], rel=1e-12)
            assert row[f"{m}_se"] == pytest.approx(vals.std(ddof=1) / math.sqrt(vals.size), rel=1e-12)
    with pytest.raises(ValueError, match="lacks column"):
        gaze.summarize_gaze(df.drop(columns="sim"))
