"""What the command-line process sets up once before a command: one malloc arena, the region
cache, and a check that ``import datasets`` finds this project's loaders."""
from __future__ import annotations

import os
import sys

__all__ = ["check_datasets_package", "enable_region_cache", "limit_malloc_arenas"]


def check_datasets_package() -> None:
    """The project's top-level ``datasets`` package and Hugging Face ``datasets`` share a name:
    whichever Python imports first wins. Fail with what to do instead of a confusing error later."""
    import datasets

    if not hasattr(datasets, "DATASET_NAMES"):
        raise RuntimeError(
            f"`import datasets` found Hugging Face datasets ({getattr(datasets, '__file__', '?')}), not this "
            "project's: run cli.py from the repository root, or use a virtual environment without Hugging Face "
            "datasets (pip uninstall datasets)")


def enable_region_cache() -> None:
    """Fixation-cluster regions are cached in ``<data dir>/regions`` unless
    ``$SALIENCY_DISSECT_REGION_CACHE`` says otherwise (empty: off)."""
    from datasets.download import default_data_dir
    from datasets.regions_from_fixations import CACHE_ENV

    os.environ.setdefault(CACHE_ENV, str(default_data_dir() / "regions"))


_M_ARENA_MAX = -8  # glibc mallopt parameter


def limit_malloc_arenas() -> bool:
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
