"""Benchmark: what the permutation null and the bootstrap add to a dissection (issue 9's cost target).

    python bench/null_cost.py --data-root ../shared/data/osie --images 100 --repeats 3 --out runs/null-cost

Runs ``run_dissection`` on VGG16 conv4_1..conv5_3 (random weights: the cost does not depend on
the weights) over the first ``--images`` OSIE images with fixation-cluster regions, alternately
with ``null=P, bootstrap=B`` (default 100, 200) and with ``null=0, bootstrap=0``, the order
swapped on every repeat; quotes the median wall time of each and their ratio. The machine may
be shared and noisy: the medians of interleaved runs are the numbers to quote, with the load.
Wall time includes loading the images (twice with the null: once for the region bank), the
forward passes, the scoring and the tables. With ``--out``, the last run with the null writes
its ``units.csv``, ``summary.csv``, ``labels.csv``, ``run.json`` there, and ``timings.json``
holds every measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets import load_dataset  # noqa: E402
from datasets.base import first  # noqa: E402
from dissect.studies.dissection import run_dissection  # noqa: E402
from dissect.models import load_model  # noqa: E402
from dissect.reports.dissection import write_dissection_reports  # noqa: E402

LAYERS = ["conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="OSIE folder (stimuli/, fixations.mat)")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--null", type=int, default=100)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", help="folder for the tables of the last run with the null and timings.json")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    dataset = first(load_dataset("osie", args.data_root, regions="clusters"), args.images)
    model = load_model("vgg16", weights="random", seed=0)
    configs = {"with": {"null": args.null, "bootstrap": args.bootstrap}, "without": {"null": 0, "bootstrap": 0}}
    times = {name: [] for name in configs}
    result = None
    for r in range(args.repeats):
        order = ["with", "without"] if r % 2 == 0 else ["without", "with"]
        for name in order:
            t0 = time.perf_counter()
            res = run_dissection(model, LAYERS, dataset, batch_size=args.batch_size, progress=False, **configs[name])
            times[name].append(time.perf_counter() - t0)
            if name == "with":
                result = res
            print(f"repeat {r} {name:7s} {times[name][-1]:7.1f} s  {res.info['timings_s']}", flush=True)
    med = {name: statistics.median(v) for name, v in times.items()}
    ratio = med["with"] / med["without"]
    print(f"median with null={args.null}, bootstrap={args.bootstrap}: {med['with']:.1f} s; "
          f"without: {med['without']:.1f} s; ratio {ratio:.3f} (+{100 * (ratio - 1):.1f} %); "
          f"{args.images} images, load average {os.getloadavg()[0]:.1f}")
    if args.out:
        out = Path(args.out)
        write_dissection_reports(result, out, {"command": "bench/null_cost.py", "model": "vgg16",
                                               "weights": "random (seed 0)", "images": args.images})
        (out / "timings.json").write_text(json.dumps({"times_s": times, "median_s": med, "ratio": ratio,
                                                      "args": vars(args)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
