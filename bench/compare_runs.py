"""Compare two folders written by ``bench/reference_runs.py`` (e.g. before and after a refactor).

    python bench/compare_runs.py refs/before refs/after [--pairs]

For every run folder of the first: each CSV must be byte-identical (columns that time the run,
``seconds`` and ``seconds_mean``, are compared apart, since two runs of the same code differ
there); ``run.json`` must be equal after dropping what describes the execution (timings,
versions, start time) and mapping the first folder's path onto the second's; ``.pt``
checkpoints must hold equal tensors; PNG figures and console logs are compared and reported
(informational). ``--pairs`` also checks, inside each folder, that merged shards, Ray and a
killed-then-resumed run equal the single run. Exit status 1 when a CSV, run.json or checkpoint
differs.
"""
from __future__ import annotations

import argparse
import io
import json
import re
import sys
from pathlib import Path

import pandas as pd

TIMING_COLUMNS = ("seconds", "seconds_mean")
EXECUTION_KEYS = ("timings_s", "versions", "started", "seconds_per_image", "seconds_total", "piece_wall_s", "wall_s",
                  "seconds", "ray")
# A checkpoint's digest names its bytes, and last.pt keeps the global torch RNG state, which two runs of
# the same code leave differently (seen between two runs of the same commit): digests of checkpoints
# written by the run itself are masked, and the RNG state is not compared.
_RUN_DIGEST = re.compile(r"(ROOT\S*?\.pt) sha256:[0-9a-f]+")
# run folders whose files are compared; shard folders hold each version's own checkpoint format
SHARD_PREFIXES = ("dissect-popout-s", "attention-s", "evaluate-s")
# (single run, runs that must equal it) inside one reference folder
PAIRS = (("dissect-popout", ("dissect-popout-merged", "dissect-popout-ray")),
         ("dissect-osie", ("dissect-osie-resumed",)),
         ("attention-osie", ("attention-merged", "attention-merged-resumed")),
         ("evaluate-osie", ("evaluate-merged",)))
# keys that say how a merged, Ray or resumed run was executed
RUN_KEYS = ("shards", "ray", "resumed_from_image")
CONFIG_KEYS = ("out", "shard", "ray", "shards", "resume", "checkpoint_every", "checkpoint_seconds", "overwrite")


def _strip(obj, keys):
    if isinstance(obj, dict):
        return {k: _strip(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [_strip(v, keys) for v in obj]
    return obj


def _json(path: Path, root: Path, keys=EXECUTION_KEYS):
    text = _RUN_DIGEST.sub(r"\1 sha256:RUN", path.read_text().replace(str(root), "ROOT"))
    return _strip(json.loads(text), keys)


def _first_difference(a, b, where="") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in dict.fromkeys([*a, *b]):
            if key not in a or key not in b:
                return f"{where}{key}: only in {'first' if key in a else 'second'}"
            found = _first_difference(a[key], b[key], f"{where}{key}.")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for k, (x, y) in enumerate(zip(a, b)):
            found = _first_difference(x, y, f"{where}{k}.")
            if found:
                return found
        return None
    return None if a == b else f"{where[:-1]}: {str(a)[:120]!r} vs {str(b)[:120]!r}"


def _csv(a: Path, b: Path, root_a: Path, root_b: Path) -> str:
    if a.read_bytes() == b.read_bytes():
        return "identical"
    texts = [_RUN_DIGEST.sub(r"\1 sha256:RUN", p.read_text().replace(str(r), "ROOT")) for p, r in ((a, root_a), (b, root_b))]
    if texts[0] == texts[1]:
        return "identical except the run's own paths and checkpoint digests"
    x, y = (pd.read_csv(io.StringIO(t), dtype=str, keep_default_na=False) for t in texts)
    if list(x.columns) != list(y.columns) or len(x) != len(y):
        return f"DIFFERENT (columns or rows: {list(x.columns)} {len(x)} vs {list(y.columns)} {len(y)})"
    keep = [c for c in x.columns if c not in TIMING_COLUMNS]
    if x[keep].equals(y[keep]):
        return "identical except timing columns"
    bad = [c for c in keep if not x[c].equals(y[c])]
    return f"DIFFERENT in columns {bad}"


def _checkpoint(a: Path, b: Path) -> str:
    import torch

    x, y = (torch.load(io.BytesIO(p.read_bytes()), weights_only=True, map_location="cpu") for p in (a, b))

    def same(u, v) -> bool:
        if isinstance(u, torch.Tensor):
            return isinstance(v, torch.Tensor) and u.dtype == v.dtype and u.shape == v.shape and bool((u == v).all())
        if isinstance(u, dict):
            return isinstance(v, dict) and set(u) == set(v) and all(same(u[k], v[k]) for k in u
                                                                     if k not in ("torch_rng", "seconds"))
        if isinstance(u, (list, tuple)):
            return isinstance(v, (list, tuple)) and len(u) == len(v) and all(same(p, q) for p, q in zip(u, v))
        return True  # strings and numbers may name paths or times; tensors carry the numbers
    return "identical tensors" if same(x, y) else "DIFFERENT tensors"


def compare_folder(a: Path, b: Path, root_a: Path, root_b: Path, keys=EXECUTION_KEYS,
                   skip: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    rows = []
    for path in sorted(a.rglob("*")):
        rel = path.relative_to(a)
        if path.is_dir() or any(part.startswith(".") or part in skip for part in rel.parts):
            continue
        other = b / rel
        if path.suffix in (".csv", ".json", ".png", ".pt") and not other.exists():
            rows.append((str(rel), "MISSING in second"))
            continue
        if path.suffix == ".csv":
            rows.append((str(rel), _csv(path, other, root_a, root_b)))
        elif path.name == "run.json" or path.name == "study.json":
            diff = _first_difference(_json(path, root_a, keys), _json(other, root_b, keys))
            rows.append((str(rel), "equal (execution keys aside)" if diff is None else f"DIFFERENT: {diff}"))
        elif path.suffix == ".png":
            rows.append((str(rel), "identical" if path.read_bytes() == other.read_bytes() else "differs (figure)"))
        elif path.suffix == ".pt":
            rows.append((str(rel), _checkpoint(path, other)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("--pairs", action="store_true", help="also compare merged/Ray/resumed runs with the single run")
    args = parser.parse_args()
    first, second = Path(args.first).resolve(), Path(args.second).resolve()
    bad = 0
    for run in sorted(p for p in first.iterdir() if p.is_dir()):
        if run.name.startswith(SHARD_PREFIXES) and not run.name.endswith(("merged", "merged-resumed")):
            continue
        print(f"== {run.name}")
        for name, verdict in compare_folder(run, second / run.name, first, second):
            bad += verdict.startswith(("DIFFERENT", "MISSING"))
            print(f"   {name:48s} {verdict}")
    for log in sorted(first.glob("*.log")):
        other = second / log.name
        same = other.exists() and log.read_text().replace(str(first), "ROOT") == other.read_text().replace(
            str(second), "ROOT")
        print(f"   console {log.name:40s} {'identical' if same else 'differs'}")
    if args.pairs:
        for root in (first, second):
            for single, others in PAIRS:
                for name in others:
                    if not (root / name).exists():
                        continue
                    print(f"== {root.name}: {single} vs {name}")
                    for rel, verdict in compare_folder(root / single, root / name, root, root,
                                                       EXECUTION_KEYS + RUN_KEYS + CONFIG_KEYS, skip=("stats",)):
                        bad += verdict.startswith(("DIFFERENT", "MISSING"))
                        print(f"   {rel:48s} {verdict}")
    print("all CSV files, run.json and checkpoints agree" if not bad else f"{bad} difference(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
