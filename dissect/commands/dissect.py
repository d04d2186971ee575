"""``cli.py dissect``: score every unit of some layers against the regions of a dataset (He et al. 2019).

Its parser fills :class:`DissectConfig`; :func:`build` turns a config into the study
(:class:`dissect.studies.dissection.DissectionStudy`) and :mod:`dissect.runner.orchestrate` runs
it: a single run, a shard, every shard on Ray, with checkpoints and ``--resume``.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dissect.commands.common import (add_dataset_args, add_shard_args, check_fits, check_numbers, dataset_notes,
                                     dataset_options, expand_layers, flags_of, resolve_device, root_word,
                                     run_options, unique_layer_flags, weights_word)

__all__ = ["DissectConfig", "add_parser", "config_from_args", "build", "run"]

HELP = "score every unit of some layers against annotated regions"
OUTPUTS = ("units.csv", "summary.csv", "labels.csv")


@dataclass
class DissectConfig:
    """Every parameter of a ``dissect`` run (written to ``run.json``)."""

    model: str = "vgg16"
    layers: list[str] = field(default_factory=lambda: ["conv5_3"])
    dataset: str = "popout"
    data_root: str | None = None
    weights: str = "auto"
    out: str | None = None
    image_size: int = 224
    batch_size: int = 8
    device: str = "cpu"
    top_k: int = 10
    threshold: float = 1.5
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    max_images: int | None = None
    progress: bool = True
    dead_units: str = "zero"
    null: int = 100
    bootstrap: int = 200
    min_valid: float = 0.5
    regions: str | None = None
    sr_root: str | None = None
    on_missing: str | None = None
    split: str | None = None
    one_based: bool = False
    shard: str | None = None
    ray: str | None = None
    shards: int | None = None
    ray_cpus: float = 1.0
    checkpoint_seconds: float = 30.0

    def out_dir(self) -> Path:
        """``--out``, or a default folder under ``runs/`` that names every option that changes the
        numbers (model, dataset, layers, weights, image count and size, seed, ...)."""
        from dissect.runner.folders import default_run_dir

        if self.out:
            return Path(self.out).expanduser()
        return default_run_dir("dissect", self.model, self.dataset, root_word(self.data_root), self.layers,
                               weights=weights_word(self.weights), first=self.max_images,
                               size=None if self.image_size == 224 else self.image_size,
                               seed=self.seed or None, k=None if self.top_k == 10 else self.top_k,
                               T=None if self.threshold == 1.5 else self.threshold,
                               dead=None if self.dead_units == "zero" else self.dead_units,
                               min_valid=None if self.dead_units == "zero" or self.min_valid == 0.5 else self.min_valid,
                               null=None if self.null == 100 else self.null,
                               boot=None if self.bootstrap == 200 else self.bootstrap,
                               regions=self.regions, split=self.split, sr=root_word(self.sr_root),
                               missing=self.on_missing, one_based=self.one_based)


def add_parser(sub) -> None:
    d = sub.add_parser("dissect", help=HELP,
                       description="Score every unit of the chosen layers against the regions of a dataset and "
                                   "write units.csv, summary.csv and run.json.")
    d.add_argument("--model", default="vgg16", help="vgg16, vgg19, resnet50, alexnet, or He et al.'s saliency_vgg16 "
                                                    "/ scene_vgg16 (default vgg16)")
    d.add_argument("--layer", "--layers", dest="layers", action="append", metavar="NAME",
                   help="layer alias (conv5_3), dotted module path, or a range conv4_1:conv5_3; repeatable "
                        "(default conv5_3)")
    add_dataset_args(d, "popout", "popout (default, generated offline), popout-gaze (simulated observers), "
                                   "folder, osie, osie-sr or salicon")
    d.add_argument("--weights", default="auto", help="auto (ImageNet if available, else random with a warning), "
                                                     "imagenet, random, or a path to a state dict/checkpoint")
    d.add_argument("--out", help="run folder (default runs/dissect-MODEL-DATASET-LAYERS-..., named by every "
                                 "option that changes the numbers)")
    d.add_argument("--image-size", type=int, default=224, help="network input side in pixels (default 224)")
    d.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    d.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    d.add_argument("--top-k", type=int, default=10, help="units averaged in top_k_mean (default 10)")
    d.add_argument("--threshold", type=float, default=1.5, help="score threshold for counting units (default 1.5)")
    d.add_argument("--seed", type=int, default=0, help="seed of random weights, generated pop-out arrays, "
                   "the null's permutations and the bootstrap weights")
    d.add_argument("--max-images", type=int, help="use only N images (a quick look), taken round-robin over the "
                                                  "pop-out dimensions so that every category is seen")
    d.add_argument("--dead-units", choices=("skip", "zero"), default="zero",
                   help="a unit constant on an image: score that region 0 as He et al.'s code did (zero, default) "
                        "or leave it out of the unit's mean (skip; see --min-valid)")
    d.add_argument("--min-valid", type=float, default=0.5, metavar="FRACTION",
                   help="with --dead-units skip: rank a unit only if live on at least this fraction of a "
                        "category's regions (default 0.5)")
    d.add_argument("--null", type=int, default=100, metavar="P",
                   help="permutations of the null (each image's maps against another image's regions, same "
                        "pass): p-values, q-values, null_top_k_mean; 0 = off (default 100)")
    d.add_argument("--bootstrap", type=int, default=200, metavar="B",
                   help="bootstrap replicates over images for the 95%% intervals; 0 = off (default 200)")
    d.add_argument("--resume", action="store_true", help="continue the interrupted run in --out (same options)")
    d.add_argument("--overwrite", action="store_true", help="discard a previous run in --out and start again")
    d.add_argument("--checkpoint-seconds", type=float, default=30.0, metavar="S",
                   help="save the resumable state at most every S seconds, after the last batch and on Ctrl-C "
                        "(default 30; 0 = after every batch; a hard kill loses at most the last S seconds)")
    d.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_shard_args(d)


def config_from_args(args) -> DissectConfig:
    return DissectConfig(model=args.model, layers=args.layers or ["conv5_3"], dataset=args.dataset,
                         data_root=args.data_root, weights=args.weights, out=args.out,
                         image_size=args.image_size, batch_size=args.batch_size, device=args.device,
                         top_k=args.top_k, threshold=args.threshold, seed=args.seed, resume=args.resume,
                         overwrite=args.overwrite, max_images=args.max_images, progress=not args.no_progress,
                         dead_units=args.dead_units, null=args.null, bootstrap=args.bootstrap,
                         min_valid=args.min_valid, shard=args.shard, ray=args.ray, shards=args.shards,
                         ray_cpus=args.ray_cpus, checkpoint_seconds=args.checkpoint_seconds, **flags_of(args))


def build(config: dict, options) -> "Built":
    """The study and ``run.json`` parameters of a ``dissect`` config (the data and the model loaded)."""
    from datasets import load_dataset
    from dissect.models import load_model
    from dissect.runner.folders import run_record
    from dissect.runner.orchestrate import Built
    from dissect.studies.dissection import DissectionStudy

    cfg = DissectConfig(**config)
    t0 = time.time()
    device = resolve_device(cfg.device)
    loader_options = dataset_options(cfg.dataset, cfg.data_root, cfg.seed, regions=cfg.regions,
                                     sr_root=cfg.sr_root, on_missing=cfg.on_missing, split=cfg.split,
                                     one_based=cfg.one_based)
    dataset = load_dataset(cfg.dataset, cfg.data_root, **loader_options)
    # Feature layers only (every alias is one): VGG's 124M classifier parameters are not built.
    model = load_model(cfg.model, weights=cfg.weights, seed=cfg.seed,
                       classifier=any("classifier" in spec for spec in cfg.layers))
    layers = unique_layer_flags(model, expand_layers(model, cfg.layers))
    check_fits(model, cfg.model, layers, cfg.image_size)
    study = DissectionStudy(model, layers, dataset, image_size=cfg.image_size, batch_size=cfg.batch_size,
                            device=device, top_k=cfg.top_k, threshold=cfg.threshold, progress=options.progress,
                            max_images=cfg.max_images, dead_units=cfg.dead_units, null=cfg.null,
                            bootstrap=cfg.bootstrap, seed=cfg.seed, min_valid=cfg.min_valid,
                            run_key={"dataset_options": loader_options, "data_root": cfg.data_root})
    params = run_record("dissect", asdict(cfg), model=getattr(model, "dissect_info", {}), layers_resolved=layers,
                        dataset=dataset.name, dataset_options=loader_options, dataset_size=len(dataset),
                        **dataset_notes(dataset), started=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0)))
    return Built(study, params)


def run(args) -> int:
    """``cli.py dissect``: one library call, :func:`dissect.runner.orchestrate.run_command`."""
    from dissect.runner.orchestrate import Command, run_command
    from dissect.studies.dissection import DissectionStudy

    cfg = config_from_args(args)
    check_numbers(cfg)
    command = Command("dissect", build, OUTPUTS, resumable=True,
                      next_hint="next: python cli.py stats {out}   (heat maps, bar charts, ANOVA and Tukey, best-unit "
                                "overlays)", study=DissectionStudy)
    options = run_options(cfg, cfg.out_dir(), progress=cfg.progress, checkpoint_seconds=cfg.checkpoint_seconds)
    return run_command(command, asdict(cfg), options)
