"""Shards: how a run's items are split into parts, and the check that parts make one whole run.

**The split** (:func:`shard_batches`, :func:`shard_images`). A run over ``n`` items with batch
size ``b`` has ``B = ceil(n / b)`` batches, batch ``k`` holding items ``k b .. min((k+1) b, n) - 1``
exactly as in a single run. Shard ``i`` of ``N`` (0-based) takes the contiguous batches
``floor(i B / N) .. floor((i+1) B / N) - 1``: the shards are disjoint, cover every item, differ
in size by at most one batch, and depend only on ``(n, b, N)``. Whole batches, never split,
because a forward pass over a different batch may round differently; item indices stay global,
so anything seeded per item is unchanged. A shard may be empty when ``N > B``.
"""
from __future__ import annotations

import math
from typing import Sequence

__all__ = ["check_shard", "parse_shard", "shard_batches", "shard_images", "check_parts", "first_difference",
           "merge_counts", "sum_timings"]


def check_shard(shard) -> tuple[int, int]:
    """``shard`` as a pair ``(i, n)`` with ``0 <= i < n``, else one-line ``ValueError``."""
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
    return check_shard((int(parts[0]), int(parts[1])))


def shard_batches(n_batches: int, shard) -> range:
    """Batch numbers of shard ``(i, n)`` among ``n_batches`` batches (see the module docstring)."""
    i, n = check_shard(shard)
    return range(i * n_batches // n, (i + 1) * n_batches // n)


def shard_images(n_images: int, batch_size: int, shard) -> range:
    """Global item indices of shard ``(i, n)`` of ``n_images`` items in batches of ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batches = shard_batches(math.ceil(n_images / batch_size), shard)
    return range(min(batches.start * batch_size, n_images), min(batches.stop * batch_size, n_images))


def first_difference(a, b, prefix: str = "") -> str | None:
    """The first key path where two nested dicts differ, as ``"key.sub (a vs b)"``, or ``None``."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(dict.fromkeys([*a, *b])):
            found = first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if a == b else f"{prefix[:-1]} ({a!r} vs {b!r})"


def _describe(part: dict) -> str:
    return str(part.get("name", f"shard {part['index']}"))


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
        diff = first_difference(ref["fingerprint"], part["fingerprint"])
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
    """Sum the count ``keys`` (numbers, or dicts of numbers) over ``infos``, in ``keys`` order."""
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


def sum_timings(timings: Sequence[dict]) -> dict:
    """Seconds summed key by key over several ``timings_s`` records (rounded to 0.1 ms)."""
    total: dict = {}
    for record in timings:
        for key, value in (record or {}).items():
            total[key] = round(total.get(key, 0.0) + float(value), 4)
    return total
