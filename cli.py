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
import importlib
import sys
import warnings

from dissect.commands.dissect import DissectConfig
from dissect.commands.messages import cli_words
from dissect.commands.messages import one_line_warning as _one_line_warning
from dissect.commands.process import check_datasets_package, enable_region_cache, limit_malloc_arenas

__all__ = ["main", "build_parser", "DissectConfig", "cli_words", "COMMANDS"]

#: The commands, in ``--help`` order: each is the module ``dissect.commands.<module>``, with
#: ``add_parser(subparsers)`` (its flags, next to the config they fill) and ``run(args) -> int``
#: (one library call and what it prints).
COMMANDS: dict[str, str] = {
    "dissect": "dissect",        # score every unit of some layers against annotated regions
    "popout": "popout",          # synthetic pop-out search arrays
    "stats": "stats",            # ANOVA, Tukey, OS/OD, Spearman, run comparison and figures of a run
    "attention": "attention",    # attention maps (Grad-CAM, CAM, dense, ...) vs human gaze
    "robustness": "robustness",  # FGSM fooling rate per model
    "download": "download",      # fetch a public dataset into the data cache
    "layers": "layers",          # a model's readable layer names with channels and stride
    "evaluate": "evaluate",      # score saliency models' output maps
    "merge": "merge",            # shard folders -> the files a single run writes
    "train": "train",            # He et al.'s saliency (setups I/II) or scene model
    "study": "study",            # He et al.'s fine-tuning study
}


def _module(command: str):
    return importlib.import_module(f"dissect.commands.{COMMANDS[command]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cli.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        _module(command).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    limit_malloc_arenas()
    original = warnings.formatwarning
    if not args.debug:
        warnings.formatwarning = _one_line_warning
    try:
        check_datasets_package()  # first: the cache setup below imports this project's datasets
        enable_region_cache()
        return _module(args.command).run(args)
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
