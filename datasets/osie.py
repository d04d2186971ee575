"""OSIE eye-tracking data (Xu et al. 2014) and He et al.'s OSIE-SR salient regions.

Layouts accepted for ``root`` (stimuli are the files named by ``fixations(i).img``):

* the public repository as it is (NUS-VIP/predicting-human-gaze-beyond-pixels, what
  ``datasets.download.download_osie`` fetches)::

      root/data/stimuli/1001.jpg ...
      root/data/eye/fixations.mat
      root/data/attrs.mat          optional, not read (object masks of the original paper)

* a flat folder::

      root/stimuli/1001.jpg ...
      root/fixations.mat

OSIE-SR (He et al. 2019) is a labelme ``labelme2voc`` export: ``SegmentationObject/<stem>.npy``
or ``.png`` (instance ids, 0 = background) and ``SegmentationClass/<stem>.npy`` or ``.png`` (class
ids, see :data:`OSIE_SR_CLASS_IDS`; ``.npy`` is preferred when both exist). It is found

* beside a flat layout: ``root/{stimuli, fixations.mat, SegmentationObject, SegmentationClass}``;
* beside the repository layout: ``root/SegmentationObject`` or ``root/data/SegmentationObject``
  (with ``root/data/eye/fixations.mat``);
* anywhere, with ``OSIEDataset(root, sr_root=folder holding SegmentationObject/ and
  SegmentationClass/)``.

Each instance id is one region; its category is the majority class id of its pixels in
SegmentationClass (ties: the smaller id), named through :data:`OSIE_SR_CLASS_IDS`.

``fixations.mat`` (digest section 6, reference-implementations C.1): ``fixations`` is a cell or
struct array; ``fixations(i).img`` is the file name and ``fixations(i).subjects(s)`` holds
``fix_x``, ``fix_y`` (1-based pixel coordinates, one decimal) and ``fix_duration`` (ms, optional:
NaN when absent). ``sample.fixations`` keeps the raw 1-based coordinates, with
``subject`` = ``s`` (1-based, the position in ``subjects``). The fixation map pools all subjects
with MATLAB rounding; points within a pixel of the border are clamped onto it (counted in
``sample.meta["n_clamped"]``), points further outside are dropped from the map and from
``sample.fixations`` (counted in ``sample.meta["n_dropped"]``; OSIE itself has none).

Decisions: an image whose entry holds no fixation at all is **skipped with a warning** (its name is
in ``dataset.skipped``); a missing stimulus (or, with SR regions, a missing export file) raises
``FileNotFoundError`` unless ``on_missing="skip"``, which skips the image with a warning and lists
it in ``dataset.missing``.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from datasets._matfile import load_mat
from datasets.base import LazyDataset, Sample
from datasets.fixations import fixations_in_image
from datasets.folder import (
    find_label_file,
    fixation_table,
    instance_masks,
    missing_files_error,
    read_image,
    read_label_map,
)
from datasets.regions_from_fixations import cached_fixation_clusters, fixation_clusters

__all__ = [
    "OSIE_SR_CLASS_IDS",
    "OSIE_SR_CATEGORIES",
    "REGION_MODES",
    "OSIEDataset",
    "read_osie_fixations",
    "find_osie_files",
    "find_sr_export",
    "sr_regions",
]

# He et al. 2019, OSIE-SR: labelme2voc class ids (line index in labels.txt - 1, hence the gaps).
OSIE_SR_CLASS_IDS: dict[int, str] = {
    1: "person head",
    10: "person part",
    16: "animal head",
    22: "animal part",
    27: "object",
    37: "text",
    46: "symbol",
    51: "vehicle",
    57: "food",
    63: "plant",
    68: "drink",
    73: "other",
}
# He's table order.
OSIE_SR_CATEGORIES: tuple[str, ...] = tuple(OSIE_SR_CLASS_IDS.values())
REGION_MODES = ("auto", "sr", "clusters", "none")
_ON_MISSING = ("error", "skip")


# --------------------------------------------------------------------------- fixations.mat
def _items(obj) -> list:
    """Elements of a MATLAB cell/struct array read with ``squeeze_me`` (a 1-element array is a scalar)."""
    if isinstance(obj, np.ndarray):
        return list(obj.ravel())
    return [obj]


def _field(obj, name: str, where: str, path: Path):
    """``obj.name`` of a MATLAB struct, or a ValueError naming the missing field and where."""
    names = getattr(obj, "_fieldnames", None)
    if names is None:
        raise ValueError(
            f"{path}: {where} is not a struct (got {type(obj).__name__}); expected OSIE's "
            "fixations(i).img / fixations(i).subjects(s).fix_x, fix_y, fix_duration"
        )
    if name not in names:
        raise ValueError(f"{path}: {where} has no field {name!r} (fields: {', '.join(names) or 'none'})")
    return getattr(obj, name)


def _vector(value, where: str, path: Path) -> np.ndarray:
    """A 1-D float array from a squeezed MATLAB row vector, scalar or empty matrix."""
    try:
        # A single fixation comes back as a scalar after squeeze_me.
        arr = np.atleast_1d(np.asarray(value, dtype=np.float64)).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {where} must be numeric, got {type(value).__name__}") from None
    return arr


def read_osie_fixations(path: str | Path) -> tuple[list[str], pd.DataFrame]:
    """Read an OSIE ``fixations.mat`` into a long table.

    Args:
        path: the ``.mat`` file.

    Returns:
        ``(images, table)``: the ``img`` names in file order (images without fixations included)
        and a DataFrame with one row per fixation: ``image`` (str), ``x``, ``y`` (raw 1-based pixel
        coordinates), ``subject`` (1-based position in ``subjects``), ``duration`` (ms, NaN when the
        file has no ``fix_duration``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a MAT file, no ``fixations`` variable, a missing field (named), an empty
            or duplicate ``img``, or ``fix_x``/``fix_y``/``fix_duration`` of different lengths.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; OSIE's fixations are in data/eye/fixations.mat")
    mat = load_mat(path, "fixations", "OSIE's fixations.mat")
    images: list[str] = []
    seen: set[str] = set()
    cols: dict[str, list[np.ndarray]] = {"x": [], "y": [], "subject": [], "duration": [], "image": []}
    for i, entry in enumerate(_items(mat["fixations"])):
        where = f"fixations({i + 1})"
        img = _field(entry, "img", where, path)
        if isinstance(img, np.ndarray) and img.size == 1:
            img = img.item()
        if not isinstance(img, str) or not img.strip():
            raise ValueError(f"{path}: {where}.img must be a file name, got {img!r}")
        img = img.strip()
        if img in seen:
            raise ValueError(f"{path}: image {img!r} appears twice ({where}); each image needs one entry")
        seen.add(img)
        images.append(img)
        for s, subj in enumerate(_items(_field(entry, "subjects", where, path))):
            sw = f"{where}.subjects({s + 1})"
            x = _vector(_field(subj, "fix_x", sw, path), f"{sw}.fix_x", path)
            y = _vector(_field(subj, "fix_y", sw, path), f"{sw}.fix_y", path)
            if "fix_duration" in (getattr(subj, "_fieldnames", None) or []):
                d = _vector(subj.fix_duration, f"{sw}.fix_duration", path)
            else:
                d = np.full(x.shape, np.nan)
            if not x.size == y.size == d.size:
                raise ValueError(
                    f"{path}: {sw} has {x.size} fix_x, {y.size} fix_y and {d.size} fix_duration values; "
                    "they must match"
                )
            cols["x"].append(x)
            cols["y"].append(y)
            cols["duration"].append(d)
            cols["subject"].append(np.full(x.size, s + 1, dtype=np.int64))
            cols["image"].append(np.full(x.size, img, dtype=object))
    if not images:
        raise ValueError(f"{path}: 'fixations' is empty")
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    table = pd.DataFrame(
        {
            "image": cat["image"].astype(object),
            "x": cat["x"].astype(np.float64),
            "y": cat["y"].astype(np.float64),
            "subject": cat["subject"].astype(np.int64),
            "duration": cat["duration"].astype(np.float64),
        }
    )
    return images, table


# --------------------------------------------------------------------------- layouts
def find_osie_files(root: str | Path) -> tuple[Path, Path, Path | None]:
    """Locate ``(stimuli_dir, fixations.mat, attrs.mat or None)`` in either OSIE layout.

    Raises:
        FileNotFoundError: neither ``root/data/{stimuli, eye/fixations.mat}`` nor
            ``root/{stimuli, fixations.mat}`` exists.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"OSIE root {root} does not exist; download OSIE with datasets.download.download_osie "
                                "(CLI: python cli.py download osie) or point root (CLI: --data-root) at your copy")
    for base, fix in ((root / "data", root / "data" / "eye" / "fixations.mat"), (root, root / "fixations.mat")):
        if fix.is_file() and (base / "stimuli").is_dir():
            attrs = base / "attrs.mat"
            return base / "stimuli", fix, attrs if attrs.is_file() else None
    raise FileNotFoundError(
        f"no OSIE data in {root}: expected data/stimuli/ + data/eye/fixations.mat (the public repository) "
        "or stimuli/ + fixations.mat (flat); download OSIE with datasets.download.download_osie "
        "(CLI: python cli.py download osie)"
    )


def find_sr_export(root: str | Path, sr_root: str | Path | None = None) -> Path | None:
    """The folder holding OSIE-SR's ``SegmentationObject/`` and ``SegmentationClass/``, or ``None``.

    Looks in ``sr_root`` if given, else in ``root`` and ``root/data``.

    Raises:
        FileNotFoundError: ``sr_root`` given but without ``SegmentationObject/``, or a
            ``SegmentationObject/`` without its ``SegmentationClass/`` sibling.
    """
    if sr_root is not None:
        candidates = [Path(sr_root)]
        if not (candidates[0] / "SegmentationObject").is_dir():
            raise FileNotFoundError(
                f"sr_root {sr_root} has no SegmentationObject/ folder; point sr_root (CLI: --sr-root DIR) at "
                "the labelme2voc export holding SegmentationObject/ and SegmentationClass/"
            )
    else:
        root = Path(root)
        candidates = [root, root / "data"]
    for c in candidates:
        if (c / "SegmentationObject").is_dir():
            if not (c / "SegmentationClass").is_dir():
                raise FileNotFoundError(
                    f"{c} has SegmentationObject/ but no SegmentationClass/; OSIE-SR needs both "
                    "(instance ids and class ids)"
                )
            return c
    return None


def sr_regions(
    object_map: np.ndarray, class_map: np.ndarray, source: str = "OSIE-SR"
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """OSIE-SR regions of one image from its instance and class maps.

    Each non-zero instance id is a region (ascending ids); its category is the majority class id
    of its pixels (ties: the smaller id), named through :data:`OSIE_SR_CLASS_IDS`.

    Args:
        object_map: ``H x W`` int instance ids (SegmentationObject), 0 = background.
        class_map: ``H x W`` int class ids (SegmentationClass).
        source: name for error messages (file or image).

    Returns:
        ``(masks, categories, ids)``: ``R x H x W`` bool masks, ``R`` category names, ``R`` ids.

    Class ids are read only inside instances (instance id != 0): background may hold anything,
    e.g. labelme2voc's -1 for ``__ignore__`` shapes (whose instance id it sets to 0).

    Raises:
        ValueError: maps of different shapes, an instance whose pixels are background (class 0)
            in SegmentationClass, a negative class id inside an instance, or a class id outside
            OSIE-SR's table.
    """
    obj = np.asarray(object_map)
    cls = np.asarray(class_map)
    if obj.shape != cls.shape:
        raise ValueError(
            f"{source}: SegmentationObject is {obj.shape} but SegmentationClass is {cls.shape}; "
            "they must come from the same export"
        )
    ids, masks = instance_masks(obj, source)
    inside = obj.ravel() != 0
    cls_in = cls.ravel()[inside].astype(np.int64)
    # Only pixels of an instance carry a class: labelme2voc writes -1 for `__ignore__` shapes and
    # sets their instance id to 0, so -1 (or any value) on background is not an error.
    if cls_in.size and cls_in.min() < 0:
        k = int(obj.ravel()[inside][np.argmin(cls_in)])
        raise ValueError(
            f"{source}: instance {k} has negative class id {int(cls_in.min())} in SegmentationClass; "
            "only background (instance 0) may be -1 (labelme's __ignore__)"
        )
    # One joint histogram of (instance, class) pairs instead of a np.unique per instance.
    n_cls = int(cls_in.max()) + 1 if cls_in.size else 1
    pairs = np.bincount(obj.ravel()[inside].astype(np.int64) * n_cls + cls_in,
                        minlength=(int(ids.max()) + 1 if ids.size else 1) * n_cls).reshape(-1, n_cls)
    cats: list[str] = []
    for k in ids:
        major = int(np.argmax(pairs[k]))  # argmax takes the first maximum: ties go to the smaller id
        if major == 0:
            raise ValueError(
                f"{source}: instance {k} has no class (its pixels are 0 = background in SegmentationClass); "
                "label the shape in labelme and export again"
            )
        if major not in OSIE_SR_CLASS_IDS:
            known = ", ".join(f"{i} {n}" for i, n in OSIE_SR_CLASS_IDS.items())
            raise ValueError(f"{source}: instance {k} has unknown class id {major}; OSIE-SR's ids are {known}")
        cats.append(OSIE_SR_CLASS_IDS[major])
    return masks, cats, ids


# --------------------------------------------------------------------------- dataset
class OSIEDataset(LazyDataset):
    """OSIE images with pooled human fixations and salient regions (OSIE-SR or fixation clusters).

    Lazy: ``fixations.mat`` is parsed once at construction, images and masks when a sample is
    asked for. See the module docstring for layouts and decisions.

    Args:
        root: OSIE folder (repository or flat layout).
        regions: ``"sr"`` (He's OSIE-SR export, required), ``"clusters"`` (automatic fixation
            clusters, category ``"unlabelled"``, :mod:`datasets.regions_from_fixations`),
            ``"none"`` (no regions), or ``"auto"`` (SR if the export is found, else clusters).
        sr_root: folder of the OSIE-SR export when it is not beside the data.
        on_missing: ``"error"`` (default) or ``"skip"`` images whose stimulus (or SR export file)
            is missing.
        cluster_params: keyword arguments for :func:`fixation_clusters` (``sigma``, ``threshold``,
            ``min_fixations``, ``connectivity``).
        name: dataset name for reports (default ``"OSIE-SR"`` with SR regions, else ``"OSIE"``).

    Raises:
        FileNotFoundError: no OSIE layout in ``root``; ``regions="sr"`` without an export; missing
            stimuli or export files (with ``on_missing="error"``), naming how many and the first few.
        ValueError: unknown ``regions``/``on_missing``, a malformed ``fixations.mat``.
    """

    def __init__(
        self,
        root: str | Path,
        regions: str = "auto",
        *,
        sr_root: str | Path | None = None,
        on_missing: str = "error",
        cluster_params: Mapping | None = None,
        name: str | None = None,
    ) -> None:
        if regions not in REGION_MODES:
            raise ValueError(
                f"regions must be one of {', '.join(REGION_MODES)} (CLI: --regions {'|'.join(REGION_MODES)}), "
                f"got {regions!r}"
            )
        if on_missing not in _ON_MISSING:
            raise ValueError(f"on_missing must be 'error' or 'skip' (CLI: --on-missing error|skip), got {on_missing!r}")
        self.root = Path(root)
        self.on_missing = on_missing
        self.stimuli_dir, self.fixations_path, self.attrs_path = find_osie_files(self.root)
        self.sr_dir = find_sr_export(self.root, sr_root)
        if regions == "sr" and self.sr_dir is None:
            raise FileNotFoundError(
                f"regions='sr' but no OSIE-SR export (SegmentationObject/, SegmentationClass/) in {self.root} "
                "or its data/ folder; point sr_root at the export's folder (CLI: --sr-root DIR) or use "
                "regions='clusters' (CLI: --regions clusters, or --dataset osie)"
            )
        if regions == "auto":
            regions = "sr" if self.sr_dir is not None else "clusters"
        self.regions = regions
        # Report categories in He et al.'s table order (dissection tables follow it).
        self.category_order = list(OSIE_SR_CATEGORIES) if regions == "sr" else None
        self.cluster_params = dict(cluster_params or {})
        if regions == "clusters":
            # Fail now, not at the first sample, on a misspelt parameter.
            fixation_clusters(np.zeros((1, 1), dtype=bool), **self.cluster_params)
        self.name = name or ("OSIE-SR" if regions == "sr" else "OSIE")

        images, table = read_osie_fixations(self.fixations_path)
        self._table = table
        groups = table.groupby("image", sort=False).indices
        self.skipped = [img for img in images if img not in groups]
        if self.skipped:
            warnings.warn(
                f"{self.name}: skipping {len(self.skipped)} of {len(images)} images without fixations "
                f"(first: {', '.join(self.skipped[:5])}); see dataset.skipped",
                stacklevel=2,
            )
        candidates = [img for img in images if img in groups]
        self.missing: list[str] = []
        self._items: list[tuple[str, Path, np.ndarray, Path | None, Path | None]] = []
        missing_stim = [img for img in candidates if not (self.stimuli_dir / img).is_file()]
        self._handle_missing(missing_stim, len(candidates), "stimuli listed in fixations.mat are", self.stimuli_dir,
                             "download OSIE again (datasets.download.download_osie; CLI: python cli.py download osie) "
                             "or skip those images with on_missing='skip' (CLI: --on-missing skip)")
        missing_sr: list[str] = []
        skip = set(missing_stim)
        for img in candidates:
            if img in skip:
                continue
            stem = Path(img).stem
            obj = cls = None
            if self.regions == "sr":
                obj = find_label_file(self.sr_dir / "SegmentationObject", stem)
                cls = find_label_file(self.sr_dir / "SegmentationClass", stem)
                if obj is None or cls is None:
                    missing_sr.append(stem)
                    continue
            self._items.append((stem, self.stimuli_dir / img, groups[img], obj, cls))
        self._handle_missing(missing_sr, len(candidates) - len(missing_stim),
                             "OSIE-SR mask files (SegmentationObject/ and SegmentationClass/<stem>.npy|png) are",
                             self.sr_dir, "complete the export, use fixation clusters with regions='clusters' "
                             "(CLI: --regions clusters) or skip those images with on_missing='skip' "
                             "(CLI: --on-missing skip)")

    def _handle_missing(self, names: list[str], total: int, what: str, where: Path | None, fix: str) -> None:
        """Raise (``on_missing="error"``) or skip with a warning, recording ``names`` in ``self.missing``."""
        if not names:
            return
        if self.on_missing == "error":
            raise missing_files_error(what, names, total, where, fix)
        err = missing_files_error(what, names, total, where, "skipped, see dataset.missing")
        warnings.warn(f"{self.name}: {err}", stacklevel=3)
        self.missing.extend(names)

    # ------------------------------------------------------------------ samples
    def _load(self, i: int) -> Sample:
        stem, path, rows_idx, obj_path, cls_path = self._items[i]
        image = read_image(path)
        h, w = image.shape[:2]
        fx = self._table.iloc[rows_idx]
        rows, cols, keep, n_clamped = fixations_in_image(fx["x"].to_numpy(), fx["y"].to_numpy(), (h, w),
                                                         one_based=True)
        fix_map = np.zeros((h, w), dtype=bool)
        fix_map[rows, cols] = True
        n_dropped = int((~keep).sum())
        fx = fx[keep]  # points more than a pixel outside the image are dropped (and counted)
        meta: dict = {
            "dataset": self.name,
            "file": str(path),
            "n_fixations": len(keep),
            "n_dropped": n_dropped,
            "n_subjects": int(fx["subject"].nunique()),
            "n_clamped": int(n_clamped),
            "regions": self.regions,
        }
        if self.regions == "sr":
            obj = read_label_map(obj_path)
            if obj.shape != (h, w):
                raise ValueError(
                    f"{obj_path} is {obj.shape[0]} x {obj.shape[1]} but {path.name} is {h} x {w}; "
                    "OSIE-SR masks must have the image's own size"
                )
            masks, cats, ids = sr_regions(obj, read_label_map(cls_path), str(obj_path))
            meta["region_ids"] = [int(k) for k in ids]
        elif self.regions == "clusters":
            masks, cats = cached_fixation_clusters(fix_map, **self.cluster_params)
        else:
            masks, cats = np.zeros((0, h, w), dtype=bool), []
        table = fixation_table(fx["x"], fx["y"], fx["subject"], fx["duration"], one_based=True)
        return Sample(stem, image, masks, cats, fixation_map=fix_map, fixations=table, meta=meta)
