"""On paper: wall time of He et al.'s Table 3 study (14 setups) on 1, 8 and 64 GPUs.

    python bench/study_projection.py --run-json RUN/run.json [--gpu-tflops 15] [--cores-per-gpu 4]

The study (digest section 4): Setup I (only the 1x1 saliency conv trains) and Setup II with the
last k = 1..13 conv layers fine-tuned, each trained for 10,000 steps of batch 20 on SALICON
(224 x 224 inputs) and then dissected on OSIE (700 images, conv4_1..conv5_3).

Measured here: the VGG16 trunk's forward FLOPs per layer (torch's FlopCounterMode), and from a
dissection ``run.json`` (``bench/ray_overhead.py`` writes them) the CPU cost per image of the
forward pass and of the region scoring (numpy, one thread) on this machine; plus one CPU
training step per image for the CPU-only line.

Assumed (say so when quoting): a GPU sustains ``--gpu-tflops`` effective FLOP/s on VGG16 3x3
convolutions (15: a V100 in fp32 with cuDNN, or an A100 in TF32 used conservatively); the
backward pass of a trained conv costs 2x its forward, untrained layers below it cost nothing
backward; data loading keeps up (a few decoding cores per GPU); region scoring stays on the CPU
(``--cores-per-gpu`` cores per GPU, scoring parallel over images); each Ray task adds the
measured start-up (``--task-overhead`` seconds, model and data loading included). A setup's
10,000 steps are sequential: one setup never uses more than one GPU (batch 20 is too small to
split), so beyond 14 GPUs only the dissections spread out (as shards).
"""
from __future__ import annotations

import argparse
import heapq
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

CONVS = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv4_1", "conv4_2",
         "conv4_3", "conv5_1", "conv5_2", "conv5_3"]


def conv_flops(image_size: int = 224) -> list[float]:
    """Forward FLOPs of each VGG16 conv (2 per multiply-add) for one image."""
    import torchvision

    features = torchvision.models.vgg16(weights=None).features[:30].eval()
    x = torch.zeros(1, 3, image_size, image_size)
    out = []
    with torch.no_grad():
        for module in features:
            if isinstance(module, torch.nn.Conv2d):
                with FlopCounterMode(display=False) as counter:
                    y = module(x)
                out.append(float(counter.get_total_flops()))
                x = y
            else:
                x = module(x)
    return out


def cpu_train_step(image_size: int = 224, batch: int = 4, repeats: int = 2) -> float:
    """Seconds per image of forward + backward through the whole trunk on this CPU."""
    import torchvision

    trunk = torchvision.models.vgg16(weights=None).features[:30]
    head = torch.nn.Conv2d(512, 1, 1, bias=False)
    opt = torch.optim.Adam([*trunk.parameters(), *head.parameters()], lr=1e-4)
    x = torch.randn(batch, 3, image_size, image_size)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        opt.zero_grad()
        head(trunk(x)).mean().backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[len(times[1:]) // 2] / batch


def makespan(tasks: list[float], workers: int) -> float:
    """Longest-processing-time-first schedule of independent tasks on ``workers``."""
    loads = [0.0] * workers
    heapq.heapify(loads)
    for t in sorted(tasks, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + t)
    return max(loads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-json", help="run.json of a single-process OSIE dissection")
    parser.add_argument("--forward-s", type=float, help="or: CPU forward seconds per image (a bench median)")
    parser.add_argument("--scoring-s", type=float, help="and CPU scoring seconds per image")
    parser.add_argument("--gpu-tflops", type=float, default=15.0)
    parser.add_argument("--cores-per-gpu", type=int, default=4)
    parser.add_argument("--task-overhead", type=float, default=30.0, help="seconds per Ray task (start-up)")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--osie-images", type=int, default=700)
    parser.add_argument("--no-cpu-train", action="store_true", help="skip the CPU training-step measurement")
    args = parser.parse_args()
    if args.run_json:
        run = json.loads(open(args.run_json).read())
        n, layers = run["n_images"], run["layers"]
        cpu_forward = run["timings_s"]["forward"] / n
        cpu_scoring = run["timings_s"]["scoring"] / n
    elif args.forward_s is not None and args.scoring_s is not None:
        n, layers, cpu_forward, cpu_scoring = "given", ["as measured"], args.forward_s, args.scoring_s
    else:
        parser.error("give --run-json, or --forward-s and --scoring-s")
    flops = conv_flops()
    total = sum(flops)
    eff = args.gpu_tflops * 1e12
    gpu_forward = total / eff
    setups = {"I": 0.0}
    for k in range(1, 14):
        setups[f"II k={k}"] = sum(flops[-k:])
    per_setup = {}
    for name, trained in setups.items():
        train = args.steps * args.batch * (total + 2 * trained) / eff
        dissect = args.osie_images * (gpu_forward + cpu_scoring / args.cores_per_gpu)
        per_setup[name] = (train, dissect)
    print(f"measured on this CPU ({n} OSIE images, {', '.join(layers)}): forward {cpu_forward:.3f} s/img, "
          f"scoring {cpu_scoring:.3f} s/img (one thread)")
    print(f"VGG16 trunk forward: {total / 1e9:.1f} GFLOP/img at 224 px -> {gpu_forward * 1e3:.2f} ms/img at "
          f"{args.gpu_tflops:g} effective TFLOP/s")
    for name, (train, dissect) in per_setup.items():
        print(f"  setup {name:8s}: train {train / 60:6.1f} min, dissect {dissect / 60:5.1f} min")
    tasks = [train + dissect + args.task_overhead for train, dissect in per_setup.values()]
    print(f"sum over the 14 setups: {sum(tasks) / 3600:.2f} GPU-hours")
    for gpus in (1, 8, 64):
        if gpus <= len(tasks):
            wall = makespan(tasks, gpus)
        else:
            shards = gpus // len(tasks)  # each setup's dissection split over this many GPUs
            wall = max(train + args.task_overhead + dissect / shards + args.task_overhead
                       for train, dissect in per_setup.values())
        print(f"{gpus:3d} GPU(s): {wall / 3600:6.2f} h")
    if not args.no_cpu_train:
        step = cpu_train_step()
        cpu_total = sum(args.steps * args.batch * step * (total + 2 * t) / (3 * total) for t in setups.values())
        print(f"this CPU: a full-trunk training step costs {step:.2f} s/img; the 14 trainings alone would take "
              f"about {cpu_total / 86400:.0f} days (scaled by each setup's trained FLOPs)")


if __name__ == "__main__":
    main()
