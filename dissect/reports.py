"""Write a dissection's tables and run record to a folder, and format them for the terminal."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

__all__ = ["atomic_write_json", "check_writable", "write_dissection_reports", "format_summary", "model_columns",
           "with_model_columns", "weights_banner", "figure_subtitle", "default_run_dir", "run_dir_state",
           "prepare_run_dir", "remove_checkpoint", "run_folder", "run_record", "explain_summary"]


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
            merged with ``result.info`` into ``run.json``. ``params["model"]`` (the model's
            ``dissect_info``) labels every row of both tables with :data:`MODEL_COLUMNS`.

    Returns:
        ``{"units": path, "summary": path, "run": path}`` (and ``"labels"``: ``labels.csv``,
        one row per layer x unit, when the result has labels).
    """
    out = check_writable(out_dir)
    paths = {"units": out / "units.csv", "summary": out / "summary.csv", "run": out / "run.json"}
    model_info = params.get("model") if isinstance(params.get("model"), dict) else None
    _atomic_to_csv(with_model_columns(result.units, model_info), paths["units"])
    _atomic_to_csv(with_model_columns(result.summary, model_info), paths["summary"])
    if getattr(result, "labels", None) is not None:
        paths["labels"] = out / "labels.csv"
        _atomic_to_csv(with_model_columns(result.labels, model_info), paths["labels"])
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


# --------------------------------------------------------------------------- run folders and run.json

_STATE_FILES = ("progress.json",)
_STATE_GLOB = "state-*.npz"


def _slug(value) -> str:
    text = str(value).replace(":", "..").replace(os.sep, "_")
    return "".join(c if c.isalnum() or c in "._+=-" else "_" for c in text).strip("_-") or "x"


def default_run_dir(command: str, *parts, **options) -> Path:
    """``runs/COMMAND-PART-PART-key=value...``: a default folder that names what makes a run
    different (``None``/``False``/empty parts and options are left out), so two runs that differ
    in model, dataset, layers, weights, size, image count ... never share a folder.

    Example: ``default_run_dir("dissect", "vgg16", "popout", "conv4_1:conv5_3", first=8)`` ->
    ``runs/dissect-vgg16-popout-conv4_1..conv5_3-first=8``.
    """
    words = [_slug(command)]
    for part in parts:
        if part is None or part is False or part == "" or part == []:
            continue
        words.append("+".join(_slug(p) for p in part) if isinstance(part, (list, tuple)) else _slug(part))
    for key, value in options.items():
        if value is None or value is False or value == "" or value == []:
            continue
        value = "+".join(_slug(v) for v in value) if isinstance(value, (list, tuple)) else _slug(value)
        words.append(f"{_slug(key)}={value}")
    return Path("runs") / "-".join(words)


def run_dir_state(out: str | os.PathLike, outputs: tuple[str, ...] = ()) -> str:
    """``"absent"``, ``"empty"`` (nothing of a run), ``"interrupted"`` (``progress.json``, no
    ``run.json``) or ``"finished"`` (``run.json`` or one of ``outputs``)."""
    out = Path(out).expanduser()
    if not out.exists():
        return "absent"
    if (out / "run.json").exists() or any((out / name).exists() for name in outputs):
        return "finished"
    if (out / "progress.json").exists():
        return "interrupted"
    return "empty"


def prepare_run_dir(out: str | os.PathLike, command: str, *, outputs: tuple[str, ...] = (),
                    resume: bool = False, overwrite: bool = False, resumable: bool = False) -> str:
    """The output-folder policy every command follows; returns the folder's :func:`run_dir_state`.

    * ``--resume`` and ``--overwrite`` together are an error;
    * ``--resume`` needs an interrupted (or finished) run in ``out``;
    * a folder holding a finished or interrupted run is never written over without
      ``--overwrite``, which removes that run's files (``outputs``, ``run.json``,
      ``progress.json``, ``state-*.npz``) and nothing else.

    Raises:
        ValueError: one line naming the folder and the flag that fixes it.
    """
    out = Path(out).expanduser()
    if resume and overwrite:
        raise ValueError("--resume and --overwrite contradict each other: --resume continues the run in "
                         f"{out}, --overwrite discards it; pass only one")
    state = run_dir_state(out, outputs)
    if resume:
        if not resumable:
            raise ValueError(f"{command} runs cannot be resumed; drop --resume")
        if state in ("absent", "empty"):
            raise ValueError(f"--resume: {out} holds no interrupted {command} run (no progress.json); drop "
                             "--resume to start a new run there, or point --out at the interrupted run")
        return state
    if state in ("finished", "interrupted"):
        if not overwrite:
            hint = "--resume to continue it, " if state == "interrupted" and resumable else ""
            raise ValueError(f"{out} already holds {'an interrupted' if state == 'interrupted' else 'a finished'} "
                             f"{command} run; pass {hint}--overwrite to replace it, or choose another --out")
        for name in (*outputs, "run.json"):
            (out / name).unlink(missing_ok=True)
        remove_checkpoint(out)
    return state


def remove_checkpoint(out: str | os.PathLike) -> None:
    """Delete a finished run's resumable state (``progress.json``, ``state-*.npz``)."""
    out = Path(out)
    for name in _STATE_FILES:
        (out / name).unlink(missing_ok=True)
    for path in out.glob(_STATE_GLOB):
        path.unlink(missing_ok=True)


class run_folder:
    """Context manager: a run folder created by a command that then fails (or writes nothing)
    is removed again, so failed commands leave no empty folders behind."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out).expanduser()
        self.existed = self.out.exists()

    def __enter__(self) -> Path:
        return self.out

    def __exit__(self, *exc_info) -> None:
        if not self.existed and self.out.is_dir() and not any(self.out.iterdir()):
            self.out.rmdir()


def run_record(command: str, config: dict, *, model=None, **extra) -> dict:
    """The ``run.json`` schema shared by every command: ``command``, ``config`` (every option
    as given), ``model`` (the ``dissect_info`` of the model, a list of them for several models),
    ``versions``, ``started`` and whatever the command adds (dataset, counts, timings)."""
    import time

    from dissect.dissection import environment_versions

    record = {"command": command, "config": {k: v for k, v in dict(config).items() if not callable(v)}}
    if model is not None:
        record["model"] = model
    record.update(extra)
    record.setdefault("versions", environment_versions())
    record.setdefault("started", time.strftime("%Y-%m-%dT%H:%M:%S"))
    return record


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
