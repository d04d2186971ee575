"""Write an attention-vs-gaze study to a folder (``python cli.py attention``).

Files: ``per_image.csv`` (image, method, layer, MAE, NSS, CC, KL, SIM, AUC-Judd, s-AUC, IG),
``summary.csv`` (method x layer: mean and standard error of each metric, with the centre-bias
floor and the human leave-one-subject-out ceiling), ``run.json``, ``overlays.png`` (image, human
map, each method's map, with its NSS, for a few images taken across the dataset's categories)
and, with ``dense``, ``dense_mae.png`` (MAE per dense-attention layer, Ebrahimpour et al.
Fig. 9). Both tables carry ``model``, ``weights`` and ``weights_detail`` columns and every figure
names the model, weights and dataset.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from dissect import attention
from dissect.attention_study import run_attention_study
from datasets.base import interleaved_order
from dissect.dissection import preprocess
from dissect.reports import atomic_write_json, check_writable, figure_subtitle, with_model_columns
from dissect.resize import resize_map
from probes.attention_figures import attention_overlays, dense_layer_mae
from probes.gaze import human_density

__all__ = ["write_attention_report", "example_maps", "overlay_examples", "draw_overlays"]


def example_maps(model, samples, methods: Sequence[str], *, image_size: int = 224, sigma: float = 24.0,
                 options: dict | None = None) -> tuple[list, dict]:
    """Human density maps and each method's map (default layer), at each image's own size."""
    batch = preprocess([s.image for s in samples], image_size)
    maps: dict[str, list] = {}
    for method in methods:
        out = attention.attention_maps(model, batch, method, **(options or {}).get(method, {}))
        maps[method] = [resize_map(out[i], s.shape) for i, s in enumerate(samples)]
    return [human_density(s, sigma) for s in samples], maps


def write_attention_report(model, dataset, methods: Sequence[str], out_dir: str | os.PathLike, *,
                           params: dict | None = None, n_examples: int = 3, **study_options) -> dict[str, Path]:
    """Run :func:`dissect.attention_study.run_attention_study` and write its tables and figures.

    Args:
        model, dataset, methods: as for ``run_attention_study``.
        out_dir: the run folder (created; must be writable).
        params: extra run parameters for ``run.json`` (model, weights, versions, ...).
        n_examples: images shown in ``overlays.png``, taken round-robin over the dataset's
            categories (:func:`datasets.base.interleaved_order`), each map labelled with its NSS.
        **study_options: passed to ``run_attention_study`` (``image_size``, ``sigma``, ...).

    Returns:
        ``{name: path}`` of the written files.
    """
    out = check_writable(out_dir)
    per_image, summary, info = run_attention_study(model, dataset, methods, **study_options)
    paths = {"per_image": out / "per_image.csv", "summary": out / "summary.csv", "run": out / "run.json"}
    model_info = getattr(model, "dissect_info", None) or (params or {}).get("model")
    with_model_columns(per_image, model_info).to_csv(paths["per_image"], index=False)
    with_model_columns(summary, model_info).to_csv(paths["summary"], index=False)
    atomic_write_json(paths["run"], {**(params or {}), **info})
    subtitle = figure_subtitle(model_info, getattr(dataset, "name", None))

    examples = overlay_examples(model, dataset, methods, n_examples, study_options)
    if examples is not None:
        paths["overlays"] = draw_overlays(examples, per_image, info, out / "overlays.png", subtitle)
    if "dense" in methods:
        paths["dense_mae"] = dense_layer_mae(per_image, out / "dense_mae.png", title=f"dense: MAE per layer\n{subtitle}")
    return paths


def overlay_examples(model, dataset, methods: Sequence[str], n_examples: int, study_options: dict) -> dict | None:
    """The images of ``overlays.png`` (``n_examples`` taken round-robin over the dataset's
    categories, :func:`datasets.base.interleaved_order`) with their human and method maps:
    ``{"images", "titles", "human", "maps"}``, or ``None`` when none has fixations."""
    samples = [dataset[i] for i in interleaved_order(dataset)[:n_examples]]
    samples = [s for s in samples if s.fixation_map is not None and s.fixation_map.any()]
    if not samples:
        return None
    human, maps = example_maps(model, samples, methods, image_size=study_options.get("image_size", 224),
                               sigma=study_options.get("sigma", 24.0), options=study_options.get("options"))
    return {"images": [s.image for s in samples], "titles": [s.image_id for s in samples], "human": human,
            "maps": maps}


def draw_overlays(examples: dict, per_image, info: dict, path: Path, subtitle: str) -> Path:
    """``overlays.png`` from :func:`overlay_examples`, each map labelled with its NSS from ``per_image``."""
    labels = _nss_labels(per_image, examples["titles"], ["human", *examples["maps"]], info)
    return attention_overlays(examples["images"], examples["human"], examples["maps"], path,
                              titles=examples["titles"], labels=labels, subtitle=subtitle)


def _nss_labels(per_image, image_ids, columns, info: dict) -> dict[str, list[str]]:
    """``{column: ["NSS 1.23", ...]}``: each overlay's score from the study's own table (the
    human column shows the leave-one-subject-out ceiling; the methods their default layer)."""
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
