"""A dissection's files (``units.csv``, ``summary.csv``, ``labels.csv``, ``run.json``) and console report."""
from __future__ import annotations

import os
from pathlib import Path

from datasets.fixations import dropped_fixations_message
from dissect.reports.tables import explain_summary, format_summary, weights_banner, with_model_columns
from dissect.runner.folders import atomic_write_csv, atomic_write_json, check_writable

__all__ = ["write_dissection_reports", "console_lines"]


def write_dissection_reports(result, out_dir: str | os.PathLike, params: dict) -> dict[str, Path]:
    """Write ``units.csv``, ``summary.csv`` and ``run.json`` for a :class:`DissectionResult`.

    Args:
        result: what :func:`dissect.studies.dissection.run_dissection` returned.
        out_dir: the run folder.
        params: every parameter of the run (model, weights actually used, versions, ...);
            merged with ``result.info`` into ``run.json``. ``params["model"]`` (the model's
            ``dissect_info``) labels every row of both tables with :data:`MODEL_COLUMNS`.

    Returns:
        ``{"units": path, "summary": path, "run": path}`` (and ``"labels"``: ``labels.csv``,
        one row per layer x unit, when the result has labels).
    """
    out = check_writable(out_dir)
    paths = {"units": out / "units.csv", "summary": out / "summary.csv", "run": out / "run.json"}
    model_info = params.get("model") if isinstance(params.get("model"), dict) else None
    atomic_write_csv(with_model_columns(result.units, model_info), paths["units"])
    atomic_write_csv(with_model_columns(result.summary, model_info), paths["summary"])
    if getattr(result, "labels", None) is not None:
        paths["labels"] = out / "labels.csv"
        atomic_write_csv(with_model_columns(result.labels, model_info), paths["labels"])
    atomic_write_json(paths["run"], {**params, **result.info})
    return paths


def console_lines(result, params: dict, merged: int = 0) -> list[str]:
    """What ``cli.py dissect`` prints after a run (or ``merge`` after ``merged`` shards)."""
    info = result.info
    metric = "NMM" if info["metric"] == "nmm" else "region NSS"
    title = f"mean {metric} of the top-{info['top_k']} units (layers x categories), "
    if merged:
        return [f"{title}{merged} shards merged:", format_summary(result.summary)]
    model_info = params.get("model") if isinstance(params.get("model"), dict) else {}
    banner = weights_banner(model_info)
    name = (params.get("config") or {}).get("model", model_info.get("arch", ""))
    lines = [title + f"{name}" + (", RANDOM WEIGHTS:" if banner else f", {model_info.get('weights', '')} weights:"),
             format_summary(result.summary)]
    lines += explain_summary(result.summary, info["top_k"], info.get("n_images"))
    skipped = {"empty masks": info["n_regions_empty"], "regions without fixations": info["n_regions_unfixated"],
               "images without regions": info["n_images_without_regions"]}
    if any(skipped.values()):
        lines.append("skipped: " + ", ".join(f"{v} {k}" for k, v in skipped.items() if v))
    lines += [f"warning: {line}" for line in dropped_fixations_message(
        info.get("n_fixations_dropped", 0), info.get("n_fixations", 0), info.get("n_images"))]
    if banner:
        lines.append(banner)
    return lines
