"""Run folders: where a command writes, when it may write over a run, atomic files and ``run.json``.

Every command follows one policy (:func:`prepare_run_dir`): a folder holding a finished or
interrupted run is never written over without ``--overwrite``, which removes that run's own
files and nothing else; ``--resume`` needs an interrupted run. Files are written atomically
(a temporary file, then ``os.replace``), so a reader never sees half a file. ``run.json`` has one
schema for every command (:func:`run_record`) and is written last: it marks a finished run.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import pandas as pd

__all__ = ["check_writable", "atomic_write_json", "atomic_write_csv", "default_run_dir", "run_dir_state",
           "prepare_run_dir", "remove_checkpoint", "run_folder", "run_record", "environment_versions",
           "read_json", "STATE_FILES", "STATE_GLOB"]

#: The resumable state of an interrupted run (:mod:`dissect.runner.passes`): the progress record
#: and its state files (``state-NNNNNNN.npz`` and their side files).
STATE_FILES = ("progress.json",)
STATE_GLOB = "state-*.npz"


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


def atomic_write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """``frame.to_csv(path, index=False)`` through a temporary file and ``os.replace``."""
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def read_json(path: Path, what: str = "") -> dict:
    """A JSON file as a dict, or one line naming the file (``what`` says what it should be)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path} ({exc}){'; ' + what if what else ''}") from None


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
    for name in STATE_FILES:
        (out / name).unlink(missing_ok=True)
    for path in out.glob(STATE_GLOB):
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


def environment_versions() -> dict:
    """Versions worth stating in a methods section."""
    import numpy
    import scipy
    import torch
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": numpy.__version__,
            "scipy": scipy.__version__, "pandas": pd.__version__}


def run_record(command: str, config: dict, *, model=None, **extra) -> dict:
    """The ``run.json`` schema shared by every command: ``command``, ``config`` (every option
    as given), ``model`` (the ``dissect_info`` of the model, a list of them for several models),
    ``versions``, ``started`` and whatever the command adds (dataset, counts, timings)."""
    record = {"command": command, "config": {k: v for k, v in dict(config).items() if not callable(v)}}
    if model is not None:
        record["model"] = model
    record.update(extra)
    record.setdefault("versions", environment_versions())
    record.setdefault("started", time.strftime("%Y-%m-%dT%H:%M:%S"))
    return record
