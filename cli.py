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
            names += [a for a in aliases[i:j + 1] if a.rstrip("0123456789_") == kind]
    return list(dict.fromkeys(names))


def _resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but no CUDA GPU is available; use --device cpu")
    return name


def _dataset_options(dataset: str, data_root: str | None, seed: int) -> dict:
    return {"seed": seed} if dataset in ("popout", "popout-gaze") and data_root is None else {}


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
    dataset = load_dataset(cfg.dataset, cfg.data_root, **_dataset_options(cfg.dataset, cfg.data_root, cfg.seed))
    model = load_model(cfg.model, weights=cfg.weights, seed=cfg.seed)
    layers = _expand_layers(model, cfg.layers)
    t0 = time.time()
    try:
        result = run_dissection(model, layers, dataset, image_size=cfg.image_size, batch_size=cfg.batch_size,
                                device=device, top_k=cfg.top_k, threshold=cfg.threshold,
                                checkpoint_dir=out, resume=cfg.resume, progress=cfg.progress,
                                max_images=cfg.max_images)
    except KeyboardInterrupt:
        print(f"interrupted: finished batches are saved in {out}; rerun the same command with --resume",
              file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, OSError) as exc:
        if (out / "progress.json").exists():  # some batches finished: say how to keep them
            raise RuntimeError(f"{exc} (finished batches are saved in {out}: fix the problem and rerun "
                               "with --resume)") from exc
        raise
    params = {"command": "dissect", "config": asdict(cfg), "layers_resolved": layers,
              "model": getattr(model, "dissect_info", {}), "dataset": dataset.name,
              "dataset_size": len(dataset), "versions": environment_versions(),
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
    dataset = load_dataset(args.dataset, args.data_root, **_dataset_options(args.dataset, args.data_root, args.seed))
    dataset = first(dataset, args.max_images)
    model = load_model(args.model, weights=args.weights, seed=args.seed).to(device)
    methods = args.methods or ["gradcam"]
    params = {"command": "attention", "args": vars(args), "model": getattr(model, "dissect_info", {}),
              "dataset": dataset.name, "versions": environment_versions()}
    paths = write_attention_report(model, dataset, methods, out, params=params, layers=args.layers,
                                   image_size=args.image_size, batch_size=args.batch_size, sigma=args.sigma,
                                   seed=args.seed, progress=not args.no_progress, ceiling=not args.no_ceiling)
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
    from dissect.attention_study import fooling_rate
    from dissect.models import load_model
    from dissect.reports import check_writable

    out = check_writable(args.out or Path("runs") / f"robustness-{args.dataset}")
    device = _resolve_device(args.device)
    dataset = load_dataset(args.dataset, args.data_root, **_dataset_options(args.dataset, args.data_root, args.seed))
    for eps in args.epsilon:
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"epsilon {eps} is outside [0, 1] (it is in pixel units of images scaled to [0, 1])")
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
    d.add_argument("--model", default="vgg16", help="vgg16, vgg19, resnet50 or alexnet (default vgg16)")
    d.add_argument("--layer", "--layers", dest="layers", action="append", metavar="NAME",
                   help="layer alias (conv5_3), dotted module path, or a range conv4_1:conv5_3; repeatable "
                        "(default conv5_3)")
    d.add_argument("--dataset", default="popout", help="popout (default, generated offline), folder, osie, "
                                                       "osie-sr or salicon")
    d.add_argument("--data-root", help="folder holding the dataset (not needed for generated pop-out arrays)")
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
                                                                    "(default: each method's own)")
    a.add_argument("--dataset", default="popout-gaze", help="a dataset with fixations: osie, osie-sr, salicon, "
                                                            "folder, or popout-gaze (simulated observers, offline)")
    a.add_argument("--data-root")
    a.add_argument("--weights", default="auto")
    a.add_argument("--out", help="run folder (default runs/attention-MODEL-DATASET)")
    a.add_argument("--image-size", type=int, default=224)
    a.add_argument("--batch-size", type=int, default=4)
    a.add_argument("--sigma", type=float, default=24.0, help="Gaussian sigma of the human density maps (px)")
    a.add_argument("--device", default="cpu")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--max-images", type=int, help="use only the first N images")
    a.add_argument("--no-ceiling", action="store_true", help="skip the leave-one-subject-out ceiling (slow)")
    a.add_argument("--no-progress", action="store_true")

    r = sub.add_parser("robustness", help="FGSM fooling rate per model (captum)",
                       description="Fraction of images whose top-1 label changes under a one-step FGSM "
                                   "perturbation of size epsilon (pixel units of [0, 1] images).")
    r.add_argument("--model", dest="models", action="append", help="repeatable (default vgg16)")
    r.add_argument("--epsilon", type=float, action="append", required=True, help="repeatable, in [0, 1]")
    r.add_argument("--dataset", default="popout")
    r.add_argument("--data-root")
    r.add_argument("--weights", default="auto")
    r.add_argument("--out", help="folder for robustness.csv (default runs/robustness-DATASET)")
    r.add_argument("--image-size", type=int, default=224)
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--device", default="cpu")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--no-progress", action="store_true")

    lay = sub.add_parser("layers", help="list a model's readable layer names with channels and stride")
    lay.add_argument("--model", default="vgg16")
    lay.add_argument("--image-size", type=int, default=224)
    return parser


def _config_from_args(args) -> DissectConfig:
    return DissectConfig(model=args.model, layers=args.layers or ["conv5_3"], dataset=args.dataset,
                         data_root=args.data_root, weights=args.weights, out=args.out,
                         image_size=args.image_size, batch_size=args.batch_size, device=args.device,
                         top_k=args.top_k, threshold=args.threshold, seed=args.seed, resume=args.resume,
                         overwrite=args.overwrite, max_images=args.max_images, progress=not args.no_progress)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


_COMMANDS = {
    "dissect": lambda args: cmd_dissect(_config_from_args(args)),
    "popout": lambda args: cmd_popout_generate(args),
    "layers": lambda args: cmd_layers(args),
    "stats": lambda args: cmd_stats(args),
    "attention": lambda args: cmd_attention(args),
    "robustness": lambda args: cmd_robustness(args),
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    original = warnings.formatwarning
    if not args.debug:
        warnings.formatwarning = _one_line_warning
    try:
        return _COMMANDS[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, PermissionError, RuntimeError, OSError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = original


if __name__ == "__main__":
    sys.exit(main())
