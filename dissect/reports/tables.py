"""What every table and figure carries, and tables for the terminal.

Every table carries :data:`MODEL_COLUMNS` (``model``, ``weights``, ``weights_detail``), every
figure names the model, weights and dataset (:func:`figure_subtitle`), and the console says so
loudly when the weights are random (:func:`weights_banner`).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["MODEL_COLUMNS", "format_summary", "model_columns", "with_model_columns", "weights_banner",
           "figure_subtitle", "explain_summary"]


def format_summary(summary: pd.DataFrame, value: str = "top_k_mean", digits: int = 2, alpha: float = 0.05) -> str:
    """A compact layers x categories table of one summary column, for the terminal.

    For ``top_k_mean`` with a permutation null (``null_top_k_mean`` present and not all NaN),
    each cell reads ``observed (null)``, with ``*`` when ``p_top_k < alpha``; a legend line
    follows the table.
    """
    if summary.empty:
        return "(no scored regions)"
    rows, cols = list(dict.fromkeys(summary["layer"])), list(dict.fromkeys(summary["category"]))

    def grid(column: str) -> pd.DataFrame:
        return summary.pivot(index="layer", columns="category", values=column).reindex(index=rows, columns=cols)

    table = grid(value)
    with_null = (value == "top_k_mean" and "null_top_k_mean" in summary.columns
                 and summary["null_top_k_mean"].notna().any())
    if not with_null:
        return table.to_string(float_format=lambda v: f"{v:.{digits}f}", na_rep="-")
    null, p = grid("null_top_k_mean"), grid("p_top_k")

    def cell(v: float, n: float, q: float) -> str:
        if not pd.notna(v):
            return "-"
        star = "*" if pd.notna(q) and q < alpha else " "
        return f"{v:.{digits}f} ({n:.{digits}f}){star}" if pd.notna(n) else f"{v:.{digits}f}"

    text = pd.DataFrame([[cell(table.iat[i, j], null.iat[i, j], p.iat[i, j]) for j in range(len(cols))]
                         for i in range(len(rows))], index=pd.Index(rows, name="layer"),
                        columns=pd.Index(cols, name="category"))
    return text.to_string() + f"\n(observed top-k mean (mean of the permutation null); * p_top_k < {alpha:g})"


# --------------------------------------------------------------------------- labels every table carries

MODEL_COLUMNS = ("model", "weights", "weights_detail")


def model_columns(model_info: dict | None) -> dict:
    """The ``model``, ``weights`` and ``weights_detail`` columns of every table, from a model's
    ``dissect_info`` (:func:`dissect.models.load_model`): ``weights`` is ``random``, ``imagenet``,
    ``imagenet-encoder`` or ``file``, so tables of several runs concatenate and filter with pandas."""
    info = model_info or {}
    return {"model": info.get("arch") or "unknown", "weights": info.get("weights") or "unknown",
            "weights_detail": "" if info.get("weights_detail") is None else str(info.get("weights_detail"))}


def with_model_columns(frame: pd.DataFrame, model_info: dict | None) -> pd.DataFrame:
    """``frame`` with :data:`MODEL_COLUMNS` appended (a copy; existing columns keep their place)."""
    labels = model_columns(model_info)
    frame = frame.drop(columns=[c for c in MODEL_COLUMNS if c in frame.columns])
    return frame.assign(**{key: [value] * len(frame) for key, value in labels.items()})


def weights_banner(model_info: dict | None) -> str:
    """A loud console line when the numbers come from random weights ('' otherwise)."""
    info = model_info or {}
    if info.get("weights") != "random":
        return ""
    return (f"RANDOM WEIGHTS ({info.get('arch', 'model')}, {info.get('weights_detail', '')}): these numbers "
            "describe an untrained network, not what ImageNet training learns; use --weights imagenet "
            "or a weights file for science")


def figure_subtitle(model_info: dict | None, dataset: str | None = None, metric: str | None = None,
                    top_k: int | None = None) -> str:
    """``"vgg16, RANDOM weights (seed=0), popout, NMM, k=10"``: what every figure names."""
    labels = model_columns(model_info)
    weights = "RANDOM weights" if labels["weights"] == "random" else f"{labels['weights']} weights"
    detail = labels["weights_detail"]
    if detail and labels["weights"] != "file":
        weights += f" ({detail})"
    elif detail:
        weights += f" ({Path(detail.split(' sha256:')[0]).name})"
    parts = [labels["model"], weights, dataset, {"nmm": "NMM", "region_nss": "region NSS"}.get(metric, metric),
             None if top_k is None else f"k={int(top_k)}"]
    return ", ".join(str(p) for p in parts if p)


def explain_summary(summary: pd.DataFrame, top_k: int, n_images: int | None = None) -> list[str]:
    """Console lines saying why a summary cell is NaN, and when ``top_k`` exceeds a layer's units.

    A NaN ``top_k_mean`` is either a category without regions in the images seen (``n_regions
    == 0``: e.g. a quick look with ``--max-images``) or one where every unit was constant (dead).
    """
    lines = []
    seen = f"the {n_images} images seen" if n_images is not None else "the images seen"
    empty = list(dict.fromkeys(summary.loc[summary["n_regions"] == 0, "category"]))
    if empty:
        lines.append(f"no regions of {', '.join(map(str, empty))} in {seen}: their rows are NaN "
                     "(use more images, or all of them without --max-images)")
    for layer, group in summary.groupby("layer", sort=False):
        dead = group[(group["n_regions"] > 0) & (group["n_dead"] >= group["n_units"])]
        if len(dead):
            lines.append(f"{layer}: every unit is constant (dead) on the regions of "
                         f"{', '.join(map(str, dead['category']))}: NaN (an image too small for the network?)")
        n_units = int(group["n_units"].max()) if len(group) else 0
        if 0 < n_units < int(top_k):
            lines.append(f"--top-k {int(top_k)} exceeds the {n_units} units of {layer}: its top_k_mean is the "
                         "mean of all its live units")
    return lines
