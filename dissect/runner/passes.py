"""The one resumable, shardable pass every study runs on (:func:`run_pass`).

A three-stage pipeline: while the model runs batch ``k`` (:meth:`Study.forward`, in the calling
thread), one worker thread scores batch ``k-1`` into the state (:meth:`Study.score`) and another
loads batch ``k+1`` (:meth:`Study.load`); torch and numpy release the GIL in their kernels. The
state is touched only by the scoring thread, one batch at a time, and saved only between
batches, so a checkpoint always holds whole batches.

**Checkpoints** (``checkpoint_dir``): the state is saved as ``state-NNNNNNN.npz`` (``N`` = the
global index of the next item) and ``progress.json`` (the run's fingerprint, the next item, the
state's JSON part), atomically: an interrupt at any moment leaves a progress record naming a
complete state. A save happens after the last batch, when the run stops (Ctrl-C, an error
outside scoring: every batch counted in is kept), and in between at most every
``checkpoint_seconds`` seconds or every ``checkpoint_every`` batches (neither: at the end only).
A batch that fails half-way through scoring leaves the state partly updated: then nothing is
saved, and the checkpoint stays at the last save. ``resume=True`` continues from the checkpoint
of the same run (same fingerprint) and ends with the same state as an uninterrupted pass.

**Shards** (``shard=(i, n)``): only the i-th of n contiguous runs of whole batches
(:func:`dissect.runner.shards.shard_images`); item indices stay global. A finished shard with a
``checkpoint_dir`` writes ``shard.json`` there; :mod:`dissect.runner.merge` merges shard folders
(or the :class:`Pass` objects) into the state of a single pass, bit for bit.
"""
from __future__ import annotations

import json
import os
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from dissect.runner.folders import atomic_write_json
from dissect.runner.shards import check_shard, shard_images
from dissect.runner.study import State, Study

__all__ = ["Pass", "run_pass", "PROGRESS_FILE", "SHARD_FILE", "load_checkpoint", "state_file_name"]

PROGRESS_FILE = "progress.json"
SHARD_FILE = "shard.json"


@dataclass
class Pass:
    """What :func:`run_pass` returns: the state, and the facts of the run.

    Attributes:
        kind: the study's kind.
        state: the accumulated :class:`~dissect.runner.study.State`.
        info: the study's :meth:`~dissect.runner.study.Study.info`, then ``resumed_from_image``,
            ``timings_s`` (``prepare``, ``forward``, ``scoring``, ``total`` seconds) and, for a
            shard, ``shard``: ``{index, count, images: [first, end]}``.
        fingerprint: what must be equal to resume or merge (with ``kind``, ``n_items``,
            ``batch_size`` and, for a shard, ``shard``).
        complete: every item of the part is in the state.
    """

    kind: str
    state: State
    info: dict
    fingerprint: dict
    complete: bool = True
    name: str = ""
    extra: dict = field(default_factory=dict)


def state_file_name(next_index: int) -> str:
    return f"state-{next_index:07d}.npz"


def _fix(path: Path) -> str:
    return f"delete {path} to start again (CLI: --overwrite)"


def load_checkpoint(folder: Path, state_class: type[State], fingerprint: dict | None, first_index: int,
                    end: int | None = None) -> tuple[dict, State] | None:
    """The progress record and state in ``folder``, or ``None`` when there is none.

    Args:
        folder: the checkpoint folder.
        state_class: the study's state class.
        fingerprint: the run's fingerprint; a record of another run is refused (``None``: any).
        first_index, end: the items of this part; the record's next item must lie between them.

    Raises:
        ValueError: an unreadable or inconsistent record, another run's record, a damaged state
            file; each names the file and the fix.
    """
    progress_path = folder / PROGRESS_FILE
    if not progress_path.exists():
        return None
    fix = _fix(progress_path)
    try:
        progress = json.loads(progress_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{progress_path} is not a readable progress record ({exc}); {fix}") from None
    if not isinstance(progress, dict) or not {"next_index", "state_file", "state_meta"} <= set(progress):
        raise ValueError(f"{progress_path} lacks next_index, state_file or state_meta: not a progress record; {fix}")
    next_index, state_path = progress["next_index"], folder / str(progress["state_file"])
    in_range = isinstance(next_index, int) and first_index <= next_index and (end is None or next_index <= end)
    if not in_range or state_path.name != state_file_name(next_index if isinstance(next_index, int) else -1) \
            or progress.get("first_index") != first_index:
        raise ValueError(f"{progress_path} says next_index={next_index!r} from {progress.get('first_index')!r} "
                         f"but its state is {state_path.name} and this part starts at item {first_index}: the "
                         f"record was edited or mixed up; {fix}")
    if fingerprint is not None and progress.get("fingerprint") != fingerprint:
        raise ValueError(
            f"{folder} holds a different run ({progress.get('fingerprint')}); "
            "resume with the same model, weights, layers, dataset and image size, or use a new output folder"
        )
    try:
        state = state_class.load(state_path, progress["state_meta"])
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read the saved state {state_path} ({type(exc).__name__}: {exc}); "
                         f"the file is truncated or damaged: {fix}") from None
    return progress, state


def _save_progress(folder: Path, state: State, record: dict) -> None:
    # Each state gets a new file named by its next item; the progress record, replaced
    # atomically, names the state it belongs to. An interrupt at any point leaves a progress
    # record pointing at a complete state.
    state_file = state_file_name(record["next_index"])
    state.save(folder / state_file)
    old = folder / PROGRESS_FILE
    try:
        previous = json.loads(old.read_text()).get("state_file") if old.exists() else None
    except ValueError:
        previous = None
    atomic_write_json(old, {**record, "state_file": state_file, "state_meta": state.meta()})
    if previous and previous != state_file:
        (folder / previous).unlink(missing_ok=True)


def _check_interval(name: str, value, integer: bool) -> float | None:
    if value is None:
        return None
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 \
        or (integer and (int(value) != value or value < 1))
    if bad:
        what = "an integer >= 1" if integer else "a number of seconds >= 0 (0: after every batch)"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return float(value)


def run_pass(study: Study, *, checkpoint_dir: str | os.PathLike | None = None, resume: bool = False,
             shard: tuple[int, int] | None = None, checkpoint_seconds: float | None = None,
             checkpoint_every: int | None = None, progress: bool = True) -> Pass:
    """Run ``study`` over its items (or one shard of them) and return the :class:`Pass`.

    Args:
        study: the :class:`~dissect.runner.study.Study`.
        checkpoint_dir: folder for the resumable state (module docstring); ``None``: none.
        resume: continue from ``checkpoint_dir`` when it holds this run's checkpoint.
        shard: ``(i, n)``: only part ``i`` of ``n`` (module docstring).
        checkpoint_seconds: with ``checkpoint_dir``, the least number of seconds between two saves.
        checkpoint_every: with ``checkpoint_dir``, save every this many batches.
        progress: show a tqdm progress bar.

    Raises:
        ValueError: a bad interval or shard, a checkpoint of another run or a damaged one; and
            whatever the study raises (after the finished batches were saved).
    """
    every_s = _check_interval("checkpoint_seconds", checkpoint_seconds, integer=False)
    every_b = _check_interval("checkpoint_every", checkpoint_every, integer=True)
    n_items, batch_size = int(study.n_items), int(study.batch_size)
    fingerprint = {"kind": study.kind, **study.fingerprint(), "n_items": n_items, "batch_size": batch_size}
    first_index, end = 0, n_items
    if shard is not None:
        index, count = check_shard(shard)
        part = shard_images(n_items, batch_size, (index, count))
        first_index, end = part.start, part.stop
        fingerprint["shard"] = {"index": index, "count": count}
    state, start = study.new_state(), first_index
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None:
        ckpt.mkdir(parents=True, exist_ok=True)
        if resume:
            loaded = load_checkpoint(ckpt, type(state), fingerprint, first_index, end)
            if loaded is not None:
                start, state = int(loaded[0]["next_index"]), loaded[1]

    timings = {"prepare": 0.0, "forward": 0.0, "scoring": 0.0}
    t_start = time.perf_counter()
    if start < end:
        study.begin(state, range(start, end))
    timings["prepare"] = time.perf_counter() - t_start
    saves = {"last": None, "through": start, "saved": start if start > first_index else None,
             "at": time.perf_counter(), "batches": 0}

    def save() -> None:
        """Write the state of every batch counted in so far."""
        _save_progress(ckpt, state, {"kind": study.kind, "fingerprint": fingerprint, "first_index": first_index,
                                     "next_index": saves["through"], "complete": saves["through"] >= end})
        saves["saved"], saves["at"], saves["batches"] = saves["through"], time.perf_counter(), 0

    def due(stop: int) -> bool:
        if stop >= end:
            return True
        if every_s is not None and time.perf_counter() - saves["at"] >= every_s:
            return True
        return every_b is not None and saves["batches"] >= every_b

    bar = tqdm(total=end - first_index, initial=start - first_index, desc=study.desc, unit=study.unit,
               disable=not progress, dynamic_ncols=True)

    def land(job, batch, output, stop: int) -> None:
        """Count a scored batch in (once, also if called again); save when one is due."""
        seconds = job.result()  # its scores are in the state already
        if job is not saves["last"]:  # batches land in order: only the last one can come twice
            saves["last"] = job
            study.release(batch, output)
            timings["scoring"] += seconds
            bar.update(stop - saves["through"])
            saves["through"] = stop
            saves["batches"] += 1
        if ckpt is not None and (saves["saved"] is None or saves["saved"] < stop) and due(stop):
            save()

    def scored(batch, output) -> float:
        t0 = time.perf_counter()
        study.score(state, batch, output)
        return time.perf_counter() - t0

    # ``pending`` holds the batch in the scoring thread until it is counted in (land).
    pending = None
    index = start
    try:
        with study.running(), \
                ThreadPoolExecutor(1, thread_name_prefix=f"{study.kind}-load") as loader, \
                ThreadPoolExecutor(1, thread_name_prefix=f"{study.kind}-score") as scorer:
            if index < end:  # the model waits for this one
                loading = loader.submit(study.load, range(index, min(index + batch_size, end)), True)
            try:
                while index < end:
                    batch = loading.result()
                    stop = min(index + batch_size, end)
                    if stop < end:
                        loading = loader.submit(study.load, range(stop, min(stop + batch_size, end)), False)
                    t0 = time.perf_counter()
                    output = study.forward(batch)
                    timings["forward"] += time.perf_counter() - t0
                    if pending is not None:
                        land(*pending)
                        pending = None  # counted in: nothing left for the except branch to land
                    pending = (scorer.submit(scored, batch, output), batch, output, stop)
                    index = stop
                if pending is not None:
                    land(*pending)
                    pending = None
            except BaseException:
                # Keep the batch being scored when the run stopped (Ctrl-C, a bad image further
                # on) and save every batch counted in: finished work is never thrown away. A
                # batch that failed while scoring left the state partly updated: then nothing
                # is saved, and the checkpoint stays at the last save.
                failed = pending is not None and pending[0].exception() is not None  # waits for it
                if pending is not None and not failed:
                    land(*pending)
                last = saves["saved"] if saves["saved"] is not None else first_index
                if ckpt is not None and not failed and last < saves["through"]:
                    save()
                raise
    finally:
        bar.close()
    if ckpt is not None and saves["saved"] is None:  # nothing to do (an empty shard): still leave a state
        save()

    info = {**study.info(), "resumed_from_image": start,
            "timings_s": {**{k: round(v, 4) for k, v in timings.items()},
                          "total": round(time.perf_counter() - t_start, 4)}}
    if shard is not None:
        info["shard"] = {"index": fingerprint["shard"]["index"], "count": fingerprint["shard"]["count"],
                         "images": [first_index, end]}
        if ckpt is not None:
            atomic_write_json(ckpt / SHARD_FILE, {"kind": study.kind, "fingerprint": fingerprint, "info": info,
                                                  "complete": True})
    return Pass(study.kind, state, info, fingerprint, complete=True)

