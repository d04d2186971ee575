"""Shards: split a run into disjoint parts, run them anywhere, merge them into the single run's bytes.

**The split** (:func:`shard_batches`, :func:`shard_images`). A run over ``n`` images with batch
size ``b`` has ``B = ceil(n / b)`` batches, batch ``k`` holding images ``k b .. min((k+1) b, n) - 1``
exactly as in a single run. Shard ``i`` of ``N`` (0-based) takes the contiguous batches
``floor(i B / N) .. floor((i+1) B / N) - 1``: the shards are disjoint, cover every image, differ
in size by at most one batch, and depend only on ``(n, b, N)``. Whole batches, never split,
because a forward pass over a different batch may round differently; image indices stay global
(``dataset[k]`` with the same ``k`` as a single run), so anything seeded per image is unchanged.
A shard may be empty when ``N > B``.

**Merging.** Dissections merge their accumulators (:meth:`merge` of the accumulator: integer,
order-free sums, so any state the accumulator carries merges with it) and build the tables
with the same function as a single run (:func:`dissect.dissection.result_from_accumulator`).
Per-image tables (attention, and the generic :func:`run_table_shard`) are stored losslessly per
checkpoint piece and concatenated in image order. Every merge first checks the parts:
the same run (fingerprint), the same shard count, no shard twice, none missing, all finished;
each refusal is one line naming the folders or shards.

"Same files": every CSV a single run writes is byte-identical; ``run.json`` has the same keys
and values except how the run was executed (``timings_s``, ``seconds_per_image``, ``started``,
``resumed_from_image``; in ``config``/``args``: ``out``, ``shard``, ``ray``, ``shards``,
``checkpoint_every``) and the added ``shards`` record (each part's folder, images and timings)
and, with ``--ray``, ``ray`` (cluster resources, each task's host, attempt and time). Shards
must run on the same kind of device as the single run they are compared with (a GPU forward
rounds differently from a CPU one); the merged ``device`` lists every device used.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pandas as pd

from dissect.reports import atomic_write_json

if TYPE_CHECKING:  # imported lazily at run time (the engines import this module)
    from dissect.dissection import DissectionResult
    from dissect.evaluation import EvaluationResult

__all__ = ["SHARD_FILE", "parse_shard", "shard_batches", "shard_images", "save_table", "load_table",
           "check_parts", "merge_dissections", "run_table_shard", "merge_table_shards", "merge_counts",
           "shard_folder_kind"]

SHARD_FILE = "shard.json"
# info keys of a dissection shard that describe its execution, not the run's options
_DISSECT_EXECUTION = ("timings_s", "resumed_from_image", "shard", "device", "metric")
_TABLE_FORMAT = "saliency-dissect/table"


# --------------------------------------------------------------------------- the split


def _check_shard(shard) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in shard)
    except (TypeError, ValueError):
        raise ValueError(f"shard must be a pair (i, n), got {shard!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {i}/{n} does not exist: shards are numbered 0 .. n-1 with n >= 1")
    return i, n


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (0-based ``I``) as ``(I, N)``.

    Raises:
        ValueError: not of the form ``I/N`` with ``0 <= I < N``.
    """
    parts = str(text).split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"--shard {text!r}: write I/N, e.g. 0/4 for the first of 4 shards (I counts from 0)")
    return _check_shard((int(parts[0]), int(parts[1])))


def shard_batches(n_batches: int, shard) -> range:
    """Batch numbers of shard ``(i, n)`` among ``n_batches`` batches (see the module docstring).

    ``shard`` may also be a ``range`` of batch numbers (a checkpoint piece), returned as is
    after a bounds check.
    """
    if isinstance(shard, range):
        if shard.step != 1 or shard.start < 0 or shard.stop > n_batches or shard.start > shard.stop:
            raise ValueError(f"batch range {shard} is not inside 0..{n_batches}")
        return shard
    i, n = _check_shard(shard)
    return range(i * n_batches // n, (i + 1) * n_batches // n)


def shard_images(n_images: int, batch_size: int, shard) -> range:
    """Global image indices of shard ``(i, n)`` of ``n_images`` images in batches of ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batches = shard_batches(math.ceil(n_images / batch_size), shard)
    return range(min(batches.start * batch_size, n_images), min(batches.stop * batch_size, n_images))


# --------------------------------------------------------------------------- lossless tables


def save_table(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a table column by column to ``.npz`` (exact floats, no pickle), atomically."""
    path = Path(path)
    arrays = {"__format__": np.array(_TABLE_FORMAT), "__columns__": np.array(list(frame.columns), dtype=str)}
    for k, col in enumerate(frame.columns):
        values = frame[col].to_numpy()
        if values.dtype.kind in "OUT":
            if not all(isinstance(v, str) for v in values):
                raise ValueError(f"column {col!r} mixes strings with other values; cannot store it exactly")
            values = np.array(values, dtype=str) if len(values) else np.zeros(0, dtype="<U1")
        arrays[f"c{k}"] = values
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table written by :func:`save_table`."""
    with np.load(path, allow_pickle=False) as data:
        if str(data["__format__"]) != _TABLE_FORMAT:
            raise ValueError(f"{path} is not a saliency-dissect table")
        columns = [str(c) for c in data["__columns__"]]
        return pd.DataFrame({col: (data[f"c{k}"].astype(object) if data[f"c{k}"].dtype.kind == "U"
                                   else data[f"c{k}"]) for k, col in enumerate(columns)}, columns=columns)


# --------------------------------------------------------------------------- checks


def _describe(part: dict) -> str:
    return str(part.get("name", f"shard {part['index']}"))


def _first_difference(a, b, prefix: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(dict.fromkeys([*a, *b])):
            found = _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if a == b else f"{prefix[:-1]} ({a!r} vs {b!r})"


def check_parts(parts: Sequence[dict]) -> list[dict]:
    """Check that ``parts`` are all the shards of one run; return them in shard order.

    Each part is a dict with ``name`` (for messages), ``index``, ``count``, ``fingerprint``
    (everything that must be equal) and ``complete``.

    Raises:
        ValueError: no parts, an unfinished part, parts of different runs or shard counts,
            a shard given twice (overlap) or shards missing; the message names them.
    """
    if not parts:
        raise ValueError("nothing to merge: give the shard folders (or results)")
    for part in parts:
        if not part.get("complete", True):
            raise ValueError(f"{_describe(part)} is not finished ({part.get('progress', 'incomplete')}); "
                             "rerun that shard with --resume, then merge")
    ref = parts[0]
    for part in parts[1:]:
        if part["count"] != ref["count"]:
            raise ValueError(f"{_describe(ref)} is a shard of {ref['count']} but {_describe(part)} a shard of "
                             f"{part['count']}: merge the shards of one split")
        diff = _first_difference(ref["fingerprint"], part["fingerprint"])
        if diff:
            raise ValueError(f"{_describe(ref)} and {_describe(part)} are shards of different runs: {diff}; "
                             "merge shards run with the same options")
    seen: dict[int, dict] = {}
    for part in parts:
        if part["index"] in seen:
            raise ValueError(f"overlapping shards: {_describe(seen[part['index']])} and {_describe(part)} are "
                             f"both shard {part['index']}/{part['count']}; give each shard once")
        seen[part["index"]] = part
    missing = [i for i in range(ref["count"]) if i not in seen]
    if missing:
        names = ", ".join(f"{i}/{ref['count']}" for i in missing)
        raise ValueError(f"missing shard(s) {names}; run them "
                         "(--shard I/N) and pass every shard folder")
    return [seen[i] for i in range(ref["count"])]


def merge_counts(infos: Sequence[dict], keys: Sequence[str]) -> dict:
    """Sum the count ``keys`` (integers, or dicts of integers) over ``infos``."""
    out: dict = {}
    for key in keys:
        values = [info[key] for info in infos if key in info]
        if not values:
            continue
        if isinstance(values[0], dict):
            total: dict = {}
            for v in values:
                for k, x in v.items():
                    total[k] = total.get(k, 0) + x
            out[key] = total
        else:
            out[key] = sum(values)
    return out


def _sum_timings(infos: Sequence[dict]) -> dict:
    total: dict = {}
    for info in infos:
        for key, value in (info.get("timings_s") or {}).items():
            total[key] = round(total.get(key, 0.0) + float(value), 4)
    return total


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path} ({exc}); is it a shard folder?") from None


def shard_folder_kind(folder: str | os.PathLike) -> str:
    """``"dissect"``, ``"attention"``, ... of a finished shard folder.

    Raises:
        ValueError: not a shard folder, or a shard that has not finished.
    """
    folder = Path(folder)
    if not (folder / SHARD_FILE).exists():
        progress = folder / "progress.json"
        sharded = "shard" in _read_json(progress).get("fingerprint", {}) if progress.exists() else False
        if sharded or (folder / "shard-run.json").exists():
            raise ValueError(f"{folder} is an unfinished shard (no {SHARD_FILE} yet); rerun it with --resume, "
                             "then merge")
        raise ValueError(f"{folder} is not a shard folder (no {SHARD_FILE}); pass the --out folders of "
                         "runs made with --shard I/N")
    return str(_read_json(folder / SHARD_FILE).get("kind"))


# --------------------------------------------------------------------------- dissections


def merge_dissections(items: Sequence) -> DissectionResult:
    """Merge the shards of one dissection into the result a single run gives.

    Args:
        items: :class:`dissect.dissection.DissectionResult` objects returned by
            ``run_dissection(..., shard=(i, n))``, or their ``checkpoint_dir`` folders, in any order.

    Returns:
        a ``DissectionResult`` whose ``units`` and ``summary`` equal a single run's bit for bit;
        ``info`` as a single run's, with summed counts and timings, ``resumed_from_image = 0``
        and ``shards`` (each part's images and timings).

    Raises:
        ValueError: see :func:`check_parts`; a result or folder that is not a shard.
    """
    from dissect import dissection

    parts = []
    for k, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            folder = Path(item)
            if shard_folder_kind(folder) != "dissect":
                raise ValueError(f"{folder} is not a dissection shard")
            info = _read_json(folder / SHARD_FILE)["info"]
            progress = _read_json(folder / "progress.json")
            _, acc = dissection._load_progress(folder, progress["fingerprint"], int(info["shard"]["images"][0]))
            name, complete = str(folder), bool(progress.get("complete"))
        else:
            info, acc = getattr(item, "info", {}), getattr(item, "accumulator", None)
            # A copy: merging must not change the caller's results.
            acc = type(acc).from_state_dict(acc.state_dict()) if acc is not None else None
            name, complete = f"result {k}", True
        shard = info.get("shard") if isinstance(info, dict) else None
        if not shard or acc is None:
            raise ValueError(f"{name if isinstance(item, (str, os.PathLike)) else f'item {k}'} is not a dissection "
                             "shard (run it with shard=(i, n))")
        fingerprint = {key: value for key, value in shard["fingerprint"].items() if key != "shard"}
        fingerprint["shard_batch_size"] = shard["fingerprint"]["shard"]["batch_size"]
        # and every option the run reports (top_k, threshold, ...; not its counts or timings)
        fingerprint.update({key: value for key, value in info.items()
                            if key not in shard["counts"] and key not in _DISSECT_EXECUTION})
        parts.append({"name": name, "index": shard["index"], "count": shard["count"], "complete": complete,
                      "fingerprint": fingerprint, "info": info, "acc": acc})
    parts = check_parts(parts)
    metrics = {p["info"]["metric"] for p in parts if p["info"]["metric"] is not None}
    if len(metrics) > 1:
        raise ValueError(f"shards disagree on the metric ({sorted(metrics)}): the dataset mixes images with and "
                         "without fixations")
    acc = parts[0]["acc"]
    for part in parts[1:]:
        acc.merge(part["acc"])
    infos = [p["info"] for p in parts]
    counts = merge_counts([i["shard"]["counts"] for i in infos],
                          list(dict.fromkeys(k for i in infos for k in i["shard"]["counts"])))
    info = {key: value for key, value in infos[0].items() if key != "shard"}
    info.update(counts)
    info["metric"] = metrics.pop() if metrics else None
    devices = list(dict.fromkeys(str(i.get("device")) for i in infos))
    info["device"] = devices[0] if len(devices) == 1 else ",".join(devices)  # cpu and cuda round differently
    info["resumed_from_image"] = 0
    info["timings_s"] = _sum_timings(infos)
    info["shards"] = [{"name": p["name"], "index": p["index"], "images": p["info"]["shard"]["images"],
                       "device": p["info"].get("device"),
                       "resumed_from_image": p["info"]["resumed_from_image"],
                       "timings_s": p["info"].get("timings_s")} for p in parts]
    return dissection.result_from_accumulator(acc, info)


# --------------------------------------------------------------------------- per-image tables


def run_table_shard(folder: str | os.PathLike, *, kind: str, fingerprint: dict, n_batches: int, shard,
                    compute: Callable[[range], tuple[pd.DataFrame, dict]], every: int | None = None,
                    resume: bool = False, progress: Callable[[int], None] | None = None) -> dict:
    """Run one shard of a per-image job in checkpoint pieces; the generic layer under ``attention``.

    The shard's batches (:func:`shard_batches`) are cut into pieces of ``every`` batches (default:
    the whole shard). ``compute(batch_range)`` returns ``(table, info)`` for those batches; each
    piece is saved as ``piece-LO-HI.npz`` (:func:`save_table`) and ``piece-LO-HI.json``, atomically,
    so an interrupted shard continues with ``resume=True`` from its last finished piece. A
    finished shard writes ``shard.json`` (kind, fingerprint, shard, pieces).

    Args:
        folder: the shard folder (created).
        kind: what the job is (``"attention"``, ``"evaluate"``, ...), checked by the merge.
        fingerprint: everything that identifies the run (options, model, dataset, ``batch_size``);
            JSON-able; a folder holding another run's pieces is refused.
        n_batches: batches of the whole run.
        shard: ``(i, n)``.
        compute: the job on a range of global batch numbers.
        every: batches per checkpoint piece.
        resume: continue a folder holding some pieces of this shard (else they are an error).
        progress: called with the number of batches of each finished piece.

    Returns:
        the ``shard.json`` record.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    i, n = _check_shard(shard)
    batches = shard_batches(n_batches, (i, n))
    every = max(int(every or len(batches) or 1), 1)
    key = {"kind": kind, "fingerprint": fingerprint, "shard": [i, n], "batches": [batches.start, batches.stop]}
    marker = folder / "shard-run.json"
    if marker.exists():
        old = _read_json(marker)
        if old != json.loads(json.dumps(key, default=str)):
            diff = _first_difference(old, json.loads(json.dumps(key, default=str)))
            raise ValueError(f"{folder} holds a different shard run ({diff}); use a new --out folder")
        if not resume:
            raise ValueError(f"{folder} already holds this shard; pass --resume to continue it, or use a new --out")
    else:
        atomic_write_json(marker, key)
    pieces = []
    for lo in range(batches.start, batches.stop, every):  # an empty shard has no pieces
        piece = range(lo, min(lo + every, batches.stop))
        stem = folder / f"piece-{piece.start:07d}-{piece.stop:07d}"
        if not (stem.with_suffix(".json").exists() and stem.with_suffix(".npz").exists()):
            t0 = time.perf_counter()
            table, info = compute(piece)
            info = {**info, "piece_wall_s": round(time.perf_counter() - t0, 4)}
            save_table(table, stem.with_suffix(".npz"))
            atomic_write_json(stem.with_suffix(".json"), info)  # written last: marks the piece done
        pieces.append(stem.name)
        if progress is not None:
            progress(len(piece))
    record = {**key, "pieces": pieces, "complete": True}
    atomic_write_json(folder / SHARD_FILE, record)
    return record


def merge_table_shards(folders: Sequence[str | os.PathLike], *, kind: str, count_keys: Sequence[str] = (),
                       first_nonempty_keys: Sequence[str] = ()) -> tuple[pd.DataFrame, dict, list[dict]]:
    """Concatenate the pieces of every shard of a :func:`run_table_shard` job in image order.

    Args:
        folders: the shard folders, in any order.
        kind: the job kind they must hold.
        count_keys: ``info`` keys summed over pieces (integers or dicts of integers).
        first_nonempty_keys: keys taken from the first piece where they are non-empty (lists
            that an empty piece leaves empty).

    Every other ``info`` key must be equal in every piece (else ``ValueError`` naming it), except
    ``timings_s`` (summed) and ``piece_wall_s``.

    Returns:
        ``(table, info, parts)``: the whole table, the merged info, and per shard its folder,
        index and timings.
    """
    parts = []
    for folder in folders:
        folder = Path(folder)
        found = shard_folder_kind(folder)
        if found != kind:
            raise ValueError(f"{folder} holds a {found} shard, not {kind}")
        record = _read_json(folder / SHARD_FILE)
        i, n = record["shard"]
        parts.append({"name": str(folder), "folder": folder, "index": i, "count": n,
                      "fingerprint": record["fingerprint"], "record": record, "complete": record.get("complete")})
    parts = check_parts(parts)
    tables, infos = [], []  # (parts with no pieces are empty shards: more shards than batches)
    for part in parts:
        part_infos = []
        for stem in part["record"]["pieces"]:
            tables.append(load_table(part["folder"] / f"{stem}.npz"))
            part_infos.append(_read_json(part["folder"] / f"{stem}.json"))
        infos += part_infos
        part["timings_s"] = _sum_timings(part_infos)
        part["wall_s"] = round(sum(p.get("piece_wall_s", 0.0) for p in part_infos), 4)
    if not tables:
        raise ValueError("the shards hold no images")
    table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
    info = merge_counts(infos, count_keys)
    for key in first_nonempty_keys:
        info[key] = next((i[key] for i in infos if i.get(key)), infos[0].get(key))
    skip = {"timings_s", "piece_wall_s", *count_keys, *first_nonempty_keys}
    for key in dict.fromkeys(k for i in infos for k in i):
        if key in skip:
            continue
        values = [i.get(key) for i in infos]
        if any(v != values[0] for v in values):
            raise ValueError(f"the pieces of the {kind} shards disagree on {key!r} ({values[0]!r} vs "
                             f"{next(v for v in values if v != values[0])!r}); was the code changed between shards?")
        info[key] = values[0]
    info["timings_s"] = _sum_timings(infos)
    summary = [{"name": p["name"], "index": p["index"], "batches": p["record"]["batches"],
                "timings_s": p["timings_s"], "wall_s": p["wall_s"]} for p in parts]
    return table, info, summary


# --------------------------------------------------------------------------- attention

_ATTENTION_COUNTS = ("n_images", "n_images_without_ceiling", "n_rows", "n_constant_maps", "n_nonfinite_maps",
                     "n_fixations", "n_fixations_dropped")
PARAMS_FILE = "params.json"


def _jsonable(obj):
    """Options as JSON for a fingerprint: tensors and arrays by a digest of their bytes."""
    import hashlib

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "detach"):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return f"array{list(obj.shape)} sha256:{hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest()[:16]}"
    return f"{type(obj).__name__}:{obj}"


def run_attention_shard(model, dataset, methods, folder: str | os.PathLike, shard, *, every: int | None = None,
                        resume: bool = False, params: dict | None = None, n_examples: int = 3,
                        run_key: dict | None = None, progress: bool = True, **study_options) -> dict:
    """One shard of :func:`dissect.attention_study.run_attention_study`, checkpointed in pieces.

    Writes ``folder/piece-*.{npz,json}`` (``every`` batches each, default 8), ``shard.json`` when
    done, ``params.json`` (``params``, for the merged ``run.json``) and, in shard 0,
    ``overlays.png`` (the first ``n_examples`` images of the dataset, as a single run draws them).
    ``python cli.py merge`` or :func:`merge_attention` turns the shards into a single run's files.

    Returns:
        the ``shard.json`` record.
    """
    from tqdm.auto import tqdm

    from dissect import attention_study
    from dissect.dissection import _fingerprint

    i, n = _check_shard(shard)
    batch_size = int(study_options.get("batch_size", 4))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    methods = [methods] if isinstance(methods, str) else list(methods)
    fingerprint = _jsonable({**_fingerprint([], dataset, study_options.get("image_size", 224), model, run_key),
                             "n_images": len(dataset), "methods": methods,
                             "study_options": {"batch_size": batch_size, **study_options}})
    pool = attention_study.fixation_pool(dataset)
    n_batches = math.ceil(len(pool[1]) / batch_size)
    mine = shard_batches(n_batches, (i, n))
    bar = tqdm(total=len(mine), desc=f"attention shard {i}/{n}", unit="batch", disable=not progress,
               dynamic_ncols=True)

    def compute(piece: range):
        per_image, _, info = attention_study.run_attention_study(model, dataset, methods, shard=piece, pool=pool,
                                                                 progress=False, **study_options)
        seconds = info.pop("seconds_per_image")
        info["timings_s"].update({f"method:{m}": round(s * info["n_images"], 6) for m, s in seconds.items()})
        return per_image, info

    try:
        record = run_table_shard(folder, kind="attention", fingerprint=fingerprint, n_batches=n_batches,
                                 shard=(i, n), compute=compute, every=every or 8, resume=resume,
                                 progress=bar.update)
    finally:
        bar.close()
    atomic_write_json(folder / PARAMS_FILE, params or {})
    if i == 0 and n_examples > 0:  # the merge draws overlays.png from these and the merged table
        from dissect.attention_report import overlay_examples

        examples = overlay_examples(model, dataset, methods, n_examples, study_options)
        if examples is not None:
            from dissect.reports import figure_subtitle

            model_info = getattr(model, "dissect_info", None) or (params or {}).get("model")
            examples["subtitle"] = figure_subtitle(model_info, getattr(dataset, "name", None))
            with open(folder / _EXAMPLES_FILE, "wb") as handle:
                pickle.dump(examples, handle)
    return record


_EXAMPLES_FILE = "overlay_examples.pkl"


def merge_attention(folders: Sequence[str | os.PathLike]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """``(per_image, summary, info)`` of the whole run from its attention shard folders."""
    from probes.gaze import summarize_gaze

    per_image, info, parts = merge_table_shards(folders, kind="attention", count_keys=_ATTENTION_COUNTS,
                                                first_nonempty_keys=("dense_layers",))
    timings = info["timings_s"]
    n = max(info["n_images"], 1)
    info["seconds_per_image"] = {m: round(timings.pop(f"method:{m}", 0.0) / n, 6) for m in info["methods"]}
    info["shards"] = parts
    return per_image, summarize_gaze(per_image), info


def write_attention_merge(folders: Sequence[str | os.PathLike], out: str | os.PathLike,
                          params: dict | None = None) -> dict[str, Path]:
    """Write the files of a single ``attention`` run (as ``write_attention_report``) from its shards."""
    from dissect.reports import check_writable, figure_subtitle, with_model_columns
    from probes.attention_figures import dense_layer_mae

    per_image, summary, info = merge_attention(folders)
    out = check_writable(out)
    first = Path(info["shards"][0]["name"])
    if params is None:
        params = _read_json(first / PARAMS_FILE) if (first / PARAMS_FILE).exists() else {}
    paths = {"per_image": out / "per_image.csv", "summary": out / "summary.csv", "run": out / "run.json"}
    model_info = params.get("model")
    with_model_columns(per_image, model_info).to_csv(paths["per_image"], index=False)
    with_model_columns(summary, model_info).to_csv(paths["summary"], index=False)
    atomic_write_json(paths["run"], {**params, **info})
    subtitle = figure_subtitle(model_info, params.get("dataset"))
    examples = [Path(f) / _EXAMPLES_FILE for f in folders if (Path(f) / _EXAMPLES_FILE).exists()]
    if examples:  # written by shard 0 only
        from dissect.attention_report import draw_overlays

        with open(examples[0], "rb") as handle:
            drawn = pickle.load(handle)
        paths["overlays"] = draw_overlays(drawn, per_image, info, out / "overlays.png", drawn.pop("subtitle"))
    if "dense" in info["methods"]:
        paths["dense_mae"] = dense_layer_mae(per_image, out / "dense_mae.png",
                                             title=f"dense: MAE per layer\n{subtitle}")
    return paths


# --------------------------------------------------------------------------- evaluate

# counts summed over pieces; maps_resized is stored flat as {"<model>|<shape>": count}
_EVALUATE_COUNTS = ("n_images", "n_images_without_ceiling", "n_constant_maps", "maps_resized_counts")
_RESIZE_METHOD = "bilinear, half-pixel centres (align_corners=False)"


def run_evaluation_shard(dataset, sources, folder: str | os.PathLike, shard, *, every: int | None = None,
                         resume: bool = False, params: dict | None = None, run_key: dict | None = None,
                         progress: bool = True, **options) -> dict:
    """One shard of :func:`dissect.evaluation.run_evaluation`, checkpointed in pieces.

    The split is over the scored images (one image = one "batch" of :func:`shard_batches`), by
    their global position, so every row is the single run's. Each piece (``every`` images,
    default: the whole shard; pass 1 over the dataset runs once per piece, and once more to
    count the images) is stored as ``piece-LO-HI.npz`` + ``.json``, with its region scores
    (``regions-LO-HI.npz``, for ``output_saliency.csv``) and example maps
    (``examples-LO-HI.pkl``, the dataset's first images only). ``params`` go to ``params.json``.
    ``python cli.py merge`` or :func:`write_evaluation_merge` writes the single run's files.

    Returns:
        the ``shard.json`` record.
    """
    from tqdm.auto import tqdm

    from datasets.base import first
    from dissect.evaluation import run_evaluation

    i, n = _check_shard(shard)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sources = list(sources)
    data = first(dataset, options.pop("max_images", None))
    # images scored = images with fixations (or every pop-out array); counted like run_evaluation
    probe = run_evaluation(data, sources, **{**options, "save_maps": None}, progress=False, shard=range(0, 0))
    n_scored = len(data) - probe.info["n_images_skipped_empty"]
    fingerprint = _jsonable({"run_key": run_key or {}, "n_images": len(data), "n_scored": n_scored,
                             "dataset": getattr(dataset, "name", None),
                             "models": {s.name: {"kind": s.kind, "weights": s.weights, **s.info} for s in sources},
                             "options": {k: v for k, v in options.items() if k != "save_maps"}})
    bar = tqdm(total=len(shard_batches(n_scored, (i, n))), desc=f"evaluate shard {i}/{n}", unit="img",
               disable=not progress, dynamic_ncols=True)

    def compute(piece: range):
        result = run_evaluation(data, sources, **options, progress=False, shard=piece)
        stem = folder / f"piece-{piece.start:07d}-{piece.stop:07d}"
        if result.regions:
            save_table(pd.concat(result.regions, ignore_index=True), stem.with_name(f"regions{stem.name[5:]}.npz"))
        if result.examples.get("image_id"):
            with open(stem.with_name(f"examples{stem.name[5:]}.pkl"), "wb") as handle:
                pickle.dump(result.examples, handle)
        info = dict(result.info)
        seconds = info.pop("seconds_per_image")
        info["timings_s"] = {**{f"model:{m}": s * info["n_images"] for m, s in seconds.items()},
                             "total": info.pop("seconds_total")}
        info["maps_resized_counts"] = {f"{name}|{shape}": count for name, detail in info.pop("maps_resized").items()
                                       for shape, count in detail["from_shapes"].items()}
        if info["n_images_without_ceiling"] is None:
            del info["n_images_without_ceiling"]
        return result.per_image, info

    try:
        record = run_table_shard(folder, kind="evaluate", fingerprint=fingerprint, n_batches=n_scored,
                                 shard=(i, n), compute=compute, every=every, resume=resume,
                                 progress=bar.update)
    finally:
        bar.close()
    atomic_write_json(folder / PARAMS_FILE, params or {})
    return record


def merge_evaluation(folders: Sequence[str | os.PathLike]) -> EvaluationResult:
    """The :class:`dissect.evaluation.EvaluationResult` of the whole run from its shard folders."""
    from dissect import evaluation

    per_image, info, parts = merge_table_shards(folders, kind="evaluate", count_keys=_EVALUATE_COUNTS)
    regions, examples = [], {}
    for part in parts:
        folder = Path(part["name"])
        for stem in _read_json(folder / SHARD_FILE)["pieces"]:
            tail = stem[5:]
            if (folder / f"regions{tail}.npz").exists():
                regions.append(load_table(folder / f"regions{tail}.npz"))
            if (folder / f"examples{tail}.pkl").exists():
                with open(folder / f"examples{tail}.pkl", "rb") as handle:
                    ex = pickle.load(handle)
                if not examples:
                    examples = ex
                else:
                    for key in ("image_id", "image", "human"):
                        examples[key] += ex[key]
                    for name, maps in ex["maps"].items():
                        examples["maps"][name] += maps
    resized: dict = {}
    for key, count in info.pop("maps_resized_counts", {}).items():
        name, shape = key.rsplit("|", 1)
        resized.setdefault(name, {})[shape] = count
    timings = info.pop("timings_s")
    n = max(info["n_images"], 1)
    merged = {  # the key order of a single run's info
        "metrics": info["metrics"], "mode": info["mode"], "n_images": info["n_images"],
        "n_images_skipped_empty": info["n_images_skipped_empty"],
        "n_images_without_ceiling": info.get("n_images_without_ceiling"),
        "grayscale_images": info["grayscale_images"],
        "maps_resized": {name: {"n_images": sum(v.values()), "from_shapes": v, "method": _RESIZE_METHOD}
                         for name, v in resized.items()},
        "n_constant_maps": info["n_constant_maps"],
        "seconds_per_image": {m: timings.get(f"model:{m}", 0.0) / n for m in info["models"]},
        **{k: v for k, v in info.items() if k not in ("metrics", "mode", "n_images", "n_images_skipped_empty",
                                                      "n_images_without_ceiling", "grayscale_images",
                                                      "n_constant_maps")},
        "seconds_total": timings.get("total", 0.0), "shards": parts}
    metric_cols = list(merged["metrics"])
    popout = "popout" in merged["mode"]
    return evaluation.EvaluationResult(
        per_image, evaluation.summarize(per_image, metric_cols), merged,
        evaluation._per_dimension(per_image) if popout else None,
        evaluation._output_saliency(regions) if regions else None, examples, regions)


def write_evaluation_merge(folders: Sequence[str | os.PathLike], out: str | os.PathLike,
                           params: dict | None = None) -> dict[str, Path]:
    """Write the files of a single ``evaluate`` run (``write_evaluation_report``) from its shards."""
    from dissect.evaluation_report import write_evaluation_report

    result = merge_evaluation(folders)
    if params is None:
        first = Path(result.info["shards"][0]["name"])
        params = _read_json(first / PARAMS_FILE) if (first / PARAMS_FILE).exists() else {}
    return write_evaluation_report(result, out, params)
