"""Datasets: files or generators -> :class:`~datasets.base.Sample` (image, fixations, regions).

``load_dataset(name, root)`` is the one entry point the CLI uses; each loader lives in its own
module and is imported only when asked for.
"""
from __future__ import annotations

from pathlib import Path

from datasets.base import ListDataset, Sample

__all__ = ["DATASET_NAMES", "ListDataset", "Sample", "load_dataset"]

DATASET_NAMES = ("popout", "popout-gaze", "folder", "osie", "osie-sr", "salicon")


def load_dataset(name: str, root: str | Path | None = None, **options):
    """Open a dataset by name.

    Args:
        name: one of :data:`DATASET_NAMES`. ``popout`` without ``root`` generates the default
            80 pop-out arrays on the fly (offline); with ``root`` it reads a folder written by
            ``cli.py popout generate``. ``popout-gaze`` is the same arrays viewed by
            *simulated* observers (:mod:`datasets.simulated_gaze`; not human data), so the
            fixation-based analyses run offline too.
        root: the data folder (required for every dataset but generated pop-out arrays).
        **options: passed to the loader (e.g. ``seed``, ``n_per_dimension`` for pop-out,
            ``split`` for SALICON, ``regions`` for OSIE).

    Raises:
        ValueError: unknown name (the message lists the valid ones).
        FileNotFoundError: a root that does not exist.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}")
    if root is None and name not in ("popout", "popout-gaze"):
        raise ValueError(f"dataset {name!r} needs --data-root pointing at its folder")
    if root is not None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"data root {root} does not exist or is not a folder")
    if name == "popout":
        from datasets import popout

        if root is None:
            return popout.PopoutDataset(**options)
        return popout.PopoutFolder(root)
    if name == "popout-gaze":
        from datasets.simulated_gaze import SimulatedGazeDataset

        if root is not None:
            raise ValueError("popout-gaze is generated: drop --data-root (or use --dataset folder for your own data)")
        return SimulatedGazeDataset(**options)
    if name == "folder":
        from datasets.folder import FolderDataset

        return FolderDataset(root, **options)
    if name in ("osie", "osie-sr"):
        from datasets.osie import OSIEDataset

        options.setdefault("regions", "sr" if name == "osie-sr" else "auto")
        return OSIEDataset(root, **options)
    from datasets.salicon import SaliconDataset

    return SaliconDataset(root, **options)
