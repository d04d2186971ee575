"""Figures for the gaze comparison: map overlays and the dense model's MAE per layer (PNG).

Like :mod:`dissect.reports.figures`, every function draws on its own ``matplotlib.figure.Figure`` with an
Agg canvas and never touches pyplot: nothing is left open and the global backend is untouched.
Each function returns the path it wrote (parent folders are created).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from dissect.reports.figure_io import display_map, new_figure, png_path, save_png

__all__ = ["attention_overlays", "dense_layer_mae"]


def attention_overlays(
    images: Sequence[np.ndarray],
    human_maps: Sequence[np.ndarray],
    method_maps: Mapping[str, Sequence[np.ndarray]],
    path: str | os.PathLike,
    *,
    titles: Sequence[str] | None = None,
    labels: Mapping[str, Sequence[str]] | None = None,
    subtitle: str | None = None,
    alpha: float = 0.55,
    cmap: str = "jet",
    panel_inches: float = 1.8,
    dpi: int = 100,
) -> Path:
    """Grid of images with the human map and each method's map laid over them.

    Rows are images; columns are the image, the human density map, then one column per method
    (in ``method_maps`` order). Each map is min-maxed for display and stretched over the image
    (maps at another resolution are drawn to the image's extent, not resampled).

    Args:
        images: ``H x W x 3`` uint8 (or [0, 1] float) images.
        human_maps: one ``H x W`` human density map per image.
        method_maps: ``{method label: one map per image}``.
        path: output ``.png`` path.
        titles: one row label per image (e.g. image ids).
        labels: ``{column: one text per image}`` written under the panels (e.g. each map's
            NSS); columns are ``"human"`` or method labels.
        subtitle: figure title (e.g. :func:`dissect.reports.figure_subtitle`: model, weights, dataset).
        alpha: opacity of the map over the image.
        cmap: matplotlib colour map of the maps.
        panel_inches: size of one panel.
        dpi: pixels per inch.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: no images, lists of different lengths, a map that is not 2-D, an image that
            is not ``H x W x 3``, a bad ``alpha`` or a path not ending in ``.png``.
    """
    n = len(images)
    if n == 0:
        raise ValueError("images is empty; nothing to draw")
    if len(human_maps) != n:
        raise ValueError(f"{n} images but {len(human_maps)} human maps; pass one map per image")
    for name, maps in method_maps.items():
        if len(maps) != n:
            raise ValueError(f"{n} images but {len(maps)} maps for method {name!r}; pass one map per image")
    if titles is not None and len(titles) != n:
        raise ValueError(f"{n} images but {len(titles)} titles")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    for name, texts in (labels or {}).items():
        if len(texts) != n:
            raise ValueError(f"{n} images but {len(texts)} labels for column {name!r}; pass one per image")
    path = png_path(path)
    columns = ["image", "human", *method_maps]
    fig = new_figure((panel_inches * len(columns), panel_inches * n), dpi)
    axes = np.asarray(fig.subplots(n, len(columns), squeeze=False))
    for r in range(n):
        img = np.asarray(images[r])
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"image {r} must be H x W x 3, got shape {img.shape}")
        h, w = img.shape[:2]
        extent = (-0.5, w - 0.5, h - 0.5, -0.5)
        maps = [None, human_maps[r], *(method_maps[k][r] for k in method_maps)]
        for c, m in enumerate(maps):
            ax = axes[r, c]
            ax.imshow(img, extent=extent)
            if m is not None:
                m = np.asarray(m)
                if m.ndim != 2:
                    raise ValueError(f"map of column {columns[c]!r}, image {r} must be 2-D, got shape {m.shape}")
                ax.imshow(display_map(m), cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0, extent=extent)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=8)
            if c == 0 and titles is not None:
                ax.set_ylabel(str(titles[r]), fontsize=8)
            if labels and columns[c] in labels:
                ax.set_xlabel(str(labels[columns[c]][r]), fontsize=7)
    if subtitle:
        fig.suptitle(subtitle, fontsize=8)
    return save_png(fig, path)


def _layer_points(per_image: pd.DataFrame, method: str, metric: str) -> pd.DataFrame:
    """The numbers :func:`dense_layer_mae` plots, one row per layer in the table's order.

    Columns ``single_mean, single_se, cumulative_mean, cumulative_se, single_n,
    cumulative_n``: over the rows of ``method`` whose layer is ``name`` (single-layer map) or
    ``name + "+"`` (cumulative map), the mean of ``metric`` and its standard error
    ``std(ddof=1) / sqrt(k)`` over the ``k`` non-NaN values (NaN when ``k < 2``; ``*_n`` = k).
    A layer without one of the two kinds of map has NaN there.

    Raises:
        ValueError: missing columns or no rows of ``method``.
    """
    missing = [c for c in ("method", "layer", metric) if c not in per_image.columns]
    if missing:
        raise ValueError(f"per_image table lacks column(s) {missing}; got {list(per_image.columns)}")
    rows = per_image[per_image["method"] == method]
    if len(rows) == 0:
        raise ValueError(f"no rows of method {method!r}; methods present: {sorted(per_image['method'].unique())}")
    layer = rows["layer"].astype(str)
    # pandas sem: std(ddof=1) / sqrt(count of non-NaN values); count is the same k.
    stats = rows[metric].astype(float).groupby(layer, sort=False).agg(["mean", "sem", "count"])
    names = list(dict.fromkeys(n[:-1] if n.endswith("+") else n for n in stats.index))
    out = pd.DataFrame(index=pd.Index(names, name="layer"))
    for suffix, kind in (("", "single"), ("+", "cumulative")):
        sub = stats.reindex([n + suffix for n in names])
        out[f"{kind}_mean"] = sub["mean"].to_numpy()
        out[f"{kind}_se"] = sub["sem"].to_numpy()
        out[f"{kind}_n"] = sub["count"].fillna(0).astype(int).to_numpy()
    return out


def _reference_levels(per_image: pd.DataFrame, metric: str) -> dict[str, float]:
    """Mean ``metric`` of the reference rows drawn as horizontal lines (those present and not all NaN)."""
    levels = {}
    for ref in ("center_bias", "human_loso"):
        vals = per_image.loc[per_image["method"] == ref, metric].astype(float)
        if vals.notna().any():
            levels[ref] = float(vals.mean())
    return levels


def dense_layer_mae(
    per_image: pd.DataFrame,
    path: str | os.PathLike,
    *,
    method: str = "dense",
    metric: str = "mae",
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: int = 100,
) -> Path:
    """MAE (or another metric) of the dense model per layer, single and cumulative maps, with SE bars.

    Like Fig. 9 of Ebrahimpour et al. 2019: for each layer of the Densely Connected Attention
    Model, the mean over images of the single-layer map's score and of the cumulative map's
    (``"{layer}+"``: last layer down to this one), with error bars of one standard error
    (``std(ddof=1) / sqrt(k)``, NaN values skipped). Layers keep the table's order. The reference
    rows ``center_bias`` and ``human_loso``, when present, are drawn as horizontal lines.

    Args:
        per_image: table with ``method, layer`` and the ``metric`` column
            (:func:`dissect.studies.attention_gaze.run_attention_study`).
        path: output ``.png`` path.
        method: the method whose layers to plot.
        metric: the column to plot.
        title: figure title (default: ``"{method}: {metric} per layer"``).
        figsize: inches (default grows with the number of layers).
        dpi: pixels per inch.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: missing columns, no rows of ``method``, or a path not ending in ``.png``.
    """
    points = _layer_points(per_image, method, metric)
    path = png_path(path)
    names = list(points.index)
    x = np.arange(len(names))
    if figsize is None:
        figsize = (2.5 + 0.55 * len(names), 3.2)
    fig = new_figure(figsize, dpi)
    ax = fig.add_subplot()
    for kind, label, marker in (("single", "single layer", "o"),
                                ("cumulative", "cumulative (last layer down to it)", "s")):
        if not (points[f"{kind}_n"] > 0).any():
            continue
        ax.errorbar(x, points[f"{kind}_mean"].to_numpy(), yerr=points[f"{kind}_se"].to_numpy(),
                    marker=marker, capsize=3, label=label)
    styles = {"center_bias": ":", "human_loso": "--"}
    for ref, level in _reference_levels(per_image, metric).items():
        ax.axhline(level, linestyle=styles[ref], color="grey", linewidth=1, label=ref)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(metric.upper() if metric == "mae" else metric)
    ax.set_title(title if title is not None else f"{method}: {metric} per layer", fontsize=9)
    ax.legend(fontsize=7)
    return save_png(fig, path)
