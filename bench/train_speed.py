"""Training steps per second with and without the frozen-prefix cache (K = 0, 1, 3).

OSIE-sized data: 800 x 600 images and fixation maps (synthetic: random pixels, ~150 fixated
pixels per image; the step cost does not depend on the content), 224 x 224 network input,
random VGG16 weights. Interleaves the compared settings, repeats, and prints medians and ratios
of the per-step wall time (the cache fill is timed separately: it is paid once per run).

    python bench/train_speed.py --batch-size 20 --steps 3 --repeats 3

The machine is shared: quote the medians with that caveat.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.base import ListDataset, Sample  # noqa: E402
from dissect.training import TrainConfig, split_dataset, train_saliency  # noqa: E402


def osie_like(n: int, seed: int = 0) -> ListDataset:
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        img = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
        fix = np.zeros((600, 800), bool)
        fix[rng.integers(0, 600, 150), rng.integers(0, 800, 150)] = True
        samples.append(Sample(f"b{i:03d}", img, np.zeros((0, 600, 800), bool), [], fixation_map=fix))
    return ListDataset(samples, "osie-like")


def step_seconds(train, val, k: int, cache: str, steps: int, batch: int) -> tuple[float, float]:
    """Median seconds per training step (from train_log.csv), and the cache fill time."""
    import json

    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(finetune=k, encoder_weights="random", steps=steps + 1, batch_size=batch,
                          eval_every=10 ** 6, cache=cache, progress=False)
        paths = train_saliency(train, val, tmp, cfg)
        seconds = pd.read_csv(paths["train_log"])["seconds"].to_numpy()
        per_step = np.diff(seconds)  # drop step 1 (warm-up)
        fill = json.loads(Path(paths["run"]).read_text())["cache"]["seconds"]
    return float(np.median(per_step)), float(fill)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per run (after one warm-up step)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ks", default="0,1,3")
    args = ap.parse_args()
    data = osie_like(args.batch_size + 2)
    train, val = split_dataset(data, val_ids=[data[len(data) - 1].image_id])
    ks = [int(k) for k in args.ks.split(",")]
    times: dict[tuple[int, str], list[float]] = {(k, c): [] for k in ks for c in ("memory", "off")}
    fills: dict[int, list[float]] = {k: [] for k in ks}
    for rep in range(args.repeats):
        for k in ks:
            for cache in ("memory", "off") if rep % 2 == 0 else ("off", "memory"):  # interleaved
                t, fill = step_seconds(train, val, k, cache, args.steps, args.batch_size)
                times[(k, cache)].append(t)
                if cache == "memory":
                    fills[k].append(fill / len(data))
                print(f"rep {rep} K={k} cache={cache}: {t:.3f} s/step", flush=True)
    print(f"\nbatch {args.batch_size}, 800x600 maps, 224 input, {args.repeats} repeats x {args.steps} steps "
          "(medians; shared machine)")
    print("K  cached s/step  uncached s/step  speed-up  cache fill s/img")
    for k in ks:
        c, u = statistics.median(times[(k, "memory")]), statistics.median(times[(k, "off")])
        print(f"{k}  {c:13.3f}  {u:15.3f}  {u / c:8.1f}x  {statistics.median(fills[k]):.3f}")


if __name__ == "__main__":
    main()
