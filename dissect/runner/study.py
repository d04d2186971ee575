"""What a study is to the pass core: per-batch work, an exactly mergeable state, final tables.

A :class:`Study` walks ``n_items`` items (images) in batches of ``batch_size``. The pass
(:func:`dissect.runner.passes.run_pass`) calls, for each batch, :meth:`Study.load` in a loader
thread, :meth:`Study.forward` in the calling thread (the model) and :meth:`Study.score` in one
scoring thread, which adds the batch into the run's :class:`State`. Everything a run needs
beyond that (checkpoints, ``--resume``, ``--shard I/N``, ``merge``, Ray, progress bars, the run
folder and ``run.json``) is written once, in :mod:`dissect.runner`, for every study.

A state is exactly mergeable: ``a.merge(b)`` for the states of two consecutive parts of a run
equals the state of one pass over both, bit for bit (integer sums, row tables concatenated in
item order), and it is saved as arrays without objects (:mod:`dissect.runner.npz`) plus a JSON
part, so nothing in a run folder can execute code when it is read.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np
import pandas as pd

from dissect.runner.npz import read_arrays, table_arrays, table_from_arrays, write_arrays

__all__ = ["State", "RecordState", "Study"]


class State(ABC):
    """A study's accumulated results: saved, loaded and merged exactly."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write the arrays to ``path`` (an ``.npz`` file, atomically); side files start with ``state-``."""

    @abstractmethod
    def meta(self) -> dict:
        """The JSON part of the state (kept in the progress record beside the arrays)."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path, meta: dict) -> "State":
        """The state :meth:`save` and :meth:`meta` described.

        Raises:
            ValueError: a damaged or foreign file (the message names it).
        """

    @abstractmethod
    def merge(self, later: "State") -> None:
        """Add ``later``, the state of the items that follow this state's, into this state."""


def _add_counts(into: dict, other: dict) -> None:
    for key, value in other.items():
        if isinstance(value, dict):
            _add_counts(into.setdefault(key, {}), value)
        else:
            into[key] = into.get(key, 0) + value


class RecordState(State):
    """A general state: summed counts, row tables in item order, named arrays, first-seen notes.

    * ``counts``: numbers or nested dicts of numbers, summed on merge (``add_counts``);
    * tables: rows (dicts) appended per item (``add_rows``); :meth:`table` gives the whole table
      in item order, through the same lossless column arrays a saved and merged state uses, so
      a single pass and merged shards give byte-identical CSV files;
    * arrays: named arrays (e.g. a figure's example maps), written once each in a side file
      ``state-arrays-<name>.npz`` beside the state; names must be unique over a run (key them
      by the global item index);
    * notes: JSON values set once; on merge the first non-empty value wins (e.g. layer names
      only a non-empty part discovers).
    """

    def __init__(self) -> None:
        self.counts: dict = {}
        self.notes: dict = {}
        self.arrays: dict[str, np.ndarray] = {}
        self._chunks: dict[str, list[pd.DataFrame | list[dict]]] = {}  # per table, in item order
        self._written: set[str] = set()

    # -- filling
    def add_counts(self, counts: dict) -> None:
        """Add numbers (or nested dicts of numbers) into :attr:`counts`."""
        _add_counts(self.counts, counts)

    def add_rows(self, table: str, rows: list[dict] | pd.DataFrame) -> None:
        """Append rows (dicts of column -> str or number, or a DataFrame) to table ``table``."""
        chunks = self._chunks.setdefault(table, [])
        if isinstance(rows, pd.DataFrame):
            chunks.append(rows)
        elif chunks and isinstance(chunks[-1], list):
            chunks[-1].extend(rows)
        else:
            chunks.append(list(rows))

    def note(self, key: str, value: Any) -> None:
        """Set note ``key`` unless it already holds a non-empty value."""
        if not self.notes.get(key):
            self.notes[key] = value

    # -- reading
    def tables(self) -> list[str]:
        return list(self._chunks)

    def table(self, name: str) -> pd.DataFrame:
        """Every row of table ``name`` so far, in item order (an empty frame if none)."""
        parts = [c if isinstance(c, pd.DataFrame) else pd.DataFrame(c) for c in self._chunks.get(name, [])]
        parts = [p for p in parts if len(p.columns)]
        if not parts:
            return pd.DataFrame()
        frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        # Through the stored form: a table read back from a checkpoint or a shard is this one.
        return table_from_arrays(table_arrays(frame))

    # -- State
    def meta(self) -> dict:
        return {"counts": self.counts, "notes": self.notes, "tables": self.tables(), "arrays": list(self.arrays)}

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {}
        for k, name in enumerate(self.tables()):
            arrays.update(table_arrays(self.table(name), prefix=f"t{k}."))
        for name, value in self.arrays.items():
            if name not in self._written:  # an array never changes once added: written once
                write_arrays(path.parent / f"state-arrays-{name}.npz", {"a": value})
                self._written.add(name)
        write_arrays(path, arrays)

    @classmethod
    def load(cls, path: Path, meta: dict) -> "RecordState":
        state = cls()
        try:
            state.counts, state.notes = dict(meta["counts"]), dict(meta["notes"])
            tables, names = list(meta["tables"]), list(meta["arrays"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"the progress record of {path} lacks the state's counts, notes, tables or arrays") \
                from None
        arrays = read_arrays(path)
        for k, name in enumerate(tables):
            state._chunks[name] = [table_from_arrays(arrays, prefix=f"t{k}.", what=str(path))]
        for name in names:
            state.arrays[name] = read_arrays(path.parent / f"state-arrays-{name}.npz")["a"]
            state._written.add(name)
        return state

    def merge(self, later: "State") -> None:
        if not isinstance(later, RecordState):
            raise TypeError(f"cannot merge a {type(later).__name__} into a RecordState")
        self.add_counts(later.counts)
        for key, value in later.notes.items():
            self.note(key, value)
        for name in later.tables():
            self._chunks.setdefault(name, []).append(later.table(name))
        for name, value in later.arrays.items():
            if name in self.arrays:
                raise ValueError(f"both parts hold the array {name!r}: are two shards of the same items merged?")
            self.arrays[name] = value


class Study(ABC):
    """One job over the items of a dataset, batch by batch (module docstring).

    Subclasses set :attr:`kind` (the name recorded in run folders, e.g. ``"dissect"``),
    :attr:`n_items` and :attr:`batch_size`, and implement :meth:`fingerprint`, :meth:`info`,
    :meth:`load`, :meth:`score` and :meth:`finish`; :meth:`forward`, :meth:`begin`,
    :meth:`running`, :meth:`release`, :meth:`write` and :meth:`console` are optional.

    Register a study (:func:`dissect.runner.registry.register`) so that ``merge`` can rebuild
    its results from shard folders.
    """

    #: Name of the study in run folders and the registry.
    kind: ClassVar[str] = ""
    #: The state class (``new_state`` makes an empty one; ``merge`` loads saved ones).
    State: ClassVar[type[State]] = RecordState
    #: Keys of :meth:`info` that describe how a part ran, not what it computed (they may differ
    #: between shards; the merged info lists every value seen, comma-separated).
    execution_keys: ClassVar[tuple[str, ...]] = ("device",)
    #: Progress bar label and unit.
    desc: str = "items"
    unit: str = "img"

    n_items: int = 0
    batch_size: int = 1

    @abstractmethod
    def fingerprint(self) -> dict:
        """JSON: everything that must be equal to resume a checkpoint or merge two shards."""

    @abstractmethod
    def info(self) -> dict:
        """JSON: the run's options and facts known before the pass (the start of ``run.json``)."""

    def new_state(self) -> State:
        return self.State()

    def begin(self, state: State, remaining: range) -> None:
        """Called once before the first batch (after a resume), with the items left to do."""

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Context around the whole pass (hooks, device, thread limits)."""
        yield

    @abstractmethod
    def load(self, items: range, first: bool = False) -> Any:
        """Read the items of one batch (in a loader thread; ``first``: the model waits for it)."""

    def forward(self, batch: Any) -> Any:
        """The model's work on a loaded batch, in the calling thread."""
        return None

    @abstractmethod
    def score(self, state: State, batch: Any, output: Any) -> None:
        """Add one batch into ``state`` (one scoring thread; batches arrive in order)."""

    def release(self, batch: Any, output: Any) -> None:
        """Called once a batch is counted in (its memory may be reused)."""

    @classmethod
    @abstractmethod
    def finish(cls, state: State, info: dict) -> Any:
        """The study's result (tables, ``info``) from a finished, possibly merged, state."""

    @classmethod
    def console(cls, result: Any, params: dict, merged: int = 0) -> list[str]:
        """Lines to print after a run (``merged``: how many shards were merged, 0 for a single run)."""
        return []

    @classmethod
    def write(cls, result: Any, out: Path, params: dict) -> dict[str, Path]:
        """Write ``result``'s files (tables, ``run.json`` = ``params`` + info, figures) into ``out``."""
        raise NotImplementedError(f"the {cls.kind or cls.__name__} study writes no report")
