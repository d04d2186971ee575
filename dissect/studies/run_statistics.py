"""Statistics and figures of a finished dissection run (``python cli.py stats RUN_DIR``).

Writes into ``RUN_DIR/stats/`` (or ``out``):

* ``anova.csv`` (one-way ANOVA of unit scores across categories, per layer) and ``tukey.csv``
  (Tukey HSD pairs), both with statsmodels;
* ``summary_top_k_mean.png``, ``summary_count.png`` (layers x categories heat maps) and
  ``bars_<layer>.png`` (top-k mean per category with error bars);
* with a second run: ``compare.csv`` (per-category change of top-k mean and count above T, with
  the unit-level paired difference and its Wilcoxon / paired t-test);
* with ``maps_dir`` (a model's output map per image, ``<image_id>.npy`` or ``.png``):
  ``output_regions.csv``, ``output_saliency.csv`` (OS_c, OD_c, He et al. eq. 2, 3) and
  ``spearman.csv`` (inner saliency vs OS_c per layer);
* ``overlays_<layer>_<category>.png``: the best units of each category over an example image with
  the region outlined (He et al. Fig. 3); this reloads the run's model and weights.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from datasets.fixations import density_map, resize_map
from dissect.models.hooks import ActivationRecorder
from dissect.models.inputs import preprocess
from dissect.models.zoo import load_model
from dissect.reports import figures
from dissect.reports.tables import MODEL_COLUMNS, figure_subtitle
from dissect.runner.folders import check_writable
from dissect.studies.map_sources import load_output_map
from dissect.training import load_trained, saliency_maps
from probes import stats

__all__ = ["write_stats_report", "first_examples", "best_unit_overlays"]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "x"


def _output_saliency(dataset, maps_dir: Path | None, sigma: float, head=None, image_size: int = 224) -> pd.DataFrame:
    """Region NSS of the output maps: read from ``maps_dir``, or computed by the model ``head``."""
    rows = []
    for sample in dataset:
        if sample.fixation_map is None or not sample.fixation_map.any():
            continue
        if head is not None:
            raw = saliency_maps(head, [sample], image_size=image_size)[0]
        else:
            raw = load_output_map(maps_dir, sample.image_id)
        pred = resize_map(raw, sample.shape)
        rows.append(stats.region_output_scores(pred, density_map(sample.fixation_map, sigma),
                                               sample.fixation_map, sample.masks, sample.categories,
                                               image_id=sample.image_id))
    if not rows:
        raise ValueError("the run's dataset has no image with fixations: OS/OD need human fixations")
    return pd.concat(rows, ignore_index=True)


def _reload(info: dict):
    """The run's dataset and model, rebuilt from ``run.json``."""
    from datasets import load_dataset  # the package face: it imports a loader only when asked
    from datasets.base import first

    cfg = info.get("config", {})
    dataset = first(load_dataset(cfg.get("dataset", "popout"), cfg.get("data_root"),
                                 **info.get("dataset_options", {})), cfg.get("max_images"))
    model_info = info.get("model", {})
    weights = model_info.get("weights")
    if weights == "file":  # the absolute path recorded at dissection time, not the one typed
        weights = str(model_info.get("weights_detail", "")).rsplit(" sha256:", 1)[0] or model_info.get("requested")
    model = None
    if weights and model_info.get("arch"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = load_model(model_info["arch"], weights=weights, seed=model_info.get("seed", 0))
        except (OSError, RuntimeError, ValueError) as exc:
            warnings.warn(f"overlays skipped: the run's model could not be rebuilt ({exc})", stacklevel=2)
            return dataset, None
        if model.dissect_info.get("weights_detail") != model_info.get("weights_detail"):
            warnings.warn("overlays skipped: the rebuilt model's weights differ from the run's "
                          f"({model.dissect_info.get('weights_detail')} vs {model_info.get('weights_detail')})",
                          stacklevel=2)
            return dataset, None
    return dataset, model


def first_examples(dataset, categories) -> dict:
    """For each category, the first sample with a non-empty region of it and that region's index
    (one pass over the dataset, stopping when every category has an example)."""
    wanted, found = set(categories), {}
    for sample in dataset:
        for i, category in enumerate(sample.categories):
            if category in wanted and category not in found and sample.masks[i].any():
                found[category] = (sample, i)
        if len(found) == len(wanted):
            break
    return found


def best_unit_overlays(model, sample, region: int, units: pd.DataFrame, layer: str, path,
                       *, n_units: int = 4, image_size: int = 224, activations=None,
                       subtitle: str | None = None) -> Path | None:
    """Draw the ``n_units`` best live units of ``layer`` for the category of region ``region`` of
    ``sample`` over that image, with the region outlined (He et al. Fig. 3). Each tile's score
    is the unit's mean score over every region of the category in the run (not on this image),
    and says so.

    ``activations``: the layer's ``C x h x w`` maps for this image if already computed.
    Returns None when the layer has no live unit for the category."""
    category = sample.categories[region]
    live = stats.live_units(units, layer)
    best = live[live["category"] == category].nlargest(n_units, "score")
    if best.empty:
        return None
    if activations is None:
        activations = _layer_maps(model, sample, layer, image_size)
    maps = [resize_map(activations[int(u)], sample.shape) for u in best["unit"]]  # only the units drawn
    n = len(best)
    fixations = [sample.fixation_map] * n if sample.fixation_map is not None else None
    return figures.unit_overlays([sample.image] * n, maps, [sample.masks[region]] * n,
                                 [f"{layer} #{int(r.unit)}: {category} mean {r.score:.2f}" for r in best.itertuples()],
                                 path, fixation_maps=fixations,
                                 subtitle=(subtitle + "; " if subtitle else "") + "tile score: the unit's mean over "
                                          f"all {category} regions of the run, not this image's")


def _layer_maps(model, sample, layer: str, image_size: int) -> torch.Tensor:
    with ActivationRecorder(model, layer) as rec, torch.inference_mode():
        model(preprocess([sample.image], image_size))
    return rec.activations[layer][0]


def _subtitle(info: dict) -> str:
    """Model, weights, dataset, metric and k of a run, for every figure of its report."""
    return figure_subtitle(info.get("model") if isinstance(info.get("model"), dict) else None, info.get("dataset"),
                           info.get("metric"), info.get("top_k"))


def _scores_only(units: pd.DataFrame) -> pd.DataFrame:
    """The unit table without its run labels (model, weights): two runs' labels differ by design."""
    return units.drop(columns=[c for c in MODEL_COLUMNS if c in units.columns])


class _explained_scipy_warnings:
    """Turn scipy's bare ``IntegrationWarning`` ("The integral is probably divergent ...", from
    the studentized-range p-values of Tukey's test when a statistic is huge) into one warning that
    says where it came from and what it means."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._catcher = warnings.catch_warnings(record=True)

    def __enter__(self):
        self._caught = self._catcher.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc_info) -> None:
        self._catcher.__exit__(*exc_info)
        import scipy.integrate

        integration = [w for w in self._caught if issubclass(w.category, scipy.integrate.IntegrationWarning)]
        for w in self._caught:
            if w not in integration:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if integration:
            warnings.warn(f"{self.where}: scipy could not fully converge {len(integration)} p-value integral(s) "
                          "(very large test statistics): those p-values are approximate, tiny ones are still tiny",
                          UserWarning, stacklevel=3)


def _check_comparable(a: dict, b: dict) -> None:
    """Two runs compared unit by unit must score the same way on the same kind of data."""
    for key, what in (("metric", "score (region NSS vs NMM)"), ("top_k", "top-k"), ("threshold", "threshold")):
        if a.get(key) != b.get(key):
            raise ValueError(f"the two runs differ in {what}: {a.get(key)!r} vs {b.get(key)!r}; compare runs made "
                             "with the same dataset kind and summary settings")
    for key in ("dataset", "layers_resolved"):
        if a.get(key) != b.get(key):
            warnings.warn(f"the two runs differ in {key}: {a.get(key)!r} vs {b.get(key)!r}", stacklevel=3)
    ma, mb = (r.get("model") if isinstance(r.get("model"), dict) else {} for r in (a, b))
    if ma.get("weights") == mb.get("weights") == "random" and ma.get("weights_detail") == mb.get("weights_detail"):
        warnings.warn(f"both runs use RANDOM weights with the same {ma.get('weights_detail')}: {ma.get('arch')} and "
                      f"{mb.get('arch')} then share the same random encoder, so differences of 0 are expected and "
                      "say nothing about training", stacklevel=3)


def write_stats_report(run_dir: str | os.PathLike, *, compare_to: str | os.PathLike | None = None,
                       maps_dir: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                       overlays: bool = True, sigma: float = 24.0,
                       head: str | os.PathLike | None = None) -> dict[str, Path]:
    """Compute every statistic of a run and write CSVs and figures; returns ``{name: path}``.

    ``head``: a trained saliency checkpoint (``cli.py train saliency``); OS_c / OD_c and
    Spearman's rho are then computed from its maps directly, instead of from ``maps_dir``."""
    run_dir = Path(run_dir)
    units, summary, info = stats.load_run(run_dir)
    out_dir = check_writable(out if out is not None else run_dir / "stats")
    top_k = int(info.get("top_k", 10))
    threshold = float(info.get("threshold", 1.5))
    layers = list(dict.fromkeys(units["layer"]))
    written: dict[str, Path] = {}
    subtitle = _subtitle(info)

    anova, tukey = [], []
    for layer in layers:
        if stats.live_units(units, layer)["category"].nunique() < 2:
            continue
        with _explained_scipy_warnings(layer):
            anova.append(stats.anova_by_category(units, layer))
            tukey.append(stats.tukey_by_category(units, layer))
    if anova:
        written["anova"] = out_dir / "anova.csv"
        pd.concat(anova, ignore_index=True).to_csv(written["anova"], index=False)
        written["tukey"] = out_dir / "tukey.csv"
        pd.concat(tukey, ignore_index=True).to_csv(written["tukey"], index=False)

    written["heatmap"] = figures.summary_heatmap(summary, out_dir / "summary_top_k_mean.png",
                                                 title=f"top-{top_k} mean\n{subtitle}")
    written["heatmap_count"] = figures.summary_heatmap(summary, out_dir / "summary_count.png",
                                                       value="count_above_threshold",
                                                       title=f"units scoring above {threshold:g}\n{subtitle}")
    for layer in layers:
        written[f"bars_{layer}"] = figures.category_bars(units, layer, out_dir / f"bars_{_safe(layer)}.png",
                                                         top_k=top_k, threshold=threshold, summary=summary,
                                                         title=f"{layer}: top-{top_k} unit scores\n{subtitle}")

    if compare_to is not None:
        other_units, _, other_info = stats.load_run(compare_to)
        _check_comparable(info, other_info)
        written["compare"] = out_dir / "compare.csv"
        with _explained_scipy_warnings("the comparison"):
            table = stats.compare_runs(_scores_only(units), _scores_only(other_units), top_k=top_k, threshold=threshold)
        table.to_csv(written["compare"], index=False)

    if maps_dir is not None and head is not None:
        raise ValueError("give either --maps (map files) or --head (a checkpoint), not both")
    head_model = None
    if head is not None:
        head_model = load_trained(head)
    dataset = model = None
    if maps_dir is not None or head is not None or overlays:
        dataset, model = _reload(info)
    if maps_dir is not None or head_model is not None:
        regions = _output_saliency(dataset, Path(maps_dir) if maps_dir is not None else None, sigma,
                                   head=head_model, image_size=int(info.get("image_size") or 224))
        written["output_regions"] = out_dir / "output_regions.csv"
        regions.to_csv(written["output_regions"], index=False)
        os_table = stats.output_saliency(regions)
        written["output_saliency"] = out_dir / "output_saliency.csv"
        os_table.to_csv(written["output_saliency"], index=False)
        rho = []
        for layer in layers:
            try:
                rho.append(stats.spearman_inner_vs_output(summary, os_table, layer))
            except ValueError as exc:  # fewer than 3 shared categories: say so in the table
                rho.append({"layer": layer, "rho": np.nan, "p_value": np.nan, "n": 0, "note": str(exc)})
        written["spearman"] = out_dir / "spearman.csv"
        pd.DataFrame(rho).to_csv(written["spearman"], index=False)

    if overlays and model is not None:
        layer = layers[-1]
        size = int(info.get("image_size") or 224)
        cache: dict[str, torch.Tensor] = {}  # one forward per example image
        for category, (sample, region) in first_examples(dataset, dict.fromkeys(units["category"])).items():
            if sample.image_id not in cache:
                cache[sample.image_id] = _layer_maps(model, sample, layer, size)
            path = best_unit_overlays(model, sample, region, units, layer,
                                      out_dir / f"overlays_{_safe(layer)}_{_safe(category)}.png", image_size=size,
                                      activations=cache[sample.image_id], subtitle=subtitle)
            if path is not None:
                written[f"overlays_{category}"] = path
    return written
