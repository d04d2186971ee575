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
    dead_units: str = "skip"
    regions: str | None = None
    sr_root: str | None = None
    on_missing: str | None = None
    split: str | None = None
    one_based: bool = False

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
                               dead=None if self.dead_units == "skip" else self.dead_units,
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
    from dissect.reports import prepare_run_dir, run_folder

    _check_numbers(cfg)
    out = cfg.out_dir()
    state = prepare_run_dir(out, "dissect", outputs=_DISSECT_OUTPUTS, resume=cfg.resume, overwrite=cfg.overwrite,
                            resumable=True)
    if cfg.resume and state == "finished":
        print(f"{out} holds a finished run: nothing to resume (pass --overwrite to run it again)")
        print(f"next: python cli.py stats {out}")
        return 0
    with run_folder(out):  # a command that fails before writing anything leaves no empty folder
        return _dissect_into(cfg, out)


_DISSECT_OUTPUTS = ("units.csv", "summary.csv")


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
                                run_key={"dataset_options": options, "data_root": cfg.data_root})
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
    print(f"wrote {paths['units']}, {paths['summary']}, {paths['run']}")
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
    from dissect.reports import default_run_dir, prepare_run_dir, run_folder

    _check_numbers(args)
    methods = args.methods or ["gradcam"]
    out = Path(args.out).expanduser() if args.out else default_run_dir(
        "attention", args.model, args.dataset, _root_word(args.data_root), methods, args.layers or None,
        dense=args.dense_layers, weights=_weights_word(args.weights), first=args.max_images,
        size=None if args.image_size == 224 else args.image_size, seed=args.seed or None,
        sigma=None if args.sigma == 24.0 else args.sigma, cam_fit=args.cam_fit_images,
        ceiling="none" if args.no_ceiling else None, regions=args.regions, split=args.split)
    prepare_run_dir(out, "attention", outputs=("per_image.csv", "summary.csv"), overwrite=args.overwrite)
    with run_folder(out):
        return _attention_into(args, methods, out)


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
        model = load_model(name, weights=args.weights, seed=args.seed)
        _check_fits(model, name, [], args.image_size)
        model = model.to(device)
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
                                 overlays=not args.no_overlays, sigma=args.sigma)
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
    from dissect.reports import default_run_dir, prepare_run_dir, run_folder

    models = args.models or ([] if args.maps else list(classical.METHODS))
    sources = resolve_sources(models, weights=args.weights, maps=args.maps or (), image_size=args.image_size,
                              device=_resolve_device(args.device), seed=args.seed)
    out = Path(args.out).expanduser() if args.out else default_run_dir(
        "evaluate", models, [Path(m).name for m in (args.maps or ())], args.dataset, _root_word(args.data_root),
        weights=_weights_word(args.weights) if args.weights else None, first=args.max_images,
        seed=args.seed or None)
    prepare_run_dir(out, "evaluate", outputs=("per_image.csv", "summary.csv"), overwrite=args.overwrite)
    with run_folder(out):
        return _evaluate_into(args, sources, out)


def _evaluate_into(args, sources, out: Path) -> int:
    from datasets import load_dataset
    from dissect.evaluation import run_evaluation
    from dissect.evaluation_report import write_evaluation_report
    from dissect.reports import check_writable, run_record

    check_writable(out)
    options = dataset_options(args.dataset, args.data_root, args.seed, **_flags_of(args))
    dataset = load_dataset(args.dataset, args.data_root, **options)
    result = run_evaluation(dataset, sources, sigma=args.sigma, seed=args.seed, ceiling=not args.no_ceiling,
                            max_images=args.max_images, save_maps=args.save_maps, progress=not args.no_progress)
    params = run_record("evaluate", vars(args), dataset=dataset.name, dataset_options=options,
                        **_dataset_notes(dataset))
    paths = write_evaluation_report(result, out, params)
    cols = ["model", "weights", "n"] + [c for c in ("nss_mean", "cc_mean", "auc_judd_mean", "sauc_mean", "ig_mean",
                                                    "nmm_mean", "seconds_mean") if c in result.summary.columns]
    print(result.summary[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for name, detail in result.info["maps_resized"].items():
        print(f"note: {detail['n_images']} map(s) of {name} resized bilinearly to the image size "
              f"(from {', '.join(detail['from_shapes'])})")
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
    d.add_argument("--seed", type=int, default=0, help="seed of random weights and generated pop-out arrays")
    d.add_argument("--max-images", type=int, help="use only N images (a quick look), taken round-robin over the "
                                                  "pop-out dimensions so that every category is seen")
    d.add_argument("--dead-units", choices=("skip", "zero"), default="skip",
                   help="a unit constant on an image: leave that region out of its mean (skip, default) or "
                        "score it 0 as He et al.'s code did (zero)")
    d.add_argument("--resume", action="store_true", help="continue the interrupted run in --out (same options)")
    d.add_argument("--overwrite", action="store_true", help="discard a previous run in --out and start again")
    d.add_argument("--no-progress", action="store_true", help="hide the progress bar")

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
    return parser


def _config_from_args(args) -> DissectConfig:
    return DissectConfig(model=args.model, layers=args.layers or ["conv5_3"], dataset=args.dataset,
                         data_root=args.data_root, weights=args.weights, out=args.out,
                         image_size=args.image_size, batch_size=args.batch_size, device=args.device,
                         top_k=args.top_k, threshold=args.threshold, seed=args.seed, resume=args.resume,
                         overwrite=args.overwrite, max_images=args.max_images, progress=not args.no_progress,
                         dead_units=args.dead_units, **_flags_of(args))


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
}


def _enable_region_cache() -> None:
    """Fixation-cluster regions are cached in ``<data dir>/regions`` unless
    ``$SALIENCY_DISSECT_REGION_CACHE`` says otherwise (empty: off)."""
    import os

    from datasets.download import default_data_dir
    from datasets.regions_from_fixations import CACHE_ENV

    os.environ.setdefault(CACHE_ENV, str(default_data_dir() / "regions"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _enable_region_cache()
    original = warnings.formatwarning
    if not args.debug:
        warnings.formatwarning = _one_line_warning
    try:
        _check_datasets_package()
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
