"""What the commands share: dataset flags, numeric checks, layer ranges, shard and Ray flags, devices.

Everything here parses or checks the command line; the library is imported inside functions, so
``python cli.py --help`` starts fast.
"""
from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

__all__ = ["root_word", "weights_word", "expand_layers", "resolve_device", "DATASET_FLAGS", "dataset_options",
           "flags_of", "add_dataset_args", "check_numbers", "unique_layer_flags", "check_fits", "dataset_notes",
           "add_model_run_args", "shard_of", "add_shard_args", "run_options"]


def root_word(root: str | None) -> str | None:
    return Path(root).expanduser().name or None if root else None


def weights_word(weights: str) -> str | None:
    """How the weights appear in a default folder name (``auto`` is left out)."""
    if weights == "auto":
        return None
    return weights if weights in ("imagenet", "random", "imagenet-encoder") else Path(weights).stem


def expand_layers(model, specs: list[str]) -> list[str]:
    """Expand ``conv4_1:conv5_3`` ranges over the model's readable aliases (same kind only)."""
    from dissect.models.layers import layer_aliases

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


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but no CUDA GPU is available; use --device cpu")
    return name


DATASET_FLAGS = {  # loader keyword -> (flag, datasets that take it)
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
        flag, takers = DATASET_FLAGS[key]
        if dataset not in takers:
            raise ValueError(f"{flag} applies to --dataset {' or '.join(takers)}, not {dataset}")
        options[key] = value
    return options


def flags_of(ns) -> dict:
    return {key: getattr(ns, key, None) for key in DATASET_FLAGS}


def add_dataset_args(parser: argparse.ArgumentParser, default: str, help_text: str) -> None:
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


def check_numbers(ns) -> None:
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


def unique_layer_flags(model, names: list[str]) -> list[str]:
    """The layers given, each module once (``conv5_3`` and ``features.29`` are one layer of VGG16)."""
    from dissect.models.hooks import unique_layers

    kept, dropped = unique_layers(model, names)
    for name, same in dropped:
        warnings.warn(f"--layer {name} is the same layer as {same}: scored once, as {same}", UserWarning, stacklevel=2)
    return [name for name, _ in kept]


def check_fits(model, model_name: str, layers, image_size: int, flag: str = "--layer") -> None:
    """One dry forward of a blank image: the input size fits the model and each layer gives maps."""
    import torch

    from dissect.models.hooks import ActivationRecorder

    if not layers:
        return
    from dissect.models.backbones import ClassifierNotBuilt

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


def dataset_notes(dataset) -> dict:
    """What a loader skipped or could not find, for run.json."""
    return {key: list(getattr(dataset, attr)) for key, attr in (("images_skipped", "skipped"),
                                                               ("images_missing", "missing"))
            if getattr(dataset, attr, None)}


def add_model_run_args(parser: argparse.ArgumentParser, batch_size: int, batch_help: str) -> None:
    """--weights, --overwrite, --image-size, --batch-size, --device of a command that runs a model."""
    parser.add_argument("--weights", default="auto", help="auto (ImageNet if available, else random with a "
                                                          "warning), imagenet, random, or a path to a state dict/checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    parser.add_argument("--image-size", type=int, default=224, help="network input side in pixels (default 224)")
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"{batch_help} (default {batch_size})")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")


def shard_of(text):
    from dissect.runner.shards import parse_shard

    return parse_shard(text) if text else None


def add_shard_args(parser: argparse.ArgumentParser, resume: bool = False) -> None:
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


def run_options(args, out: Path, *, progress: bool, checkpoint_seconds: float | None = None,
                default_every: int | None = None):
    """The :class:`dissect.runner.orchestrate.RunOptions` of a command's ``--out``, shard, Ray and resume flags
    (``default_every``: batches between checkpoints when ``--checkpoint-every`` is not given)."""
    from dissect.runner.orchestrate import RunOptions

    return RunOptions(out=out, shard=shard_of(getattr(args, "shard", None)), resume=bool(args.resume),
                      overwrite=bool(args.overwrite), ray=getattr(args, "ray", None), n_shards=getattr(args, "shards", None),
                      ray_cpus=getattr(args, "ray_cpus", 1.0), device=getattr(args, "device", "cpu"),
                      checkpoint_seconds=checkpoint_seconds,
                      checkpoint_every=getattr(args, "checkpoint_every", None) or default_every,
                      progress=progress)
