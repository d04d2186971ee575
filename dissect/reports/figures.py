"""Figures over dissection results: summary heat map, per-category bars, unit overlays (PNG).

Every function draws on its own ``matplotlib.figure.Figure`` with an Agg canvas and never
touches pyplot, so nothing is left open (``plt.get_fignums()`` stays empty), the global backend
is untouched and the functions are safe in scripts and notebooks alike. The PNG has exactly
``figsize * dpi`` pixels (no ``bbox_inches="tight"``; the layout engine fits the content).
Each function returns the path it wrote (parent folders are created).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from dissect.reports.figure_io import new_figure, png_path, save_png
from probes.stats import live_units

__all__ = ["summary_heatmap", "category_bars", "unit_overlays", "improvement_figure", "training_curves"]


def _ordered(values: Sequence[str], order: Sequence[str] | None, what: str) -> list[str]:
    present = list(dict.fromkeys(str(v) for v in values))
    if order is None:
        return present
    order = [str(o) for o in order]
    unknown = [o for o in order if o not in present]
    if unknown:
        raise ValueError(f"{what} {unknown} not in the table; available: {present}")
    return order


def summary_heatmap(
    summary: pd.DataFrame,
    path: str | os.PathLike,
    value: str = "top_k_mean",
    *,
    layers: Sequence[str] | None = None,
    categories: Sequence[str] | None = None,
    title: str | None = None,
    cmap: str = "viridis",
    figsize: tuple[float, float] | None = None,
    dpi: int = 100,
    alpha: float = 0.05,
) -> Path:
    """Heat map of one summary column, layers (rows) x categories (columns), values annotated.

    Like Tables 2, 3, 7 of He et al. 2019 (top-k mean NSS, or count above threshold). Missing
    or NaN cells are left blank and annotated "-". For ``top_k_mean``, when the summary has a
    permutation null, cells whose ``p_top_k < alpha`` are outlined and their value starred (the
    title says so).

    Args:
        summary: run summary with ``layer, category`` and the ``value`` column.
        path: output ``.png`` path.
        value: the column to show (``"top_k_mean"``, ``"count_above_threshold"``, ...).
        layers, categories: row / column order (default: order of first appearance).
        title: figure title (default: ``value``).
        cmap: matplotlib colour map name.
        figsize: inches; default grows with the table (0.9 in per category, 0.45 in per layer).
        dpi: pixels per inch.
        alpha: significance level of the marks.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: missing columns, an empty summary, duplicate (layer, category) rows,
            unknown layers/categories in the orders, or a path not ending in ``.png``.
    """
    missing = [c for c in ("layer", "category", value) if c not in summary.columns]
    if missing:
        raise ValueError(f"summary lacks column(s) {missing}; got {list(summary.columns)}")
    if len(summary) == 0:
        raise ValueError("summary is empty; nothing to draw")
    path = png_path(path)
    mark = value == "top_k_mean" and "p_top_k" in summary.columns and summary["p_top_k"].notna().any()
    df = summary[["layer", "category", value] + (["p_top_k"] if mark else [])].copy()
    df["layer"] = df["layer"].astype(str)
    df["category"] = df["category"].astype(str)
    dup = df.duplicated(["layer", "category"])
    if dup.any():
        first = df[dup].iloc[0]
        raise ValueError(
            f"summary has duplicate rows for layer {first['layer']!r}, category "
            f"{first['category']!r}; pass one run's summary"
        )
    rows = _ordered(df["layer"], layers, "layers")
    cols = _ordered(df["category"], categories, "categories")
    grid = (
        df.pivot(index="layer", columns="category", values=value)
        .reindex(index=rows, columns=cols)
        .to_numpy(dtype=float)
    )
    significant = np.zeros(grid.shape, dtype=bool)
    if mark:
        p = df.pivot(index="layer", columns="category", values="p_top_k").reindex(index=rows, columns=cols)
        significant = p.to_numpy(dtype=float) < alpha
    if figsize is None:
        figsize = (2.0 + 0.9 * len(cols), 1.6 + 0.45 * len(rows))
    fig = new_figure(figsize, dpi)
    ax = fig.add_subplot()
    masked = np.ma.masked_invalid(grid)
    im = ax.imshow(masked, cmap=cmap, aspect="auto")
    fig.colorbar(im, ax=ax, label=value)
    ax.set_xticks(range(len(cols)), labels=cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), labels=rows)
    default_title = value + (f" (* outlined: p_top_k < {alpha:g}, permutation null)" if mark else "")
    ax.set_title(title if title is not None else default_title, fontsize=9 if mark else None)
    integer = np.all(np.isnan(grid) | (grid == np.round(grid)))
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = grid[i, j]
            if np.isfinite(v):
                text = f"{int(v)}" if integer else f"{v:.2f}"
                # dark text on bright cells, light text on dark ones, whatever the colour map
                r, g, b, _ = im.cmap(im.norm(v))
                colour = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
            else:
                text, colour = "-", "black"
            if significant[i, j]:
                text += "*"
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=8)
    return save_png(fig, path)


def _top_k_bars(units: pd.DataFrame, layer: str, top_k: int) -> pd.DataFrame:
    """Per category: mean and standard error of the ``top_k`` best live unit scores.

    ``k = min(top_k, live units)``; ``sem = std(ddof=1) / sqrt(k)`` of those k scores (the
    standard error of their mean; NaN when k < 2). Categories without live units get k = 0
    and NaN.
    """
    if isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    categories = list(dict.fromkeys(units.loc[units["layer"].astype(str) == str(layer), "category"].astype(str)))
    live = live_units(units, layer)
    rows = []
    for cat in categories:
        s = np.sort(live.loc[live["category"] == cat, "score"].to_numpy(dtype=float))[::-1][: int(top_k)]
        k = s.size
        rows.append(
            {
                "category": cat,
                "mean": float(s.mean()) if k else float("nan"),
                "sem": float(s.std(ddof=1) / np.sqrt(k)) if k >= 2 else float("nan"),
                "k": k,
            }
        )
    return pd.DataFrame(rows, columns=["category", "mean", "sem", "k"])


def category_bars(
    units: pd.DataFrame,
    layer: str,
    path: str | os.PathLike,
    top_k: int = 10,
    *,
    threshold: float | None = None,
    categories: Sequence[str] | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (6.0, 3.5),
    dpi: int = 100,
    summary: pd.DataFrame | None = None,
) -> Path:
    """Bar per category: mean of the top-k live unit scores of one layer, with error bars.

    Bar height = mean of the ``k = min(top_k, live units)`` largest scores (the top-k mean of
    He et al. 2019); error bar = ``std(ddof=1) / sqrt(k)`` of those k scores, the standard error
    of that mean (none when k < 2). It describes the spread among the best units, not sampling
    error over images. Dead units, unranked units and NaN scores are excluded.

    With ``summary`` (the run's summary.csv) holding a bootstrap (``top_k_mean_lo/hi``), the
    error bar is instead that 95 % interval over images; with a permutation null
    (``null_top_k_mean``), a black dash over each bar marks what chance gives.

    Args:
        units: the long unit table.
        layer: layer name.
        path: output ``.png`` path.
        top_k: number of best units per category.
        threshold: draw a dashed horizontal line at this score (e.g. T = 1.5).
        categories: bar order (default: order of first appearance).
        title: figure title (default: ``"<layer>: top-<k> unit scores"``).
        figsize, dpi: figure size in inches and pixels per inch.
        summary: optional run summary for the bootstrap interval and the null line.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: unknown layer or category, bad ``top_k``, or a path not ending in ``.png``.
    """
    path = png_path(path)
    bars = _top_k_bars(units, layer, top_k)
    order = _ordered(bars["category"], categories, "categories")
    bars = bars.set_index("category").loc[order].reset_index()
    fig = new_figure(figsize, dpi)
    ax = fig.add_subplot()
    x = np.arange(len(bars))
    yerr, err_label, null = bars["sem"].to_numpy(dtype=float), "s.e. of the top-k scores", None
    if summary is not None and {"layer", "category"} <= set(summary.columns):
        rows = summary[summary["layer"].astype(str) == str(layer)].copy()
        rows["category"] = rows["category"].astype(str)
        rows = rows.set_index("category").reindex(bars["category"])
        if {"top_k_mean_lo", "top_k_mean_hi"} <= set(rows.columns) and rows["top_k_mean_lo"].notna().any():
            mean = bars["mean"].to_numpy(dtype=float)
            yerr = np.vstack([np.clip(mean - rows["top_k_mean_lo"].to_numpy(dtype=float), 0, None),
                              np.clip(rows["top_k_mean_hi"].to_numpy(dtype=float) - mean, 0, None)])
            err_label = "95% bootstrap interval over images"
        if "null_top_k_mean" in rows.columns and rows["null_top_k_mean"].notna().any():
            null = rows["null_top_k_mean"].to_numpy(dtype=float)
    ax.bar(x, bars["mean"], yerr=yerr, capsize=3, color="tab:blue", label=f"top-k mean ({err_label})")
    if null is not None:
        ax.hlines(null, x - 0.4, x + 0.4, colors="black", linewidth=2, label="permutation null (mean)")
    if threshold is not None:
        ax.axhline(float(threshold), color="tab:red", linestyle="--", linewidth=1, label=f"T = {threshold:g}")
    if threshold is not None or null is not None or summary is not None:
        ax.legend(loc="best", fontsize=7)
    ax.set_xticks(x, labels=bars["category"], rotation=45, ha="right")
    ax.set_ylabel(f"mean of top-{int(top_k)} unit scores")
    ax.set_title(title if title is not None else f"{layer}: top-{int(top_k)} unit scores")
    return save_png(fig, path)


def _display_image(image: np.ndarray, i: int) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (3, 4))):
        raise ValueError(f"images[{i}] must be H x W or H x W x 3, got shape {img.shape}")
    if img.dtype != np.uint8:
        img = img.astype(float)
        lo, hi = np.nanmin(img), np.nanmax(img)
        # float images outside [0, 1] are min-maxed for display only
        if lo < 0 or hi > 1:
            img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return img


def unit_overlays(
    images: Sequence[np.ndarray],
    unit_maps: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    titles: Sequence[str],
    path: str | os.PathLike,
    *,
    fixation_maps: Sequence[np.ndarray] | None = None,
    ncols: int | None = None,
    panel_size: float = 2.5,
    dpi: int = 100,
    alpha: float = 0.5,
    cmap: str = "jet",
    subtitle: str | None = None,
) -> Path:
    """Grid of unit activation maps over their images with the region outlined (He et al. Fig. 3).

    Panel i shows ``images[i]``, then ``unit_maps[i]`` min-maxed to [0, 1] (display only; a
    constant map is drawn as zeros) with transparency ``alpha``, then the outline of
    ``masks[i]`` (a white contour at 0.5) and, if given, the fixated pixels as small dots.

    Args:
        images: N images, ``H x W x 3`` (uint8, or float in [0, 1]) or ``H x W`` grey.
        unit_maps: N ``H x W`` float activation maps, already upsampled to the image size.
        masks: N ``H x W`` bool region masks.
        titles: N panel titles (e.g. ``"conv5_3 #304 NSS 3.1"``).
        path: output ``.png`` path.
        fixation_maps: optional N ``H x W`` bool fixation maps.
        ncols: panels per row (default ``min(N, 5)``).
        panel_size: inches per panel side; the PNG is ``ncols * panel_size * dpi`` by
            ``nrows * panel_size * dpi`` pixels.
        dpi: pixels per inch.
        alpha: opacity of the activation map, in [0, 1].
        cmap: colour map of the activation map.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: no panels, lists of different lengths, a map or mask whose shape differs
            from its image, bad ``ncols`` / ``alpha``, or a path not ending in ``.png``.
    """
    n = len(images)
    if n == 0:
        raise ValueError("unit_overlays needs at least one image")
    lengths = {"unit_maps": len(unit_maps), "masks": len(masks), "titles": len(titles)}
    if fixation_maps is not None:
        lengths["fixation_maps"] = len(fixation_maps)
    bad = {k: v for k, v in lengths.items() if v != n}
    if bad:
        raise ValueError(f"{n} images but {bad}; give one map, mask and title per image")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    ncols = min(n, 5) if ncols is None else int(ncols)
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    panels = []
    for i in range(n):
        img = _display_image(images[i], i)
        amap = np.asarray(unit_maps[i], dtype=float)
        mask = np.asarray(masks[i]).astype(bool)
        hw = img.shape[:2]
        if amap.shape != hw:
            raise ValueError(
                f"unit_maps[{i}] has shape {amap.shape} but its image is {hw}; upsample the map "
                "to the image size first (bilinear, align_corners=False)"
            )
        if mask.shape != hw:
            raise ValueError(f"masks[{i}] has shape {mask.shape} but its image is {hw}")
        fix = None
        if fixation_maps is not None:
            fix = np.asarray(fixation_maps[i]).astype(bool)
            if fix.shape != hw:
                raise ValueError(f"fixation_maps[{i}] has shape {fix.shape} but its image is {hw}")
        panels.append((img, amap, mask, fix))
    path = png_path(path)

    nrows = -(-n // ncols)
    fig = new_figure((ncols * panel_size, nrows * panel_size), dpi)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (img, amap, mask, fix), title in zip(axes.flat, panels, titles):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        lo, hi = np.nanmin(amap), np.nanmax(amap)
        shown = (amap - lo) / (hi - lo) if hi > lo else np.zeros_like(amap)
        ax.imshow(shown, cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0)
        # contour needs both inside and outside pixels; an empty or full mask has no outline
        if mask.any() and not mask.all():
            ax.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=1.0)
        if fix is not None and fix.any():
            rows, cols = np.nonzero(fix)
            ax.scatter(cols, rows, s=6, c="red", marker="o", edgecolors="white", linewidths=0.4)
        ax.set_title(str(title), fontsize=8)
    if subtitle:  # model, weights, dataset, metric (dissect.reports.figure_subtitle)
        fig.suptitle(subtitle, fontsize=8)
    return save_png(fig, path)


def improvement_figure(table3: pd.DataFrame, path: str | os.PathLike) -> Path:
    """He et al. Fig. 4: change of the top-k mean per category against K (last layer), from ``table3.csv``."""
    path = png_path(path)
    layer = list(dict.fromkeys(table3["layer"]))[-1]
    data = table3[(table3["layer"] == layer) & (table3["setup"] != "pretrained")]
    value = "change_top_k_mean" if "change_top_k_mean" in data else "top_k_mean"
    fig = new_figure((7, 4), 110)
    ax = fig.add_subplot()
    for category, g in data.groupby("category", sort=False):
        ax.plot(g["setup"], g[value], marker="o", label=category)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("setup (K = fine-tuned convs)")
    ax.set_ylabel(f"{layer} top-k mean change vs pretrained" if value.startswith("change") else "top-k mean")
    weights = str(data["weights"].iloc[0]) if len(data) else ""
    ax.set_title(f"{data['model'].iloc[0] if len(data) else ''} ({weights})", fontsize=8)
    if len(data):
        ax.legend(fontsize=7, ncol=2)
    return save_png(fig, path)


def training_curves(log: pd.DataFrame, val: pd.DataFrame, path: str | os.PathLike, metric: str, title: str) -> Path:
    """``curves.png`` of a training run: the loss against step, and the validation ``metric`` with its
    centre-bias floor (``floor_<metric>``)."""
    path = png_path(path)
    fig = new_figure((10, 3.6), 110)
    a, b = fig.subplots(1, 2)
    if len(log):
        a.plot(log["step"], log["loss"], lw=0.8)
    a.set_xlabel("step")
    a.set_ylabel("training loss")
    if len(val):
        b.plot(val["step"], val[metric], marker="o", label="model")
        if f"floor_{metric}" in val:
            b.axhline(val[f"floor_{metric}"].iloc[0], color="grey", ls="--", label="centre-bias floor")
        b.legend(loc="best")
    b.set_xlabel("step")
    b.set_ylabel(f"validation {metric}")
    fig.suptitle(title, fontsize=9)
    return save_png(fig, path)
