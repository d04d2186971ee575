"""``cli.py evaluate``: score saliency models' output maps (classical models, a network, external maps).

The parser fills an ``argparse.Namespace`` (its ``vars`` are the run's config); :func:`build`
resolves the models and loads the data into :class:`dissect.studies.evaluation.EvaluationStudy`,
and :mod:`dissect.runner.orchestrate` runs it (a single run, a shard, every shard on Ray).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from dissect.commands.attention import EXECUTION_ARGS
from dissect.commands.common import (add_dataset_args, add_shard_args, dataset_notes, dataset_options, flags_of,
                                     resolve_device, root_word, run_options, weights_word)

__all__ = ["add_parser", "build", "run"]

OUTPUTS = ("per_image.csv", "summary.csv")


def add_parser(sub) -> None:
    from dissect.classical import METHODS

    e = sub.add_parser("evaluate", help="score saliency models' output maps (GBVS, BMS, ..., a network, or "
                                        "external maps) on fixations or pop-out arrays",
                       description="Score each model's output map per image: NSS, CC, KL, SIM, AUC-Judd, "
                                   "AUC-Borji, s-AUC, IG (datasets with fixations, with the centre-bias floor and "
                                   "the human ceiling), OS per region category, NMM on pop-out arrays; writes "
                                   "per_image.csv, summary.csv, run.json and figures.")
    e.add_argument("--model", dest="models", action="append", metavar="NAME",
                   help=f"{', '.join(METHODS)} or saliency_vgg16 (with --weights); repeatable "
                        "(default: every classical model when neither --model nor --maps is given)")
    e.add_argument("--weights", help="checkpoint (or auto/imagenet/random) of the network model(s)")
    e.add_argument("--maps", action="append", metavar="[NAME=]DIR",
                   help="a model's maps computed elsewhere, DIR/<image_id>.npy|png (name: the folder's name); "
                        "repeatable")
    add_dataset_args(e, "popout", "popout (default, generated), popout-gaze, osie, osie-sr, salicon or folder")
    e.add_argument("--out", help="run folder (default runs/evaluate-MODELS-DATASET...)")
    e.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    e.add_argument("--save-maps", metavar="DIR", help="write each model's maps as DIR/<model>/<image_id>.npy")
    e.add_argument("--max-images", type=int, help="use only the first N images")
    e.add_argument("--sigma", type=float, default=24.0, help="Gaussian sigma of the human density maps (px)")
    e.add_argument("--image-size", type=int, default=224, help="network input side (network models only)")
    e.add_argument("--device", default="cpu", help="where network models run: cpu, cuda, cuda:N or auto (default cpu)")
    e.add_argument("--seed", type=int, default=0, help="seed of random weights, generated data and s-AUC negatives")
    e.add_argument("--no-ceiling", action="store_true", help="skip the leave-one-subject-out ceiling (slow)")
    e.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_shard_args(e, resume=True)


def _models(args) -> list[str]:
    from dissect import classical

    return args.models or ([] if args.maps else list(classical.METHODS))


def out_dir(args) -> Path:
    """``--out``, or the default folder named by the models, maps, dataset and options."""
    from dissect.runner.folders import default_run_dir

    return Path(args.out).expanduser() if args.out else default_run_dir(
        "evaluate", _models(args), [Path(m).name for m in (args.maps or ())], args.dataset, root_word(args.data_root),
        weights=weights_word(args.weights) if args.weights else None, first=args.max_images, seed=args.seed or None)


def build(config: dict, options) -> "Built":
    """The study and ``run.json`` parameters of an ``evaluate`` config (models resolved, data read)."""
    from datasets import load_dataset
    from dissect.runner.folders import run_record
    from dissect.runner.orchestrate import Built
    from dissect.studies.evaluation import EvaluationStudy
    from dissect.studies.map_sources import resolve_sources

    args = argparse.Namespace(**config)
    sources = resolve_sources(_models(args), weights=args.weights, maps=args.maps or (), image_size=args.image_size,
                              device=resolve_device(args.device), seed=args.seed)
    loader_options = dataset_options(args.dataset, args.data_root, args.seed, **flags_of(args))
    dataset = load_dataset(args.dataset, args.data_root, **loader_options)
    params = run_record("evaluate", config, dataset=dataset.name, dataset_options=loader_options,
                        **dataset_notes(dataset))
    key = {k: v for k, v in config.items() if k not in EXECUTION_ARGS and k != "save_maps"}
    study = EvaluationStudy(dataset, sources, sigma=args.sigma, seed=args.seed, ceiling=not args.no_ceiling,
                            max_images=args.max_images, save_maps=args.save_maps, progress=options.progress,
                            run_key={"args": key, "options": loader_options})
    return Built(study, params)


def run(args) -> int:
    """``cli.py evaluate``: one library call, :func:`dissect.runner.orchestrate.run_command`."""
    from dissect.runner.orchestrate import Command, run_command
    from dissect.studies.evaluation import EvaluationStudy

    if args.resume and not args.shard and args.ray is None:
        raise ValueError("--resume continues a --shard or --ray run; a plain evaluate run starts again (drop --resume)")
    return run_command(Command("evaluate", build, OUTPUTS, study=EvaluationStudy), vars(args),
                       run_options(args, out_dir(args), progress=not args.no_progress))
