"""Figures of ``cli.py evaluate``: example maps side by side, and one bar chart per metric.

Drawn on private Agg figures (:mod:`dissect.reports.figure_io`); each function returns the path it wrote.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from dissect.reports.figure_io import display_map, new_figure, png_path, save_png

__all__ = ["example_maps", "metric_bars"]


def example_maps(
    images: Sequence[np.ndarray],
    columns: Mapping[str, Sequence[np.ndarray]],
    path: str | os.PathLike,
    *,
    titles: Sequence[str] | None = None,
    panel_inches: float = 1.7,
    dpi: int = 100,
    cmap: str = "jet",
) -> Path:
    """Rows = images; columns = the image, then each map of ``columns`` (min-maxed, own panel).

    ``columns`` maps a label (e.g. ``"human"``, ``"target"``, a model name) to one map per
    image, each at that image's resolution.

    Raises:
        ValueError: no images, a column without one map per image, a path not ending in ``.png``.
    """
    n = len(images)
    if n == 0:
        raise ValueError("images is empty; nothing to draw")
    for name, maps in columns.items():
        if len(maps) != n:
            raise ValueError(f"{n} images but {len(maps)} maps in column {name!r}")
    path = png_path(path)
    labels = ["image", *columns]
    fig = new_figure((panel_inches * len(labels), panel_inches * n * 0.8 + 0.3), dpi)
    axes = np.asarray(fig.subplots(n, len(labels), squeeze=False))
    for r in range(n):
        axes[r, 0].imshow(np.asarray(images[r]))
        for c, name in enumerate(columns, start=1):
            axes[r, c].imshow(display_map(columns[name][r]), cmap=cmap, vmin=0.0, vmax=1.0)
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(labels[c], fontsize=8)
        if titles is not None:
            axes[r, 0].set_ylabel(str(titles[r]), fontsize=7)
    return save_png(fig, path)


def metric_bars(
    summary: pd.DataFrame,
    metrics: Sequence[str],
    path: str | os.PathLike,
    *,
    floor: str = "center_bias",
    ceilings: Sequence[str] = ("human_loso", "nmm_ceiling"),
    panel_inches: tuple[float, float] = (2.6, 2.4),
    dpi: int = 100,
) -> Path:
    """One bar chart per metric: each model's ``<metric>_mean`` with ``<metric>_sem`` error bars,
    the floor row as a dotted line and the ceiling row(s) as a dashed line (where finite).

    Raises:
        ValueError: a metric without ``_mean`` / ``_sem`` columns, no model rows, a bad path.
    """
    missing = [m for m in metrics if f"{m}_mean" not in summary.columns or f"{m}_sem" not in summary.columns]
    if missing:
        raise ValueError(f"summary lacks the columns of metric(s) {missing}")
    refs = {floor, *ceilings}
    models = summary[~summary["model"].isin(refs)]
    if len(models) == 0:
        raise ValueError("summary has no model rows (only reference rows); nothing to plot")
    path = png_path(path)
    cols = min(4, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig = new_figure((panel_inches[0] * cols, panel_inches[1] * rows), dpi)
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False)).ravel()
    labels = [str(m) for m in models["model"]]
    x = np.arange(len(labels))
    for ax, metric in zip(axes, metrics):
        ax.bar(x, models[f"{metric}_mean"].astype(float), yerr=models[f"{metric}_sem"].astype(float).fillna(0.0),
               capsize=2, color="tab:blue")
        for name, style in [(floor, ":"), *((c, "--") for c in ceilings)]:
            level = summary.loc[summary["model"] == name, f"{metric}_mean"].astype(float)
            if len(level) and np.isfinite(level.iloc[0]):
                ax.axhline(float(level.iloc[0]), linestyle=style, color="grey", linewidth=1,
                           label="floor (centre bias)" if name == floor else f"ceiling ({name})")
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
        ax.set_title(metric, fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    return save_png(fig, path)
