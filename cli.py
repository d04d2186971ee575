"""Command line of saliency-dissect: parse arguments into a config, call the library, report.

    python cli.py dissect --model vgg16 --layer conv5_3
    python cli.py dissect --model vgg16 --layers conv4_1:conv5_3 --dataset osie-sr --data-root ROOT
    python cli.py popout generate --out popout-arrays
    python cli.py layers --model resnet50

Errors print one line on stderr and exit with status 2 (``--debug`` shows the traceback);
Ctrl-C during a dissection saves the finished batches and exits with status 130.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["main", "build_parser", "DissectConfig"]


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
        from dissect.reports import default_run_dir

        if self.out:
            return Path(self.out).expanduser()
        return default_run_dir("dissect", self.model, self.dataset, _root_word(self.data_root), self.layers,
                               weights=_weights_word(self.weights), first=self.max_images,
                               size=None if self.image_size == 224 else self.image_size,
                               seed=self.seed or None, k=None if self.top_k == 10 else self.top_k,
                               T=None if self.threshold == 1.5 else self.threshold,
                               dead=None if self.dead_units == "zero" else self.dead_units,
                               min_valid=None if self.dead_units == "zero" or self.min_valid == 0.5 else self.min_valid,
                               null=None if self.null == 100 else self.null,
                               boot=None if self.bootstrap == 200 else self.bootstrap,
                               regions=self.regions, split=self.split, sr=_root_word(self.sr_root),
                               missing=self.on_missing, one_based=self.one_based)


def _root_word(root: str | None) -> str | None:
    return Path(root).expanduser().name or None if root else None


def _weights_word(weights: str) -> str | None:
    """How the weights appear in a default folder name (``auto`` is left out)."""
    if weights == "auto":
        return None
    return weights if weights in ("imagenet", "random", "imagenet-encoder") else Path(weights).stem


def _expand_layers(model, specs: list[str]) -> list[str]:
    """Expand ``conv4_1:conv5_3`` ranges over the model's readable aliases (same kind only)."""
    from dissect.models import layer_aliases

    aliases = list(layer_aliases(model))
    names: list[str] = []
    for spec in specs:
        for part in spec.split(","):
            part = part.strip()
            if ":" not in part:
                names.append(part)
                continue
            first, last = part.split(":", 1)
            for end in (first, last):
                if end not in aliases:
                    raise ValueError(f"layer range {part!r}: {end!r} is not a layer alias of this model; "
                                     f"valid: {', '.join(aliases)}")
            i, j = aliases.index(first), aliases.index(last)
            if i > j:
                raise ValueError(f"layer range {part!r} runs backwards; write it from input to output")
            kind = first.rstrip("0123456789_")
            span = aliases[i:j + 1]
            if last.rstrip("0123456789_") == kind:  # conv4_1:conv5_3 -> the convs only, not pool4
                span = [a for a in span if a.rstrip("0123456789_") == kind]
            names += span
    return list(dict.fromkeys(names))


def _resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but no CUDA GPU is available; use --device cpu")
    return name


_DATASET_FLAGS = {  # loader keyword -> (flag, datasets that take it)
    "regions": ("--regions", ("osie", "osie-sr", "salicon")),
    "sr_root": ("--sr-root", ("osie", "osie-sr")),
    "on_missing": ("--on-missing", ("osie", "osie-sr")),
    "split": ("--split", ("salicon",)),
    "one_based": ("--one-based", ("folder",)),
}


def dataset_options(dataset: str, data_root: str | None, seed: int, **flags) -> dict:
    """Loader keywords from the command line's dataset flags (only those given).

    Raises:
        ValueError: a flag given for a dataset that does not take it.
    """
    options = {"seed": seed} if dataset in ("popout", "popout-gaze") and data_root is None else {}
    for key, value in flags.items():
        if value in (None, False):
            continue
        flag, takers = _DATASET_FLAGS[key]
        if dataset not in takers:
            raise ValueError(f"{flag} applies to --dataset {' or '.join(takers)}, not {dataset}")
        options[key] = value
    return options


def _flags_of(ns) -> dict:
    return {key: getattr(ns, key, None) for key in _DATASET_FLAGS}


def _add_dataset_args(parser: argparse.ArgumentParser, default: str, help_text: str) -> None:
    parser.add_argument("--dataset", default=default, help=help_text)
    parser.add_argument("--data-root", help="folder holding the dataset (not needed for generated pop-out "
                                            "arrays, nor for OSIE after `cli.py download osie`)")
    parser.add_argument("--regions", choices=("auto", "sr", "clusters", "none"),
                        help="OSIE/SALICON regions: OSIE-SR annotations, fixation clusters or none "
                             "(default: sr for osie-sr, auto for osie, none for salicon)")
    parser.add_argument("--sr-root", help="folder holding the OSIE-SR export (SegmentationObject/, "
                                          "SegmentationClass/) when it is not beside the OSIE files")
    parser.add_argument("--on-missing", choices=("error", "skip"),
                        help="OSIE stimuli or annotation files that are missing: stop (default) or skip them")
    parser.add_argument("--split", choices=("train", "val"), help="SALICON split (default train)")
    parser.add_argument("--one-based", action="store_true",
                        help="folder dataset: fixations.csv holds 1-based (MATLAB) coordinates")


def cmd_dissect(cfg: DissectConfig) -> int:
    if cfg.ray is not None:
        return _dissect_on_ray(cfg)
    from dissect.reports import prepare_run_dir, run_dir_state, run_folder

    _check_numbers(cfg)
    out = cfg.out_dir()
    # a shard (and every Ray task) may pass --resume before its folder holds anything: it then starts afresh
    resume = cfg.resume and not (cfg.shard and run_dir_state(out) in ("absent", "empty"))
    state = prepare_run_dir(out, "dissect", outputs=_DISSECT_OUTPUTS, resume=resume, overwrite=cfg.overwrite,
                            resumable=True)
    if cfg.resume and state == "finished":
        print(f"{out} holds a finished run: nothing to resume (pass --overwrite to run it again)")
        print(f"next: python cli.py stats {out}")
        return 0
    with run_folder(out):  # a command that fails before writing anything leaves no empty folder
        return _dissect_into(cfg, out)


_DISSECT_OUTPUTS = ("units.csv", "summary.csv", "labels.csv")


def _dissect_into(cfg: DissectConfig, out: Path) -> int:
    from datasets import load_dataset
    from datasets.fixations import dropped_fixations_message
    from dissect.dissection import run_dissection
    from dissect.models import load_model
    from dissect.reports import (check_writable, explain_summary, format_summary, remove_checkpoint, run_record,
                                 weights_banner, write_dissection_reports)

    check_writable(out)
    device = _resolve_device(cfg.device)
    options = dataset_options(cfg.dataset, cfg.data_root, cfg.seed, regions=cfg.regions, sr_root=cfg.sr_root,
                              on_missing=cfg.on_missing, split=cfg.split, one_based=cfg.one_based)
    dataset = load_dataset(cfg.dataset, cfg.data_root, **options)
    # Feature layers only (every alias is one): VGG's 124M classifier parameters are not built.
    model = load_model(cfg.model, weights=cfg.weights, seed=cfg.seed,
                       classifier=any("classifier" in spec for spec in cfg.layers))
    layers = _unique_layer_flags(model, _expand_layers(model, cfg.layers))
    _check_fits(model, cfg.model, layers, cfg.image_size)
    t0 = time.time()
    progress_file = out / "progress.json"
    before = progress_file.stat().st_mtime_ns if progress_file.exists() else None

    def saved_now() -> bool:  # did this run checkpoint anything?
        return progress_file.exists() and progress_file.stat().st_mtime_ns != before

    try:
        result = run_dissection(model, layers, dataset, image_size=cfg.image_size, batch_size=cfg.batch_size,
                                device=device, top_k=cfg.top_k, threshold=cfg.threshold,
                                checkpoint_dir=out, resume=cfg.resume, progress=cfg.progress,
                                max_images=cfg.max_images, dead_units=cfg.dead_units,
                                null=cfg.null, bootstrap=cfg.bootstrap, seed=cfg.seed, min_valid=cfg.min_valid,
                                run_key={"dataset_options": options, "data_root": cfg.data_root},
                                shard=_shard_of(cfg.shard), checkpoint_seconds=cfg.checkpoint_seconds)
    except KeyboardInterrupt:
        where = f"finished batches are saved in {out}; rerun the same command with --resume" if saved_now() \
            else "no batch had finished, nothing to resume"
        print(f"interrupted: {where}", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, OSError) as exc:
        if saved_now():  # some batches finished: say how to keep them
            raise RuntimeError(f"{exc} (finished batches are saved in {out}: fix the problem and rerun "
                               "with --resume)") from exc
        raise
    model_info = getattr(model, "dissect_info", {})
    params = run_record("dissect", asdict(cfg), model=model_info, layers_resolved=layers, dataset=dataset.name,
                        dataset_options=options, dataset_size=len(dataset), **_dataset_notes(dataset),
                        started=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0)))
    if cfg.shard:  # a shard keeps its resumable state for `cli.py merge`
        return _finish_shard(out, params, result.info["shard"], result.info["shard"]["fingerprint"]["n_images"])
    paths = write_dissection_reports(result, out, params)
    remove_checkpoint(out)  # the run is finished: its resumable state has served
    metric = "NMM" if result.info["metric"] == "nmm" else "region NSS"
    banner = weights_banner(model_info)
    print(f"mean {metric} of the top-{cfg.top_k} units (layers x categories), {cfg.model}"
          + (", RANDOM WEIGHTS:" if banner else f", {model_info.get('weights', '')} weights:"))
    print(format_summary(result.summary))
    info = result.info
    for line in explain_summary(result.summary, cfg.top_k, info.get("n_images")):
        print(line)
    skipped = {"empty masks": info["n_regions_empty"], "regions without fixations": info["n_regions_unfixated"],
               "images without regions": info["n_images_without_regions"]}
    if any(skipped.values()):
        print("skipped: " + ", ".join(f"{v} {k}" for k, v in skipped.items() if v))
    for line in dropped_fixations_message(info.get("n_fixations_dropped", 0), info.get("n_fixations", 0),
                                          info.get("n_images")):
        print(f"warning: {line}")
    if banner:
        print(banner)
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    print(f"next: python cli.py stats {out}   (heat maps, bar charts, ANOVA and Tukey, best-unit overlays)")
    return 0


def _check_numbers(ns) -> None:
    """The numeric flags of a command, checked before any work: one line naming the flag."""
    from dissect.checks import MAX_SEED

    for flag, attr, low in (("--image-size", "image_size", 16), ("--batch-size", "batch_size", 1),
                            ("--top-k", "top_k", 1), ("--max-images", "max_images", 1),
                            ("--cam-fit-images", "cam_fit_images", 1), ("--n-per-dimension", "n_per_dimension", 1),
                            ("--canvas", "canvas", 16)):
        value = getattr(ns, attr, None)
        if value is not None and value < low:
            what = {"--image-size": " (the network input side in pixels; 224 is standard)",
                    "--canvas": " (the array side in pixels; 224 is standard)"}.get(flag, "")
            raise ValueError(f"{flag} {value} is too small: it must be at least {low}{what}")
    seed = getattr(ns, "seed", None)
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise ValueError(f"--seed {seed} is out of range: use an integer from 0 to {MAX_SEED}")
    for flag, attr in (("--threshold", "threshold"), ("--sigma", "sigma")):
        value = getattr(ns, attr, None)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{flag} must be a finite number, got {value}")


def _unique_layer_flags(model, names: list[str]) -> list[str]:
    """The layers given, each module once (``conv5_3`` and ``features.29`` are one layer of VGG16)."""
    from dissect.hooks import unique_layers

    kept, dropped = unique_layers(model, names)
    for name, same in dropped:
        warnings.warn(f"--layer {name} is the same layer as {same}: scored once, as {same}", UserWarning, stacklevel=2)
    return [name for name, _ in kept]


def _check_fits(model, model_name: str, layers, image_size: int, flag: str = "--layer") -> None:
    """One dry forward of a blank image: the input size fits the model and each layer gives maps."""
    import torch

    from dissect.hooks import ActivationRecorder

    if not layers:
        return
    from dissect.models import ClassifierNotBuilt

    try:
        with ActivationRecorder(model, list(layers), on_repeat="last") as rec, torch.inference_mode():
            model(torch.zeros(1, 3, image_size, image_size, dtype=next(model.parameters()).dtype))
    except ClassifierNotBuilt:
        pass  # a feature-layer model (load_model(classifier=False)): every layer before it has run
    except RuntimeError as exc:
        raise ValueError(f"--image-size {image_size} is too small for {model_name} ({str(exc).splitlines()[0]}): "
                         "use a larger one, e.g. 224") from None
    for name in layers:
        output = rec.activations.get(name)
        if output is None or output.dim() != 4 or min(output.shape[2:]) < 1:
            shape = "no output" if output is None else "output " + " x ".join(map(str, output.shape))
            raise ValueError(f"{flag} {name} gives no spatial maps ({shape}): choose a convolutional layer (list "
                             f"them with `python cli.py layers --model {model_name}`)")


def _dataset_notes(dataset) -> dict:
    """What a loader skipped or could not find, for run.json."""
    return {key: list(getattr(dataset, attr)) for key, attr in (("images_skipped", "skipped"),
                                                               ("images_missing", "missing"))
            if getattr(dataset, attr, None)}


def cmd_popout_generate(args) -> int:
    from datasets.popout import CONTROL_DIMENSIONS, DIMENSIONS, PopoutDataset, PopoutParams, write_popout_set
    from dissect.reports import check_writable, default_run_dir, prepare_run_dir, run_folder

    _check_numbers(args)
    out = Path(args.out).expanduser() if args.out else default_run_dir(
        "popout", n=args.n_per_dimension, seed=args.seed or None, canvas=None if args.canvas == 224 else args.canvas,
        control=args.with_control)
    prepare_run_dir(out, "popout generate", outputs=("metadata.csv",), overwrite=args.overwrite)
    with run_folder(out):
        check_writable(out)
        dims = DIMENSIONS + (CONTROL_DIMENSIONS if args.with_control else ())
        params = PopoutParams(canvas=(args.canvas, args.canvas))
        dataset = PopoutDataset(n_per_dimension=args.n_per_dimension, seed=args.seed, dimensions=dims, params=params)
        write_popout_set(dataset, out)
    print(f"wrote {len(dataset)} pop-out arrays ({', '.join(dims)}) to {out}")
    print(f"next: python cli.py dissect --dataset popout --data-root {out}")
    return 0


def cmd_attention(args) -> int:
    from dissect.reports import default_run_dir, prepare_run_dir

    _check_numbers(args)
    methods = args.methods or ["gradcam"]
    out = Path(args.out).expanduser() if args.out else default_run_dir(
        "attention", args.model, args.dataset, _root_word(args.data_root), methods, args.layers or None,
        dense=args.dense_layers, weights=_weights_word(args.weights), first=args.max_images,
        size=None if args.image_size == 224 else args.image_size, seed=args.seed or None,
        sigma=None if args.sigma == 24.0 else args.sigma, cam_fit=args.cam_fit_images,
        ceiling="none" if args.no_ceiling else None, regions=args.regions, split=args.split)
    if getattr(args, "ray", None) is not None:
        if not args.resume:  # the merged files follow the run-folder policy; shards/ is _ray_shards' business
            prepare_run_dir(out, "attention", outputs=("per_image.csv", "summary.csv"), overwrite=args.overwrite)
        return _table_on_ray(args, out, _attention_shard_task)
    return _in_run_folder(out, "attention", args, lambda: _attention_into(args, methods, out))


def _in_run_folder(out: Path, command: str, args, run) -> int:
    """``run()`` under the run-folder policy (:func:`dissect.reports.prepare_run_dir`) of a table
    command (``per_image.csv``, ``summary.csv``); a ``--shard`` with ``--resume`` continues its own
    pieces instead. A folder the command created and left empty is removed (``run_folder``)."""
    from dissect.reports import prepare_run_dir, run_folder

    if not (getattr(args, "shard", None) and args.resume):
        prepare_run_dir(out, command, outputs=("per_image.csv", "summary.csv", "shard.json"),
                        overwrite=args.overwrite)
    with run_folder(out):
        return run()


def _attention_into(args, methods, out: Path) -> int:
    from datasets import load_dataset
    from datasets.base import first
    from datasets.fixations import dropped_fixations_message
    from dissect.attention_report import write_attention_report
    from dissect.models import load_model
    from dissect.reports import check_writable, run_record, weights_banner

    check_writable(out)
    device = _resolve_device(args.device)
    options = dataset_options(args.dataset, args.data_root, args.seed, **_flags_of(args))
    dataset = first(load_dataset(args.dataset, args.data_root, **options), args.max_images)
    model = load_model(args.model, weights=args.weights, seed=args.seed)
    _check_fits(model, args.model, args.layers or [], args.image_size)
    _check_fits(model, args.model, args.dense_layers or [], args.image_size, flag="--dense-layer")
    model = model.to(device)
    method_options = {}
    if args.cam_fit_images:
        if "cam" not in methods:
            raise ValueError("--cam-fit-images is for --method cam")
        from dissect.attention import fit_cam_regression
        from dissect.dissection import preprocess

        n = min(args.cam_fit_images, len(dataset))
        images = preprocess([dataset[i].image for i in range(n)], args.image_size)
        method_options["cam"] = {"cam_weights": fit_cam_regression(model, images.to(device))}
    model_info = getattr(model, "dissect_info", {})
    params = run_record("attention", vars(args), model=model_info, dataset=dataset.name, dataset_options=options,
                        dataset_size=len(dataset), **_dataset_notes(dataset))
    if getattr(args, "shard", None):
        return _attention_shard(args, model, dataset, methods, method_options, params, out, options)
    paths = write_attention_report(model, dataset, methods, out, params=params, layers=args.layers,
                                   image_size=args.image_size, batch_size=args.batch_size, sigma=args.sigma,
                                   seed=args.seed, progress=not args.no_progress, ceiling=not args.no_ceiling,
                                   options=method_options or None, dense_layers=args.dense_layers)
    import json

    import pandas as pd

    summary = pd.read_csv(paths["summary"], keep_default_na=False, na_values=[""])
    summary["layer"] = summary["layer"].fillna("")
    cols = [c for c in ("method", "layer", "n", "mae_mean", "nss_mean", "cc_mean", "kl_mean", "sim_mean",
                        "auc_judd_mean", "sauc_mean", "ig_mean") if c in summary.columns]
    banner = weights_banner(model_info)
    print(f"attention vs gaze, mean over images, {args.model}"
          + (", RANDOM WEIGHTS:" if banner else f", {model_info.get('weights', '')} weights:"))
    print(summary[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    info = json.loads(paths["run"].read_text())
    for line in dropped_fixations_message(info.get("n_fixations_dropped", 0), info.get("n_fixations", 0),
                                          info.get("n_images")):
        print(f"warning: {line}")
    if banner:
        print(banner)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_robustness(args) -> int:
    from dissect.reports import default_run_dir, prepare_run_dir, run_folder

    _check_numbers(args)
    for eps in args.epsilon:
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"--epsilon {eps} is outside [0, 1] (it is in pixel units of images scaled to [0, 1])")
    models = args.models or ["vgg16"]
    out = Path(args.out).expanduser() if args.out else default_run_dir(
        "robustness", models, args.dataset, _root_word(args.data_root), eps=args.epsilon,
        weights=_weights_word(args.weights), first=args.max_images,
        size=None if args.image_size == 224 else args.image_size, seed=args.seed or None)
    prepare_run_dir(out, "robustness", outputs=("robustness.csv",), overwrite=args.overwrite)
    with run_folder(out):
        return _robustness_into(args, models, out)


def _robustness_into(args, models, out: Path) -> int:
    import pandas as pd

    from datasets import load_dataset
    from datasets.base import first
    from dissect.attention_study import fooling_rate
    from dissect.models import load_model
    from dissect.reports import atomic_write_json, check_writable, model_columns, run_record, weights_banner

    check_writable(out)
    device = _resolve_device(args.device)
    options = dataset_options(args.dataset, args.data_root, args.seed, **_flags_of(args))
    dataset = first(load_dataset(args.dataset, args.data_root, **options), args.max_images)
    rows, infos = [], []
    t0 = time.perf_counter()
    for name in models:
        model = load_model(name, weights=args.weights, seed=args.seed).to(device)
        infos.append(getattr(model, "dissect_info", {}))
        for eps in args.epsilon:
            result = fooling_rate(model, dataset, eps, image_size=args.image_size, batch_size=args.batch_size,
                                  progress=not args.no_progress)
            rows.append({**model_columns(infos[-1]), **result})
    table = pd.DataFrame(rows)
    table.to_csv(out / "robustness.csv", index=False)
    atomic_write_json(out / "run.json", run_record(
        "robustness", vars(args), model=infos, dataset=dataset.name, dataset_options=options,
        dataset_size=len(dataset), **_dataset_notes(dataset), n_images=len(dataset),
        timings_s={"total": round(time.perf_counter() - t0, 4)}))
    print("FGSM fooling rate" + (", RANDOM WEIGHTS:" if any(i.get("weights") == "random" for i in infos) else ":"))
    print(table.drop(columns=["weights_detail"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for info in infos:
        if weights_banner(info):
            print(weights_banner(info))
    if sum(i.get("weights") == "random" for i in infos) > 1:
        print(f"note: the random-weight models share --seed {args.seed} (saliency_vgg16's encoder is then vgg16's): "
              "equal rates say nothing about the architectures")
    print(f"wrote {out / 'robustness.csv'}, {out / 'run.json'}")
    return 0


def cmd_download(args) -> int:
    from datasets import download

    if args.name == "osie":
        path = download.download_osie(args.data_dir, force=args.force)
        print(f"OSIE is in {path}: use --dataset osie --data-root {path} (or no --data-root); put He et al.'s "
              f"OSIE-SR export (SegmentationObject/, SegmentationClass/) in {path} for --dataset osie-sr")
    else:
        print(download.download_salicon(args.data_dir))
    return 0


def cmd_layers(args) -> int:
    from dissect.models import list_layers, load_model

    _check_numbers(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(args.model, weights="random")
    print(list_layers(model, input_size=args.image_size).to_string(index=False))
    return 0


def cmd_stats(args) -> int:
    from dissect.stats_report import write_stats_report

    written = write_stats_report(args.run_dir, compare_to=args.run_dir2, maps_dir=args.maps, out=args.out,
                                 overlays=not args.no_overlays, sigma=args.sigma, head=args.head)
    for name, path in written.items():
        print(f"{name:>24}  {path}")
    return 0


def _add_model_run_args(parser: argparse.ArgumentParser, batch_size: int, batch_help: str) -> None:
    """--weights, --overwrite, --image-size, --batch-size, --device of a command that runs a model."""
    parser.add_argument("--weights", default="auto", help="auto (ImageNet if available, else random with a "
                                                          "warning), imagenet, random, or a path to a state dict/checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    parser.add_argument("--image-size", type=int, default=224, help="network input side in pixels (default 224)")
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"{batch_help} (default {batch_size})")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")


def cmd_evaluate(args) -> int:
    from dissect import classical
    from dissect.evaluation import resolve_sources
    from dissect.reports import default_run_dir, prepare_run_dir

    models = args.models or ([] if args.maps else list(classical.METHODS))
    out = Path(args.out).expanduser() if args.out else default_run_dir(
        "evaluate", models, [Path(m).name for m in (args.maps or ())], args.dataset, _root_word(args.data_root),
        weights=_weights_word(args.weights) if args.weights else None, first=args.max_images,
        seed=args.seed or None)
    if args.resume and not args.shard and args.ray is None:
        raise ValueError("--resume continues a --shard or --ray run; a plain evaluate run starts again (drop --resume)")
    if args.ray is not None:
        if not args.resume:  # the merged files follow the run-folder policy; shards/ is _ray_shards' business
            prepare_run_dir(out, "evaluate", outputs=("per_image.csv", "summary.csv"), overwrite=args.overwrite)
        return _table_on_ray(args, out, _evaluate_shard_task)
    sources = resolve_sources(models, weights=args.weights, maps=args.maps or (), image_size=args.image_size,
                              device=_resolve_device(args.device), seed=args.seed)
    return _in_run_folder(out, "evaluate", args, lambda: _evaluate_into(args, sources, out))


def _evaluate_into(args, sources, out: Path) -> int:
    from datasets import load_dataset
    from dissect.evaluation import run_evaluation
    from dissect.evaluation_report import write_evaluation_report
    from dissect.reports import check_writable, run_record

    check_writable(out)
    options = dataset_options(args.dataset, args.data_root, args.seed, **_flags_of(args))
    dataset = load_dataset(args.dataset, args.data_root, **options)
    params = run_record("evaluate", vars(args), dataset=dataset.name, dataset_options=options,
                        **_dataset_notes(dataset))
    if getattr(args, "shard", None):
        return _evaluate_shard(args, dataset, sources, params, out, options)
    result = run_evaluation(dataset, sources, sigma=args.sigma, seed=args.seed, ceiling=not args.no_ceiling,
                            max_images=args.max_images, save_maps=args.save_maps, progress=not args.no_progress)
    paths = write_evaluation_report(result, out, params)
    cols = ["model", "weights", "n"] + [c for c in ("nss_mean", "cc_mean", "auc_judd_mean", "sauc_mean", "ig_mean",
                                                    "nmm_mean", "seconds_mean") if c in result.summary.columns]
    print(result.summary[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for name, detail in result.info["maps_resized"].items():
        print(f"note: {detail['n_images']} map(s) of {name} resized bilinearly to the image size "
              f"(from {', '.join(detail['from_shapes'])})")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


# --------------------------------------------------------------------------- shards, merge and Ray (issue 13)

_SHARDS_DIR = "shards"
_EXECUTION_ARGS = ("out", "shard", "ray", "shards", "ray_cpus", "resume", "overwrite", "no_progress", "debug",
                   "checkpoint_every", "command")


def _shard_of(text):
    from dissect.shards import parse_shard

    return parse_shard(text) if text else None


def _add_shard_args(parser: argparse.ArgumentParser, resume: bool = False) -> None:
    group = parser.add_argument_group("shards and Ray (merge shards with `cli.py merge OUT SHARD_DIR...`)")
    group.add_argument("--shard", metavar="I/N", help="run only part I of N (0-based; contiguous whole batches) "
                                                      "into --out, a shard folder with its own resumable state")
    group.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                       help="run the shards as Ray tasks: no ADDRESS starts a local cluster, 'auto' or "
                            "ray://HOST:PORT joins one (needs pip install -e '.[ray]'); --out gets the merged "
                            "files and shards/")
    group.add_argument("--shards", type=int, metavar="N", help="with --ray: number of shards (default: tasks the "
                                                               "cluster runs at once)")
    group.add_argument("--ray-cpus", type=float, default=1.0, help="with --ray: CPUs per shard task (default 1; "
                                                                   "--device cuda also asks 1 GPU per task)")
    if resume:
        group.add_argument("--resume", action="store_true", help="continue an interrupted --shard or --ray run")
        group.add_argument("--checkpoint-every", type=int, metavar="B",
                           help="with --shard/--ray: save the shard every B batches (default 8; evaluate: "
                                "B images, default the whole shard)")


def _finish_shard(out: Path, params: dict, shard: dict, n_dataset: int) -> int:
    from dissect.reports import atomic_write_json
    from dissect.shards import PARAMS_FILE

    atomic_write_json(out / PARAMS_FILE, params)
    lo, hi = shard["images"]
    print(f"shard {shard['index']}/{shard['count']}: images {lo}..{hi - 1} ({hi - lo} of {n_dataset}) done in "
          f"{out}; when every shard is done: python cli.py merge OUT SHARD_DIR...")
    return 0


def _attention_shard(args, model, dataset, methods, method_options, params, out, options) -> int:
    from dissect.shards import run_attention_shard

    shard = _shard_of(args.shard)
    key = {k: v for k, v in vars(args).items() if k not in _EXECUTION_ARGS}
    record = run_attention_shard(model, dataset, methods, out, shard, every=args.checkpoint_every,
                                 resume=args.resume, params=params, run_key={"args": key, "options": options},
                                 progress=not args.no_progress, layers=args.layers, image_size=args.image_size,
                                 batch_size=args.batch_size, sigma=args.sigma, seed=args.seed,
                                 ceiling=not args.no_ceiling, options=method_options or None,
                                 dense_layers=args.dense_layers)
    lo, hi = record["batches"]
    print(f"shard {shard[0]}/{shard[1]}: batches {lo}..{hi - 1} done in {out}; when every shard is done: "
          "python cli.py merge OUT SHARD_DIR...")
    return 0


def _evaluate_shard(args, dataset, sources, params, out, options) -> int:
    from dissect.shards import run_evaluation_shard

    shard = _shard_of(args.shard)
    key = {k: v for k, v in vars(args).items() if k not in _EXECUTION_ARGS and k != "save_maps"}
    record = run_evaluation_shard(dataset, sources, out, shard, every=args.checkpoint_every, resume=args.resume,
                                  params=params, run_key={"args": key, "options": options},
                                  progress=not args.no_progress, sigma=args.sigma, seed=args.seed,
                                  ceiling=not args.no_ceiling, max_images=args.max_images, save_maps=args.save_maps)
    lo, hi = record["batches"]
    print(f"shard {shard[0]}/{shard[1]}: scored images {lo}..{hi - 1} done in {out}; when every shard is done: "
          "python cli.py merge OUT SHARD_DIR...")
    return 0


def _evaluate_shard_task(namespace: dict) -> int:
    """One Ray task: a shard of ``evaluate`` in-process."""
    return cmd_evaluate(argparse.Namespace(**namespace))


def _dissect_shard_task(config: dict) -> int:
    """One Ray task: a shard of ``dissect`` in-process (resumes its own checkpoint on a retry)."""
    return cmd_dissect(DissectConfig(**config))


def _attention_shard_task(namespace: dict) -> int:
    """One Ray task: a shard of ``attention`` in-process."""
    return cmd_attention(argparse.Namespace(**namespace))


def _ray_shards(address: str, out: Path, resume: bool, overwrite: bool, n_shards, device: str, cpus: float, task,
                make_args, progress: bool):
    """Run ``task(make_args(i, n, folder))`` for every shard on Ray; return the folders and the record."""
    import shutil

    from dissect import ray_backend

    shards_dir = out / _SHARDS_DIR
    if shards_dir.exists() and not (resume or overwrite):
        raise ValueError(f"{out} already holds a Ray run ({shards_dir}); pass --resume to continue it, "
                         "--overwrite to start again, or choose another --out")
    if overwrite and shards_dir.exists():
        shutil.rmtree(shards_dir)
    if n_shards is not None and n_shards < 1:
        raise ValueError(f"--shards must be >= 1, got {n_shards}")
    gpus = 1 if device.startswith("cuda") else 0  # Ray hides GPUs from tasks that ask none: "auto" gets the CPU
    folders: list[Path] = []

    def calls(resources):
        n = n_shards or ray_backend.task_slots(resources, num_cpus=cpus, num_gpus=gpus)
        folders.extend(shards_dir / f"shard-{i}-of-{n}" for i in range(n))
        return [(task, (make_args(i, n, folder),), str(folder / "attempts.log")) for i, folder in enumerate(folders)]

    record = ray_backend.run_tasks(calls, address=address, num_cpus=cpus, num_gpus=gpus, progress=progress,
                                   desc="shards")
    record["tasks"] = [{"shard": i, "folder": str(f), **{k: v for k, v in t.items() if k != "value"}}
                       for i, (f, t) in enumerate(zip(folders, record["tasks"]))]
    return folders, record


def _dissect_on_ray(cfg: DissectConfig) -> int:
    from dataclasses import replace

    out = cfg.out_dir()
    if cfg.shard:
        raise ValueError("--shard and --ray do not mix: --ray runs every shard itself (choose how many with --shards)")

    def make_args(i, n, folder):
        return asdict(replace(cfg, shard=f"{i}/{n}", ray=None, shards=None, out=str(folder), resume=True,
                              overwrite=False, progress=False))

    folders, record = _ray_shards(cfg.ray, out, cfg.resume, cfg.overwrite, cfg.shards, cfg.device, cfg.ray_cpus,
                                  _dissect_shard_task, make_args, cfg.progress)
    return _write_merge(out, folders, ray=record, config=asdict(cfg))


def _table_on_ray(args, out: Path, task) -> int:
    """``attention`` / ``evaluate --ray``: every shard as a Ray task running ``task`` (the command
    in-process, resuming its shard folder), then the merged files in ``out``."""
    if args.shard:
        raise ValueError("--shard and --ray do not mix: --ray runs every shard itself (choose how many with --shards)")

    def make_args(i, n, folder):
        return {**vars(args), "shard": f"{i}/{n}", "ray": None, "shards": None, "out": str(folder), "resume": True,
                "overwrite": False, "no_progress": True}

    folders, record = _ray_shards(args.ray, out, args.resume, args.overwrite, args.shards, args.device,
                                  args.ray_cpus, task, make_args, not args.no_progress)
    return _write_merge(out, folders, ray=record, config=vars(args))


def _merged_params(params: dict, out: Path, config: dict | None = None) -> dict:
    """A shard's run parameters as the single run's: its --out, no --shard (or the Ray driver's ``config``)."""
    params = dict(params)
    for key in ("config", "args"):
        if isinstance(params.get(key), dict):
            params[key] = dict(config) if config is not None else {**params[key], "out": str(out), "shard": None}
    return params


def _write_merge(out: Path, folders, ray: dict | None = None, config: dict | None = None) -> int:
    import json

    from dissect.reports import check_writable, format_summary, write_dissection_reports
    from dissect.shards import PARAMS_FILE, merge_dissections, shard_folder_kind, write_attention_merge

    kinds = {str(f): shard_folder_kind(f) for f in folders}
    if len(set(kinds.values())) > 1:
        raise ValueError(f"these folders hold shards of different commands: {kinds}")
    kind = next(iter(kinds.values()))
    out = check_writable(out)
    extra = {"ray": ray} if ray else {}
    if kind == "dissect":
        result = merge_dissections(folders)
        first = Path(result.info["shards"][0]["name"])
        params = json.loads((first / PARAMS_FILE).read_text()) if (first / PARAMS_FILE).exists() else {}
        paths = write_dissection_reports(result, out, {**_merged_params(params, out, config), **extra})
        metric = "NMM" if result.info["metric"] == "nmm" else "region NSS"
        print(f"mean {metric} of the top-{result.info['top_k']} units (layers x categories), "
              f"{len(folders)} shards merged:")
        print(format_summary(result.summary))
    elif kind == "attention":
        first = sorted(folders, key=lambda f: json.loads((Path(f) / "shard.json").read_text())["shard"][0])[0]
        params = json.loads((Path(first) / PARAMS_FILE).read_text()) if (Path(first) / PARAMS_FILE).exists() else {}
        paths = write_attention_merge(folders, out, {**_merged_params(params, out, config), **extra})
    elif kind == "evaluate":
        from dissect.shards import write_evaluation_merge

        first = sorted(folders, key=lambda f: json.loads((Path(f) / "shard.json").read_text())["shard"][0])[0]
        params = json.loads((Path(first) / PARAMS_FILE).read_text()) if (Path(first) / PARAMS_FILE).exists() else {}
        paths = write_evaluation_merge(folders, out, {**_merged_params(params, out, config), **extra})
    else:
        raise ValueError(f"cannot merge {kind!r} shards yet")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _open_training_data(args):
    """The dataset of a ``train`` command, its train/val split and how it was opened."""
    from datasets import load_dataset
    from dissect.training import read_ids, split_dataset

    if args.dataset not in ("osie", "salicon", "folder"):
        raise ValueError(f"--dataset {args.dataset} cannot train a model: use osie, salicon or folder "
                         "(datasets with human fixations)")
    options = dataset_options(args.dataset, args.data_root, args.seed, **_flags_of(args))
    if args.dataset == "osie":
        options.setdefault("regions", "none")  # training needs images and fixations only
    dataset = load_dataset(args.dataset, args.data_root, **options)
    train, val = split_dataset(dataset, train_ids=read_ids(args.train_ids) if args.train_ids else None,
                               val_ids=read_ids(args.val_ids) if args.val_ids else None,
                               val_fraction=args.val_fraction, seed=args.seed)
    root = getattr(dataset, "root", args.data_root)
    info = {"name": dataset.name, "root": str(Path(root).resolve()) if root else None, "options": options}
    return train, val, info


def _train_config(args):
    from dissect.training import TrainConfig

    try:
        weights = tuple(float(w) for w in args.loss_weights.split(","))
    except ValueError:
        raise ValueError(f"--loss-weights takes 4 numbers KL,CC,NSS,SIM, e.g. 10,2,1,1; got {args.loss_weights!r}") \
            from None
    return TrainConfig(finetune=args.finetune, backbone=args.backbone, readout_layer=args.readout_layer,
                       encoder_weights=args.encoder_weights, seed=args.seed, steps=args.steps,
                       batch_size=args.batch_size, lr=args.lr, lr_decay=args.lr_decay,
                       decay_every=args.decay_every, eval_every=args.eval_every, loss=args.loss,
                       loss_weights=weights, image_size=args.image_size, cache=args.cache,
                       cache_dtype=args.cache_dtype, cache_memory_mb=args.cache_memory_mb,
                       device=_resolve_device(args.device), progress=not args.no_progress)


def cmd_train(args) -> int:
    import pandas as pd

    cfg = _train_config(args)
    cfg.check()  # bad settings fail before the data is read
    train, val, info = _open_training_data(args)
    if args.train_command == "scene":
        from dissect.training import train_scene

        paths = train_scene(train, val, args.out or Path("runs") / "train-scene", cfg,
                            labels=args.labels, class_weights=args.class_weights, resume=args.resume,
                            overwrite=args.overwrite, dataset_info=info)
    else:
        from dissect.training import train_saliency

        out = args.out or Path("runs") / f"train-saliency-{cfg.backbone}-K{cfg.finetune}"
        paths = train_saliency(train, val, out, cfg, resume=args.resume, overwrite=args.overwrite,
                               dataset_info=info)
    table = pd.read_csv(paths["val"])
    cols = [c for c in table.columns if c not in ("model", "weights")]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _add_evaluate_parser(sub) -> None:
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
    _add_dataset_args(e, "popout", "popout (default, generated), popout-gaze, osie, osie-sr, salicon or folder")
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
    _add_shard_args(e, resume=True)


def cmd_merge(args) -> int:
    out = Path(args.out).expanduser()
    folders = [Path(f) for f in args.shard_dirs]
    if any(out.resolve() == f.resolve() for f in folders):
        raise ValueError(f"OUT {out} is one of the shard folders; merge into a new folder")
    if (out / "run.json").exists() and not args.overwrite:
        raise ValueError(f"{out} already holds a run (run.json); pass --overwrite to replace it, or choose another OUT")
    return _write_merge(out, folders)


def _add_merge_parser(sub) -> None:
    m = sub.add_parser("merge", help="merge the shard folders of one run into the files a single run writes",
                       description="Merge shard folders (dissect/attention --shard I/N) into OUT: the same CSV files "
                                   "a single run with the same options writes, byte for byte, and its run.json. "
                                   "Refuses shards of different runs, missing, repeated or unfinished shards.")
    m.add_argument("out", help="folder for the merged files")
    m.add_argument("shard_dirs", nargs="+", metavar="SHARD_DIR", help="every shard folder of the run, any order")
    m.add_argument("--overwrite", action="store_true", help="replace the files of a previous merge in OUT")


def _add_train_parser(sub) -> None:
    t = sub.add_parser("train", help="train He et al.'s saliency (setups I/II) or scene model",
                       description="Fine-tune a model of the studies and write best.pt, last.pt, per-evaluation "
                                   "checkpoints, train_log.csv, val.csv, run.json and curves.png.")
    tsub = t.add_subparsers(dest="train_command", required=True)
    for name in ("saliency", "scene"):
        p = tsub.add_parser(name, help="He et al.'s saliency model: VGG16/ResNet-50 + 1x1 read-out, loss -NSS"
                            if name == "saliency" else "He et al. sec. 8: VGG16 + 3 FC layers, scene labels")
        if name == "saliency":
            p.add_argument("--finetune", default="0", help="K: 0 = setup I (only the read-out trains), K = also "
                                                          "the last K convs (setup II), all = 13 (default 0)")
            p.add_argument("--backbone", choices=("vgg16", "resnet50"), default="vgg16",
                           help="encoder: vgg16 (He et al., default) or resnet50 (with --readout-layer)")
            p.add_argument("--readout-layer", help="resnet50: the stage read out, layer1..layer4 (default layer4)")
            p.add_argument("--loss", choices=("nss", "kl+cc+nss+sim"), default="nss",
                           help="-NSS (He et al., default) or STRA-Net's KL + CC + NSS + SIM")
            p.add_argument("--loss-weights", default="10,2,1,1", help="KL,CC,NSS,SIM weights (STRA-Net: 10,2,1,1)")
        else:
            p.add_argument("--labels", required=True, help="CSV with columns image,scene (one row per image)")
            p.add_argument("--finetune", default="1", help="convs of the encoder that train (default 1: conv5_3)")
            p.add_argument("--class-weights", choices=("balanced", "none"), default="balanced",
                           help="cross-entropy class weights (default balanced: n / (classes * count))")
            p.set_defaults(backbone="vgg16", readout_layer=None, loss="nss", loss_weights="10,2,1,1")
        _add_dataset_args(p, "osie", "osie (default), salicon or folder: a dataset with fixations")
        _add_training_flags(p)
        p.add_argument("--out", help="run folder (default runs/train-...)")
        p.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
        p.add_argument("--overwrite", action="store_true", help="discard a run already in --out")


def _add_training_flags(p) -> None:
    """The training settings shared by `train` and `study finetune`."""
    p.add_argument("--encoder-weights", default="auto", help="auto, imagenet, random or a path to VGG16 weights")
    p.add_argument("--train-ids", help="file with one training image id per line")
    p.add_argument("--val-ids", help="file with one validation image id per line")
    p.add_argument("--val-fraction", type=float, help="random validation fraction (default 0.1, seeded)")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights, split and data order")
    p.add_argument("--steps", type=int, default=10000, help="optimiser steps (default 10000, He et al.)")
    p.add_argument("--batch-size", type=int, default=20, help="images per step (default 20)")
    p.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate (default 5e-3)")
    p.add_argument("--lr-decay", type=float, default=0.8, help="lr factor every --decay-every steps")
    p.add_argument("--decay-every", type=int, default=500, help="steps between learning-rate decays (default 500)")
    p.add_argument("--eval-every", type=int, default=500, help="validate and checkpoint every N steps")
    p.add_argument("--image-size", type=int, default=224, help="network input side in pixels (default 224)")
    p.add_argument("--cache", choices=("auto", "memory", "disk", "off"), default="auto",
                   help="frozen-prefix cache: auto (memory, or a disk memmap above --cache-memory-mb), "
                        "memory, disk or off")
    p.add_argument("--cache-dtype", choices=("float32", "float16"), default="float32",
                   help="storage of the cached features (float16: half the memory, tolerance documented)")
    p.add_argument("--cache-memory-mb", type=int, default=4096, help="above this the cache is a disk memmap")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def cmd_study(args) -> int:
    if getattr(args, "ray", None) is not None:
        return _study_on_ray(args)
    from dissect.finetune_study import run_finetune_study

    ks, data, options = _study_inputs(args)
    written = run_finetune_study(ks, *data, args.out, **options, progress=not args.no_progress)
    return _print_study(written)


def _study_inputs(args):
    """``(ks, (train, val), options)`` of ``study finetune``: what every setup needs."""
    from datasets import load_dataset
    from datasets.base import Subset
    from datasets.popout import PopoutDataset
    from dissect.training import image_ids, read_ids

    ks = []
    for part in args.finetune.split(","):
        part = part.strip()
        if part != "all" and not part.isdigit():
            raise ValueError(f"--finetune takes a comma list of K (0..13) or 'all', got {part!r}")
        ks.append(part if part == "all" else int(part))
    if len(set(ks)) != len(ks):
        raise ValueError(f"--finetune lists a setup twice: {args.finetune}")
    train, val, info = _open_training_data(args)
    options = dataset_options(args.dissect_dataset, args.dissect_root, args.seed)
    if args.dissect_regions:
        options["regions"] = args.dissect_regions
    dissect_set = load_dataset(args.dissect_dataset, args.dissect_root, **options)
    if args.dissect_ids:
        wanted, ids = read_ids(args.dissect_ids), image_ids(dissect_set)
        missing = [w for w in wanted if w not in ids]
        if missing:
            raise ValueError(f"dissection id {missing[0]!r} is not in {dissect_set.name}")
        dissect_set = Subset(dissect_set, [ids.index(w) for w in wanted])
    root = args.dissect_root
    dissect_info = {"name": args.dissect_dataset, "root": str(Path(root).resolve()) if root else None,
                    "options": options}
    popout = PopoutDataset(n_per_dimension=args.popout_n, seed=args.seed)
    options = dict(cfg=_train_config(args), dissect_set=dissect_set, popout_set=popout,
                   layers=args.layers or ["conv5_3"], dataset_info=info, dissect_info=dissect_info,
                   checkpoint=args.checkpoint, image_size=args.image_size, batch_size=args.dissect_batch_size)
    return ks, (train, val), options


def _study_setup_task(k, namespace: dict) -> dict:
    """One Ray task of ``study finetune --ray``: train and dissect setup ``k`` (resuming its checkpoints)."""
    from dissect.finetune_study import train_and_dissect_setup

    args = argparse.Namespace(**namespace)
    _, (train, val), options = _study_inputs(args)
    cfg = options.pop("cfg")
    paths = train_and_dissect_setup(k, train, val, args.out, cfg, **options, progress=False)
    return {name: str(path) for name, path in paths.items()}


def _study_on_ray(args) -> int:
    import time

    from dissect import ray_backend
    from dissect.finetune_study import finish_study, setup_calls, setup_label
    from dissect.reports import atomic_write_json, run_record

    ks, _, options = _study_inputs(args)  # checks the options and the data before any task starts
    out = Path(args.out)
    namespace = {**vars(args), "ray": None, "no_progress": True}
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    record = ray_backend.run_tasks(setup_calls(_study_setup_task, ks, out, namespace), address=args.ray,
                                   num_cpus=args.ray_cpus, num_gpus=1 if args.device.startswith("cuda") else 0,
                                   progress=not args.no_progress, desc="setups")
    setups = {setup_label(k): task["value"] for k, task in zip([None, *ks], record["tasks"])}
    record["tasks"] = [{"setup": setup_label(k), **{n: v for n, v in task.items() if n != "value"}}
                       for k, task in zip([None, *ks], record["tasks"])]
    written = finish_study(setups, out, options["cfg"], layers=options["layers"], checkpoint=options["checkpoint"])
    written["run"] = out / "run.json"
    atomic_write_json(written["run"], {**run_record("study finetune", vars(args)), "started": started,
                                       "setups": list(setups), "ray": record})
    return _print_study(written)


def _print_study(written: dict) -> int:
    import pandas as pd

    table = pd.read_csv(written["table3"])
    last = list(dict.fromkeys(table["layer"]))[-1]
    print(table[table["layer"] == last].pivot(index="setup", columns="category", values="top_k_mean")
          .to_string(float_format=lambda v: f"{v:.2f}"))
    for name, path in written.items():
        print(f"{name:>12}  {path}")
    return 0


def _add_study_parser(sub) -> None:
    s = sub.add_parser("study", help="He et al.'s fine-tuning study (Tables 3, 4, 6, Fig. 4, 7)")
    ssub = s.add_subparsers(dest="study_command", required=True)
    f = ssub.add_parser("finetune", help="train setups K, dissect each, write table3.csv and figures",
                        description="Train each setup from scratch (resumable), dissect its checkpoint on "
                                    "--dissect-dataset and on the pop-out arrays, and write table3.csv, "
                                    "improvement.png, popout_nmm.csv (Table 6), output_nmm.csv (Table 4 row) "
                                    "and spearman.csv (inner vs output saliency).")
    f.add_argument("--finetune", default="0,1,2,3,all", help="setups, comma separated (default 0,1,2,3,all)")
    f.add_argument("--backbone", choices=("vgg16",), default="vgg16", help="encoder (He et al.'s VGG16)")
    f.add_argument("--train-dataset", dest="dataset", default="osie", help="osie (default), salicon or folder")
    f.add_argument("--train-root", dest="data_root", help="folder of the training dataset")
    f.add_argument("--dissect-dataset", default="osie-sr", help="dataset dissected (default osie-sr)")
    f.add_argument("--dissect-root", help="folder of the dissection dataset")
    f.add_argument("--dissect-regions", choices=("auto", "sr", "clusters"),
                   help="OSIE regions of the dissection dataset (default: its loader's)")
    f.add_argument("--dissect-ids", help="file of image ids: dissect only these (e.g. the held-out images)")
    f.add_argument("--dissect-batch-size", type=int, default=8, help="images per forward pass when dissecting")
    f.add_argument("--layer", "--layers", dest="layers", action="append", help="layers dissected (default conv5_3)")
    f.add_argument("--popout-n", type=int, default=10, help="pop-out arrays per dimension (default 10: He et al.'s 80)")
    f.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which checkpoint to dissect")
    f.add_argument("--out", required=True, help="study folder")
    f.set_defaults(loss="nss", loss_weights="10,2,1,1", readout_layer=None)
    _add_training_flags(f)
    f.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run each setup as a Ray task (it resumes its own checkpoints when retried): no ADDRESS "
                        "starts a local cluster, 'auto' or ray://HOST:PORT joins one (pip install -e '.[ray]')")
    f.add_argument("--ray-cpus", type=float, default=1.0, help="with --ray: CPUs per setup task (default 1; "
                                                               "--device cuda also asks 1 GPU per task)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cli.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser("dissect", help="score every unit of some layers against annotated regions",
                       description="Score every unit of the chosen layers against the regions of a dataset and "
                                   "write units.csv, summary.csv and run.json.")
    d.add_argument("--model", default="vgg16", help="vgg16, vgg19, resnet50, alexnet, or He et al.'s saliency_vgg16 "
                                                    "/ scene_vgg16 (default vgg16)")
    d.add_argument("--layer", "--layers", dest="layers", action="append", metavar="NAME",
                   help="layer alias (conv5_3), dotted module path, or a range conv4_1:conv5_3; repeatable "
                        "(default conv5_3)")
    _add_dataset_args(d, "popout", "popout (default, generated offline), popout-gaze (simulated observers), "
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
    _add_shard_args(d)

    p = sub.add_parser("popout", help="synthetic pop-out search arrays")
    psub = p.add_subparsers(dest="popout_command", required=True)
    g = psub.add_parser("generate", help="write pop-out arrays (PNG images, PNG masks, metadata.csv)")
    g.add_argument("--out", help="folder to write (default runs/popout-n=N...)")
    g.add_argument("--n-per-dimension", type=int, default=10, help="arrays per pop-out dimension (default 10)")
    g.add_argument("--seed", type=int, default=0, help="seed of the arrays (default 0)")
    g.add_argument("--overwrite", action="store_true", help="replace the arrays already in --out")
    g.add_argument("--canvas", type=int, default=224, help="image side in pixels (default 224)")
    g.add_argument("--with-control", action="store_true", help="add the conjunction (no pop-out) control")

    st = sub.add_parser("stats", help="ANOVA, Tukey, OS/OD, Spearman, run comparison and figures of a run",
                        description="Statistics of a dissection run (and optionally its comparison with a second "
                                    "run, e.g. pretrained vs fine-tuned), written as CSV and PNG.")
    st.add_argument("run_dir", help="folder of a finished dissection (units.csv, summary.csv, run.json)")
    st.add_argument("run_dir2", nargs="?", help="a second run to compare with (changes are run_dir2 - run_dir)")
    st.add_argument("--maps", help="folder of a model's output maps, <image_id>.npy|png, for OS/OD and Spearman")
    st.add_argument("--head", help="a trained saliency checkpoint (cli.py train saliency): OS/OD and Spearman from "
                                   "its maps, computed directly (instead of --maps)")
    st.add_argument("--out", help="where to write (default RUN_DIR/stats)")
    st.add_argument("--sigma", type=float, default=24.0, help="Gaussian sigma of the human density map (px)")
    st.add_argument("--no-overlays", action="store_true", help="skip the best-unit overlay figures "
                                                               "(they reload the run's model)")

    a = sub.add_parser("attention", help="compare attention maps (Grad-CAM, CAM, dense, ...) with human gaze",
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
    _add_dataset_args(a, "popout-gaze", "a dataset with fixations: osie, osie-sr, salicon, folder, or popout-gaze "
                                        "(simulated observers, offline)")
    a.add_argument("--out", help="run folder (default runs/attention-MODEL-DATASET-METHODS-..., named by every "
                                 "option that changes the numbers)")
    _add_model_run_args(a, batch_size=4, batch_help="images per batch")
    a.add_argument("--sigma", type=float, default=24.0, help="Gaussian sigma of the human density maps (px)")
    a.add_argument("--seed", type=int, default=0, help="seed of random weights, s-AUC draws and generated arrays")
    a.add_argument("--max-images", type=int, help="use only N images, taken round-robin over the pop-out dimensions")
    a.add_argument("--no-ceiling", action="store_true", help="skip the leave-one-subject-out ceiling (slow)")
    a.add_argument("--cam-fit-images", type=int, metavar="N",
                   help="for cam on models without GAP + linear (VGG, AlexNet): fit the class weights by "
                        "regression of class scores on GAP features over the first N images (Ebrahimpour et al.; "
                        "N must exceed the layer's channels, e.g. 600 for VGG16 conv5_3)")
    a.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_shard_args(a, resume=True)

    r = sub.add_parser("robustness", help="FGSM fooling rate per model (captum)",
                       description="Fraction of images whose top-1 label changes under a one-step FGSM "
                                   "perturbation of size epsilon (pixel units of [0, 1] images).")
    r.add_argument("--model", dest="models", action="append", help="repeatable (default vgg16)")
    r.add_argument("--epsilon", type=float, action="append", required=True, help="repeatable, in [0, 1]")
    _add_dataset_args(r, "popout", "any dataset (default popout)")
    r.add_argument("--max-images", type=int, help="use only N images, taken round-robin over the pop-out dimensions")
    r.add_argument("--out", help="folder for robustness.csv and run.json (default runs/robustness-MODELS-DATASET-"
                                 "eps=...)")
    _add_model_run_args(r, batch_size=8, batch_help="images per attack step")
    r.add_argument("--seed", type=int, default=0, help="seed of random weights and generated arrays")
    r.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    dl = sub.add_parser("download", help="fetch a public dataset into the data cache",
                        description="Download OSIE from its public repository (checksum verified) into the cache "
                                    "(~/.cache/saliency-dissect or $SALIENCY_DISSECT_DATA); for SALICON, say where "
                                    "to get it and how to lay it out.")
    dl.add_argument("name", choices=("osie", "salicon"), help="osie (downloaded) or salicon (instructions)")
    dl.add_argument("--data-dir", help="cache folder (default ~/.cache/saliency-dissect)")
    dl.add_argument("--force", action="store_true", help="download again even if the files are there")

    lay = sub.add_parser("layers", help="list a model's readable layer names with channels and stride")
    lay.add_argument("--model", default="vgg16", help="vgg16, vgg19, resnet50, alexnet, saliency_vgg16, scene_vgg16")
    lay.add_argument("--image-size", type=int, default=224, help="input side for the map sizes (default 224)")
    _add_evaluate_parser(sub)
    _add_merge_parser(sub)
    _add_train_parser(sub)
    _add_study_parser(sub)
    return parser


def _config_from_args(args) -> DissectConfig:
    return DissectConfig(model=args.model, layers=args.layers or ["conv5_3"], dataset=args.dataset,
                         data_root=args.data_root, weights=args.weights, out=args.out,
                         image_size=args.image_size, batch_size=args.batch_size, device=args.device,
                         top_k=args.top_k, threshold=args.threshold, seed=args.seed, resume=args.resume,
                         overwrite=args.overwrite, max_images=args.max_images, progress=not args.no_progress,
                         dead_units=args.dead_units, null=args.null, bootstrap=args.bootstrap,
                         min_valid=args.min_valid, shard=args.shard, ray=args.ray, shards=args.shards,
                         ray_cpus=args.ray_cpus, checkpoint_seconds=args.checkpoint_seconds, **_flags_of(args))


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    text = str(message)
    if issubclass(category, Warning) and "integral is probably divergent" in text:
        text = "scipy could not converge a p-value integral (a very large test statistic): that p-value is approximate"
    return f"warning: {cli_words(text)}\n"


# Library phrases -> the command line's words, for errors and warnings printed by the CLI.
_CLI_PHRASES = (
    (re.compile(r"\bweights='auto', 'imagenet', 'random' or an existing file"),
     "--weights auto|imagenet|random or an existing file"),
    (re.compile(r"with fit_cam_regression\(model, images, layer\) and pass cam_weights=\.\.\. \(CLI: ([^)]*)\)"),
     r"with \1"),
    (re.compile(r"fit them with fit_cam_regression\([^)]*\)"), "fit them with --cam-fit-images N"),
    (re.compile(r"[\w.]+(?:\([^()]*\))?(?:=(?:'[^']*'|\S+))?\s*\(CLI: ([^)]*)\)"), r"\1"),
    (re.compile(r"\(CLI: ([^)]*)\)"), r"(\1)"),
    (re.compile(r"list them with model\.named_modules\(\)"), "list the aliases with `python cli.py layers`"),
    (re.compile(r"\bOSIEDataset\(root\)"), "--data-root"),
    (re.compile(r"\bweights='([\w-]+)'"), r"--weights \1"),
    (re.compile(r"\bdevice='(\w+)'"), r"--device \1"),
    (re.compile(r"\bon_missing='(\w+)'"), r"--on-missing \1"),
    (re.compile(r"\bregions='(\w+)'"), r"--regions \1"),
    (re.compile(r"\b(image_size|batch_size|max_images|top_k|n_per_dimension)\b(?= must)"),
     lambda m: "--" + m.group(1).replace("_", "-")),
)


def cli_words(message: str) -> str:
    """A library message in the command line's words, on one line: ``weights='random'`` becomes
    ``--weights random``, ``x (CLI: --flag)`` becomes ``--flag``; a multi-line message keeps its
    first line (torch's 7-line unpickling advice is not the user's fix)."""
    lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
    text = lines[0] if lines else str(message)
    if len(lines) > 1 and text.endswith(":"):
        text = text.rstrip(":")
    for pattern, replacement in _CLI_PHRASES:
        text = pattern.sub(replacement, text)
    if text.startswith("could not read weights file "):
        text += ("; --weights takes imagenet, random, auto, or a file saved with torch.save "
                 "(a state dict, or dissect.models.save_checkpoint)")
    return text


def _check_datasets_package() -> None:
    """The project's top-level ``datasets`` package and Hugging Face ``datasets`` share a name:
    whichever Python imports first wins. Fail with what to do instead of a confusing error later."""
    import datasets

    if not hasattr(datasets, "DATASET_NAMES"):
        raise RuntimeError(
            f"`import datasets` found Hugging Face datasets ({getattr(datasets, '__file__', '?')}), not this "
            "project's: run cli.py from the repository root, or use a virtual environment without Hugging Face "
            "datasets (pip uninstall datasets)")


_COMMANDS = {
    "dissect": lambda args: cmd_dissect(_config_from_args(args)),
    "popout": lambda args: cmd_popout_generate(args),
    "layers": lambda args: cmd_layers(args),
    "stats": lambda args: cmd_stats(args),
    "attention": lambda args: cmd_attention(args),
    "robustness": lambda args: cmd_robustness(args),
    "download": lambda args: cmd_download(args),
    "evaluate": lambda args: cmd_evaluate(args),
    "merge": lambda args: cmd_merge(args),
    "train": lambda args: cmd_train(args),
    "study": lambda args: cmd_study(args),
}


def _enable_region_cache() -> None:
    """Fixation-cluster regions are cached in ``<data dir>/regions`` unless
    ``$SALIENCY_DISSECT_REGION_CACHE`` says otherwise (empty: off)."""
    from datasets.download import default_data_dir
    from datasets.regions_from_fixations import CACHE_ENV

    os.environ.setdefault(CACHE_ENV, str(default_data_dir() / "regions"))


_M_ARENA_MAX = -8  # glibc mallopt parameter


def _limit_malloc_arenas() -> bool:
    """One malloc arena for the process (glibc only; ``$MALLOC_ARENA_MAX`` wins when it is set).

    The engine's loader and scoring threads would each get an arena of their own, and a freed
    buffer stays in the arena it came from: one arena took 40-65 MB off the peak RSS of a 6-layer
    VGG16 run on 80 images (bench/dissect_speed.py --memory), at no measurable cost in time.
    Returns whether the limit was set.
    """
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, 1))
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _limit_malloc_arenas()
    original = warnings.formatwarning
    if not args.debug:
        warnings.formatwarning = _one_line_warning
    try:
        _check_datasets_package()  # first: the cache setup below imports this project's datasets
        _enable_region_cache()
        return _COMMANDS[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, PermissionError, RuntimeError, OSError,
            ConnectionError) as exc:
        if args.debug:
            raise
        print(f"error: {cli_words(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = original


if __name__ == "__main__":
    sys.exit(main())
