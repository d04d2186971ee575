"""Arrays and tables in ``.npz`` files: exact, atomic, and never an object that loading could execute.

A run folder holds nothing that loading can run (JSON, CSV, PNG, ``.npz`` without object arrays,
torch checkpoints read with ``weights_only=True``): these files are written without pickling
and read with ``allow_pickle=False``, so a crafted file planted in a run folder is refused, never
executed. Tables are stored column by column (floats bit for bit, strings as unicode arrays).
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from probes.aggregate import write_npz

__all__ = ["write_arrays", "read_arrays", "table_arrays", "table_from_arrays"]

_TABLE_FORMAT = "saliency-dissect/table"


def write_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` to ``path`` (``.npz``, no pickle) atomically and durably.

    A temporary file in the same folder is written, flushed to disk and renamed onto ``path``:
    an interrupt or a full disk at any point leaves any previous file intact.

    Raises:
        ValueError: an object array (it would need pickling).
    """
    path = Path(path)
    for name, value in arrays.items():
        if np.asarray(value).dtype.kind == "O":
            raise ValueError(f"array {name!r} holds Python objects; a run folder stores numbers and text only")
    return write_npz(path, arrays)


def read_arrays(path: str | os.PathLike, fix: str = "") -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, read with ``allow_pickle=False``.

    Raises:
        ValueError: a missing, truncated or damaged file, or one holding pickled objects; the
            message names the file (and ``fix``, what to do about it).
    """
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with data:
            return {name: data[name] for name in data.files}
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ValueError(f"cannot read {path} ({type(exc).__name__}: {exc}); the file is missing, truncated, "
                         f"damaged or not a saliency-dissect state{': ' + fix if fix else ''}") from None


def table_arrays(frame: pd.DataFrame, prefix: str = "") -> dict[str, np.ndarray]:
    """A table as arrays, column by column (exact floats; strings as unicode), for :func:`write_arrays`."""
    arrays = {f"{prefix}__format__": np.array(_TABLE_FORMAT),
              f"{prefix}__columns__": np.array(list(frame.columns), dtype=str).reshape(-1)}
    for k, col in enumerate(frame.columns):
        values = frame[col].to_numpy()
        if values.dtype.kind in "OUT":
            if not all(isinstance(v, str) for v in values):
                raise ValueError(f"column {col!r} mixes strings with other values; cannot store it exactly")
            values = np.array(values, dtype=str) if len(values) else np.zeros(0, dtype="<U1")
        arrays[f"{prefix}c{k}"] = values
    return arrays


def table_from_arrays(arrays: dict[str, np.ndarray], prefix: str = "", what: str = "") -> pd.DataFrame:
    """The table :func:`table_arrays` stored (strings come back as Python ``str`` objects)."""
    if str(arrays.get(f"{prefix}__format__", "")) != _TABLE_FORMAT:
        raise ValueError(f"{what or 'the file'} holds no saliency-dissect table {prefix!r}")
    columns = [str(c) for c in arrays[f"{prefix}__columns__"]]
    data = {}
    for k, col in enumerate(columns):
        values = arrays[f"{prefix}c{k}"]
        data[col] = values.astype(object) if values.dtype.kind == "U" else values
    return pd.DataFrame(data, columns=columns)
