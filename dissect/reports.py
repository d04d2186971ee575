"""Write a dissection's tables and run record to a folder, and format them for the terminal."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

__all__ = ["atomic_write_json", "check_writable", "write_dissection_reports", "format_summary"]


def check_writable(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir`` if needed and make sure files can be written there.

    Raises:
        PermissionError: with one line naming the folder and the fix.
    """
    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise PermissionError(
            f"cannot write to output folder {out} ({exc.strerror or exc}); choose another with --out"
        ) from None
    return out


def atomic_write_json(path: Path, obj: dict) -> None:
    """Write ``obj`` as JSON through a temporary file and ``os.replace``: readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def _atomic_to_csv(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def write_dissection_reports(result, out_dir: str | os.PathLike, params: dict) -> dict[str, Path]:
    """Write ``units.csv``, ``summary.csv`` and ``run.json`` for a :class:`DissectionResult`.

    Args:
        result: what :func:`dissect.dissection.run_dissection` returned.
        out_dir: the run folder.
        params: every parameter of the run (model, weights actually used, versions, ...);
            merged with ``result.info`` into ``run.json``.

    Returns:
        ``{"units": path, "summary": path, "run": path}`` (and ``"labels"``: ``labels.csv``,
        one row per layer x unit, when the result has labels).
    """
    out = check_writable(out_dir)
    paths = {"units": out / "units.csv", "summary": out / "summary.csv", "run": out / "run.json"}
    _atomic_to_csv(result.units, paths["units"])
    _atomic_to_csv(result.summary, paths["summary"])
    if getattr(result, "labels", None) is not None:
        paths["labels"] = out / "labels.csv"
        _atomic_to_csv(result.labels, paths["labels"])
    atomic_write_json(paths["run"], {**params, **result.info})
    return paths


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
