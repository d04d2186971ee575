"""Statistics over dissection results: category ANOVA / Tukey, output saliency, run comparison.

Inputs are the tables the dissection engine writes in a run directory (digest section 3):

- ``units.csv``: one row per layer x unit x category with ``layer, unit, category, score,
  n_regions, dead``; ``score`` is the unit's mean region NSS (or NMM) over the regions of that
  category, NaN for dead units;
- ``summary.csv``: ``layer, category, top_k_mean, count_above_threshold, n_units, n_dead,
  n_regions``;
- ``run.json``: the run's parameters (``top_k``, ``threshold``, model, weights, ...).

A unit is *live* for a category when it is not flagged dead and its score is finite; every
statistic here uses live units only (dead units are counted, never ranked, digest section 3).
Tests come from statsmodels and scipy; nothing here re-implements a test statistic.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.stats
import statsmodels.api as sm
import statsmodels.formula.api as smf
from statsmodels.stats.multicomp import pairwise_tukeyhsd

from probes.metrics import nss

__all__ = [
    "UNIT_COLUMNS",
    "SUMMARY_COLUMNS",
    "load_run",
    "live_units",
    "anova_by_category",
    "tukey_by_category",
    "friedman_by_category",
    "region_output_scores",
    "output_saliency",
    "spearman_inner_vs_output",
    "compare_runs",
]

UNIT_COLUMNS = ("layer", "unit", "category", "score", "n_regions", "dead")
SUMMARY_COLUMNS = (
    "layer", "category", "top_k_mean", "count_above_threshold", "n_units", "n_dead", "n_regions",
)


# ---------------------------------------------------------------------------------------------
# Loading and validation


def _require_columns(df: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{name} lacks column(s) {missing}; expected at least {list(columns)} "
            f"(got {list(df.columns)})"
        )


def load_run(run_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Load the tables of one dissection run.

    Args:
        run_dir: directory holding ``units.csv``, ``summary.csv`` and ``run.json``.

    Returns:
        ``(units, summary, info)``: the two tables as DataFrames (``dead`` as bool) and the
        parsed ``run.json``.

    Raises:
        FileNotFoundError: the directory or one of the three files is missing.
        ValueError: a table lacks a required column, or ``run.json`` is not a JSON object.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"run directory {str(run_dir)!r} does not exist; pass the folder a dissection run wrote"
        )
    paths = {name: run_dir / name for name in ("units.csv", "summary.csv", "run.json")}
    missing = [name for name, p in paths.items() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"run directory {str(run_dir)!r} lacks {', '.join(missing)}; "
            "it is not a complete dissection run (re-run or resume the dissection)"
        )
    # keep_default_na=False + na_values: a category called "NA" or "None" stays a string.
    units = pd.read_csv(paths["units.csv"], keep_default_na=False, na_values=["", "nan", "NaN"])
    summary = pd.read_csv(paths["summary.csv"], keep_default_na=False, na_values=["", "nan", "NaN"])
    _require_columns(units, UNIT_COLUMNS, f"{paths['units.csv']}")
    _require_columns(summary, SUMMARY_COLUMNS, f"{paths['summary.csv']}")
    units["dead"] = _as_bool(units["dead"], str(paths["units.csv"]))
    for df in (units, summary):
        df["layer"] = df["layer"].astype(str)
        df["category"] = df["category"].astype(str)
    try:
        info = json.loads(paths["run.json"].read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{paths['run.json']} is not valid JSON ({exc})") from None
    if not isinstance(info, dict):
        raise ValueError(f"{paths['run.json']} must hold a JSON object, got {type(info).__name__}")
    return units, summary, info


def _as_bool(col: pd.Series, name: str) -> pd.Series:
    """``dead`` as bool whether the CSV wrote True/False, true/false or 0/1."""
    if col.dtype == bool:
        return col
    mapping = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}
    text = col.astype(str).str.strip().str.lower()
    bad = sorted(set(text) - set(mapping))
    if bad:
        raise ValueError(f"{name}: column 'dead' must be boolean (True/False or 1/0), found {bad[:5]}")
    return text.map(mapping).astype(bool)


def live_units(units: pd.DataFrame, layer: str | None = None) -> pd.DataFrame:
    """Rows of ``units`` whose unit is live: not flagged dead, with a finite score, and ranked
    (the ``ranked`` column of a dissection's units.csv, when present).

    Args:
        units: the long unit table (``layer, unit, category, score, n_regions, dead``).
        layer: keep only this layer; ``None`` keeps every layer.

    Returns:
        A copy with the live rows only.

    Raises:
        ValueError: a required column is missing, ``layer`` is not in the table, or ``score`` /
            ``dead`` hold non-numeric / non-boolean values.
    """
    _require_columns(units, ("layer", "unit", "category", "score", "dead"), "units")
    if layer is not None:
        layers = units["layer"].astype(str)
        if str(layer) not in set(layers):
            raise ValueError(
                f"layer {layer!r} is not in the unit table; available layers: {sorted(set(layers))}"
            )
        units = units[layers == str(layer)]
    try:
        score = pd.to_numeric(units["score"]).astype(float)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"units: column 'score' must be numeric (NaN for dead units): {exc}") from None
    keep = ~_as_bool(units["dead"], "units") & np.isfinite(score)
    if "ranked" in units.columns:  # issue 9: units below --min-valid are not ranked anywhere
        keep &= _as_bool(units["ranked"], "units")
    out = units.loc[keep].copy()
    out["score"] = score[keep]
    out["category"] = out["category"].astype(str)
    return out


# ---------------------------------------------------------------------------------------------
# Category differences: one-way ANOVA and Tukey HSD (digest section 3)


def _layer_scores(units: pd.DataFrame, layer: str) -> pd.DataFrame:
    live = live_units(units, layer)
    counts = live.groupby("category").size()
    if len(counts) < 2:
        raise ValueError(
            f"layer {layer!r}: a category comparison needs live units in at least 2 categories, "
            f"found {list(counts.index)}"
        )
    if len(live) <= len(counts):
        raise ValueError(
            f"layer {layer!r}: {len(live)} live unit scores over {len(counts)} categories leave no "
            "within-category degrees of freedom; dissect more units"
        )
    return live[["category", "score"]].reset_index(drop=True)


def anova_by_category(units: pd.DataFrame, layer: str) -> pd.DataFrame:
    """One-way ANOVA of the live unit scores of one layer across categories.

    The model is ``score ~ C(category)`` (statsmodels OLS + ``anova_lm``): one observation per
    live unit and category, so the test asks whether the categories' mean unit scores differ.
    Dead units and NaN scores are excluded.

    Caveat (repeated measures): the same units are scored in every category, so the
    ``unit x category`` observations are not independent groups as a one-way ANOVA assumes;
    a unit that is strong everywhere inflates every category alike, and the p-value can be
    off in either direction. The test is kept because it is the analysis of He et al. 2019's
    style (digest section 3); for a test that respects the pairing use
    :func:`friedman_by_category` (units live in every category, rank-based).

    Args:
        units: the long unit table.
        layer: layer name.

    Returns:
        One row: ``layer, F, p_value, df_between, df_within, n, n_categories, eta_sq``
        (``eta_sq`` = SS_between / SS_total, the share of variance explained by category).

    Raises:
        ValueError: unknown layer, fewer than two categories with live units, or no
            within-category degrees of freedom.
    """
    data = _layer_scores(units, layer)
    fit = smf.ols("score ~ C(category)", data=data).fit()
    table = sm.stats.anova_lm(fit, typ=1)
    between, resid = table.iloc[0], table.loc["Residual"]
    return pd.DataFrame(
        [
            {
                "layer": str(layer),
                "F": float(between["F"]),
                "p_value": float(between["PR(>F)"]),
                "df_between": int(between["df"]),
                "df_within": int(resid["df"]),
                "n": len(data),
                "n_categories": data["category"].nunique(),
                "eta_sq": float(between["sum_sq"] / (between["sum_sq"] + resid["sum_sq"])),
            }
        ]
    )


def tukey_by_category(units: pd.DataFrame, layer: str, alpha: float = 0.05) -> pd.DataFrame:
    """Pairwise Tukey HSD between categories on the live unit scores of one layer.

    statsmodels ``pairwise_tukeyhsd``; ``meandiff = mean(group2) - mean(group1)``, pairs in
    sorted category order; ``p_adj`` is family-wise adjusted; ``lower, upper`` is the
    simultaneous ``1 - alpha`` confidence interval of ``meandiff``.

    Caveat (repeated measures): as for :func:`anova_by_category`, each category's scores come
    from the same units, while Tukey HSD assumes independent groups; the intervals and
    adjusted p-values are therefore approximate. Kept for comparability with He et al. 2019;
    :func:`friedman_by_category` is the paired, rank-based alternative.

    Args:
        units: the long unit table.
        layer: layer name.
        alpha: family-wise error rate, in (0, 1).

    Returns:
        One row per category pair: ``layer, group1, group2, meandiff, p_adj, lower, upper,
        reject``.

    Raises:
        ValueError: bad ``alpha``, unknown layer, fewer than two categories, or no
            within-category degrees of freedom.
    """
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    data = _layer_scores(units, layer)
    res = pairwise_tukeyhsd(data["score"].to_numpy(), data["category"].to_numpy(), alpha=alpha)
    groups = [str(g) for g in res.groupsunique]
    # statsmodels orders pairs as the upper triangle of the sorted groups.
    i1, i2 = np.triu_indices(len(groups), 1)
    conf = np.asarray(res.confint, dtype=float)
    return pd.DataFrame(
        {
            "layer": str(layer),
            "group1": [groups[i] for i in i1],
            "group2": [groups[i] for i in i2],
            "meandiff": np.asarray(res.meandiffs, dtype=float),
            "p_adj": np.asarray(res.pvalues, dtype=float),
            "lower": conf[:, 0],
            "upper": conf[:, 1],
            "reject": np.asarray(res.reject, dtype=bool),
        }
    )


def friedman_by_category(units: pd.DataFrame, layer: str) -> pd.DataFrame:
    """Friedman test of category differences, pairing each unit with itself across categories.

    The repeated-measures counterpart of :func:`anova_by_category`: the categories are those
    with at least one live unit in ``layer``; the blocks are the units live in EVERY one of
    them (a unit dead in one category is dropped whole, so each block is complete); scipy
    ``friedmanchisquare(*columns)`` with one column per category (sorted) holding the units'
    scores in ascending unit order. Ranks within each unit remove its overall level, so a
    unit that is strong everywhere does not count as evidence for any category.

    Args:
        units: the long unit table.
        layer: layer name.

    Returns:
        One row: ``layer, statistic, p_value, n_units, n_categories``.

    Raises:
        ValueError: unknown layer, fewer than 3 categories with live units (Friedman needs 3),
            fewer than 2 units live in every category, or a unit listed twice for a category.
    """
    live = live_units(units, layer)
    if live.duplicated(["unit", "category"]).any():
        raise ValueError(f"layer {layer!r}: a unit appears twice for one category; pass one row per unit and category")
    wide = live.pivot(index="unit", columns="category", values="score").sort_index()
    wide = wide[sorted(wide.columns)]
    if wide.shape[1] < 3:
        raise ValueError(
            f"layer {layer!r}: the Friedman test needs live units in at least 3 categories, "
            f"found {list(wide.columns)}"
        )
    complete = wide.dropna()
    if len(complete) < 2:
        raise ValueError(
            f"layer {layer!r}: only {len(complete)} unit(s) are live in all {wide.shape[1]} categories; "
            "the Friedman test needs at least 2 (dissect more units or drop sparse categories)"
        )
    res = scipy.stats.friedmanchisquare(*(complete[c].to_numpy(dtype=float) for c in complete.columns))
    return pd.DataFrame(
        [
            {
                "layer": str(layer),
                "statistic": float(res.statistic),
                "p_value": float(res.pvalue),
                "n_units": int(len(complete)),
                "n_categories": int(complete.shape[1]),
            }
        ]
    )


# ---------------------------------------------------------------------------------------------
# Output saliency OS_c and output difference OD_c (He et al. 2019, eq. 2, 3)


def region_output_scores(
    pred_map: np.ndarray,
    density_map: np.ndarray,
    fixation_map: np.ndarray,
    masks: np.ndarray,
    categories: Sequence[str],
    *,
    image_id: str | None = None,
) -> pd.DataFrame:
    """Region NSS of a model's output map and of the human density map, for one image.

    For region k with mask ``m_k`` and binary fixation map ``f``:
    ``nss_pred = NSS(pred, f * m_k)`` and ``nss_gt = NSS(GT, f * m_k)`` (He et al. 2019,
    eq. 2, 3), with the z-score over the whole map (population std) and the mean over the
    unique fixated pixels inside the region (:func:`probes.metrics.nss` on ``f & m_k``). A
    region without fixations gets NaN in both and ``n_fixations = 0`` (skipped by
    :func:`output_saliency` and counted there); a constant map gets NaN.

    Args:
        pred_map: ``H x W`` model output (any scale; NSS is affine invariant).
        density_map: ``H x W`` human fixation density map (the "ground truth").
        fixation_map: ``H x W`` bool map of the unique fixated pixels.
        masks: ``R x H x W`` bool region masks (a single ``H x W`` mask is accepted).
        categories: ``R`` category names.
        image_id: optional identifier, added as a first column when given.

    Returns:
        One row per region: ``[image_id,] region, category, nss_pred, nss_gt, n_fixations``.

    Raises:
        ValueError: shapes disagree, the number of categories differs from the masks, or a map
            holds NaN / inf (from :func:`probes.metrics.nss`).
    """
    pred = np.asarray(pred_map, dtype=np.float64)
    gt = np.asarray(density_map, dtype=np.float64)
    fix = np.asarray(fixation_map).astype(bool)
    m = np.asarray(masks).astype(bool)
    if m.ndim == 2:
        m = m[None]
    if pred.ndim != 2:
        raise ValueError(f"pred_map must be a 2-D H x W map, got shape {pred.shape}")
    for name, arr in (("density_map", gt), ("fixation_map", fix)):
        if arr.shape != pred.shape:
            raise ValueError(
                f"{name} has shape {arr.shape} but pred_map has {pred.shape}; resize the "
                "prediction to the fixation map's size first (bilinear, align_corners=False)"
            )
    if m.ndim != 3 or m.shape[1:] != pred.shape:
        raise ValueError(f"masks must be R x {pred.shape[0]} x {pred.shape[1]}, got shape {m.shape}")
    categories = [str(c) for c in categories]
    if len(categories) != m.shape[0]:
        raise ValueError(f"{m.shape[0]} masks but {len(categories)} categories; give one per mask")

    rows = []
    for k, (mask, cat) in enumerate(zip(m, categories)):
        region_fix = fix & mask
        n_fix = int(region_fix.sum())
        if n_fix == 0:
            # digest section 3: a region with no fixation is skipped and counted
            s_pred = s_gt = float("nan")
        else:
            s_pred, s_gt = nss(pred, region_fix), nss(gt, region_fix)
        row = {"region": k, "category": cat, "nss_pred": s_pred, "nss_gt": s_gt, "n_fixations": n_fix}
        if image_id is not None:
            row = {"image_id": str(image_id), **row}
        rows.append(row)
    columns = (["image_id"] if image_id is not None else []) + [
        "region", "category", "nss_pred", "nss_gt", "n_fixations",
    ]
    return pd.DataFrame(rows, columns=columns)


def output_saliency(region_scores: pd.DataFrame) -> pd.DataFrame:
    """Output saliency ``OS_c`` and output difference ``OD_c`` per category.

    ``OS_c = mean over regions of NSS(pred, f*m)`` (He et al. 2019, eq. 2) and
    ``OD_c = mean over regions of |NSS(pred, f*m) - NSS(GT, f*m)|`` (eq. 3). Both average over
    the same regions: those where both NSS values are finite; the others are counted in
    ``n_skipped``.

    Args:
        region_scores: rows from :func:`region_output_scores` (concatenated over images).

    Returns:
        One row per category (sorted): ``category, OS, OD, n_regions, n_skipped``; OS and OD
        are NaN for a category whose regions were all skipped.

    Raises:
        ValueError: required columns are missing or the table is empty.
    """
    _require_columns(region_scores, ("category", "nss_pred", "nss_gt"), "region_scores")
    if len(region_scores) == 0:
        raise ValueError("region_scores is empty; score at least one region with region_output_scores")
    df = region_scores[["category", "nss_pred", "nss_gt"]].copy()
    df["category"] = df["category"].astype(str)
    pred = df["nss_pred"].astype(float)
    gt = df["nss_gt"].astype(float)
    df["ok"] = np.isfinite(pred) & np.isfinite(gt)
    df["abs_diff"] = (pred - gt).abs()
    rows = []
    for cat, g in df.groupby("category", sort=True):
        ok = g[g["ok"]]
        rows.append(
            {
                "category": cat,
                "OS": float(ok["nss_pred"].mean()) if len(ok) else float("nan"),
                "OD": float(ok["abs_diff"].mean()) if len(ok) else float("nan"),
                "n_regions": len(ok),
                "n_skipped": len(g) - len(ok),
            }
        )
    return pd.DataFrame(rows, columns=["category", "OS", "OD", "n_regions", "n_skipped"])


def spearman_inner_vs_output(
    summary: pd.DataFrame,
    os_table: pd.DataFrame,
    layer: str,
    value: str = "top_k_mean",
) -> dict:
    """Spearman's rho between a layer's inner saliency and the output saliency, across categories.

    Pairs each category's ``summary[value]`` for ``layer`` (default the top-k mean) with its
    ``OS`` from :func:`output_saliency`, over the categories both tables have with finite
    values (digest section 3). scipy ``spearmanr`` (two-sided p-value).

    Args:
        summary: the run summary (``layer, category, <value>``).
        os_table: output of :func:`output_saliency` (``category, OS``).
        layer: layer name.
        value: the summary column to correlate, e.g. ``"count_above_threshold"``.

    Returns:
        ``{"layer", "rho", "p_value", "n", "categories"}``.

    Raises:
        ValueError: missing columns, unknown layer, or fewer than 3 shared categories.
    """
    _require_columns(summary, ("layer", "category", value), "summary")
    _require_columns(os_table, ("category", "OS"), "os_table")
    layers = summary["layer"].astype(str)
    if str(layer) not in set(layers):
        raise ValueError(f"layer {layer!r} is not in the summary; available layers: {sorted(set(layers))}")
    inner = summary.loc[layers == str(layer), ["category", value]].copy()
    inner["category"] = inner["category"].astype(str)
    outer = os_table[["category", "OS"]].copy()
    outer["category"] = outer["category"].astype(str)
    joined = inner.merge(outer, on="category", how="inner")
    joined = joined[np.isfinite(joined[value].astype(float)) & np.isfinite(joined["OS"].astype(float))]
    joined = joined.sort_values("category")
    if len(joined) < 3:
        raise ValueError(
            f"layer {layer!r}: only {len(joined)} categories have both a finite {value} and a "
            "finite OS; Spearman's rho needs at least 3"
        )
    res = scipy.stats.spearmanr(joined[value].astype(float), joined["OS"].astype(float))
    return {
        "layer": str(layer),
        "rho": float(res.statistic),
        "p_value": float(res.pvalue),
        "n": len(joined),
        "categories": tuple(joined["category"]),
    }


# ---------------------------------------------------------------------------------------------
# Comparing two runs (e.g. before / after fine-tuning, He et al. 2019, Tables 3, 7)


def _top_k_mean(scores: np.ndarray, k: int) -> float:
    """Mean of the k largest scores (all of them when fewer than k); NaN when empty."""
    if scores.size == 0:
        return float("nan")
    return float(np.sort(scores)[::-1][:k].mean())


def _per_category(live: pd.DataFrame, top_k: int, threshold: float) -> pd.DataFrame:
    rows = []
    for (layer, cat), g in live.groupby(["layer", "category"], sort=False):
        s = g["score"].to_numpy(dtype=float)
        rows.append(
            {
                "layer": layer,
                "category": cat,
                "top_k_mean": _top_k_mean(s, top_k),
                "count": int((s > threshold).sum()),
                "n_live": s.size,
            }
        )
    return pd.DataFrame(rows, columns=["layer", "category", "top_k_mean", "count", "n_live"])


def _paired_tests(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Wilcoxon signed-rank and paired t-test p-values for paired scores ``a``, ``b``.

    Undefined cases give NaN instead of a scipy warning: fewer than 2 pairs, or every difference
    zero (nothing changed, so neither statistic exists).
    """
    diff = b - a
    if diff.size < 2 or not np.any(diff != 0):
        return float("nan"), float("nan")
    w_p = scipy.stats.wilcoxon(b, a).pvalue
    t_p = scipy.stats.ttest_rel(b, a).pvalue
    return float(w_p), float(t_p)


def compare_runs(
    units_a: pd.DataFrame,
    units_b: pd.DataFrame,
    top_k: int = 10,
    threshold: float = 1.5,
) -> pd.DataFrame:
    """Compare two runs per layer x category: top-k mean, count above threshold, paired unit change.

    Run-level numbers are recomputed from each run's live units: ``top_k_mean`` = mean of the
    ``top_k`` largest unit scores (of all live units when fewer), ``count`` = units with score
    ``> threshold`` (digest section 3). Changes are ``b - a``. The paired part uses the units
    present and live in both runs for the same ``(layer, unit, category)``: ``mean_diff`` is
    the mean of ``score_b - score_a``, ``wilcoxon_p`` comes from ``scipy.stats.wilcoxon`` (on
    the differences, scipy's defaults: two-sided, zero differences dropped, exact p for small
    n) and ``ttest_p`` from ``scipy.stats.ttest_rel`` (two-sided). p-values are NaN with fewer than 2
    pairs or when every difference is zero.

    Args:
        units_a: unit table of run A (e.g. the pretrained model).
        units_b: unit table of run B (e.g. the fine-tuned model).
        top_k: how many of the best units enter the top-k mean (positive).
        threshold: score threshold T for the count.

    Returns:
        One row per (layer, category) present in both runs, in run A's order:
        ``layer, category, top_k_mean_a, top_k_mean_b, top_k_mean_change, count_a, count_b,
        count_change, n_live_a, n_live_b, n_paired, mean_diff, wilcoxon_p, ttest_p``.

    Raises:
        ValueError: bad ``top_k``, missing columns, or no (layer, category) shared by the runs.
    """
    if isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    top_k = int(top_k)
    live_a, live_b = live_units(units_a), live_units(units_b)
    for live in (live_a, live_b):
        live["layer"] = live["layer"].astype(str)
    keys_a = units_a[["layer", "category"]].astype(str).drop_duplicates()
    keys_b = units_b[["layer", "category"]].astype(str).drop_duplicates()
    shared = keys_a.merge(keys_b, on=["layer", "category"], how="inner")
    if shared.empty:
        raise ValueError(
            "the two runs share no (layer, category): run A has layers "
            f"{sorted(set(keys_a['layer']))}, run B has {sorted(set(keys_b['layer']))}; "
            "compare runs dissected on the same layers and category set"
        )
    per_a = _per_category(live_a, top_k, threshold)
    per_b = _per_category(live_b, top_k, threshold)
    table = shared.merge(per_a, on=["layer", "category"], how="left").merge(
        per_b, on=["layer", "category"], how="left", suffixes=("_a", "_b")
    )
    for col in ("count_a", "count_b", "n_live_a", "n_live_b"):
        table[col] = table[col].fillna(0).astype(int)
    table["top_k_mean_change"] = table["top_k_mean_b"] - table["top_k_mean_a"]
    table["count_change"] = table["count_b"] - table["count_a"]

    key = ["layer", "unit", "category"]
    pairs = live_a[key + ["score"]].merge(live_b[key + ["score"]], on=key, suffixes=("_a", "_b"))
    paired_rows = []
    for (layer, cat), g in pairs.groupby(["layer", "category"], sort=False):
        a, b = g["score_a"].to_numpy(dtype=float), g["score_b"].to_numpy(dtype=float)
        diff = b - a
        w_p, t_p = _paired_tests(a, b)
        paired_rows.append(
            {"layer": layer, "category": cat, "n_paired": diff.size,
             "mean_diff": float(diff.mean()), "wilcoxon_p": w_p, "ttest_p": t_p}
        )
    paired = pd.DataFrame(
        paired_rows, columns=["layer", "category", "n_paired", "mean_diff", "wilcoxon_p", "ttest_p"]
    )
    table = table.merge(paired, on=["layer", "category"], how="left")
    table["n_paired"] = table["n_paired"].fillna(0).astype(int)
    return table[
        [
            "layer", "category", "top_k_mean_a", "top_k_mean_b", "top_k_mean_change",
            "count_a", "count_b", "count_change", "n_live_a", "n_live_b",
            "n_paired", "mean_diff", "wilcoxon_p", "ttest_p",
        ]
    ].reset_index(drop=True)
