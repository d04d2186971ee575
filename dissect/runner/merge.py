"""Merge the shards of one run into the state and info of a single pass, bit for bit.

The parts are checked first (:func:`dissect.runner.shards.check_parts`: the same run, the same
shard count, no shard twice, none missing, all finished; each refusal names the folders or
shards), then their states are merged in shard order (:meth:`State.merge`: exact) and the
study's :meth:`~dissect.runner.study.Study.finish` builds the tables a single run builds.

"The single run's files": every CSV is byte-identical; ``run.json`` has the same keys and values
except how the run was executed (``timings_s``, ``started``, ``resumed_from_image``; the study's
``execution_keys`` such as ``device``, which list every value the parts used) and the added
``shards`` record (each part's folder, items and timings).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from dissect.runner.folders import read_json
from dissect.runner.passes import PROGRESS_FILE, SHARD_FILE, Pass, load_checkpoint
from dissect.runner.registry import study_class
from dissect.runner.shards import check_parts, sum_timings

__all__ = ["read_shard_record", "shard_folder_kind", "read_part", "merge_passes", "merge_folders"]

_RUN_FACTS = ("resumed_from_image", "timings_s", "shard")


def read_shard_record(folder: str | os.PathLike) -> dict:
    """A finished shard folder's ``shard.json``.

    Raises:
        ValueError: not a shard folder, or a shard that has not finished (one line naming it).
    """
    folder = Path(folder)
    if not (folder / SHARD_FILE).exists():
        sharded = False
        if (folder / PROGRESS_FILE).exists():
            sharded = "shard" in read_json(folder / PROGRESS_FILE, "is it a shard folder?").get("fingerprint", {})
        if sharded:
            raise ValueError(f"{folder} is an unfinished shard (no {SHARD_FILE} yet); rerun it with --resume, "
                             "then merge")
        raise ValueError(f"{folder} is not a shard folder (no {SHARD_FILE}); pass the --out folders of "
                         "runs made with --shard I/N")
    record = read_json(folder / SHARD_FILE, "is it a shard folder?")
    if not isinstance(record, dict) or not {"kind", "fingerprint", "info"} <= set(record):
        raise ValueError(f"{folder / SHARD_FILE} lacks kind, fingerprint or info: not a shard record; run the "
                         "shard again into a new folder")
    return record


def shard_folder_kind(folder: str | os.PathLike) -> str:
    """``"dissect"``, ``"attention"``, ... of a finished shard folder (errors as :func:`read_shard_record`)."""
    return str(read_shard_record(folder)["kind"])


def read_part(folder: str | os.PathLike) -> Pass:
    """The :class:`Pass` a finished shard folder holds (its study must be registered)."""
    folder = Path(folder)
    record = read_shard_record(folder)
    cls = study_class(str(record["kind"]))
    try:
        first = int(record["info"]["shard"]["images"][0])
    except (KeyError, TypeError, ValueError, IndexError):
        raise ValueError(f"{folder / SHARD_FILE} does not say which items the shard holds; run it again") from None
    loaded = load_checkpoint(folder, cls.State, None, first)
    if loaded is None:
        raise ValueError(f"{folder} holds no state ({PROGRESS_FILE} is missing); run the shard again")
    progress, state = loaded
    return Pass(cls.kind, state, record["info"], record["fingerprint"],
                complete=bool(progress.get("complete")) and bool(record.get("complete")), name=str(folder))


def _comparable(part: Pass, execution: Sequence[str]) -> dict:
    """What must be equal between the parts: the fingerprint without the shard, and every option
    the part reports (its info without counts of how it ran)."""
    fingerprint = {k: v for k, v in part.fingerprint.items() if k != "shard"}
    options = {k: v for k, v in part.info.items() if k not in _RUN_FACTS and k not in execution}
    return {**fingerprint, **{k: v for k, v in options.items() if k not in fingerprint}}


def merge_passes(parts: Sequence[Pass]) -> Pass:
    """Merge the :class:`Pass` of every shard of one run (any order) into a single run's.

    The first part's state is merged into (pass copies to keep the originals).

    Returns:
        a :class:`Pass` whose ``info`` is a single run's, with ``resumed_from_image = 0``,
        summed ``timings_s`` and ``shards`` (each part's name, index, images, execution keys,
        ``resumed_from_image`` and timings).

    Raises:
        ValueError: parts of several studies, or see :func:`check_parts`.
    """
    kinds = sorted({p.kind for p in parts})
    if len(kinds) > 1:
        raise ValueError(f"these parts hold shards of different commands: {kinds}")
    execution = study_class(kinds[0]).execution_keys if kinds else ()
    checked = []
    for k, part in enumerate(parts):
        shard = part.info.get("shard") if isinstance(part.info, dict) else None
        if not shard:
            raise ValueError(f"{part.name or f'item {k}'} is not a shard (run it with shard=(i, n))")
        checked.append({"name": part.name or f"result {k}", "index": shard["index"], "count": shard["count"],
                        "complete": part.complete, "fingerprint": _comparable(part, execution), "part": part})
    ordered = [c["part"] for c in check_parts(checked)]
    state = ordered[0].state
    for part in ordered[1:]:
        state.merge(part.state)
    info = {k: v for k, v in ordered[0].info.items() if k != "shard"}
    for key in execution:
        values = list(dict.fromkeys(str(p.info.get(key)) for p in ordered))
        if key in info:
            info[key] = values[0] if len(values) == 1 else ",".join(values)
    info["resumed_from_image"] = 0
    info["timings_s"] = sum_timings([p.info.get("timings_s") for p in ordered])
    info["shards"] = [{"name": p.name, "index": p.info["shard"]["index"], "images": p.info["shard"]["images"],
                       **{key: p.info.get(key) for key in execution},
                       "resumed_from_image": p.info.get("resumed_from_image"),
                       "timings_s": p.info.get("timings_s")} for p in ordered]
    fingerprint = {k: v for k, v in ordered[0].fingerprint.items() if k != "shard"}
    return Pass(ordered[0].kind, state, info, fingerprint, complete=True)


def merge_folders(folders: Sequence[str | os.PathLike]) -> tuple[type, Pass]:
    """``(study class, merged Pass)`` of the shard folders of one run (any order)."""
    folders = [Path(f) for f in folders]
    kinds = {str(f): shard_folder_kind(f) for f in folders}
    if len(set(kinds.values())) > 1:
        raise ValueError(f"these folders hold shards of different commands: {kinds}")
    merged = merge_passes([read_part(f) for f in folders])
    return study_class(merged.kind), merged
