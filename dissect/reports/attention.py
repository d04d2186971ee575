"""An attention-vs-gaze study's files and console report (``python cli.py attention``).

Files: ``per_image.csv`` (image, method, layer, MAE, NSS, CC, KL, SIM, AUC-Judd, s-AUC, IG),
``summary.csv`` (method x layer: mean and standard error of each metric, with the centre-bias
floor and the human leave-one-subject-out ceiling), ``run.json``, ``overlays.png`` (image, human
map, each method's map, with its NSS, for a few images taken across the dataset's categories)
and, with ``dense``, ``dense_mae.png`` (MAE per dense-attention layer, Ebrahimpour et al.
Fig. 9). Both tables carry ``model``, ``weights`` and ``weights_detail`` columns and every figure
names the model, weights and dataset.
"""
from __future__ import annotations

from pathlib import Path

from datasets.fixations import dropped_fixations_message
from dissect.reports.attention_figures import attention_overlays, dense_layer_mae
from dissect.reports.tables import figure_subtitle, weights_banner, with_model_columns
from dissect.runner.folders import atomic_write_csv, atomic_write_json, check_writable

__all__ = ["write_attention_files", "attention_console", "nss_labels"]


def write_attention_files(result, out_dir, params: dict) -> dict[str, Path]:
    """Write an :class:`~dissect.studies.attention_gaze.AttentionResult`'s tables, ``run.json`` and figures."""
    out = check_writable(out_dir)
    paths = {"per_image": out / "per_image.csv", "summary": out / "summary.csv", "run": out / "run.json"}
    model_info = params.get("model")
    atomic_write_csv(with_model_columns(result.per_image, model_info), paths["per_image"])
    atomic_write_csv(with_model_columns(result.summary, model_info), paths["summary"])
    atomic_write_json(paths["run"], {**params, **result.info})
    subtitle = figure_subtitle(model_info, params.get("dataset"))
    examples = result.examples
    if examples is not None:
        labels = nss_labels(result.per_image, examples["titles"], ["human", *examples["maps"]], result.info)
        paths["overlays"] = attention_overlays(examples["images"], examples["human"], examples["maps"],
                                               out / "overlays.png", titles=examples["titles"], labels=labels,
                                               subtitle=subtitle)
    if "dense" in result.info["methods"]:
        paths["dense_mae"] = dense_layer_mae(result.per_image, out / "dense_mae.png",
                                             title=f"dense: MAE per layer\n{subtitle}")
    return paths


def nss_labels(per_image, image_ids, columns, info: dict) -> dict[str, list[str]]:
    """``{column: ["NSS 1.23", ...]}``: each overlay's score from the study's own table (the
    human column shows the leave-one-subject-out ceiling; the methods their first layer)."""
    labels = {}
    for column in columns:
        method = "human_loso" if column == "human" else column
        layer = "" if column == "human" else (info.get("layers", {}).get(column) or [""])[0]
        rows = per_image[(per_image["method"] == method) & (per_image["layer"] == layer)] if column != "dense" \
            else per_image[(per_image["method"] == "dense") & per_image["layer"].str.endswith("+")]
        by_image = rows.groupby("image", sort=False)["nss"].first()  # dense: its first "+" map holds every layer
        name = "leave-one-out NSS" if column == "human" else "NSS"
        labels[column] = [f"{name} {by_image[i]:.2f}" if i in by_image.index else f"{name} -" for i in image_ids]
    return labels


def attention_console(result, params: dict) -> list[str]:
    """What ``cli.py attention`` prints: the summary, dropped fixations, the random-weights banner."""
    summary = result.summary.copy()
    summary["layer"] = summary["layer"].fillna("")
    cols = [c for c in ("method", "layer", "n", "mae_mean", "nss_mean", "cc_mean", "kl_mean", "sim_mean",
                        "auc_judd_mean", "sauc_mean", "ig_mean") if c in summary.columns]
    model_info = params.get("model") or {}
    banner = weights_banner(model_info)
    name = (params.get("config") or {}).get("model", model_info.get("arch", ""))
    lines = [f"attention vs gaze, mean over images, {name}"
             + (", RANDOM WEIGHTS:" if banner else f", {model_info.get('weights', '')} weights:"),
             summary[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}")]
    info = result.info
    lines += [f"warning: {line}" for line in dropped_fixations_message(
        info.get("n_fixations_dropped", 0), info.get("n_fixations", 0), info.get("n_images"))]
    if banner:
        lines.append(banner)
    return lines
