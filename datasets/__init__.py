"""Datasets: files or generators -> :class:`~datasets.base.Sample` (image, fixations, regions).

``load_dataset(name, root)`` is the one entry point the CLI uses; each loader lives in its own
module and is imported only when asked for.
"""
from __future__ import annotations

import inspect
import warnings
from pathlib import Path

from datasets.base import ListDataset, Sample

__all__ = ["DATASET_NAMES", "ListDataset", "Sample", "load_dataset", "huggingface_clash"]

DATASET_NAMES = ("popout", "popout-gaze", "folder", "osie", "osie-sr", "salicon")


def huggingface_clash() -> str | None:
    """A line saying what to do when Hugging Face ``datasets`` is installed next to this package.

    Both are imported as ``datasets``; Python takes whichever comes first on ``sys.path``, so in
    this repository ``import datasets`` is this package and Hugging Face's is hidden (elsewhere
    it is the other way round, and ``from datasets import load_dataset`` silently gets the wrong
    function). The folder name is fixed, so the fix is the environment.
    """
    from importlib import metadata

    try:
        dist = metadata.distribution("datasets")
    except metadata.PackageNotFoundError:
        return None
    return (f"Hugging Face datasets {dist.version} is installed in this environment and shares the import name "
            "`datasets` with saliency-dissect's data loaders: while saliency-dissect runs, `import datasets` is "
            "saliency-dissect's and Hugging Face's is hidden. Install saliency-dissect in its own virtual "
            "environment (python3 -m venv .venv), or uninstall Hugging Face datasets there (pip uninstall datasets)")


_CLASH = huggingface_clash()
if _CLASH:
    warnings.warn(_CLASH, UserWarning, stacklevel=2)


def load_dataset(name: str, root: str | Path | None = None, **options):
    """Open a dataset by name.

    Args:
        name: one of :data:`DATASET_NAMES`. ``popout`` without ``root`` generates the default
            80 pop-out arrays on the fly (offline); with ``root`` it reads a folder written by
            ``cli.py popout generate``. ``popout-gaze`` is the same arrays viewed by
            *simulated* observers (:mod:`datasets.simulated_gaze`; not human data), so the
            fixation-based analyses run offline too. ``osie`` / ``osie-sr`` without ``root`` use
            the copy that ``datasets.download.download_osie`` (CLI: ``python cli.py download
            osie``) put in ``datasets.download.default_data_dir() / "osie"``.
        root: the data folder (required for ``folder`` and ``salicon``; optional for OSIE).
        **options: passed to the loader (e.g. ``seed``, ``n_per_dimension`` for pop-out,
            ``split`` for SALICON, ``regions``, ``sr_root``, ``on_missing`` for OSIE,
            ``one_based`` for folder). An option the loader does not take is an error, never
            silently dropped.

    Raises:
        ValueError: unknown name (the message lists the valid ones), an option the loader does
            not take (named, with the ones it takes), a missing root (with how to get one).
        FileNotFoundError: a root that does not exist.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}")
    if root is None and name in ("osie", "osie-sr"):
        from datasets.download import cached_osie, default_data_dir

        root = cached_osie()
        if root is None:
            raise ValueError(
                f"dataset {name!r} needs --data-root pointing at its folder, or a downloaded copy in "
                f"{default_data_dir() / 'osie'}: run `python cli.py download osie` "
                "(library: datasets.download.download_osie())"
            )
    if root is None and name not in ("popout", "popout-gaze"):
        raise ValueError(f"dataset {name!r} needs --data-root pointing at its folder")
    if root is not None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"data root {root} does not exist or is not a folder")
    if name == "popout":
        from datasets import popout

        if root is None:
            return popout.PopoutDataset(**_checked(repr(name), popout.PopoutDataset, options))
        return popout.PopoutFolder(root, **_checked(f"{name!r} read from {root}", popout.PopoutFolder, options))
    if name == "popout-gaze":
        from datasets.simulated_gaze import SimulatedGazeDataset

        if root is not None:
            raise ValueError("popout-gaze is generated: drop --data-root (or use --dataset folder for your own data)")
        return SimulatedGazeDataset(**options)  # checks its options itself (pop-out + observer options)
    if name == "folder":
        from datasets.folder import FolderDataset

        return FolderDataset(root, **_checked(repr(name), FolderDataset, options))
    if name in ("osie", "osie-sr"):
        from datasets.osie import OSIEDataset

        options.setdefault("regions", "sr" if name == "osie-sr" else "auto")
        return OSIEDataset(root, **_checked(repr(name), OSIEDataset, options))
    from datasets.salicon import SaliconDataset

    return SaliconDataset(root, **_checked(repr(name), SaliconDataset, options))


def _checked(what: str, reader, options: dict) -> dict:
    """``options`` if ``reader`` takes every one of them (besides ``root``), else a ValueError naming them."""
    params = inspect.signature(reader).parameters.values()
    takes = [p.name for p in params if p.name != "root" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(options) - set(takes))
    if unknown:
        raise ValueError(
            f"dataset {what} does not take option(s) {', '.join(unknown)}; "
            + (f"it takes {', '.join(takes)}" if takes else "it takes none")
        )
    return options
