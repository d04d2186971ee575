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
        if self.out:
            return Path(self.out).expanduser()
        return Path("runs") / f"dissect-{self.model}-{self.dataset}"


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
    from datasets import load_dataset
    from dissect.dissection import environment_versions, run_dissection
    from dissect.models import load_model
    from dissect.reports import check_writable, format_summary, write_dissection_reports

    out = cfg.out_dir()
    if out.exists() and (out / "progress.json").exists() and not (cfg.resume or cfg.overwrite):
        raise ValueError(f"{out} already holds a run; pass --resume to continue it, --overwrite to start "
                         "again, or choose another --out")
    if cfg.overwrite and out.exists():
        for name in ("progress.json", "units.csv", "summary.csv", "run.json"):
            (out / name).unlink(missing_ok=True)
        for state in out.glob("state-*.npz"):
            state.unlink()
    check_writable(out)
    device = _resolve_device(cfg.device)
    options = dataset_options(cfg.dataset, cfg.data_root, cfg.seed, regions=cfg.regions, sr_root=cfg.sr_root,
                              on_missing=cfg.on_missing, split=cfg.split, one_based=cfg.one_based)
    dataset = load_dataset(cfg.dataset, cfg.data_root, **options)
    # Feature layers only (every alias is one): VGG's 124M classifier parameters are not built.
    model = load_model(cfg.model, weights=cfg.weights, seed=cfg.seed,
                       classifier=any("classifier" in spec for spec in cfg.layers))
    layers = _expand_layers(model, cfg.layers)
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
    params = {"command": "dissect", "config": asdict(cfg), "layers_resolved": layers,
              "model": getattr(model, "dissect_info", {}), "dataset": dataset.name,
              "dataset_options": options, "dataset_size": len(dataset), **_dataset_notes(dataset),
              "versions": environment_versions(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0))}
    paths = write_dissection_reports(result, out, params)
    metric = "NMM" if result.info["metric"] == "nmm" else "region NSS"
    print(f"mean {metric} of the top-{cfg.top_k} units (layers x categories):")
    print(format_summary(result.summary))
    info = result.info
    skipped = {"empty masks": info["n_regions_empty"], "regions without fixations": info["n_regions_unfixated"],
               "images without regions": info["n_images_without_regions"]}
    if any(skipped.values()):
        print("skipped: " + ", ".join(f"{v} {k}" for k, v in skipped.items() if v))
    print(f"wrote {paths['units']}, {paths['summary']}, {paths['run']}")
    return 0


def _dataset_notes(dataset) -> dict:
    """What a loader skipped or could not find, for run.json."""
    return {key: list(getattr(dataset, attr)) for key, attr in (("images_skipped", "skipped"),
                                                               ("images_missing", "missing"))
            if getattr(dataset, attr, None)}


def cmd_popout_generate(args) -> int:
    from datasets.popout import CONTROL_DIMENSIONS, DIMENSIONS, PopoutDataset, PopoutParams, write_popout_set
    from dissect.reports import check_writable

    out = check_writable(args.out)
    dims = DIMENSIONS + (CONTROL_DIMENSIONS if args.with_control else ())
    params = PopoutParams(canvas=(args.canvas, args.canvas))
    dataset = PopoutDataset(n_per_dimension=args.n_per_dimension, seed=args.seed, dimensions=dims, params=params)
    write_popout_set(dataset, out)
    print(f"wrote {len(dataset)} pop-out arrays ({', '.join(dims)}) to {out}")
    return 0


def cmd_attention(args) -> int:
    from datasets import load_dataset
    from datasets.base import first
    from dissect.attention_report import write_attention_report
    from dissect.dissection import environment_versions
    from dissect.models import load_model
    from dissect.reports import check_writable

    out = check_writable(args.out or Path("runs") / f"attention-{args.model}-{args.dataset}")
    device = _resolve_device(args.device)
    options = dataset_options(args.dataset, args.data_root, args.seed, **_flags_of(args))
    dataset = first(load_dataset(args.dataset, args.data_root, **options), args.max_images)
    model = load_model(args.model, weights=args.weights, seed=args.seed).to(device)
    methods = args.methods or ["gradcam"]
    method_options = {}
    if args.cam_fit_images:
        if "cam" not in methods:
            raise ValueError("--cam-fit-images is for --method cam")
        from dissect.attention import fit_cam_regression
        from dissect.dissection import preprocess

        n = min(args.cam_fit_images, len(dataset))
        images = preprocess([dataset[i].image for i in range(n)], args.image_size)
        method_options["cam"] = {"cam_weights": fit_cam_regression(model, images.to(device))}
    params = {"command": "attention", "args": vars(args), "model": getattr(model, "dissect_info", {}),
              "dataset": dataset.name, "dataset_options": options, **_dataset_notes(dataset),
              "versions": environment_versions()}
    paths = write_attention_report(model, dataset, methods, out, params=params, layers=args.layers,
                                   image_size=args.image_size, batch_size=args.batch_size, sigma=args.sigma,
                                   seed=args.seed, progress=not args.no_progress, ceiling=not args.no_ceiling,
                                   options=method_options or None, dense_layers=args.dense_layers)
    import pandas as pd

    summary = pd.read_csv(paths["summary"], keep_default_na=False, na_values=[""])
    summary["layer"] = summary["layer"].fillna("")
    cols = [c for c in ("method", "layer", "n", "mae_mean", "nss_mean", "cc_mean", "auc_judd_mean", "sauc_mean",
                        "ig_mean") if c in summary.columns]
    print(summary[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_robustness(args) -> int:
    import pandas as pd

    from datasets import load_dataset
    from datasets.base import first
    from dissect.attention_study import fooling_rate
    from dissect.models import load_model
    from dissect.reports import check_writable

    for eps in args.epsilon:
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"epsilon {eps} is outside [0, 1] (it is in pixel units of images scaled to [0, 1])")
    out = check_writable(args.out or Path("runs") / f"robustness-{args.dataset}")
    device = _resolve_device(args.device)
    options = dataset_options(args.dataset, args.data_root, args.seed, **_flags_of(args))
    dataset = first(load_dataset(args.dataset, args.data_root, **options), args.max_images)
    rows = []
    for name in args.models or ["vgg16"]:
        model = load_model(name, weights=args.weights, seed=args.seed).to(device)
        for eps in args.epsilon:
            result = fooling_rate(model, dataset, eps, image_size=args.image_size, batch_size=args.batch_size,
                                  progress=not args.no_progress)
            rows.append({"model": name, "weights": model.dissect_info.get("weights_detail"), **result})
    table = pd.DataFrame(rows)
    table.to_csv(out / "robustness.csv", index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {out / 'robustness.csv'}")
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
    d.add_argument("--out", help="run folder (default runs/dissect-MODEL-DATASET)")
    d.add_argument("--image-size", type=int, default=224, help="network input side in pixels (default 224)")
    d.add_argument("--batch-size", type=int, default=8)
    d.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    d.add_argument("--top-k", type=int, default=10, help="units averaged in top_k_mean (default 10)")
    d.add_argument("--threshold", type=float, default=1.5, help="score threshold for counting units (default 1.5)")
    d.add_argument("--seed", type=int, default=0, help="seed of random weights and generated pop-out arrays")
    d.add_argument("--max-images", type=int, help="stop after this many images (a quick look)")
    d.add_argument("--dead-units", choices=("skip", "zero"), default="skip",
                   help="a unit constant on an image: leave that region out of its mean (skip, default) or "
                        "score it 0 as He et al.'s code did (zero)")
    d.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    d.add_argument("--overwrite", action="store_true", help="discard a previous run in --out")
    d.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    p = sub.add_parser("popout", help="synthetic pop-out search arrays")
    psub = p.add_subparsers(dest="popout_command", required=True)
    g = psub.add_parser("generate", help="write pop-out arrays (PNG images, PNG masks, metadata.csv)")
    g.add_argument("--out", required=True, help="folder to write")
    g.add_argument("--n-per-dimension", type=int, default=10)
    g.add_argument("--seed", type=int, default=0)
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
    a.add_argument("--model", default="vgg16")
    a.add_argument("--method", dest="methods", action="append",
                   help="activation, cam, gradcam, guided_backprop, guided_gradcam or dense; repeatable "
                        "(default gradcam)")
    a.add_argument("--layer", dest="layers", action="append", help="layer(s) of the layer-level methods "
                                                                    "(default: each method's own; not dense)")
    a.add_argument("--dense-layer", dest="dense_layers", action="append",
                   help="layers of the dense attention model (default: every conv layer alias)")
    _add_dataset_args(a, "popout-gaze", "a dataset with fixations: osie, osie-sr, salicon, folder, or popout-gaze "
                                        "(simulated observers, offline)")
    a.add_argument("--weights", default="auto")
    a.add_argument("--out", help="run folder (default runs/attention-MODEL-DATASET)")
    a.add_argument("--image-size", type=int, default=224)
    a.add_argument("--batch-size", type=int, default=4)
    a.add_argument("--sigma", type=float, default=24.0, help="Gaussian sigma of the human density maps (px)")
    a.add_argument("--device", default="cpu")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--max-images", type=int, help="use only the first N images")
    a.add_argument("--no-ceiling", action="store_true", help="skip the leave-one-subject-out ceiling (slow)")
    a.add_argument("--cam-fit-images", type=int, metavar="N",
                   help="for cam on models without GAP + linear (VGG, AlexNet): fit the class weights by "
                        "regression of class scores on GAP features over the first N images (Ebrahimpour et al.; "
                        "N must exceed the layer's channels, e.g. 600 for VGG16 conv5_3)")
    a.add_argument("--no-progress", action="store_true")

    r = sub.add_parser("robustness", help="FGSM fooling rate per model (captum)",
                       description="Fraction of images whose top-1 label changes under a one-step FGSM "
                                   "perturbation of size epsilon (pixel units of [0, 1] images).")
    r.add_argument("--model", dest="models", action="append", help="repeatable (default vgg16)")
    r.add_argument("--epsilon", type=float, action="append", required=True, help="repeatable, in [0, 1]")
    _add_dataset_args(r, "popout", "any dataset (default popout)")
    r.add_argument("--max-images", type=int, help="use only the first N images")
    r.add_argument("--weights", default="auto")
    r.add_argument("--out", help="folder for robustness.csv (default runs/robustness-DATASET)")
    r.add_argument("--image-size", type=int, default=224)
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--device", default="cpu")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--no-progress", action="store_true")

    dl = sub.add_parser("download", help="fetch a public dataset into the data cache",
                        description="Download OSIE from its public repository (checksum verified) into the cache "
                                    "(~/.cache/saliency-dissect or $SALIENCY_DISSECT_DATA); for SALICON, say where "
                                    "to get it and how to lay it out.")
    dl.add_argument("name", choices=("osie", "salicon"))
    dl.add_argument("--data-dir", help="cache folder (default ~/.cache/saliency-dissect)")
    dl.add_argument("--force", action="store_true", help="download again even if the files are there")

    lay = sub.add_parser("layers", help="list a model's readable layer names with channels and stride")
    lay.add_argument("--model", default="vgg16")
    lay.add_argument("--image-size", type=int, default=224)
    return parser


def _config_from_args(args) -> DissectConfig:
    return DissectConfig(model=args.model, layers=args.layers or ["conv5_3"], dataset=args.dataset,
                         data_root=args.data_root, weights=args.weights, out=args.out,
                         image_size=args.image_size, batch_size=args.batch_size, device=args.device,
                         top_k=args.top_k, threshold=args.threshold, seed=args.seed, resume=args.resume,
                         overwrite=args.overwrite, max_images=args.max_images, progress=not args.no_progress,
                         dead_units=args.dead_units, **_flags_of(args))


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


_COMMANDS = {
    "dissect": lambda args: cmd_dissect(_config_from_args(args)),
    "popout": lambda args: cmd_popout_generate(args),
    "layers": lambda args: cmd_layers(args),
    "stats": lambda args: cmd_stats(args),
    "attention": lambda args: cmd_attention(args),
    "robustness": lambda args: cmd_robustness(args),
    "download": lambda args: cmd_download(args),
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
        return _COMMANDS[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, PermissionError, RuntimeError, OSError,
            ConnectionError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
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
