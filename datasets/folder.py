"""A user's own images, fixations and region masks, from a documented folder layout.

Layout of ``root`` (only ``images/`` is required)::

    root/
      images/<stem>.jpg|.jpeg|.png|.bmp|.tif|.tiff   any sizes, any number
      fixations.csv      optional; columns image, x, y[, subject, duration]
      masks/<stem>.png|.npy                        optional instance masks, 0 = background,
                                                   k > 0 = region k
      categories.csv     optional; columns image, region, category

* ``fixations.csv``: one row per fixation. ``image`` is the file name (``a.jpg``) or its stem
  (``a``); ``x`` is the column and ``y`` the row, **0-based pixel coordinates by default** (pixel
  ``i`` covers ``[i - 0.5, i + 0.5)``); pass ``one_based=True`` for MATLAB/OSIE-style 1-based
  coordinates. ``subject`` (default 1) and ``duration`` in ms (default NaN) are optional. Pixels
  follow MATLAB rounding (``datasets.fixations``); points within a pixel of the border are clamped
  (``sample.meta["n_clamped"]``), points further outside dropped (``sample.meta["n_dropped"]``). ``sample.fixations`` always holds 1-based ``x, y``
  (0-based input + 1), the toolkit's convention.
* Without ``fixations.csv`` every sample has ``fixation_map = None`` (pop-out style data with masks
  only). With it, an image that has no row is **skipped with a warning**; the skipped stems are
  listed in ``dataset.skipped``.
* ``masks/<stem>.png`` (single channel: palette, ``L`` or 16-bit) or ``masks/<stem>.npy`` (2-D
  integer array) at the image's own size; each non-zero value is one region (ascending order). An
  image without a mask file has no regions.
* ``categories.csv`` names each region (``region`` = the value in the mask); it must cover every
  region of every mask it mentions, and every image it mentions must have a mask file. Without it
  every region is ``"region"``.
* ``subject`` values must be integers (``1.7`` is refused, not truncated).

The helpers :func:`read_image`, :func:`read_label_map` and :func:`instance_masks` are shared with
the OSIE and SALICON loaders.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from datasets.base import LazyDataset, Sample
from datasets.fixations import fixations_in_image

__all__ = [
    "IMAGE_SUFFIXES",
    "DEFAULT_CATEGORY",
    "FolderDataset",
    "read_image",
    "read_label_map",
    "find_label_file",
    "instance_masks",
    "fixation_table",
    "missing_files_error",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
DEFAULT_CATEGORY = "region"
# Pillow modes that hold one integer label per pixel (labelme2voc writes palette "P" PNGs).
_LABEL_MODES = ("P", "L", "1", "I", "I;16", "I;16B", "I;16L")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as an ``H x W x 3`` uint8 RGB array (grey and RGBA are converted).

    Raises:
        ValueError: a truncated or unreadable file; the message names it.
    """
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:  # PIL: "image file is truncated", UnidentifiedImageError
        raise ValueError(f"cannot read image {path}: {exc}; replace or remove the file") from None


def read_label_map(path: str | Path) -> np.ndarray:
    """Read an integer label map (instance or class ids) from ``.npy`` or a single-channel PNG.

    PNG palette images give their palette indices (labelme's ``lblsave`` format), ``L``/16-bit
    images their grey values. Colour PNGs are refused: they are visualisations, not labels.

    Returns:
        int64 ``H x W`` array.

    Raises:
        ValueError: not 2-D, not integral, a colour PNG or an unsupported suffix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    elif suffix == ".png":
        with Image.open(path) as im:
            if im.mode not in _LABEL_MODES:
                raise ValueError(
                    f"{path}: label PNG has mode {im.mode!r}; save masks as single-channel (palette or "
                    "grey) PNGs or .npy integer arrays, not colour visualisations"
                )
            arr = np.asarray(im)
    else:
        raise ValueError(f"{path}: label maps must be .npy or .png files, got {suffix!r}")
    if arr.ndim != 2:
        raise ValueError(f"{path}: label map must be a 2-D H x W array, got shape {arr.shape}")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{path}: label map must hold integer ids, got non-integer floats")
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"{path}: label map must hold integer ids, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def find_label_file(folder: Path, stem: str) -> Path | None:
    """``folder/<stem>.npy`` if present, else ``folder/<stem>.png``, else ``None``."""
    for suffix in (".npy", ".png"):
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def instance_masks(label_map: np.ndarray, source: str = "mask") -> tuple[np.ndarray, np.ndarray]:
    """Split an instance label map into one bool mask per non-zero id.

    Args:
        label_map: ``H x W`` integer map, 0 = background.
        source: name used in error messages (a file path).

    Returns:
        ``(ids, masks)``: the ascending non-zero ids (int64, ``R``) and ``R x H x W`` bool masks.

    Raises:
        ValueError: negative ids.
    """
    lab = np.asarray(label_map)
    if lab.size and lab.min() < 0:
        raise ValueError(f"{source}: negative instance id {int(lab.min())}; use 0 for background and 1..R for regions")
    if lab.size and np.issubdtype(lab.dtype, np.integer) and int(lab.max()) <= 1 << 20:
        ids = np.flatnonzero(np.bincount(lab.ravel()))  # ~10x faster than np.unique on label maps
    else:
        ids = np.unique(lab)
    ids = ids[ids != 0].astype(np.int64)
    if not ids.size:
        return ids, np.zeros((0,) + lab.shape, dtype=bool)
    if lab.ndim == 2 and np.issubdtype(lab.dtype, np.integer) and int(ids[-1]) <= 1 << 16:
        # Each id compared inside its bounding box only (one find_objects pass over the map):
        # the same masks, at the cost of the regions' boxes instead of R whole maps.
        objects = ndimage.find_objects(lab)
        boxes = [objects[int(i) - 1] for i in ids]
        area = sum((b[0].stop - b[0].start) * (b[1].stop - b[1].start) for b in boxes)
        if area <= 0.25 * ids.size * lab.size:  # compact regions (else whole maps are cheaper)
            masks = np.zeros((ids.size,) + lab.shape, dtype=bool)
            for r, (i, box) in enumerate(zip(ids, boxes)):
                masks[(r, *box)] = lab[box] == i
            return ids, masks
    return ids, lab[None] == ids[:, None, None]


def fixation_table(x, y, subject, duration, one_based: bool = True) -> pd.DataFrame:
    """The ``Sample.fixations`` table: 1-based ``x, y`` (float), ``subject`` (int), ``duration`` (ms)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if not one_based:
        x, y = x + 1.0, y + 1.0
    return pd.DataFrame(
        {
            "x": x,
            "y": y,
            "subject": np.asarray(subject, dtype=np.int64),
            "duration": np.asarray(duration, dtype=np.float64),
        }
    )


def missing_files_error(what: str, names: list[str], total: int, where: Path, fix: str) -> FileNotFoundError:
    """One-line FileNotFoundError: how many ``what`` are missing, the first few, and the fix."""
    first = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return FileNotFoundError(f"{len(names)} of {total} {what} missing from {where} (first: {first}); {fix}")


class FolderDataset(LazyDataset):
    """Images (any sizes) with optional fixations, instance masks and region categories.

    See the module docstring for the layout. Lazy: an image, its mask and its fixation map are
    read when the sample is asked for.

    Args:
        root: folder holding ``images/`` and optionally ``fixations.csv``, ``masks/``,
            ``categories.csv``.
        one_based: coordinates in ``fixations.csv`` are 1-based (MATLAB) instead of 0-based.
        name: dataset name for reports (default: ``folder:<root folder name>``).

    Raises:
        FileNotFoundError: no ``images/`` folder, no image in it, CSV rows naming images that are
            not there, or categories.csv naming an image without a mask file.
        ValueError: a CSV without its required columns, non-numeric or NaN coordinates, a
            non-integer ``subject``, two images with the same stem.
    """

    def __init__(self, root: str | Path, one_based: bool = False, name: str | None = None) -> None:
        self.root = Path(root)
        self.one_based = bool(one_based)
        self.name = name or f"folder:{self.root.name}"
        image_dir = self.root / "images"
        if not image_dir.is_dir():
            raise FileNotFoundError(
                f"{image_dir} not found; FolderDataset expects root/images/*.jpg|png "
                "(see datasets.folder for the layout)"
            )
        files = sorted(p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no image ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
        by_stem: dict[str, Path] = {}
        for p in files:
            if p.stem in by_stem:
                raise ValueError(
                    f"{by_stem[p.stem].name} and {p.name} in {image_dir} share the stem {p.stem!r}; "
                    "masks and CSV rows are matched by stem, so rename one"
                )
            by_stem[p.stem] = p
        self._mask_dir = self.root / "masks"
        self._fixations = self._read_fixations(by_stem)
        self._categories = self._read_categories(by_stem)
        if self._categories is not None:
            self._check_category_masks(sorted({stem for stem, _ in self._categories}))
        self.skipped: list[str] = []
        if self._fixations is not None:
            self.skipped = [s for s in by_stem if s not in self._fixations]
            if self.skipped:
                warnings.warn(
                    f"{self.name}: skipping {len(self.skipped)} of {len(by_stem)} images without a row in "
                    f"fixations.csv (first: {', '.join(self.skipped[:5])}); see dataset.skipped",
                    stacklevel=2,
                )
        skipped = set(self.skipped)
        self._items = [(s, p) for s, p in by_stem.items() if s not in skipped]

    # ------------------------------------------------------------------ reading the CSVs
    def _read_csv(self, path: Path, required: tuple[str, ...]) -> pd.DataFrame:
        try:
            df = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            raise ValueError(f"{path} is empty; it needs a header line ({', '.join(required)}) and one row per "
                             "entry, or remove the file") from None
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"{path} is not a readable CSV file ({str(exc).splitlines()[0]}); expected columns "
                             f"{', '.join(required)}") from None
        df.columns = [str(c).strip() for c in df.columns]
        missing = [c for c in required if c not in df.columns]
        if missing:
            raise ValueError(
                f"{path} lacks column(s) {', '.join(missing)} (found: {', '.join(df.columns)}); "
                f"expected {', '.join(required)}"
            )
        df["image"] = df["image"].astype(str).str.strip()
        return df

    @staticmethod
    def _stem_of(name: str, by_stem: dict[str, Path]) -> str:
        """CSV ``image`` values may be file names or stems."""
        if name in by_stem:
            return name
        return Path(name).stem if Path(name).suffix.lower() in IMAGE_SUFFIXES else name

    def _check_known(self, stems: list[str], by_stem: dict[str, Path], csv: Path) -> None:
        unknown = sorted({s for s in stems if s not in by_stem})
        if unknown:
            raise missing_files_error(
                f"images named in {csv.name} are", unknown, len(set(stems)), self.root / "images",
                "add the images or remove their rows",
            )

    def _read_fixations(self, by_stem: dict[str, Path]) -> dict[str, pd.DataFrame] | None:
        path = self.root / "fixations.csv"
        if not path.is_file():
            return None
        df = self._read_csv(path, ("image", "x", "y"))
        for col in ("x", "y") + tuple(c for c in ("subject", "duration") if c in df.columns):
            values = pd.to_numeric(df[col], errors="coerce")
            bad = values.isna() if col in ("x", "y", "subject") else values.isna() & df[col].notna()
            if bad.any():
                first = int(np.flatnonzero(bad.to_numpy())[0])
                raw = df[col].iloc[first]
                got = "an empty cell" if pd.isna(raw) else repr(str(raw))
                # +2: the header is line 1 and lines count from 1
                raise ValueError(f"{path}, line {first + 2}: column {col!r} must be a number, got {got}")
            if col == "subject" and (values != np.round(values)).any():
                first = int(np.flatnonzero((values != np.round(values)).to_numpy())[0])
                raise ValueError(
                    f"{path}, line {first + 2}: column 'subject' must hold integer subject ids, "
                    f"got {str(df[col].iloc[first])!r}"
                )
            df[col] = values
        df["stem"] = [self._stem_of(n, by_stem) for n in df["image"]]
        self._check_known(list(df["stem"]), by_stem, path)
        subject = df["subject"] if "subject" in df.columns else pd.Series(1, index=df.index)
        duration = df["duration"] if "duration" in df.columns else pd.Series(np.nan, index=df.index)
        df = df.assign(subject=subject.astype(np.int64), duration=duration.astype(np.float64))
        return {stem: g for stem, g in df.groupby("stem", sort=False)}

    def _read_categories(self, by_stem: dict[str, Path]) -> dict[tuple[str, int], str] | None:
        path = self.root / "categories.csv"
        if not path.is_file():
            return None
        df = self._read_csv(path, ("image", "region", "category"))
        region = pd.to_numeric(df["region"], errors="coerce")
        if region.isna().any() or (region != np.round(region)).any() or (region <= 0).any():
            raise ValueError(f"{path}: column 'region' must hold the positive integer ids used in the masks")
        stems = [self._stem_of(n, by_stem) for n in df["image"]]
        self._check_known(stems, by_stem, path)
        table: dict[tuple[str, int], str] = {}
        for stem, r, cat in zip(stems, region.astype(np.int64), df["category"].astype(str).str.strip()):
            if (stem, int(r)) in table and table[(stem, int(r))] != cat:
                raise ValueError(f"{path}: region {int(r)} of image {stem!r} has two categories")
            table[(stem, int(r))] = cat
        return table

    def _check_category_masks(self, stems: list[str]) -> None:
        """Every image that categories.csv names must have a mask file (else its rows would be ignored)."""
        has_dir = self._mask_dir.is_dir()
        no_mask = [s for s in stems if not has_dir or find_label_file(self._mask_dir, s) is None]
        if no_mask:
            raise missing_files_error(
                "mask files (masks/<stem>.png|.npy) of images named in categories.csv are", no_mask,
                len(stems), self._mask_dir, "add the masks or remove those images' rows from categories.csv",
            )

    # ------------------------------------------------------------------ samples
    def _regions(self, stem: str, shape: tuple[int, int]) -> tuple[np.ndarray, list[str]]:
        h, w = shape
        path = find_label_file(self._mask_dir, stem) if self._mask_dir.is_dir() else None
        if path is None:
            return np.zeros((0, h, w), dtype=bool), []
        lab = read_label_map(path)
        if lab.shape != (h, w):
            raise ValueError(
                f"{path} is {lab.shape[0]} x {lab.shape[1]} but image {stem!r} is {h} x {w}; "
                "save masks at the image's own size"
            )
        ids, masks = instance_masks(lab, str(path))
        if self._categories is None:
            return masks, [DEFAULT_CATEGORY] * len(ids)
        listed = {r for (s, r) in self._categories if s == stem}
        unlisted = [int(r) for r in ids if int(r) not in listed]
        if listed and unlisted:
            raise ValueError(
                f"categories.csv names regions of image {stem!r} but not region(s) "
                f"{', '.join(map(str, unlisted))}; add a row for each region"
            )
        absent = sorted(listed - {int(r) for r in ids})
        if absent:
            raise ValueError(
                f"categories.csv names region(s) {', '.join(map(str, absent))} of image {stem!r}, "
                f"which {path.name} does not contain"
            )
        cats = [self._categories.get((stem, int(r)), DEFAULT_CATEGORY) for r in ids]
        return masks, cats

    def _load(self, i: int) -> Sample:
        stem, path = self._items[i]
        image = read_image(path)
        h, w = image.shape[:2]
        masks, cats = self._regions(stem, (h, w))
        meta: dict = {"dataset": self.name, "file": str(path)}
        fix_map = table = None
        if self._fixations is not None:
            g = self._fixations[stem]
            rows, cols, keep, n_clamped = fixations_in_image(g["x"], g["y"], (h, w), one_based=self.one_based)
            fix_map = np.zeros((h, w), dtype=bool)
            fix_map[rows, cols] = True
            g = g[keep]  # points more than a pixel outside the image are dropped (and counted)
            table = fixation_table(g["x"], g["y"], g["subject"], g["duration"], one_based=self.one_based)
            meta.update(n_fixations=len(keep), n_clamped=int(n_clamped), n_dropped=int((~keep).sum()))
        return Sample(stem, image, masks, cats, fixation_map=fix_map, fixations=table, meta=meta)
