"""Benchmark: dissection cost against the bare forward pass and against the naive path.

    python bench/dissect_speed.py                      # VGG16 conv4_1..conv5_3, 80 pop-out arrays
    python bench/dissect_speed.py --images 16 --naive-images 4
    python bench/dissect_speed.py --memory             # peak RSS for 1/4 and all of the images
    python bench/dissect_speed.py --dataset osie-like --images 40   # 800 x 600, 15 subjects, 8 regions

Three numbers, all on the same images and batches:
  forward   the bare forward pass (no hooks), images already preprocessed;
  dissect   run_dissection end to end (preprocessing, hooks, exact closed-form scoring, aggregation);
  naive     forward + upsample every unit map to the image size + z-score + mean under the mask
            (probes.regions.unit_nmm_naive / unit_region_nss_naive), on --naive-images images,
            scaled to the full count.
and, on the activations of those --naive-images images, the scoring alone: the exact closed form
(probes.regions.RegionScorer) against the naive upsample-everything path.
Weights are random (offline); the cost does not depend on the weights.
``--dataset osie-like`` writes a synthetic dataset in the real OSIE-SR formats
(bench/make_osie_like.py: 800 x 600 images, 15 simulated observers, ~8 regions) to a temporary
folder and reads it with the OSIE-SR loader, so loading costs are included.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from datasets.popout import PopoutDataset  # noqa: E402
from dissect.dissection import preprocess, run_dissection  # noqa: E402
from dissect.hooks import ActivationRecorder  # noqa: E402
from dissect.models import load_model  # noqa: E402
from probes.regions import RegionScorer, unit_nmm_naive, unit_region_nss_naive  # noqa: E402

LAYERS = ["conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3"]


def _batches(dataset, n, batch_size, image_size):
    return [preprocess([dataset[i].image for i in range(s, min(s + batch_size, n))], image_size)
            for s in range(0, n, batch_size)]


def time_forward(model, batches, repeats=2):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.inference_mode():
            for b in batches:
                model(b)
        best = min(best, time.perf_counter() - t0)
    return best


def time_dissect(model, dataset, n, batch_size, image_size, repeats=2):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_dissection(model, LAYERS, dataset, image_size=image_size, batch_size=batch_size,
                       progress=False, max_images=n)
        best = min(best, time.perf_counter() - t0)
    return best


def _naive_score(acts, sample):
    if sample.fixation_map is None:
        return unit_nmm_naive(acts, sample.masks)
    return unit_region_nss_naive(acts, sample.fixation_map, sample.masks)


def time_naive(model, dataset, n, batch_size, image_size):
    """End to end naive path; also returns the scoring-only times of both paths on its activations."""
    t0 = time.perf_counter()
    t_naive_scoring = t_fast_scoring = 0.0
    scorer = RegionScorer()
    with ActivationRecorder(model, LAYERS) as rec:
        for s in range(0, n, batch_size):
            samples = [dataset[i] for i in range(s, min(s + batch_size, n))]
            with torch.inference_mode():
                model(preprocess([x.image for x in samples], image_size))
            for i, sample in enumerate(samples):
                t1 = time.perf_counter()
                for name in LAYERS:
                    _naive_score(rec.activations[name][i], sample)
                t2 = time.perf_counter()
                scorer.set_regions(sample.masks, sample.fixation_map)
                for name in LAYERS:
                    scorer.score(rec.activations[name][i])
                t3 = time.perf_counter()
                t_naive_scoring += t2 - t1
                t_fast_scoring += t3 - t2
    return time.perf_counter() - t0 - t_fast_scoring, t_naive_scoring, t_fast_scoring


def _dataset(kind, n_images, tmp):
    if kind == "popout":
        return PopoutDataset()
    from bench.make_osie_like import write_osie_like
    from datasets.osie import OSIEDataset

    return OSIEDataset(write_osie_like(Path(tmp) / "osie-like", n_images=n_images), regions="sr")


def peak_rss_mb(n_images, batch_size, image_size):  # on the pop-out arrays
    code = (
        "import resource, sys, warnings; sys.path.insert(0, %r);"
        "warnings.simplefilter('ignore');"
        "from bench.dissect_speed import LAYERS; from datasets.popout import PopoutDataset;"
        "from dissect.models import load_model; from dissect.dissection import run_dissection;"
        "m = load_model('vgg16', weights='random');"
        "run_dissection(m, LAYERS, PopoutDataset(), image_size=%d, batch_size=%d, progress=False, max_images=%d);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    ) % (str(Path(__file__).resolve().parents[1]), image_size, batch_size, n_images)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("popout", "osie-like"), default="popout")
    parser.add_argument("--images", type=int, default=80)
    parser.add_argument("--naive-images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--memory", action="store_true", help="also measure peak RSS for 1/4 and all images")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model("vgg16", weights="random")
    with tempfile.TemporaryDirectory() as tmp:
        dataset = _dataset(args.dataset, args.images, tmp)
        n = min(args.images, len(dataset))
        units = sum(512 for _ in LAYERS)

        batches = _batches(dataset, n, args.batch_size, args.image_size)
        t_forward = time_forward(model, batches)
        t_dissect = time_dissect(model, dataset, n, args.batch_size, args.image_size)
        n_naive = min(args.naive_images, n)
        t_naive, t_naive_scoring, t_fast_scoring = time_naive(model, dataset, n_naive, args.batch_size,
                                                              args.image_size)
    scale = n / n_naive
    report = {
        "model": "vgg16 (random weights)", "layers": f"{LAYERS[0]}..{LAYERS[-1]}", "units": units,
        "dataset": args.dataset, "images": n, "image_size": args.image_size, "batch_size": args.batch_size,
        "threads": args.threads,
        "forward_s": round(t_forward, 3), "dissect_s": round(t_dissect, 3),
        "naive_s": round(t_naive * scale, 3), "naive_measured_on_images": n_naive,
        "dissect_over_forward": round(t_dissect / t_forward, 3),
        "naive_over_dissect": round(t_naive * scale / t_dissect, 1),
        "scoring_per_image_ms": {"fast": round(1000 * t_fast_scoring / n_naive, 2),
                                 "naive": round(1000 * t_naive_scoring / n_naive, 1)},
        "naive_scoring_over_fast_scoring": round(t_naive_scoring / t_fast_scoring, 1),
        "images_per_s": round(n / t_dissect, 2),
    }
    if args.dataset == "osie-like":
        report["projected_700_osie_images_min"] = round(700 * t_dissect / n / 60, 1)

    if args.memory:
        report["peak_rss_mb"] = {str(k): round(peak_rss_mb(k, args.batch_size, args.image_size), 1)
                                 for k in (max(n // 4, args.batch_size), n)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
