"""Overhead of `--ray` (a local cluster, N one-CPU workers) against one process, same dissection.

    python bench/ray_overhead.py --data-root ../shared/data/osie --images 64 --repeats 3

Runs, interleaved and repeated, the command line a user would type:

    cli.py dissect --dataset osie --data-root ROOT --layers conv4_1:conv5_3 --weights random --max-images N
    cli.py dissect ... --ray --shards W --ray-cpus 1             (a local cluster started by the command)

each as a fresh process (start-up included: Python, torch, Ray, model, dataset), and reports the
median wall time of each, their ratio, the per-image forward and scoring cost of the single
process (from its run.json), the Ray run's cluster start-up + merge time (wall minus the slowest
shard task), and checks that both runs wrote the same CSV bytes. Random weights (no ImageNet
download here): timings do not depend on the weights' values. A shared machine is noisy: read
the medians and the spread, not one run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(argv: list[str], out: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "cli.py"), *argv, "--out", str(out), "--no-progress"], check=True,
                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "osie"))
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--layers", default="conv4_1:conv5_3")
    parser.add_argument("--json", help="write the raw numbers here")
    args = parser.parse_args()
    base = ["dissect", "--model", "vgg16", "--weights", "random", "--dataset", "osie", "--data-root", args.data_root,
            "--layers", args.layers, "--max-images", str(args.images)]
    ray = ["--ray", "--shards", str(args.workers), "--ray-cpus", "1"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for r in range(args.repeats):
            order = [("single", []), ("ray", ray)] if r % 2 == 0 else [("ray", ray), ("single", [])]
            for name, extra in order:
                out = tmp / f"{name}-{r}"
                wall = _run(base + extra, out)
                run = json.loads((out / "run.json").read_text())
                row = {"repeat": r, "kind": name, "wall_s": round(wall, 2)}
                if name == "single":
                    n = run["n_images"]
                    row.update(forward_s_per_image=round(run["timings_s"]["forward"] / n, 4),
                               scoring_s_per_image=round(run["timings_s"]["scoring"] / n, 4),
                               engine_s=run["timings_s"]["total"])
                else:
                    tasks = run["ray"]["tasks"]
                    row.update(driver_ray_s=run["ray"]["wall_s"], slowest_task_s=max(t["wall_s"] for t in tasks),
                               tasks_s=[t["wall_s"] for t in tasks])
                rows.append(row)
                print(json.dumps(row), flush=True)
            same = all((tmp / f"single-{r}" / f).read_bytes() == (tmp / f"ray-{r}" / f).read_bytes()
                       for f in ("units.csv", "summary.csv"))
            print(f"repeat {r}: CSV bytes {'identical' if same else 'DIFFER'}", flush=True)
            rows.append({"repeat": r, "kind": "check", "csv_identical": same})
    single = [x["wall_s"] for x in rows if x["kind"] == "single"]
    ray_walls = [x["wall_s"] for x in rows if x["kind"] == "ray"]
    overhead = [x["wall_s"] - x["slowest_task_s"] for x in rows if x["kind"] == "ray"]
    print(f"{args.images} OSIE images, {args.layers}, random weights, {args.repeats} interleaved repeats")
    print(f"one process   : median {statistics.median(single):.1f} s  (all {single})")
    print(f"--ray {args.workers} workers: median {statistics.median(ray_walls):.1f} s  (all {ray_walls})")
    print(f"ratio ray / single: {statistics.median(ray_walls) / statistics.median(single):.2f}; "
          f"Ray start-up + merge (wall - slowest task): median {statistics.median(overhead):.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
