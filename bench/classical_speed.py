"""Benchmark: the vectorised classical saliency models against the obvious loop-based versions.

    python bench/classical_speed.py                          # a generated 800 x 600 image
    python bench/classical_speed.py --image /path/to/1001.jpg --repeats 7 --naive-repeats 1

For each model, on the same 800 x 600 image:
  vectorised  dissect.classical.saliency_map as shipped;
  loop        the same pipeline with its hot spot written the obvious way, with Python loops:
              gbvs - the Markov matrix of every feature map built pair by pair
                     (w[i, j] = exp(-d^2 / 2 s^2) |A_i - A_j|, then column sums) in float64;
              itti - the local maxima of N(.) found pixel by pixel (4-neighbour test);
              bms  - surroundedness as the authors' C++ does it: cv2.floodFill from every border
                     pixel of every Boolean map (instead of one connectedComponents call);
  and the largest difference between the two maps (they compute the same thing).
Runs are interleaved (vectorised, loop, vectorised, ...), each timing is a median of its runs and
the ratio is loop / vectorised. Targets (issue 10): GBVS and BMS <= 0.5 s, Itti <= 0.3 s.
The machine is shared with other jobs (2 cores): expect noise, compare within one run.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from dissect import classical  # noqa: E402
from dissect.classical import _common, bms, gbvs  # noqa: E402

TARGETS = {"gbvs": 0.5, "bms": 0.5, "itti": 0.3}


def loop_activation_weights(maps: np.ndarray, sigma: float, dtype=np.float64) -> np.ndarray:
    k, h, w = maps.shape
    n = h * w
    out = np.zeros((k, n, n))
    for m in range(k):
        a = maps[m].ravel()
        for i in range(n):
            ri, ci = divmod(i, w)
            for j in range(n):
                rj, cj = divmod(j, w)
                out[m, i, j] = math.exp(-((ri - rj) ** 2 + (ci - cj) ** 2) / (2 * sigma ** 2)) * abs(a[i] - a[j])
        for j in range(n):
            s = out[m, :, j].sum()
            if s > 0:
                out[m, :, j] /= s
    return out


def loop_local_maxima(a: np.ndarray, thresh: float) -> np.ndarray:
    vals = []
    for r in range(1, a.shape[0] - 1):
        for c in range(1, a.shape[1] - 1):
            v = a[r, c]
            if v >= thresh and v >= a[r - 1, c] and v >= a[r + 1, c] and v >= a[r, c - 1] and v >= a[r, c + 1]:
                vals.append(v)
    return np.asarray(vals)


def loop_surrounded(mask: np.ndarray) -> np.ndarray:
    filled = mask.astype(np.uint8).copy()
    h, w = mask.shape
    border = [(r, c) for r in range(h) for c in (0, w - 1)] + [(r, c) for r in (0, h - 1) for c in range(w)]
    for r, c in border:
        if filled[r, c] != 2:
            cv2.floodFill(filled, None, (c, r), 2, 0, 0, 8)
    return (filled != 2) & mask


LOOPS = {"gbvs": (gbvs, "activation_weights", loop_activation_weights),
         "itti": (_common, "local_maxima", loop_local_maxima),
         "bms": (bms, "surrounded", loop_surrounded)}


@contextmanager
def looped(method: str):
    module, name, func = LOOPS[method]
    original = getattr(module, name)
    setattr(module, name, func)
    try:
        yield
    finally:
        setattr(module, name, original)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def default_image() -> np.ndarray:
    from datasets.popout import PopoutParams, generate_array

    return generate_array("hue", 0, PopoutParams(canvas=(600, 800), grid=(6, 8))).image


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", help="an image file (default: a generated 800 x 600 pop-out array)")
    ap.add_argument("--models", nargs="+", default=["gbvs", "itti", "bms"], choices=sorted(LOOPS))
    ap.add_argument("--repeats", type=int, default=5, help="vectorised runs per model")
    ap.add_argument("--naive-repeats", type=int, default=1, help="loop runs per model (slow)")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args(argv)
    if args.image:
        from PIL import Image

        img = np.asarray(Image.open(args.image).convert("RGB"))
    else:
        img = default_image()
    print(f"image {img.shape[1]} x {img.shape[0]}; vectorised x{args.repeats}, loop x{args.naive_repeats}, "
          "interleaved; medians in seconds")
    results = {}
    for method in args.models:
        classical.saliency_map(img, method)  # warm-up (imports, resize-weight cache)
        fast, slow, diff = [], [], 0.0
        for k in range(max(args.repeats, args.naive_repeats)):
            if k < args.repeats:
                t, ref = timed(lambda: classical.saliency_map(img, method))
                fast.append(t)
            if k < args.naive_repeats:
                with looped(method):
                    t, out = timed(lambda: classical.saliency_map(img, method))
                slow.append(t)
                diff = max(diff, float(np.abs(out - ref).max()))
        f, s = statistics.median(fast), statistics.median(slow)
        results[method] = {"vectorised_s": f, "loop_s": s, "ratio": s / f, "max_abs_diff": diff,
                           "target_s": TARGETS[method], "vectorised_runs": fast, "loop_runs": slow}
        print(f"{method:>5}: vectorised {f:.3f} s (target <= {TARGETS[method]} s), loop {s:.2f} s, "
              f"x{s / f:.0f}; max |difference| {diff:.2g}")
    sr = [timed(lambda: classical.saliency_map(img, "spectral_residual"))[0] for _ in range(args.repeats)]
    print(f"spectral_residual (OpenCV): {statistics.median(sr):.4f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
