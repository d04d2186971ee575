"""Benchmark: dissection cost against the bare forward pass, interleaved, and its start-up and memory.

    python bench/dissect_speed.py                                  # VGG16 conv4_1..conv5_3, 80 pop-out arrays
    python bench/dissect_speed.py --layers all                     # all 13 VGG16 conv layers
    python bench/dissect_speed.py --model resnet50 --layers layer1,layer2,layer3,layer4
    python bench/dissect_speed.py --dataset osie-like --regions-per-image 64 --images 24
    python bench/dissect_speed.py --dataset osie --data-root ../shared/data/osie --images 80   # real OSIE
    python bench/dissect_speed.py --memory --startup               # peak RSS and start-up of the CLI
    python bench/dissect_speed.py --layers all --images 40 --cli 3 --no-timing   # the CLI end to end
    python bench/dissect_speed.py --device cuda                    # a GPU machine (bench/gpu_check.sh)

Per repeat, back to back on the same images and batches (the order rotates between repeats, so
slow drift of a shared machine hits every variant alike):

  forward   the bare forward pass: read (decode or generate) each image, resize, normalise, run
            the model (``--dataset osie``: the images only, no regions);
  dissect   ``run_dissection`` end to end (loading with regions, hooks, exact closed-form
            scoring, aggregation); for ``--dataset osie`` twice: ``dissect_cold`` computes every
            image's fixation clusters, ``dissect_cached`` reads them from the region cache
            (``$SALIENCY_DISSECT_REGION_CACHE``, filled by an untimed first run).

We quote the median of each time and the median of the per-repeat ratios ``dissect / forward``
(a shared, noisy machine: compare ratios). ``--naive-images N`` adds the naive path (upsample
every unit map, z-score, average), scored on N images. ``--memory`` runs the CLI's ``dissect``
on the pop-out arrays (VGG16 conv4_1..conv5_3, as a user would) and reports its peak RSS;
``--startup`` times the CLI from process start to its first forward pass. Weights are random
(offline); the cost does not depend on the weights. ``--dataset osie-like`` writes a synthetic
dataset in the real OSIE-SR formats (bench/make_osie_like.py: 800 x 600 images, 15 simulated
observers, ``--regions-per-image`` objects) and reads it with the OSIE-SR loader;
``--dataset osie`` reads a real OSIE folder (``--data-root``, flat or repository layout) with
fixation-cluster regions. The script runs on older versions of the code too (for before/after
comparisons), using what they have.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from dissect.models.inputs import preprocess  # noqa: E402
from dissect.studies.dissection import run_dissection  # noqa: E402
from dissect.models.hooks import ActivationRecorder  # noqa: E402
from dissect.models import layer_aliases, load_model  # noqa: E402
from probes.regions import RegionScorer, unit_nmm_naive, unit_region_nss_naive  # noqa: E402

SIX = ["conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3"]
REGION_CACHE_ENV = "SALIENCY_DISSECT_REGION_CACHE"


def _load(name, lean):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return load_model(name, weights="random", classifier=not lean)
        except TypeError:  # a version without load_model(classifier=...)
            return load_model(name, weights="random")


def _layers(model, spec):
    if spec == "all":
        return [a for a in layer_aliases(model) if a.startswith("conv")]
    return [s.strip() for s in spec.split(",")] if spec else SIX


def _datasets(kind, n_images, tmp, data_root, regions_per_image):
    """(dataset with regions, dataset for the bare forward)."""
    if kind == "popout":
        from datasets.popout import PopoutDataset

        ds = PopoutDataset()
        return ds, ds
    from datasets.osie import OSIEDataset

    if kind == "osie":
        if not data_root:
            raise SystemExit("--dataset osie needs --data-root (a folder in the OSIE layout)")
        return OSIEDataset(data_root, regions="clusters"), OSIEDataset(data_root, regions="none")
    from bench.make_osie_like import write_osie_like

    root = write_osie_like(Path(tmp) / "osie-like", n_images=n_images, n_objects=regions_per_image)
    return OSIEDataset(root, regions="sr"), OSIEDataset(root, regions="none")


def time_forward(model, dataset, n, batch_size, image_size, device):
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, n, batch_size):
            batch = preprocess([dataset[i].image for i in range(s, min(s + batch_size, n))], image_size)
            model(batch.to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def time_dissect(model, layers, dataset, n, batch_size, image_size, device, cache=None, null=100, bootstrap=200):
    old = os.environ.get(REGION_CACHE_ENV)
    os.environ[REGION_CACHE_ENV] = cache or ""
    try:
        t0 = time.perf_counter()
        run_dissection(model, layers, dataset, image_size=image_size, batch_size=batch_size, device=device,
                       progress=False, max_images=n, null=null, bootstrap=bootstrap)
        return time.perf_counter() - t0
    finally:
        if old is None:
            os.environ.pop(REGION_CACHE_ENV, None)
        else:
            os.environ[REGION_CACHE_ENV] = old


def _naive_score(acts, sample):
    if sample.fixation_map is None:
        return unit_nmm_naive(acts, sample.masks)
    return unit_region_nss_naive(acts, sample.fixation_map, sample.masks)


def time_naive_scoring(model, layers, dataset, n, image_size):
    """Scoring only, per image: the naive upsample-everything path and the exact closed form."""
    t_naive = t_fast = 0.0
    scorer = RegionScorer()
    with ActivationRecorder(model, layers) as rec:
        for i in range(n):
            sample = dataset[i]
            with torch.inference_mode():
                model(preprocess([sample.image], image_size))
            t1 = time.perf_counter()
            for name in layers:
                _naive_score(rec.activations[name][0], sample)
            t2 = time.perf_counter()
            scorer.set_regions(sample.masks, sample.fixation_map)
            for name in layers:
                scorer.score(rec.activations[name][0])
            t_naive += t2 - t1
            t_fast += time.perf_counter() - t2
    return t_naive, t_fast


def _cli(args):
    return [sys.executable, str(ROOT / "cli.py"), "dissect", *args]


def peak_rss_mb(n_images, batch_size, out):
    """Peak RSS of the CLI's dissect (VGG16 conv4_1..conv5_3, pop-out arrays)."""
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
            "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    cmd = _cli(["--model", "vgg16", "--layers", "conv4_1:conv5_3", "--weights", "random", "--max-images",
                str(n_images), "--batch-size", str(batch_size), "--out", str(out), "--overwrite", "--no-progress"])
    res = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, check=True, cwd=ROOT)
    return float(res.stdout.strip().splitlines()[-1])


def cli_wall_s(args, out):
    """Wall seconds of one ``cli.py dissect`` run end to end, as a user runs it: start-up, the
    null's region pass, checkpoints (the library timings above write none) and the CSVs."""
    layers = {None: "conv4_1:conv5_3", "all": "conv1_1:conv5_3"}.get(args.layers, args.layers)
    cmd = _cli(["--model", args.model, "--layers", layers, "--weights", "random", "--max-images", str(args.images),
                "--batch-size", str(args.batch_size), "--null", str(args.null), "--bootstrap", str(args.bootstrap),
                "--out", str(out), "--overwrite", "--no-progress"])
    if args.dataset == "osie":
        cmd += ["--dataset", "osie", "--data-root", str(args.data_root), "--regions", "clusters"]
    elif args.dataset != "popout":
        raise SystemExit("--cli runs the pop-out arrays or --dataset osie")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - t0


def startup_s(out):
    """Seconds from process start to the first forward pass of ``cli.py dissect`` (VGG16 conv5_3, pop-out)."""
    code = (
        "import os, sys, time, torch\n"
        "orig = torch.nn.Module.__call__\n"
        "def call(self, *a, **k):\n"
        "    if hasattr(self, 'dissect_info'):\n"
        "        print(time.time(), flush=True); os._exit(0)\n"
        "    return orig(self, *a, **k)\n"
        "torch.nn.Module.__call__ = call\n"
        f"sys.path.insert(0, {str(ROOT)!r}); import cli\n"
        "cli.main(sys.argv[1:])\n"
    )
    args = ["dissect", "--model", "vgg16", "--layer", "conv5_3", "--weights", "random", "--out", str(out),
            "--overwrite", "--no-progress"]
    t0 = time.time()
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in res.stdout.split() if ln.replace(".", "", 1).isdigit()]
    if not lines:
        raise SystemExit(f"start-up probe failed: {res.stderr.strip()[-300:]}")
    return float(lines[-1]) - t0


def _median_ratio(num, den):
    return round(statistics.median(a / b for a, b in zip(num, den)), 3)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("popout", "osie-like", "osie"), default="popout")
    parser.add_argument("--data-root", help="--dataset osie: a folder in the OSIE layout (real data)")
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--layers", default=None, help="comma-separated aliases, or 'all' (every conv alias); "
                                                        "default conv4_1..conv5_3")
    parser.add_argument("--images", type=int, default=80)
    parser.add_argument("--regions-per-image", type=int, default=8, help="--dataset osie-like: objects per image")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-images", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--null", type=int, default=100, help="permutations of the null (default 100, as the CLI)")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates (default 200, as the CLI)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--memory", action="store_true", help="peak RSS of the CLI's 6-layer VGG16 dissect")
    parser.add_argument("--startup", action="store_true", help="CLI start-up to the first forward (3 runs)")
    parser.add_argument("--cli", type=int, default=0, metavar="N",
                        help="also time N end-to-end runs of cli.py dissect with these options (checkpoints "
                             "included; --layers all = conv1_1:conv5_3; the region cache as the user's)")
    parser.add_argument("--no-timing", action="store_true", help="only --memory / --startup / --cli")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    report = {"model": f"{args.model} (random weights)", "dataset": args.dataset, "threads": args.threads,
              "device": str(device), "code": str(ROOT), "null": args.null, "bootstrap": args.bootstrap}
    stats = {"null": args.null, "bootstrap": args.bootstrap}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_timing:
            full = _load(args.model, lean=False).to(device)  # the bare forward: the whole model
            lean = _load(args.model, lean=True)  # what the CLI dissects (no VGG classifier)
            layers = _layers(full, args.layers)
            scored, plain = _datasets(args.dataset, args.images, tmp, args.data_root, args.regions_per_image)
            n = min(args.images, len(scored))
            cache = str(Path(tmp) / "region-cache")
            variants = {"forward": lambda: time_forward(full, plain, n, args.batch_size, args.image_size, device)}
            if args.dataset == "osie":
                variants["dissect_cold"] = lambda: time_dissect(lean, layers, scored, n, args.batch_size,
                                                                args.image_size, device, **stats)
                variants["dissect_cached"] = lambda: time_dissect(lean, layers, scored, n, args.batch_size,
                                                                  args.image_size, device, cache, **stats)
                variants["dissect_cached"]()  # fill the cache (untimed)
            else:
                variants["dissect"] = lambda: time_dissect(lean, layers, scored, n, args.batch_size,
                                                           args.image_size, device, **stats)
            variants["forward"]()  # warm-up: allocator, first-touch of the weights
            times = {k: [] for k in variants}
            names = list(variants)
            for r in range(args.repeats):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    times[name].append(variants[name]())
                    print(f"repeat {r + 1}/{args.repeats} {name}: {times[name][-1]:.2f} s", file=sys.stderr,
                          flush=True)  # a long benchmark says where it is
            report.update({"layers": layers, "images": n, "image_size": args.image_size,
                           "batch_size": args.batch_size, "repeats": args.repeats,
                           "median_s": {k: round(statistics.median(v), 3) for k, v in times.items()},
                           "all_s": {k: [round(x, 3) for x in v] for k, v in times.items()}})
            report["ratio_over_forward"] = {k: _median_ratio(v, times["forward"]) for k, v in times.items()
                                            if k != "forward"}
            if args.naive_images:
                k = min(args.naive_images, n)
                t_naive, t_fast = time_naive_scoring(full.cpu(), layers, scored, k, args.image_size)
                report["scoring_per_image_ms"] = {"fast": round(1000 * t_fast / k, 2),
                                                  "naive": round(1000 * t_naive / k, 1), "images": k}
        if args.memory:
            report["cli_peak_rss_mb"] = {str(k): round(peak_rss_mb(k, args.batch_size, Path(tmp) / f"m{k}"), 1)
                                         for k in (16, 80)}
        if args.cli:
            runs = [cli_wall_s(args, Path(tmp) / "cli") for _ in range(args.cli)]
            report["cli_wall_s"] = {"median": round(statistics.median(runs), 2), "all": [round(x, 2) for x in runs]}
        if args.startup:
            runs = [startup_s(Path(tmp) / "startup") for _ in range(3)]
            report["cli_startup_to_first_forward_s"] = {"median": round(statistics.median(runs), 2),
                                                        "all": [round(x, 2) for x in runs]}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
