"""``cli.py attention``: attention maps (Grad-CAM, CAM, dense, ...) against human gaze.

The parser fills an ``argparse.Namespace`` (its ``vars`` are the run's config); :func:`build`
loads the data and the model into :class:`dissect.studies.attention_gaze.AttentionStudy` and
:mod:`dissect.runner.orchestrate` runs it (a single run, a shard, every shard on Ray).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from dissect.commands.common import (add_dataset_args, add_model_run_args, add_shard_args, check_fits, check_numbers,
                                     dataset_notes, dataset_options, flags_of, resolve_device, root_word,
                                     run_options, weights_word)

__all__ = ["add_parser", "build", "run", "EXECUTION_ARGS"]

HELP = "compare attention maps (Grad-CAM, CAM, dense, ...) with human gaze"
OUTPUTS = ("per_image.csv", "summary.csv")
#: Flags that say how a run executes, not what it computes (left out of the fingerprint).
EXECUTION_ARGS = ("out", "shard", "ray", "shards", "ray_cpus", "resume", "overwrite", "no_progress", "debug",
                  "checkpoint_every", "command")


def add_parser(sub) -> None:
    a = sub.add_parser("attention", help=HELP,
                       description="Score each attention method's map against human fixations (MAE, NSS, CC, KL, "
                                   "SIM, AUC-Judd, s-AUC, IG) next to a centre-bias floor and a human "
                                   "leave-one-subject-out ceiling; writes per_image.csv, summary.csv, run.json "
                                   "and figures.")
    a.add_argument("--model", default="vgg16", help="vgg16, vgg19, resnet50, alexnet (default vgg16)")
    a.add_argument("--method", dest="methods", action="append",
                   help="activation, cam, gradcam, guided_backprop, guided_gradcam or dense; repeatable "
                        "(default gradcam)")
    a.add_argument("--layer", dest="layers", action="append", help="layer(s) of the layer-level methods "
                                                                    "(default: each method's own; not dense)")
    a.add_argument("--dense-layer", dest="dense_layers", action="append",
                   help="layers of the dense attention model (default: every conv layer alias)")
    add_dataset_args(a, "popout-gaze", "a dataset with fixations: osie, osie-sr, salicon, folder, or popout-gaze "
                                        "(simulated observers, offline)")
    a.add_argument("--out", help="run folder (default runs/attention-MODEL-DATASET-METHODS-..., named by every "
                                 "option that changes the numbers)")
    add_model_run_args(a, batch_size=4, batch_help="images per batch")
    a.add_argument("--sigma", type=float, default=24.0, help="Gaussian sigma of the human density maps (px)")
    a.add_argument("--seed", type=int, default=0, help="seed of random weights, s-AUC draws and generated arrays")
    a.add_argument("--max-images", type=int, help="use only N images, taken round-robin over the pop-out dimensions")
    a.add_argument("--no-ceiling", action="store_true", help="skip the leave-one-subject-out ceiling (slow)")
    a.add_argument("--cam-fit-images", type=int, metavar="N",
                   help="for cam on models without GAP + linear (VGG, AlexNet): fit the class weights by "
                        "regression of class scores on GAP features over the first N images (Ebrahimpour et al.; "
                        "N must exceed the layer's channels, e.g. 600 for VGG16 conv5_3)")
    a.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_shard_args(a, resume=True)


def out_dir(args) -> Path:
    """``--out``, or the default folder named by every option that changes the numbers."""
    from dissect.runner.folders import default_run_dir

    return Path(args.out).expanduser() if args.out else default_run_dir(
        "attention", args.model, args.dataset, root_word(args.data_root), args.methods or ["gradcam"],
        args.layers or None, dense=args.dense_layers, weights=weights_word(args.weights), first=args.max_images,
        size=None if args.image_size == 224 else args.image_size, seed=args.seed or None,
        sigma=None if args.sigma == 24.0 else args.sigma, cam_fit=args.cam_fit_images,
        ceiling="none" if args.no_ceiling else None, regions=args.regions, split=args.split)


def build(config: dict, options) -> "Built":
    """The study and ``run.json`` parameters of an ``attention`` config (the data and the model loaded)."""
    from datasets import load_dataset
    from datasets.base import first
    from dissect.models import load_model
    from dissect.runner.folders import run_record
    from dissect.runner.orchestrate import Built
    from dissect.studies.attention_gaze import AttentionStudy

    args = argparse.Namespace(**config)
    methods = args.methods or ["gradcam"]
    device = resolve_device(args.device)
    loader_options = dataset_options(args.dataset, args.data_root, args.seed, **flags_of(args))
    dataset = first(load_dataset(args.dataset, args.data_root, **loader_options), args.max_images)
    model = load_model(args.model, weights=args.weights, seed=args.seed)
    check_fits(model, args.model, args.layers or [], args.image_size)
    check_fits(model, args.model, args.dense_layers or [], args.image_size, flag="--dense-layer")
    model = model.to(device)
    method_options = {}
    if args.cam_fit_images:
        if "cam" not in methods:
            raise ValueError("--cam-fit-images is for --method cam")
        from dissect.attribution import fit_cam_regression
        from dissect.models.inputs import preprocess

        n = min(args.cam_fit_images, len(dataset))
        images = preprocess([dataset[i].image for i in range(n)], args.image_size)
        method_options["cam"] = {"cam_weights": fit_cam_regression(model, images.to(device))}
    key = {k: v for k, v in config.items() if k not in EXECUTION_ARGS}
    study = AttentionStudy(model, dataset, methods, layers=args.layers, image_size=args.image_size,
                           batch_size=args.batch_size, sigma=args.sigma, seed=args.seed, ceiling=not args.no_ceiling,
                           options=method_options or None, dense_layers=args.dense_layers,
                           run_key={"args": key, "options": loader_options})
    params = run_record("attention", config, model=getattr(model, "dissect_info", {}), dataset=dataset.name,
                        dataset_options=loader_options, dataset_size=len(dataset), **dataset_notes(dataset))
    return Built(study, params)


def run(args) -> int:
    """``cli.py attention``: one library call, :func:`dissect.runner.orchestrate.run_command`."""
    from dissect.runner.orchestrate import Command, run_command
    from dissect.studies.attention_gaze import AttentionStudy

    check_numbers(args)
    command = Command("attention", build, OUTPUTS, study=AttentionStudy)
    return run_command(command, vars(args), run_options(args, out_dir(args), progress=not args.no_progress,
                                                       default_every=8))
