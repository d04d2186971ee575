"""Benchmark: gradient attention maps against captum given the target, interleaved.

    python bench/attention_speed.py --images 8 --batch-size 4 --repeats 3

``dissect.attribution.attention_maps(model, x, method)`` with ``target=None`` (the top-1 class,
which it must find itself) against captum's own attribution given the precomputed top-1 target
(``LayerGradCam(..., relu_attributions=True)``, ``GuidedBackprop``, ``GuidedGradCam`` with
bilinear upsampling), on VGG16 (random weights: the cost does not depend on them) at 224 px,
the same batches, back to back, the whole loop repeated; medians of the totals and of the
per-repeat ratios (a shared machine: compare ratios). For the peer, as for ours, parameters are
frozen and ReLUs are not in place (captum documents in-place ReLUs as unsupported).
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

import torch  # noqa: E402
from torch import nn  # noqa: E402

from datasets.popout import PopoutDataset  # noqa: E402
from dissect.attribution import attention_maps  # noqa: E402
from dissect.models.inputs import preprocess  # noqa: E402
from dissect.models import load_model  # noqa: E402

METHODS = ("gradcam", "guided_backprop", "guided_gradcam")


def _peer(method, model, layer_module):
    from captum.attr import GuidedBackprop, GuidedGradCam, LayerGradCam

    def run(x, t):
        xg = x.clone().requires_grad_(True)
        if method == "gradcam":
            a = LayerGradCam(model, layer_module).attribute(xg, target=t, relu_attributions=True)
            return nn.functional.interpolate(a, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if method == "guided_backprop":
            return GuidedBackprop(model).attribute(xg, target=t).abs().amax(dim=1)
        return GuidedGradCam(model, layer_module).attribute(xg, target=t, interpolate_mode="bilinear").abs().amax(dim=1)

    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--method", action="append", choices=METHODS)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    model = load_model("vgg16", weights="random")
    ds = PopoutDataset()
    batches = [preprocess([ds[i].image for i in range(s, min(s + args.batch_size, args.images))], 224)
               for s in range(0, args.images, args.batch_size)]
    with torch.no_grad():
        targets = [model(b).argmax(1) for b in batches]
    layer_module = model.features[29]  # conv5_3 (the default layer)
    methods = args.method or list(METHODS)
    times = {m: ([], []) for m in methods}
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    for p in model.parameters():
        p.requires_grad_(False)
    for _ in range(args.repeats):
        for method in methods:
            peer = _peer(method, model, layer_module)
            t_ours = t_peer = 0.0
            for b, t in zip(batches, targets):
                t0 = time.perf_counter()
                attention_maps(model, b, method)
                t1 = time.perf_counter()
                for m in relus:
                    m.inplace = False
                peer(b, t)
                for m in relus:
                    m.inplace = True
                t_peer += time.perf_counter() - t1
                t_ours += t1 - t0
            times[method][0].append(t_ours)
            times[method][1].append(t_peer)
    report = {"model": "vgg16 (random weights)", "images": args.images, "batch_size": args.batch_size,
              "repeats": args.repeats, "methods": {}}
    for method, (ours, peer) in times.items():
        report["methods"][method] = {"ours_s": round(statistics.median(ours), 3),
                                     "captum_given_target_s": round(statistics.median(peer), 3),
                                     "ratio": round(statistics.median(a / b for a, b in zip(ours, peer)), 3)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
