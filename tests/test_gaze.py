"""probes.gaze: known answers, literal references for LOSO / other-image maps, summary vs pandas."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
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


# ---------------------------------------------------------------- literal references (no probes.metrics)
EPS = 2.2204e-16


def _lit_fixmap(table, shape=SHAPE):
    # digest section 1: col = clamp(floor(x + 0.5), 1, W) - 1, same for rows; duplicates collapse.
    h, w = shape
    out = np.zeros(shape, bool)
    for x, y in zip(table["x"], table["y"]):
        out[min(max(math.floor(y + 0.5), 1), h) - 1, min(max(math.floor(x + 0.5), 1), w) - 1] = True
    return out


def _mm(m):
    return (m - m.min()) / (m.max() - m.min())


def _lit_nss(s, fix):
    return float(((s - s.mean()) / s.std())[fix].mean())


def _lit_cc(s, g):
    return float(np.corrcoef(s.ravel(), g.ravel())[0, 1])


def _lit_kl(s, g):
    p, q = s / s.sum(), g / g.sum()
    return float(np.sum(q * np.log(EPS + q / (p + EPS))))


def _lit_sim(s, g):
    p, q = _mm(s), _mm(g)
    return float(np.minimum(p / p.sum(), q / q.sum()).sum())


def _lit_mae(s, g):
    return float(np.abs(_mm(s) - _mm(g)).mean())


def _lit_ig(s, fix, base):
    # MIT InfoGain.m: min-max, sum-normalise, bits per fixated pixel of the MAP over the BASELINE.
    p, b = _mm(s), _mm(base)
    p, b = p / p.sum(), b / b.sum()
    return float(np.mean(np.log2(EPS + p[fix]) - np.log2(EPS + b[fix])))


def _trapz(x, y):
    return sum((x[i + 1] - x[i]) * (y[i + 1] + y[i]) / 2 for i in range(len(x) - 1))


def _lit_auc_judd(s, fix):
    # MIT AUC_Judd.m loop: thresholds = fixated values (descending), tp = i / Nfix,
    # fp = (#S >= thr - i) / (Npix - Nfix); only fixated vs NON-fixated pixels.
    s = _mm(s)
    sth = sorted(s[fix].tolist(), reverse=True)
    assert len(set(sth)) == len(sth)  # the verbatim loop needs distinct fixated values
    nfix, npix = len(sth), s.size
    tp, fp = [0.0], [0.0]
    for i, thr in enumerate(sth, start=1):
        tp.append(i / nfix)
        fp.append((int((s >= thr).sum()) - i) / (npix - nfix))
    return _trapz(fp + [1.0], tp + [1.0])


def _lit_sauc(s, fix, other, seed, n_splits=100, step=0.1):
    # MIT AUC_shuffled.m with the documented draws (probes.metrics.sauc docstring): per split,
    # how many of the n negatives fall in each threshold bin (multivariate hypergeometric over
    # the other map's pixels per bin), that many of each bin's pixels, MIT's ROC loop.
    s = _mm(s).ravel()
    sth = s[fix.ravel()]
    negs = s[other.ravel()]
    n = min(sth.size, negs.size)
    grid = np.arange(math.floor(1 / step + 1e-9) + 1) * step
    bins = [[v for v in negs if np.count_nonzero(v >= grid) == j] for j in range(grid.size + 1)]
    counts = np.random.default_rng(seed).multivariate_hypergeometric([len(b) for b in bins], n, size=n_splits)
    aucs = []
    for row in counts:
        cur = np.array([v for b, c in zip(bins, row) for v in b[:c]])
        top = max(sth.max(), cur.max())
        thr = [k * step for k in range(math.floor(top / step + 1e-10) + 1)][::-1]
        tp = [0.0] + [float((sth >= t).mean()) for t in thr] + [1.0]
        fp = [0.0] + [float((cur >= t).mean()) for t in thr] + [1.0]
        aucs.append(_trapz(fp, tp))
    return float(np.mean(aucs))


def _lit_scores(s, fix, density, other=None, base=None, seed=0):
    """Every gaze metric by the literal formulas above, argument order as in the digest."""
    return {
        "mae": _lit_mae(s, density), "nss": _lit_nss(s, fix), "cc": _lit_cc(s, density),
        "kl": _lit_kl(s, density), "sim": _lit_sim(s, density), "auc_judd": _lit_auc_judd(s, fix),
        "sauc": math.nan if other is None else _lit_sauc(s, fix, other, seed),
        "ig": math.nan if base is None else _lit_ig(s, fix, base),
    }


def _assert_scores(got, want, rel=1e-10, abs_=1e-12):
    # float64 both ways, only summation order differs (~1e-15): 1e-10 leaves a wide margin.
    for key in gaze.GAZE_METRICS:
        if math.isnan(want[key]):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(want[key], rel=rel, abs=abs_), key


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


def test_every_metric_matches_literal_formulas(human, rng):
    # All eight metrics, with s-AUC negatives and an IG baseline, against the literal formulas:
    # catches swapped arguments (IG of the baseline over the map flips the sign), AUC-Judd
    # replaced by the all-pixel exact AUC, a wrong s-AUC seed.
    _, fix, density = human
    sal = ndimage.gaussian_filter(rng.random(SHAPE), 2)
    other = rng.random(SHAPE) < 0.05
    base = center_bias_map(SHAPE)
    got = gaze.gaze_scores(sal, fix, density, other_fixation_map=other, baseline=base, seed=11)
    want = _lit_scores(sal, fix, density, other, base, seed=11)
    _assert_scores(got, want)
    assert abs(want["ig"]) > 0.1  # IG is far from 0 here, so a sign flip cannot pass
    exact = float(np.mean([(v > sal[~fix]).mean() + 0.5 * (v == sal[~fix]).mean() for v in sal[fix]]))
    assert abs(want["auc_judd"] - exact) > 1e-6  # Judd differs from the exact ROC on this map
    assert gaze.gaze_scores(sal, fix, density, other_fixation_map=other, seed=12)["sauc"] != got["sauc"]
    # a float32 tensor map gives the same numbers as its float64 copy (non-constant map)
    t = torch.from_numpy(sal.astype(np.float32))
    _assert_scores(gaze.gaze_scores(t, fix, density, other_fixation_map=other, baseline=base, seed=11),
                   _lit_scores(sal.astype(np.float32).astype(np.float64), fix, density, other, base, seed=11))


def test_float32_constant_map_is_nan_not_noise(human):
    # A dead map upsampled in float32 carries a few ulps of rounding noise; judged in its own
    # dtype it is constant: NSS / CC / MAE NaN, never a small finite number.
    _, fix, density = human
    up = torch.nn.functional.interpolate(torch.full((1, 1, 5, 7), 0.3), size=SHAPE, mode="bilinear",
                                         align_corners=False)[0, 0]
    assert float(up.max()) > float(up.min())
    s = gaze.gaze_scores(up, fix, density)
    assert math.isnan(s["nss"]) and math.isnan(s["cc"]) and math.isnan(s["mae"]) and s["auc_judd"] == 0.5


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
    got = gaze.leave_one_subject_out(table, SHAPE, sigma=4.0, other_fixation_map=other, baseline=bias,
                                     seed=3, n_half_splits=4)
    assert got["n_subjects"] == 3
    # fixation metrics: each subject's own fixations vs the others' density (LOSO)
    per = {k: [] for k in gaze.FIXATION_METRICS}
    for s in (1, 2, 3):
        held, rest = table[table.subject == s], table[table.subject != s]
        pred = _literal_density(_lit_fixmap(rest), 4.0)
        held_fix = _lit_fixmap(held)
        per["nss"].append(_lit_nss(pred, held_fix))
        per["auc_judd"].append(_lit_auc_judd(pred, held_fix))
        per["sauc"].append(_lit_sauc(pred, held_fix, other, seed=3))
        per["ig"].append(_lit_ig(pred, held_fix, bias))
    # map metrics: split half with the documented draws; 3 subjects -> half A has 1, B has 2
    subjects = np.array([1, 2, 3])
    draws = np.random.default_rng(3)
    for _ in range(4):
        perm = draws.permutation(3)
        a = set(subjects[perm[:1]].tolist())
        pred = _literal_density(_lit_fixmap(table[table.subject.isin(a)]), 4.0)
        target = _literal_density(_lit_fixmap(table[~table.subject.isin(a)]), 4.0)
        for key, fn in (("mae", _lit_mae), ("cc", _lit_cc), ("sim", _lit_sim)):
            per.setdefault(key, []).append(fn(pred, target))
    per["kl"] = [math.nan]  # no human KL ceiling (documented: it measures coverage)
    assert set(per) == set(gaze.GAZE_METRICS)
    _assert_scores(got, {k: float(np.mean(v)) for k, v in per.items()})
    # the draws matter: another seed gives other halves, hence other map metrics
    assert gaze.leave_one_subject_out(table, SHAPE, sigma=4.0, seed=4, n_half_splits=4)["cc"] != got["cc"]
    # subjects who look at the same spot predict each other well
    clustered = table.assign(x=24 + (table["x"] - 24) * 0.1, y=20 + (table["y"] - 20) * 0.1)
    agree = gaze.leave_one_subject_out(clustered, SHAPE, sigma=4.0)
    assert agree["nss"] > 2 and agree["auc_judd"] > 0.9 and agree["cc"] > 0.5


def test_split_half_two_subjects_and_ceiling_above_floor(rng):
    # Two subjects: every draw is {1} vs {2} or {2} vs {1}. CC, SIM and MAE are symmetric, so
    # they equal the one-pair value whatever the draws; KL has no ceiling.
    table = _table(rng, n_subjects=2, per_subject=8)
    d1 = _literal_density(_lit_fixmap(table[table.subject == 1]), 4.0)
    d2 = _literal_density(_lit_fixmap(table[table.subject == 2]), 4.0)
    got = gaze.leave_one_subject_out(table, SHAPE, sigma=4.0, n_half_splits=6, seed=5)
    assert got["cc"] == pytest.approx(_lit_cc(d1, d2), rel=1e-10)
    assert got["sim"] == pytest.approx(_lit_sim(d1, d2), rel=1e-10)
    assert got["mae"] == pytest.approx(_lit_mae(d1, d2), rel=1e-10)
    assert math.isnan(got["kl"])
    # Subjects sharing a few fixation spots: the ceiling beats the centre bias on every metric
    # it defines (LOSO against one subject's density did not, e.g. KL on OSIE 1001).
    spots = rng.uniform([8, 8], [40, 32], size=(4, 2))
    rows = [{"x": float(x + rng.normal(0, 1)), "y": float(y + rng.normal(0, 1)), "subject": s}
            for s in range(1, 9) for x, y in spots[rng.permutation(4)[:3]]]
    crowd = pd.DataFrame(rows)
    density = gaze.human_density((crowd, SHAPE), sigma=4.0)
    ceiling = gaze.leave_one_subject_out(crowd, SHAPE, sigma=4.0)
    floor = gaze.center_bias_scores(_lit_fixmap(crowd), density)
    assert ceiling["cc"] > floor["cc"] and ceiling["sim"] > floor["sim"] and ceiling["mae"] < floor["mae"]
    assert ceiling["nss"] > floor["nss"] and ceiling["auc_judd"] > floor["auc_judd"]
    with pytest.raises(ValueError, match="n_half_splits"):
        gaze.leave_one_subject_out(crowd, SHAPE, n_half_splits=0)


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
    # the draw is seeded per image, default_rng([seed, index]), as documented: every image's
    # pooled set is exactly that draw (a draw seeded with `seed` alone differs for some image)
    per_image_differs = False
    for index in range(6):
        others = np.delete(np.arange(6), index)
        want = sorted(np.random.default_rng([1, index]).choice(others, size=3, replace=False).tolist())
        naive = sorted(np.random.default_rng(1).choice(others, size=3, replace=False).tolist())
        per_image_differs |= want != naive
        pooled = gaze.other_images_fixations(maps, index, (8, 8), n_other=3, seed=1)
        assert [k for k in range(6) if pooled[k, k]] == want
    assert per_image_differs  # the check above can tell the two seedings apart
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


def test_prepared_maps_give_the_same_bits_as_arrays(rng):
    """gaze_scores validates each map once (metrics.prepare); every metric must give exactly what it
    gives on the raw arrays, and a prepared map must be left unchanged by all of them."""
    from probes import metrics

    fix = np.zeros((30, 40), dtype=bool)
    fix[rng.integers(0, 30, 25), rng.integers(0, 40, 25)] = True
    other = np.zeros_like(fix)
    other[rng.integers(0, 30, 60), rng.integers(0, 40, 60)] = True
    sal = rng.random((30, 40)).astype(np.float32)
    dens = rng.random((30, 40))
    base = rng.random((30, 40))
    raw = {"nss": metrics.nss(sal, fix), "cc": metrics.cc(sal, dens), "kld": metrics.kld(sal, dens),
           "sim": metrics.sim(sal, dens), "mae": metrics.mae(sal, dens), "auc_judd": metrics.auc_judd(sal, fix),
           "sauc": metrics.sauc(sal, fix, other), "ig": metrics.info_gain(sal, fix, base)}
    s, f, d, o, b = (metrics.prepare(x) for x in (sal, fix, dens, other, base))
    kept = s.values.copy()
    prepared = {"nss": metrics.nss(s, f), "cc": metrics.cc(s, d), "kld": metrics.kld(s, d), "sim": metrics.sim(s, d),
                "mae": metrics.mae(s, d), "auc_judd": metrics.auc_judd(s, f), "sauc": metrics.sauc(s, f, o),
                "ig": metrics.info_gain(s, f, b)}
    assert prepared == raw
    assert np.array_equal(s.values, kept) and np.array_equal(sal, s.raw)
    assert gaze.gaze_scores(sal, fix, dens, other_fixation_map=other, baseline=base) == \
        gaze.gaze_scores(s, f, d, other_fixation_map=o, baseline=b)
    with pytest.raises(ValueError, match="saliency contains NaN"):
        metrics.prepare(np.full((3, 3), np.nan), "saliency")
