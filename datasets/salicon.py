"""SALICON (Jiang et al. 2015), the 2017 release: images with mouse-contingent "fixations".

Layout of ``root`` as distributed (images and fixations come as separate archives)::

    root/images/{split}/COCO_{split}2014_000000000009.jpg ...   (or root/images/*.jpg, flat)
    root/fixations/{split}/COCO_{split}2014_000000000009.mat ... (or root/fixations/*.mat, flat)

``split`` is ``"train"`` (10,000 images) or ``"val"`` (5,000); the test split has no public
fixations. Images are found by the stem of each ``.mat`` file (SALICON names both alike).

Each ``.mat`` (2017 format) holds ``image`` (the image name), ``resolution`` (``[H W]`` =
``[480 640]``) and ``gaze``, a struct array with one element per observer: ``location`` (raw mouse
samples, M x 2), ``timestamp`` (M) and ``fixations`` (K x 2, the fixations SALICON derived from
the mouse trace). Both point arrays hold ``[x y]``, **1-based** pixel coordinates (MATLAB; x =
column): pysaliency's SALICON loader subtracts 1 from both for its 0-based convention. We keep them
1-based and make the binary map with MATLAB rounding, like OSIE. ``gaze="fixations"`` (default)
uses ``fixations``; ``gaze="mouse"`` uses the raw ``location`` samples. ``subject`` is the 1-based
position in ``gaze``; SALICON has no durations (NaN). Points within a pixel of the border
are clamped (``sample.meta["n_clamped"]``), points further outside (raw mouse samples can be)
dropped (``sample.meta["n_dropped"]``).

An image whose file holds no point at all yields an all-False fixation map with a warning
(``meta["n_fixations"] == 0``); the files are parsed lazily, so it cannot be skipped up front.
No regions unless ``regions="clusters"`` (:mod:`datasets.regions_from_fixations`).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping

import numpy as np

from datasets._matfile import load_mat
from datasets.base import LazyDataset, Sample
from datasets.fixations import fixations_in_image
from datasets.folder import IMAGE_SUFFIXES, fixation_table, missing_files_error, read_image
from datasets.regions_from_fixations import cached_fixation_clusters, fixation_clusters

__all__ = ["SaliconDataset", "read_salicon_mat", "SALICON_SPLITS"]

SALICON_SPLITS = ("train", "val")
_GAZE_FIELDS = {"fixations": "fixations", "mouse": "location"}


def _points(value, where: str, path: Path) -> np.ndarray:
    """A ``K x 2`` float array from a squeezed MATLAB ``[x y]`` matrix (``1 x 2`` comes back as ``(2,)``)."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {where} must be a numeric K x 2 [x y] array") from None
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.ndim == 1 and arr.size == 2:
        return arr[None]
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{path}: {where} has shape {arr.shape}; SALICON stores K x 2 [x y] points")
    return arr


def read_salicon_mat(
    path: str | Path, gaze: str = "fixations"
) -> tuple[str | None, tuple[int, int] | None, list[np.ndarray]]:
    """Read one SALICON 2017 ``.mat`` file.

    Args:
        path: the file.
        gaze: ``"fixations"`` (the ``gaze(k).fixations`` field) or ``"mouse"`` (``gaze(k).location``).

    Returns:
        ``(image, resolution, points)``: the ``image`` name (``None`` if absent), ``(H, W)`` from
        ``resolution`` (``None`` if absent) and one ``K x 2`` array of 1-based ``[x, y]`` per observer.

    Raises:
        ValueError: unreadable file, no ``gaze`` variable, an element without the field, a point
            array that is not K x 2, a ``resolution`` that is not two positive numbers.
    """
    path = Path(path)
    if gaze not in _GAZE_FIELDS:
        raise ValueError(f"gaze must be 'fixations' or 'mouse', got {gaze!r}")
    field = _GAZE_FIELDS[gaze]
    mat = load_mat(path, "gaze", "a SALICON 2017 fixation file")
    image = mat.get("image")
    if isinstance(image, np.ndarray):
        image = image.item() if image.size == 1 else None
    image = str(image).strip() if image is not None else None
    res = mat.get("resolution")
    resolution = None
    if res is not None:
        r = np.asarray(res, dtype=np.float64).ravel()
        if r.size != 2 or np.any(r <= 0):
            raise ValueError(f"{path}: resolution must be [H W], got {res!r}")
        resolution = (int(r[0]), int(r[1]))
    entries = mat["gaze"]
    entries = list(entries.ravel()) if isinstance(entries, np.ndarray) else [entries]
    points = []
    for k, g in enumerate(entries):
        names = getattr(g, "_fieldnames", None)
        if names is None:
            raise ValueError(f"{path}: gaze({k + 1}) is not a struct; expected fields location, timestamp, fixations")
        if field not in names:
            raise ValueError(f"{path}: gaze({k + 1}) has no field {field!r} (fields: {', '.join(names) or 'none'})")
        points.append(_points(getattr(g, field), f"gaze({k + 1}).{field}", path))
    return image, resolution, points


class SaliconDataset(LazyDataset):
    """SALICON train or val images with their pooled gaze points.

    Lazy: the folders are listed at construction, each ``.mat`` and image is read when its sample
    is asked for. See the module docstring for the layout and conventions.

    Args:
        root: folder with ``images/`` and ``fixations/``.
        split: ``"train"`` or ``"val"``.
        gaze: ``"fixations"`` (default) or ``"mouse"`` (raw mouse samples).
        regions: ``"none"`` (default) or ``"clusters"``.
        cluster_params: keyword arguments for :func:`fixation_clusters`.
        name: dataset name for reports (default ``"SALICON-<split>"``).

    Raises:
        ValueError: unknown ``split``, ``gaze`` or ``regions``.
        FileNotFoundError: no fixation folder or no ``.mat`` in it; images missing for some
            ``.mat`` files (how many, the first few).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        gaze: str = "fixations",
        regions: str = "none",
        cluster_params: Mapping | None = None,
        name: str | None = None,
    ) -> None:
        if split not in SALICON_SPLITS:
            raise ValueError(
                f"split must be 'train' or 'val', got {split!r} (SALICON's test split has no public fixations)"
            )
        if gaze not in _GAZE_FIELDS:
            raise ValueError(f"gaze must be 'fixations' or 'mouse', got {gaze!r}")
        if regions not in ("none", "clusters"):
            raise ValueError(
                f"regions must be 'none' or 'clusters' (SALICON has no annotated regions), got {regions!r}"
            )
        self.root = Path(root)
        self.split = split
        self.gaze = gaze
        self.regions = regions
        self.cluster_params = dict(cluster_params or {})
        if regions == "clusters":
            fixation_clusters(np.zeros((1, 1), dtype=bool), **self.cluster_params)
        self.name = name or f"SALICON-{split}"

        fix_dir = self.root / "fixations" / split
        if not fix_dir.is_dir():
            fix_dir = self.root / "fixations"
        mats = sorted(fix_dir.glob("*.mat")) if fix_dir.is_dir() else []
        if not mats:
            raise FileNotFoundError(
                f"no SALICON fixation files in {self.root / 'fixations' / split} or {self.root / 'fixations'}; "
                "unpack fixations.zip so that fixations/{train,val}/*.mat exist "
                "(see datasets.download.download_salicon)"
            )
        image_dirs = [self.root / "images" / split, self.root / "images"]
        self._items: list[tuple[str, Path, Path]] = []
        missing: list[str] = []
        for mat in mats:
            img = self._find_image(image_dirs, mat.stem)
            if img is None:
                missing.append(mat.stem)
            else:
                self._items.append((mat.stem, img, mat))
        if missing:
            raise missing_files_error(
                "images with a fixation file are", missing, len(mats), image_dirs[0],
                f"unpack images.zip so that images/{split}/<name>.jpg (or images/<name>.jpg) exist",
            )

    @staticmethod
    def _find_image(dirs: list[Path], stem: str) -> Path | None:
        for d in dirs:
            for suffix in IMAGE_SUFFIXES:
                p = d / f"{stem}{suffix}"
                if p.is_file():
                    return p
        return None

    def _load(self, i: int) -> Sample:
        stem, img_path, mat_path = self._items[i]
        name, resolution, points = read_salicon_mat(mat_path, self.gaze)
        if name is not None and Path(name).stem != stem:
            raise ValueError(f"{mat_path} describes image {name!r}, not {stem!r}; the file names and contents disagree")
        image = read_image(img_path)
        h, w = image.shape[:2]
        if resolution is not None and resolution != (h, w):
            raise ValueError(
                f"{mat_path} gives resolution {resolution[0]} x {resolution[1]} but {img_path.name} is {h} x {w}; "
                "the points would be misplaced"
            )
        xy = np.concatenate(points) if points else np.zeros((0, 2))
        subject = np.concatenate([np.full(len(p), k + 1, dtype=np.int64) for k, p in enumerate(points)] or [[]])
        fix_map = np.zeros((h, w), dtype=bool)
        n_clamped = n_dropped = 0
        n_points = len(xy)
        if len(xy):
            rows, cols, keep, n_clamped = fixations_in_image(xy[:, 0], xy[:, 1], (h, w), one_based=True)
            fix_map[rows, cols] = True
            xy, subject, n_dropped = xy[keep], subject[keep], int((~keep).sum())  # far outside: dropped
        else:
            warnings.warn(
                f"{self.name}: {mat_path.name} holds no {self.gaze} point; its fixation map is empty", stacklevel=2
            )
        if self.regions == "clusters":
            masks, cats = cached_fixation_clusters(fix_map, **self.cluster_params)
        else:
            masks, cats = np.zeros((0, h, w), dtype=bool), []
        table = fixation_table(xy[:, 0], xy[:, 1], subject, np.full(len(xy), np.nan), one_based=True)
        meta = {
            "dataset": self.name,
            "file": str(img_path),
            "n_fixations": int(n_points),
            "n_dropped": n_dropped,
            "n_subjects": len(points),
            "n_clamped": int(n_clamped),
            "regions": self.regions,
        }
        return Sample(stem, image, masks, cats, fixation_map=fix_map, fixations=table, meta=meta)
