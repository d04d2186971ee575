"""Attention maps against human gaze: one table row per map, floor and ceiling, summaries.

Lai et al. 2020 and Ebrahimpour et al. 2019 compare a network's attention maps with human
fixations. This probe scores one map (already at the image's own resolution) against an image's
human data with every metric of :mod:`probes.metrics`, scores the human references, and
summarises a per-image table. It is pure numpy/pandas: it never imports a model. The maps it
scores come from :mod:`datasets.fixations` (:func:`human_density` and
:func:`other_images_fixations` live there and are re-exported here; the ceiling's maps are
:func:`datasets.fixations.loso_pairs` and :func:`datasets.fixations.split_half_pairs`).

Reference rows, computed per image:

* **floor** (method ``"center_bias"``): :func:`datasets.fixations.center_bias_map`, the map that
  knows nothing about the image, scored like any map;
* **ceiling** (method ``"human_loso"``, :func:`leave_one_subject_out`): the inter-observer
  agreement, estimated per metric family:

  - fixation-based metrics (:data:`FIXATION_METRICS`: NSS, AUC-Judd, s-AUC, IG): leave one
    subject out (OSIE ``computeInterSubjectAUC.m``): each subject's fixations predicted by the
    other subjects' density, averaged over subjects. This is the standard inter-observer
    ceiling: a model is scored against every subject's fixations, and one subject's fixations
    are a sample of the same kind.
  - map metrics MAE, CC, SIM: split half. The density of a random half of the subjects is
    scored against the density of the other half (seeded, averaged over ``n_half_splits``
    draws, >= 2 subjects). Scoring the others' density against ONE subject's density (LOSO)
    would compare with a different, much sparser target than the all-subjects density a model
    is compared with, and can land below the floor (OSIE image 1001: LOSO KL 1.404 vs centre
    bias 0.863). Split half is the consistency of two half-groups; each half is noisier than
    the all-subjects density, so it is a conservative (low) ceiling for a map compared with
    all subjects' density.
  - KL: ``NaN``, no ceiling. KL's eps-regularised log charges ~``ln(q / eps)`` (about 30 nats
    per unit of mass) wherever the predictor is exactly 0 and the target is not, and a
    finite-sample human density (zero-padded, truncated Gaussians) has such holes wherever the
    other group fixated alone. Any human-vs-human KL therefore measures sample coverage rather
    than agreement: on OSIE 1001 split half still gives KL 1.28, worse than the centre bias
    (0.86), with ~5 % of the target mass in holes contributing over 1 nat. A NaN is better
    than a ceiling below the floor.

Human density maps follow the OSIE recipe by default (binary map of the unique fixated pixels,
Gaussian sigma = 24 px, zero padding, min-max); ``duration_weighted=True`` gives Ebrahimpour
et al.'s recipe (fixations weighted by duration / max duration; they used sigma = 20 px).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
import pandas as pd

from datasets.fixations import (
    center_bias_map,
    check_fixation_table,
    human_density,
    loso_pairs,
    other_images_fixations,
    split_half_pairs,
)
from probes import metrics

__all__ = [
    "GAZE_METRICS",
    "EVALUATION_METRICS",
    "FIXATION_METRICS",
    "MAP_METRICS",
    "FLOOR",
    "CEILING",
    "gaze_scores",
    "human_density",
    "center_bias_scores",
    "leave_one_subject_out",
    "other_images_fixations",
    "summarize_gaze",
]

#: Metric keys of :func:`gaze_scores`, in table order. Lower is better for ``mae`` and ``kl``.
GAZE_METRICS: tuple[str, ...] = ("mae", "nss", "cc", "kl", "sim", "auc_judd", "sauc", "ig")
#: Metrics of ``cli.py evaluate`` (the MIT benchmark set: MAE out, AUC-Borji in); the
#: ``borji=True`` keys of :func:`gaze_scores`, :func:`center_bias_scores` and :func:`leave_one_subject_out`.
EVALUATION_METRICS: tuple[str, ...] = ("nss", "cc", "kl", "sim", "auc_judd", "auc_borji", "sauc", "ig")
#: Metrics scored at the fixated pixels (their human ceiling is leave one subject out).
FIXATION_METRICS: tuple[str, ...] = ("nss", "auc_judd", "sauc", "ig")
#: Metrics comparing the map with the density map (human ceiling: split half; none for KL).
MAP_METRICS: tuple[str, ...] = ("mae", "cc", "kl", "sim")
#: Method names of the reference rows.
FLOOR = "center_bias"
CEILING = "human_loso"


def _min_value(x: Any) -> float:
    """Smallest value of an array, torch tensor or prepared map (validation is left to :mod:`probes.metrics`)."""
    if hasattr(x, "lo") and hasattr(x, "constant"):  # metrics.prepare(): known without a pass
        return float(x.lo)
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().double().numpy()
    return float(np.min(np.asarray(x, dtype=np.float64)))


def _map_scores(saliency: Any, density: Any) -> dict[str, float]:
    """:data:`MAP_METRICS` of a map against a density map (conventions of :func:`gaze_scores`)."""
    return {
        "mae": metrics.mae(saliency, density),
        "cc": metrics.cc(saliency, density),
        # probes.metrics.kld raises on a signed map; here a table cell is NaN instead (documented).
        "kl": metrics.kld(saliency, density) if _min_value(saliency) >= 0 else math.nan,
        "sim": metrics.sim(saliency, density),
    }


def _fixation_scores(saliency: Any, fixation_map: Any, other_fixation_map: Any | None,
                     baseline: Any | None, seed: int, borji: bool = False) -> dict[str, float]:
    """:data:`FIXATION_METRICS` of a map against a binary fixation map (and ``auc_borji``)."""
    out = {
        "nss": metrics.nss(saliency, fixation_map),
        "auc_judd": metrics.auc_judd(saliency, fixation_map),
        "sauc": math.nan,
        "ig": math.nan,
    }
    if borji:
        out["auc_borji"] = metrics.auc_borji(saliency, fixation_map, seed=seed)
    if other_fixation_map is not None:
        out["sauc"] = metrics.sauc(saliency, fixation_map, other_fixation_map, seed=seed)
    if baseline is not None:
        out["ig"] = metrics.info_gain(saliency, fixation_map, baseline)
    return out


def gaze_scores(
    saliency: Any,
    fixation_map: Any,
    density: Any,
    *,
    other_fixation_map: Any | None = None,
    baseline: Any | None = None,
    seed: int = 0,
    borji: bool = False,
) -> dict[str, float]:
    """Score one map against one image's human data with every gaze metric.

    All maps share the image's resolution (upsample the attention map first, bilinearly with
    ``align_corners=False``). Definitions are those of :mod:`probes.metrics` (digest section 2):

    * ``mae``: mean ``|S - G|`` of the min-maxed map and density (Ebrahimpour eq. 15, Lai eq. 6);
    * ``nss``: mean z-scored map over the unique fixated pixels;
    * ``cc``: Pearson correlation with the density;
    * ``kl``: ``sum G ln(eps + G / (S + eps))``, both sum-normalised (nats);
    * ``sim``: histogram intersection of the min-maxed, sum-normalised maps;
    * ``auc_judd``: fixated pixels vs all other pixels;
    * ``sauc``: fixated pixels vs ``other_fixation_map`` (other images' fixations), 100 splits,
      draws seeded with ``seed`` (:func:`probes.metrics.sauc`);
    * ``ig``: bits per fixated pixel over ``baseline`` (the study passes the centre-bias map).

    NaN marks a value that is not computable, never a silent 0:

    * ``nss``, ``cc``, ``mae``: NaN for a constant map (no scale). For a constant map ``kl`` and
      ``sim`` read it as the uniform distribution and ``auc_judd`` / ``sauc`` give 0.5
      (:mod:`probes.metrics` conventions);
    * ``kl``: NaN when the map has negative values (KL needs a distribution; min-max a signed map
      yourself if you want it);
    * ``sauc``: NaN when ``other_fixation_map`` is None; ``ig``: NaN when ``baseline`` is None.

    "Constant" is judged in the map's own dtype (:mod:`probes.metrics`): pass the map as it
    came (a float32 tensor stays float32) so float32 rounding noise on a dead map reads as
    constant.

    Args:
        saliency: ``H x W`` map (numpy array or torch tensor).
        fixation_map: ``H x W`` binary map of the unique fixated pixels (nonzero = fixated).
        density: ``H x W`` human fixation density map (e.g. :func:`human_density`).
        other_fixation_map: ``H x W`` binary map of other images' fixations for s-AUC
            (:func:`other_images_fixations`), or None.
        baseline: ``H x W`` baseline map for IG (:func:`datasets.fixations.center_bias_map`), or None.
        seed: seed of the s-AUC draws (and of the AUC-Borji draws).
        borji: also return ``auc_borji`` (:func:`probes.metrics.auc_borji`, 100 splits of
            uniformly random negatives seeded with ``seed``; NaN for a single fixated pixel).

    Returns:
        ``{key: float}`` for every key of :data:`GAZE_METRICS` (plus ``auc_borji`` with ``borji``).

    Raises:
        ValueError: maps that are not 2-D, non-finite or of different shapes; an empty fixation
            map; an empty ``other_fixation_map``; a fixation map covering every pixel.
    """
    # Each map is validated once for all the metrics (metrics.prepare: the same results).
    saliency = metrics.prepare(saliency, "saliency")
    fixation_map = metrics.prepare(fixation_map, "fixation_map")
    density = metrics.prepare(density, "density")
    other_fixation_map = None if other_fixation_map is None else metrics.prepare(other_fixation_map,
                                                                                 "other_fixation_map")
    baseline = None if baseline is None else metrics.prepare(baseline, "baseline")
    by_map = _map_scores(saliency, density)
    by_fix = _fixation_scores(saliency, fixation_map, other_fixation_map, baseline, seed, borji)
    keys = GAZE_METRICS + (("auc_borji",) if borji else ())
    return {key: by_map[key] if key in by_map else by_fix[key] for key in keys}


# --------------------------------------------------------------------------- human references


def center_bias_scores(
    fixation_map: Any,
    density: Any,
    *,
    other_fixation_map: Any | None = None,
    sigma_frac: float = 0.25,
    seed: int = 0,
    borji: bool = False,
) -> dict[str, float]:
    """The floor: :func:`gaze_scores` of the centre-bias map, with itself as the IG baseline.

    IG is therefore exactly 0 (the study's IG baseline is this map). The centre bias is
    :func:`datasets.fixations.center_bias_map` with ``sigma_frac`` of the image's height/width.
    ``borji`` adds ``auc_borji`` as in :func:`gaze_scores`.
    """
    shape = np.asarray(fixation_map).shape
    bias = center_bias_map(shape, sigma_frac)
    return gaze_scores(bias, fixation_map, density, other_fixation_map=other_fixation_map,
                       baseline=bias, seed=seed, borji=borji)


def _nanmean(values: list[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    if np.isnan(arr).all():
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(arr))


def leave_one_subject_out(
    fixations: pd.DataFrame,
    shape: Sequence[int],
    sigma: float = 24.0,
    *,
    other_fixation_map: Any | None = None,
    baseline: Any | None = None,
    seed: int = 0,
    duration_weighted: bool = False,
    n_half_splits: int = 10,
    borji: bool = False,
) -> dict[str, float]:
    """Human inter-observer ceiling of every gaze metric (the ``"human_loso"`` row).

    One estimate per metric family (module docstring):

    * :data:`FIXATION_METRICS` (``nss, auc_judd, sauc, ig``), leave one subject out (OSIE
      ``computeInterSubjectAUC.m``): for each subject ``s`` (``subject`` column), the density map
      of the OTHER subjects' fixations (:func:`human_density` recipe with ``sigma``) is scored
      against ``s``'s binary fixation map, then averaged over subjects.
    * ``mae, cc, sim``, split half: ``rng = np.random.default_rng(seed)``; for each of
      ``n_half_splits`` draws ``perm = rng.permutation(n)`` over the subjects in order of first
      appearance, half A = the subjects at ``perm[:n // 2]``, half B = the rest; the density of
      A's fixations (the predictor) is scored against the density of B's fixations (the
      target), then averaged over draws. This is the agreement of two half-groups, each noisier
      than the all-subjects density a model is compared with: a conservative (low) ceiling for
      these map metrics. LOSO is not used here because one subject's density is a different,
      much sparser target than the all-subjects density (it can score below the floor).
    * ``kl``: always ``NaN``. Human-vs-human KL is dominated by the eps penalty on pixels where
      one group's density is exactly 0 and the other's is not (sample coverage, not agreement),
      and is worse than the centre-bias floor on real images (module docstring).

    Each metric's average skips NaN values (NaN if all are NaN). With fewer than 2 subjects (or
    no ``subject`` column, which counts as one subject) there is nobody to predict from: every
    metric is NaN and the caller should skip the row.

    Args:
        fixations: DataFrame with 1-based ``x, y`` and ``subject`` (``duration`` if weighted).
        shape: image ``(H, W)``.
        sigma: Gaussian standard deviation of the density maps, in pixels.
        other_fixation_map: other images' fixations for s-AUC, or None (then ``sauc`` is NaN).
        baseline: IG baseline map, or None (then ``ig`` is NaN).
        seed: seed of the s-AUC draws and of the split-half draws.
        duration_weighted: build the densities with Ebrahimpour et al.'s duration weights.
        n_half_splits: number of random split-half draws averaged for ``mae, cc, sim`` (>= 1).
        borji: also estimate ``auc_borji`` (a fixation metric: leave one subject out).

    Returns:
        ``{metric: ceiling}`` for :data:`GAZE_METRICS` (plus ``auc_borji`` with ``borji``),
        plus ``n_subjects``.

    Raises:
        ValueError: a table without ``x, y`` or empty, a bad shape or sigma, ``n_half_splits < 1``.
    """
    if isinstance(n_half_splits, bool) or int(n_half_splits) != n_half_splits or n_half_splits < 1:
        raise ValueError(f"n_half_splits must be a positive integer, got {n_half_splits!r}")
    table = check_fixation_table(fixations)
    shape = (int(shape[0]), int(shape[1]))
    keys = GAZE_METRICS + (("auc_borji",) if borji else ())
    fixation_keys = FIXATION_METRICS + (("auc_borji",) if borji else ())
    if "subject" not in table.columns:
        return {**dict.fromkeys(keys, math.nan), "n_subjects": 1}
    n = len(pd.unique(table["subject"]))
    if n < 2:
        return {**dict.fromkeys(keys, math.nan), "n_subjects": int(n)}
    collected: dict[str, list[float]] = {k: [] for k in keys}
    # Fixation metrics: each subject's fixations predicted by the others (LOSO).
    for held_map, predictor in loso_pairs(table, shape, sigma, duration_weighted=duration_weighted):
        scores = _fixation_scores(predictor, held_map, other_fixation_map, baseline, seed, borji)
        for key in fixation_keys:
            collected[key].append(scores[key])
    # MAE, CC, SIM: one half-group's density against the other's (split half). KL: no ceiling.
    for predictor, target in split_half_pairs(table, shape, sigma, n_splits=n_half_splits, seed=seed,
                                              duration_weighted=duration_weighted):
        collected["mae"].append(metrics.mae(predictor, target))
        collected["cc"].append(metrics.cc(predictor, target))
        collected["sim"].append(metrics.sim(predictor, target))
    collected["kl"] = [math.nan]
    return {**{k: _nanmean(v) for k, v in collected.items()}, "n_subjects": int(n)}


# --------------------------------------------------------------------------- summary


def summarize_gaze(per_image: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard error of every gaze metric per method x layer.

    Reading the reference rows: :data:`FLOOR` is the centre-bias map; :data:`CEILING`
    (``"human_loso"``) is the human inter-observer agreement of :func:`leave_one_subject_out`:
    leave one subject out for the fixation metrics (``nss, auc_judd, sauc, ig``), split half
    for ``mae, cc, sim`` (one half-group's density against the other's, a conservative ceiling
    since each half is noisier than the all-subjects density the models are compared with: a
    model can beat it without beating humans), and NaN for ``kl`` (human-vs-human KL measures
    sample coverage, not agreement; see :mod:`probes.gaze`), so ``kl_mean`` of the ceiling row
    is NaN.

    ``se = std(ddof=1) / sqrt(k)`` over the ``k`` non-NaN values of that metric in the group
    (pandas ``sem``); NaN when ``k < 2``. ``n`` is the number of rows (images) in the group; a
    metric's mean skips its NaN values. Methods keep their order of first appearance, with the
    reference rows :data:`FLOOR` and :data:`CEILING` (layer ``""``) last; layers keep their order
    within a method.

    Args:
        per_image: table with ``method, layer`` and the :data:`GAZE_METRICS` columns
            (e.g. from :func:`dissect.studies.attention_gaze.run_attention_study`).

    Returns:
        DataFrame with ``method, layer, n`` and ``{metric}_mean, {metric}_se`` per metric.

    Raises:
        ValueError: missing columns or an empty table.
    """
    missing = [c for c in ("method", "layer", *GAZE_METRICS) if c not in per_image.columns]
    if missing:
        raise ValueError(f"per_image table lacks column(s) {missing}; got {list(per_image.columns)}")
    if len(per_image) == 0:
        raise ValueError("per_image table is empty; nothing to summarise")
    df = per_image.copy()
    df["layer"] = df["layer"].fillna("").astype(str)
    values = df[list(GAZE_METRICS)].astype(np.float64)
    groups = values.groupby([df["method"], df["layer"]], sort=False)
    mean = groups.mean()
    se = groups.sem(ddof=1)
    n = groups.size()
    out = pd.DataFrame({"n": n})
    for key in GAZE_METRICS:
        out[f"{key}_mean"] = mean[key]
        out[f"{key}_se"] = se[key]
    out = out.reset_index()
    rank = out["method"].map({FLOOR: 1, CEILING: 2}).fillna(0)
    out = out.assign(_rank=rank).sort_values("_rank", kind="stable").drop(columns="_rank")
    return out.reset_index(drop=True)
