"""An evaluation's files and console report (``python cli.py evaluate``).

Files: ``per_image.csv`` (image x model, plus the floor and ceiling rows), ``summary.csv`` (one
row per model: ``model, weights, n, <metric>_mean, <metric>_sem, ..., seconds_mean``, the
reference rows last), ``popout_dimensions.csv`` (pop-out: model x dimension NMM),
``output_saliency.csv`` (datasets with regions: model x category OS / OD, He et al. eq. 2, 3),
``run.json``, ``example_maps.png`` (image, human map or target mask, each model) and
``metrics.png`` (a bar chart per metric with the floor and ceiling marked).
"""
from __future__ import annotations

import os
from pathlib import Path

from dissect.reports.evaluation_figures import example_maps, metric_bars
from dissect.runner.folders import atomic_write_csv, atomic_write_json, check_writable

__all__ = ["write_evaluation_report", "evaluation_console"]


def write_evaluation_report(result, out_dir: str | os.PathLike, params: dict | None = None) -> dict[str, Path]:
    """Write the tables, run.json and figures of ``result``; returns ``{name: path}``."""
    out = check_writable(out_dir)
    paths = {"per_image": atomic_write_csv(result.per_image, out / "per_image.csv"),
             "summary": atomic_write_csv(result.summary, out / "summary.csv")}
    if result.popout_dimensions is not None:
        paths["popout_dimensions"] = atomic_write_csv(result.popout_dimensions, out / "popout_dimensions.csv")
    if result.output_saliency is not None:
        paths["output_saliency"] = atomic_write_csv(result.output_saliency, out / "output_saliency.csv")
    paths["run"] = out / "run.json"
    atomic_write_json(paths["run"], {**(params or {}), **result.info})
    ex = result.examples
    if ex.get("image_id"):
        human = "human" if "fixations" in result.info["mode"] else "target"
        columns = {human: ex["human"], **ex["maps"]}
        paths["example_maps"] = example_maps(ex["image"], columns, out / "example_maps.png", titles=ex["image_id"])
    metrics = [m for m in result.info["metrics"] if m != "nmm_ratio"]
    paths["metrics"] = metric_bars(result.summary, metrics, out / "metrics.png")
    return paths


def evaluation_console(result) -> list[str]:
    """What ``cli.py evaluate`` prints: the summary and the resized maps."""
    cols = ["model", "weights", "n"] + [c for c in ("nss_mean", "cc_mean", "auc_judd_mean", "sauc_mean", "ig_mean",
                                                    "nmm_mean", "seconds_mean") if c in result.summary.columns]
    lines = [result.summary[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}")]
    for name, detail in result.info["maps_resized"].items():
        lines.append(f"note: {detail['n_images']} map(s) of {name} resized bilinearly to the image size "
                     f"(from {', '.join(detail['from_shapes'])})")
    return lines
