"""probes.stats against direct statsmodels / scipy calls and hand-computed tiny cases."""
import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import statsmodels.api as sm
import statsmodels.formula.api as smf
from statsmodels.stats.multicomp import pairwise_tukeyhsd

from probes import stats


def _units(rng, layer="conv5_3", means=(0.0, 1.0, 2.0), n_units=12):
    """Long unit table: one layer, categories a/b/c with different means, plus dead units.

    Unit 0 is flagged dead with an extreme finite score and unit 1 is live-flagged with a NaN
    score: both must be excluded, and including unit 0 would change every statistic.
    """
    rows = []
    for cat, mu in zip("abc", means):
        for u in range(n_units):
            score = float(mu + rng.normal(scale=0.5))
            dead = False
            if u == 0:
                score, dead = 50.0, True
            elif u == 1:
                score = float("nan")
            rows.append({"layer": layer, "unit": u, "category": cat, "score": score,
                         "n_regions": 7, "dead": dead})
    return pd.DataFrame(rows)


@pytest.fixture
def units(rng):
    other = _units(rng, layer="conv4_3", means=(1.0, 1.0, 1.0))
    return pd.concat([_units(rng), other], ignore_index=True)


def _live_groups(units, layer):
    sel = units[(units.layer == layer) & ~units.dead & units.score.notna()]
    return sel, [g.score.to_numpy() for _, g in sel.groupby("category", sort=True)]


# --- ANOVA / Tukey ------------------------------------------------------------------------------


def test_anova_matches_f_oneway_and_anova_lm(units):
    res = stats.anova_by_category(units, "conv5_3")
    assert list(res.columns[:6]) == ["layer", "F", "p_value", "df_between", "df_within", "n"]
    sel, groups = _live_groups(units, "conv5_3")
    ref = scipy.stats.f_oneway(*groups)
    row = res.iloc[0]
    # two independent implementations of the same F: agreement to float round-off
    assert row.F == pytest.approx(ref.statistic, rel=1e-10)
    assert row.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    assert (row.df_between, row.df_within, row.n) == (2, len(sel) - 3, len(sel))
    assert row.n == 3 * 10  # units 0 (dead) and 1 (NaN) excluded in every category
    direct = sm.stats.anova_lm(smf.ols("score ~ C(category)", data=sel).fit())
    assert row.F == pytest.approx(direct["F"].iloc[0], rel=1e-12)
    ss = direct["sum_sq"]
    assert row.eta_sq == pytest.approx(ss.iloc[0] / ss.sum(), rel=1e-12)
    # the categories really differ here; conv4_3 has equal means
    assert row.p_value < 1e-6


def test_anova_excludes_dead_units(units):
    with_dead = units.copy()
    with_dead["dead"] = False
    with_dead = with_dead[with_dead.score.notna()]
    f_live = stats.anova_by_category(units, "conv5_3").F.iloc[0]
    f_all = scipy.stats.f_oneway(*[g.score for _, g in with_dead[with_dead.layer == "conv5_3"].groupby("category")])
    assert f_live != pytest.approx(f_all.statistic, rel=1e-3)


def test_tukey_matches_statsmodels_and_scipy(units):
    res = stats.tukey_by_category(units, "conv5_3", alpha=0.05)
    assert list(res.columns) == ["layer", "group1", "group2", "meandiff", "p_adj", "lower", "upper", "reject"]
    sel, groups = _live_groups(units, "conv5_3")
    direct = pairwise_tukeyhsd(sel.score.to_numpy(), sel.category.to_numpy(), alpha=0.05)
    assert list(zip(res.group1, res.group2)) == [("a", "b"), ("a", "c"), ("b", "c")]
    np.testing.assert_allclose(res.meandiff, direct.meandiffs, rtol=1e-12)
    np.testing.assert_allclose(res.p_adj, direct.pvalues, rtol=1e-12)
    np.testing.assert_array_equal(res.reject, direct.reject)
    # independent implementation: scipy.stats.tukey_hsd; statistic[i, j] = mean_i - mean_j,
    # statsmodels' meandiff = mean(group2) - mean(group1)
    ref = scipy.stats.tukey_hsd(*groups)
    ci = ref.confidence_interval(0.95)
    idx = {"a": 0, "b": 1, "c": 2}
    for r in res.itertuples():
        i, j = idx[r.group1], idx[r.group2]
        means = {k: groups[v].mean() for k, v in idx.items()}
        assert r.meandiff == pytest.approx(means[r.group2] - means[r.group1], rel=1e-12)
        assert r.meandiff == pytest.approx(ref.statistic[j, i], rel=1e-12)
        # both evaluate the studentized range distribution numerically (scipy's
        # studentized_range underneath in current statsmodels); 1e-6 leaves room for quadrature
        assert r.p_adj == pytest.approx(ref.pvalue[j, i], rel=1e-6, abs=1e-12)
        assert r.lower == pytest.approx(ci.low[j, i], rel=1e-6)
        assert r.upper == pytest.approx(ci.high[j, i], rel=1e-6)
    assert res.reject.tolist() == [True, True, True]


def test_category_tests_reject_bad_input(units):
    with pytest.raises(ValueError, match="layer 'conv9_9' is not in the unit table"):
        stats.anova_by_category(units, "conv9_9")
    one_cat = units[units.category == "a"]
    with pytest.raises(ValueError, match="at least 2 categories"):
        stats.anova_by_category(one_cat, "conv5_3")
    tiny = pd.DataFrame({"layer": "L", "unit": [0, 0], "category": ["a", "b"], "score": [1.0, 2.0],
                         "n_regions": 1, "dead": False})
    with pytest.raises(ValueError, match="no within-category degrees of freedom"):
        stats.tukey_by_category(tiny, "L")
    with pytest.raises(ValueError, match="alpha must lie in"):
        stats.tukey_by_category(units, "conv5_3", alpha=1.5)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['dead'\]"):
        stats.anova_by_category(units.drop(columns="dead"), "conv5_3")


def test_friedman_matches_direct_scipy_call(units):
    # Unit 5 is dead in category b only: it leaves every block (the test needs complete blocks).
    units = units.copy()
    units.loc[(units.layer == "conv5_3") & (units.unit == 5) & (units.category == "b"), "dead"] = True
    res = stats.friedman_by_category(units, "conv5_3")
    assert list(res.columns) == ["layer", "statistic", "p_value", "n_units", "n_categories"]
    keep = [u for u in range(12) if u not in (0, 1, 5)]  # 0 dead, 1 NaN, 5 dead in b
    sel = units[units.layer == "conv5_3"].set_index(["category", "unit"]).score
    columns = [[sel[(c, u)] for u in keep] for c in "abc"]
    ref = scipy.stats.friedmanchisquare(*columns)
    row = res.iloc[0]
    assert row.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert row.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert (row.layer, row.n_units, row.n_categories) == ("conv5_3", 9, 3)
    assert row.p_value < 1e-3  # category means 0, 1, 2 with sd 0.5: clearly different
    # A constant unit effect shifts whole rows: ANOVA's F changes, Friedman's ranks do not.
    shifted = units.copy()
    shifted["score"] = shifted["score"] + 10.0 * shifted["unit"]
    again = stats.friedman_by_category(shifted, "conv5_3").iloc[0]
    assert again.statistic == pytest.approx(row.statistic, rel=1e-12)
    assert stats.anova_by_category(shifted, "conv5_3").iloc[0].F < stats.anova_by_category(units, "conv5_3").iloc[0].F


def test_friedman_rejects_bad_input(units):
    with pytest.raises(ValueError, match="at least 3 categories"):
        stats.friedman_by_category(units[units.category != "c"], "conv5_3")
    with pytest.raises(ValueError, match="only 1 unit"):
        stats.friedman_by_category(units[units.unit <= 2], "conv5_3")  # units 0, 1 not live
    with pytest.raises(ValueError, match="twice"):
        stats.friedman_by_category(pd.concat([units, units.iloc[[5]]]), "conv5_3")
    with pytest.raises(ValueError, match="not in the unit table"):
        stats.friedman_by_category(units, "conv9_9")


# --- load_run ------------------------------------------------------------------------------------


def test_load_run_roundtrip_and_errors(tmp_path, units):
    summary = pd.DataFrame({"layer": ["conv5_3"], "category": ["NA"], "top_k_mean": [1.2],
                            "count_above_threshold": [3], "n_units": [12], "n_dead": [1], "n_regions": [9]})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        stats.load_run(tmp_path / "nope")
    units.to_csv(tmp_path / "units.csv", index=False)
    with pytest.raises(FileNotFoundError, match="lacks summary.csv, run.json"):
        stats.load_run(tmp_path)
    summary.to_csv(tmp_path / "summary.csv", index=False)
    (tmp_path / "run.json").write_text(json.dumps({"top_k": 10, "threshold": 1.5}))
    u, s, info = stats.load_run(tmp_path)
    assert info == {"top_k": 10, "threshold": 1.5}
    assert u.dead.dtype == bool and u.dead.sum() == units.dead.sum()
    assert u.score.isna().sum() == units.score.isna().sum()
    assert s.category.tolist() == ["NA"]  # a category name is never read as missing
    pd.testing.assert_frame_equal(stats.anova_by_category(u, "conv5_3"),
                                  stats.anova_by_category(units, "conv5_3"))
    units.assign(dead=units.dead.astype(int)).to_csv(tmp_path / "units.csv", index=False)
    assert stats.load_run(tmp_path)[0].dead.tolist() == units.dead.tolist()
    units.drop(columns="n_regions").to_csv(tmp_path / "units.csv", index=False)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['n_regions'\]"):
        stats.load_run(tmp_path)


# --- output saliency (He et al. eq. 2, 3) ------------------------------------------------------


def _hand_image():
    # pred: mean 3, population std sqrt(5); gt: mean 1/4, population std sqrt(3)/4
    pred = np.array([[0.0, 2.0], [4.0, 6.0]])
    gt = np.array([[1.0, 0.0], [0.0, 0.0]])
    fix = np.array([[True, True], [False, True]])
    masks = np.array([
        [[False, False], [False, True]],   # region 0: fixation at (1, 1)
        [[True, True], [False, False]],    # region 1: fixations at (0, 0), (0, 1)
        [[False, False], [True, False]],   # region 2: no fixation
    ])
    return pred, gt, fix, masks


def test_region_output_scores_by_hand():
    pred, gt, fix, masks = _hand_image()
    res = stats.region_output_scores(pred, gt, fix, masks, ["a", "b", "a"], image_id="img1")
    assert list(res.columns) == ["image_id", "region", "category", "nss_pred", "nss_gt", "n_fixations"]
    s5, s3 = np.sqrt(5.0), np.sqrt(3.0)
    np.testing.assert_allclose(res.nss_pred[:2], [3 / s5, (-3 / s5 - 1 / s5) / 2], rtol=1e-12)
    np.testing.assert_allclose(res.nss_gt[:2], [-1 / s3, (s3 - 1 / s3) / 2], rtol=1e-12)
    assert res.n_fixations.tolist() == [1, 2, 0]
    assert np.isnan(res.nss_pred[2]) and np.isnan(res.nss_gt[2])
    # affine invariance of NSS: the prediction's scale does not matter
    res2 = stats.region_output_scores(10 * pred + 7, gt, fix, masks, ["a", "b", "a"])
    np.testing.assert_allclose(res2.nss_pred[:2], res.nss_pred[:2], rtol=1e-12)
    assert "image_id" not in res2.columns


def test_region_output_scores_constant_map_is_nan():
    _, gt, fix, masks = _hand_image()
    res = stats.region_output_scores(np.ones((2, 2)), gt, fix, masks, ["a", "b", "a"])
    assert res.nss_pred.isna().all() and res.nss_gt[:2].notna().all()


def test_output_saliency_by_hand():
    pred, gt, fix, masks = _hand_image()
    img1 = stats.region_output_scores(pred, gt, fix, masks, ["a", "b", "a"])
    # second image: the same maps transposed, so region 0 of category "b" sees (1, 1) again
    img2 = stats.region_output_scores(pred.T, gt.T, fix.T, masks[:1].transpose(0, 2, 1), ["b"])
    table = stats.output_saliency(pd.concat([img1, img2], ignore_index=True))
    assert list(table.columns) == ["category", "OS", "OD", "n_regions", "n_skipped"]
    s5, s3 = np.sqrt(5.0), np.sqrt(3.0)
    p0, g0 = 3 / s5, -1 / s3                  # region 0 of image 1 (and of image 2)
    p1, g1 = -2 / s5, 1 / s3                  # region 1 of image 1
    a, b = table.set_index("category").loc["a"], table.set_index("category").loc["b"]
    assert a.OS == pytest.approx(p0) and a.OD == pytest.approx(abs(p0 - g0))
    assert (a.n_regions, a.n_skipped) == (1, 1)
    assert b.OS == pytest.approx((p1 + p0) / 2)
    assert b.OD == pytest.approx((abs(p1 - g1) + abs(p0 - g0)) / 2)
    assert (b.n_regions, b.n_skipped) == (2, 0)


def test_output_saliency_errors():
    pred, gt, fix, masks = _hand_image()
    with pytest.raises(ValueError, match="3 masks but 2 categories"):
        stats.region_output_scores(pred, gt, fix, masks, ["a", "b"])
    with pytest.raises(ValueError, match="density_map has shape"):
        stats.region_output_scores(pred, gt[:1], fix, masks, ["a", "b", "a"])
    with pytest.raises(ValueError, match="region_scores is empty"):
        stats.output_saliency(pd.DataFrame(columns=["category", "nss_pred", "nss_gt"]))


def test_spearman_inner_vs_output_hand_table():
    summary = pd.DataFrame({
        "layer": ["L"] * 5 + ["M"],
        "category": ["a", "b", "c", "d", "f", "a"],
        "top_k_mean": [1.0, 2.0, 3.0, 4.0, 9.0, 0.0],
        "count_above_threshold": [0, 1, 2, 3, 4, 0],
    })
    os_table = pd.DataFrame({"category": ["a", "b", "c", "d", "e"], "OS": [10.0, 30.0, 20.0, 40.0, 5.0]})
    res = stats.spearman_inner_vs_output(summary, os_table, "L")
    # ranks (1,2,3,4) vs (1,3,2,4): sum d^2 = 2, rho = 1 - 6*2 / (4*(16-1)) = 0.8
    assert res["rho"] == pytest.approx(0.8)
    ref = scipy.stats.spearmanr([1, 2, 3, 4], [10, 30, 20, 40])
    assert res["p_value"] == pytest.approx(ref.pvalue)
    assert res["n"] == 4 and res["categories"] == ("a", "b", "c", "d")
    with pytest.raises(ValueError, match="Spearman's rho needs at least 3"):
        stats.spearman_inner_vs_output(summary, os_table, "M")
    with pytest.raises(ValueError, match="layer 'Z' is not in the summary"):
        stats.spearman_inner_vs_output(summary, os_table, "Z")


# --- compare_runs ------------------------------------------------------------------------------


def _run(scores_by_cat, layer="L1", dead=()):
    rows = []
    for cat, scores in scores_by_cat.items():
        for u, s in enumerate(scores):
            is_dead = (cat, u) in dead
            rows.append({"layer": layer, "unit": u, "category": cat,
                         "score": float("nan") if is_dead else s, "n_regions": 3, "dead": is_dead})
    return pd.DataFrame(rows)


def test_compare_runs_known_differences():
    base_a = np.array([0.1, 1.0, 2.0, 0.4, 1.6])
    delta = np.array([0.5, 1.0, 1.5, 2.0, 2.5])
    base_b = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    run_a = pd.concat([_run({"a": base_a, "b": base_b}),
                       _run({"a": base_a}, layer="only_in_a")], ignore_index=True)
    run_b = _run({"a": base_a + delta, "b": base_b}, dead={("b", 4)})
    res = stats.compare_runs(run_a, run_b, top_k=2, threshold=1.5)
    assert res[["layer", "category"]].values.tolist() == [["L1", "a"], ["L1", "b"]]
    a, b = res.iloc[0], res.iloc[1]
    # category a: A top-2 = 2.0, 1.6 ; B = [0.6, 2.0, 3.5, 2.4, 4.1] -> top-2 = 4.1, 3.5
    assert a.top_k_mean_a == pytest.approx(1.8) and a.top_k_mean_b == pytest.approx(3.8)
    assert a.top_k_mean_change == pytest.approx(2.0)
    assert (a.count_a, a.count_b, a.count_change) == (2, 4, 2)
    assert (a.n_paired, a.mean_diff) == (5, pytest.approx(delta.mean()))
    assert a.wilcoxon_p == pytest.approx(scipy.stats.wilcoxon(base_a + delta, base_a).pvalue)
    assert a.wilcoxon_p == pytest.approx(2 / 2**5)  # exact: all 5 differences positive
    assert a.ttest_p == pytest.approx(scipy.stats.ttest_rel(base_a + delta, base_a).pvalue)
    # category b: unchanged, unit 4 dead in B -> 4 pairs, no change, tests undefined
    assert b.top_k_mean_a == pytest.approx(4.5) and b.top_k_mean_b == pytest.approx(3.5)
    assert (b.count_a, b.count_b, b.n_live_a, b.n_live_b) == (4, 3, 5, 4)
    assert (b.n_paired, b.mean_diff) == (4, 0.0)
    assert np.isnan(b.wilcoxon_p) and np.isnan(b.ttest_p)


def test_compare_runs_top_k_larger_than_units_and_errors():
    run_a = _run({"a": [1.0, 2.0]})
    res = stats.compare_runs(run_a, run_a, top_k=10)
    assert res.top_k_mean_a.iloc[0] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="share no"):
        stats.compare_runs(run_a, _run({"a": [1.0]}, layer="L2"))
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        stats.compare_runs(run_a, run_a, top_k=0)


def test_live_units_rejects_garbage(units):
    text_dead = units.assign(dead=units.dead.map({True: "True", False: "False"}))
    # string flags are parsed, not truth-tested ("False" is a non-empty string)
    assert len(stats.live_units(text_dead)) == len(stats.live_units(units)) == 2 * 3 * 10
    with pytest.raises(ValueError, match="column 'dead' must be boolean"):
        stats.live_units(units.assign(dead="maybe"))
    with pytest.raises(ValueError, match="column 'score' must be numeric"):
        stats.live_units(units.assign(score="high"))


def test_region_output_scores_rejects_nan_map():
    pred, gt, fix, masks = _hand_image()
    pred[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        stats.region_output_scores(pred, gt, fix, masks, ["a", "b", "a"])
