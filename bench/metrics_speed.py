"""Benchmark: probes.metrics against pysaliency on real-size maps, interleaved.

    python bench/metrics_speed.py --data-root ../shared/data/osie --images 20 --repeats 5

Each image gives a saliency map (its fixation density with a wide blur plus noise) and a human
density (sigma 24), both at the image's own 800 x 600; ``other`` is the union of the fixations
of 10 other images. For every metric the two implementations run back to back on the same image,
image after image (who goes first alternates: the second finds the maps in cache), and the whole
loop is repeated; we quote the median over repeats of the total
time and the ratio ours / pysaliency (the machine is shared: compare ratios, not seconds).
``gaze_scores_all_metrics``: one :func:`probes.gaze.gaze_scores` call (each map validated once,
:func:`probes.metrics.prepare`) against the same seven metrics called one by one.
pysaliency peers: NSS, CC, SIM, MIT_KLDiv, and roc.general_roc for AUC-Judd (negatives: the
non-fixated pixels) and s-AUC (negatives: the other images' fixated pixels, exact ROC; ours
draws 100 splits of negatives as MIT does, a different estimator of the same quantity, and
``sauc_exact`` is ours with pysaliency's estimator). The
first call of the numba ROC (its compilation) is made before timing.
Without --data-root, synthetic 600 x 800 maps are used.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from datasets.fixations import density_map  # noqa: E402
from probes import metrics  # noqa: E402


def _maps(data_root, n_images, seed=0):
    rng = np.random.default_rng(seed)
    fix_maps = []
    if data_root:
        from datasets.osie import OSIEDataset

        ds = OSIEDataset(data_root, regions="none")
        fix_maps = [ds[i].fixation_map for i in range(min(n_images + 10, len(ds)))]
    else:
        for _ in range(n_images + 10):
            f = np.zeros((600, 800), dtype=bool)
            f[rng.integers(100, 500, 140), rng.integers(100, 700, 140)] = True
            fix_maps.append(f)
    items = []
    for i in range(n_images):
        fix = fix_maps[i]
        sal = density_map(fix, 60.0) + 0.05 * rng.random(fix.shape)
        dens = density_map(fix, 24.0)
        other = np.zeros_like(fix)
        for j in range(1, 11):
            other |= fix_maps[(i + j) % len(fix_maps)]
        ys, xs = np.nonzero(fix)
        items.append((sal, dens, fix, other, xs, ys))
    return items


def _pairs(pm, roc):
    def judd_peer(sal, fix):
        return roc.general_roc(np.ascontiguousarray(sal[fix]), np.ascontiguousarray(sal[~fix]))[0]

    def sauc_peer(sal, fix, other):
        return roc.general_roc(np.ascontiguousarray(sal[fix]), np.ascontiguousarray(sal[other]))[0]

    return {
        "nss": (lambda it: metrics.nss(it[0], it[2]), lambda it: pm.NSS(it[0], it[4], it[5])),
        "cc": (lambda it: metrics.cc(it[0], it[1]), lambda it: pm.CC(it[0], it[1])),
        "kld": (lambda it: metrics.kld(it[0], it[1]), lambda it: pm.MIT_KLDiv(it[0], it[1])),
        "sim": (lambda it: metrics.sim(it[0], it[1]), lambda it: pm.SIM(it[0], it[1])),
        "auc_judd": (lambda it: metrics.auc_judd(it[0], it[2]), lambda it: judd_peer(it[0], it[2])),
        "sauc": (lambda it: metrics.sauc(it[0], it[2], it[3]), lambda it: sauc_peer(it[0], it[2], it[3])),
        # the same estimator as the peer: every other-image fixation a negative, exact ROC
        "sauc_exact": (lambda it: metrics.sauc(it[0], it[2], it[3], exact=True),
                       lambda it: sauc_peer(it[0], it[2], it[3])),
    }


def _interleaved(a, b, items, repeat: int) -> tuple[float, float]:
    """Seconds of ``a`` and of ``b`` over ``items``, back to back image by image; who goes first
    alternates (the second call finds the image's maps in cache: always going first would bias it)."""
    t_a = t_b = 0.0
    for k, it in enumerate(items):
        first, second = (a, b) if (k + repeat) % 2 == 0 else (b, a)
        t0 = time.perf_counter()
        first(it)
        t1 = time.perf_counter()
        second(it)
        t2 = time.perf_counter()
        t_a += (t1 - t0) if first is a else (t2 - t1)
        t_b += (t2 - t1) if first is a else (t1 - t0)
    return t_a, t_b


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=None, help="a folder in the OSIE layout (real data)")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--metric", action="append", help="only these metrics (repeatable)")
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pysaliency import metrics as pm
        from pysaliency import roc
    if not hasattr(np, "trapz"):  # pysaliency's numba ROC calls np.trapz, removed in numpy 2
        np.trapz = np.trapezoid
    warnings.simplefilter("ignore", RuntimeWarning)  # pysaliency's log(0) in MIT_KLDiv
    items = _maps(args.data_root, args.images)
    pairs = _pairs(pm, roc)
    names = [n for n in (args.metric or list(pairs)) if n in pairs]
    times = {name: ([], []) for name in names}
    for name in names:  # warm-up: numba compilation, caches
        for fn in pairs[name]:
            fn(items[0])
    for r in range(args.repeats):
        for name in names:
            t_ours, t_peer = _interleaved(*pairs[name], items, r)
            times[name][0].append(t_ours)
            times[name][1].append(t_peer)
    # The batched form: one gaze_scores call (each map validated once, metrics.prepare) against the
    # same metrics called one by one on the arrays (each validating its maps again).
    if args.metric is None or "gaze_scores" in args.metric:
        from probes.gaze import gaze_scores

        def separate(it):
            sal, dens, fix, other = it[0], it[1], it[2], it[3]
            return (metrics.mae(sal, dens), metrics.cc(sal, dens), metrics.kld(sal, dens), metrics.sim(sal, dens),
                    metrics.nss(sal, fix), metrics.auc_judd(sal, fix), metrics.sauc(sal, fix, other))

        batched_t, separate_t = [], []
        batched = lambda it: gaze_scores(it[0], it[2], it[1], other_fixation_map=it[3])  # noqa: E731
        for r in range(args.repeats):
            t_b, t_s = _interleaved(batched, separate, items, r)
            batched_t.append(t_b)
            separate_t.append(t_s)
        gaze_row = {"batched_ms_per_image": round(1000 * statistics.median(batched_t) / len(items), 3),
                    "separate_ms_per_image": round(1000 * statistics.median(separate_t) / len(items), 3),
                    "ratio": round(statistics.median(batched_t) / statistics.median(separate_t), 2)}
    else:
        gaze_row = None
    report = {"images": len(items), "shape": list(items[0][0].shape), "repeats": args.repeats,
              "data": args.data_root or "synthetic", "metrics": {}}
    for name, (ours, peer) in times.items():
        mo, mp = statistics.median(ours), statistics.median(peer)
        report["metrics"][name] = {"ours_ms_per_image": round(1000 * mo / len(items), 3),
                                   "pysaliency_ms_per_image": round(1000 * mp / len(items), 3),
                                   "ratio": round(mo / mp, 2)}
    if gaze_row is not None:
        report["gaze_scores_all_metrics"] = gaze_row
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
