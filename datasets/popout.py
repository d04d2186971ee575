"""Pop-out datasets: the synthetic search arrays of :mod:`datasets.popout_arrays`, as datasets.

* :class:`PopoutDataset`: ``n_per_dimension`` arrays per feature dimension, generated lazily and
  deterministically (He et al.'s 80 arrays by default), the toolkit's built-in offline dataset;
* :func:`write_popout_set` / :class:`PopoutFolder`: the same arrays written as PNGs (image,
  0/255 target mask) with a ``metadata.csv`` row per array, and read back as :class:`Sample`.

How an array is made (dimensions, rendering, target masks, layout, luminance control) is
documented in :mod:`datasets.popout_arrays`; its public names (:data:`DIMENSIONS`,
:class:`PopoutParams`, :func:`generate_array`, ...) are re-exported here. This module must not
import torch (datasets never import models).
"""
from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from datasets.base import Sample
from datasets.popout_arrays import (
    ALL_DIMENSIONS,
    CONTROL_DIMENSIONS,
    DIMENSIONS,
    PopoutParams,
    PopoutRender,
    array_seed,
    check_dimension,
    check_seed,
    generate_array,
    mask_fraction,
    render_array,
)

__all__ = [
    "DIMENSIONS",
    "CONTROL_DIMENSIONS",
    "PopoutParams",
    "PopoutRender",
    "render_array",
    "generate_array",
    "array_seed",
    "PopoutDataset",
    "write_popout_set",
    "PopoutFolder",
]

# Columns of metadata.csv: per-array fields, then the flattened PopoutParams.
_ARRAY_COLUMNS = (
    "image_id",
    "dimension",
    "seed",
    "target_row",
    "target_col",
    "target_x",
    "target_y",
    "eccentricity",
    "mask_fraction",
    "nmm_ceiling",
)
_PARAM_COLUMNS = (
    "canvas_h",
    "canvas_w",
    "grid_rows",
    "grid_cols",
    "jitter",
    "item_size",
    "contrast",
    "background",
    "item_lightness",
    "chroma",
    "supersample",
    "isoluminance",
)


# --------------------------------------------------------------------------------------------
# Datasets


class PopoutDataset:
    """``n_per_dimension`` arrays per dimension, generated lazily and deterministically.

    Index ``i`` is array ``k = i % n_per_dimension`` of ``dimensions[i // n_per_dimension]``:
    ``generate_array(dimension, array_seed(seed, k), params)`` (``meta["seed"]`` holds that array
    seed). Array ``k`` has the same layout in every dimension and does not depend on
    ``n_per_dimension``; different dataset seeds share no arrays. Ids are ``f"{dimension}_{k:03d}"``
    for ``seed = 0`` (``hue_000 ... hue_009``) and ``f"{dimension}_s{seed}_{k:03d}"`` otherwise, so
    arrays of different seeds never share an id. The default is He et al.'s 80 arrays: 10 per
    feature dimension. Add the control with ``dimensions=DIMENSIONS + CONTROL_DIMENSIONS``.
    """

    name = "popout"

    def __init__(
        self,
        n_per_dimension: int = 10,
        seed: int = 0,
        dimensions: Sequence[str] = DIMENSIONS,
        params: PopoutParams = PopoutParams(),
    ) -> None:
        n = n_per_dimension
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n_per_dimension must be a positive integer, got {n_per_dimension!r}")
        if isinstance(dimensions, str):
            raise ValueError(f"dimensions must be a sequence of names, e.g. ({dimensions!r},), not a string")
        dims = tuple(check_dimension(d) for d in dimensions)
        if not dims:
            raise ValueError(f"dimensions is empty; choose from {', '.join(ALL_DIMENSIONS)}")
        if len(set(dims)) != len(dims):
            raise ValueError(f"dimensions has duplicates: {dims}")
        if not isinstance(params, PopoutParams):
            raise ValueError(f"params must be a PopoutParams, got {type(params).__name__}")
        self.n_per_dimension = int(n_per_dimension)
        self.seed = check_seed(seed)
        self.dimensions = dims
        self.category_order = list(dims)  # dissection tables list the dimensions in this order
        self.params = params

    def __len__(self) -> int:
        return self.n_per_dimension * len(self.dimensions)

    def image_groups(self) -> list[str]:
        """The dimension of every array, in index order (for :func:`datasets.base.first`)."""
        return [d for d in self.dimensions for _ in range(self.n_per_dimension)]

    def __getitem__(self, index: int) -> Sample:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"PopoutDataset indices must be integers, got {type(index).__name__}")
        n = len(self)
        i = int(index) + n if index < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for a pop-out dataset of {n} arrays")
        dim, k = self.dimensions[i // self.n_per_dimension], i % self.n_per_dimension
        sid = f"{dim}_{k:03d}" if self.seed == 0 else f"{dim}_s{self.seed}_{k:03d}"
        return generate_array(dim, array_seed(self.seed, k), self.params, image_id=sid)

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))


def _read_png(path: Path, mode: str) -> np.ndarray:
    """A PNG of a pop-out folder as a uint8 array; a truncated or unreadable file names itself."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode), dtype=np.uint8)
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}; rewrite the folder with `python cli.py popout generate`") from None


def _params_row(params: PopoutParams) -> dict[str, object]:
    return {
        "canvas_h": params.canvas[0],
        "canvas_w": params.canvas[1],
        "grid_rows": params.grid[0],
        "grid_cols": params.grid[1],
        "jitter": params.jitter,
        "item_size": params.item_size,
        "contrast": params.contrast,
        "background": params.background,
        "item_lightness": params.item_lightness,
        "chroma": params.chroma,
        "supersample": params.supersample,
        "isoluminance": params.isoluminance,
    }


_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


def write_popout_set(dataset: Iterable[Sample], out_dir: str | Path) -> Path:
    """Write pop-out samples as ``images/<id>.png``, ``masks/<id>.png`` and ``metadata.csv``.

    Images are RGB PNGs (lossless: reading them back gives the same pixels), masks are ``L`` PNGs
    with 0 / 255. ``metadata.csv`` has one row per array: ``image_id, dimension, seed, target_row,
    target_col, target_x, target_y, eccentricity, mask_fraction, nmm_ceiling`` and the params
    (``canvas_h, canvas_w, grid_rows, grid_cols, jitter, item_size, contrast, background,
    item_lightness, chroma, supersample, isoluminance``); floats are written with ``repr`` (exact round trip).
    Existing files of the same names are overwritten.

    Args:
        dataset: samples from :class:`PopoutDataset`, :func:`generate_array` or
            :class:`PopoutFolder` (their ``meta`` carries the fields above).
        out_dir: folder to write (created if needed).

    Returns:
        ``Path(out_dir)``.

    Raises:
        ValueError: a sample without pop-out metadata or with not exactly one mask, an unsafe
            or duplicate image id.
    """
    out = Path(out_dir)
    rows = []
    seen: set[str] = set()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for sample in dataset:
        sid = sample.image_id
        missing = [k for k in _ARRAY_COLUMNS[1:] if k not in sample.meta] + (
            [] if isinstance(sample.meta.get("params"), PopoutParams) else ["params"]
        )
        if missing:
            raise ValueError(
                f"sample {sid!r} lacks pop-out metadata {missing}; "
                "write samples from PopoutDataset or generate_array"
            )
        if sample.masks.shape[0] != 1:
            n_masks = sample.masks.shape[0]
            raise ValueError(f"sample {sid!r} has {n_masks} masks; a pop-out array has exactly 1")
        if not _SAFE_ID.match(sid):
            raise ValueError(f"image id {sid!r} is not a safe file name (letters, digits, _ . - only)")
        if sid in seen:
            raise ValueError(f"duplicate image id {sid!r}; give each array its own seed")
        seen.add(sid)
        Image.fromarray(np.ascontiguousarray(sample.image, dtype=np.uint8), mode="RGB").save(
            out / "images" / f"{sid}.png"
        )
        Image.fromarray(sample.masks[0].astype(np.uint8) * 255, mode="L").save(out / "masks" / f"{sid}.png")
        row = {"image_id": sid, **{k: sample.meta[k] for k in _ARRAY_COLUMNS[1:]}}
        row.update(_params_row(sample.meta["params"]))
        rows.append(row)
    with open(out / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=_ARRAY_COLUMNS + _PARAM_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    return out


_INT_COLUMNS = (
    "seed",
    "target_row",
    "target_col",
    "canvas_h",
    "canvas_w",
    "grid_rows",
    "grid_cols",
    "background",
    "supersample",
)


class PopoutFolder:
    """Pop-out arrays written by :func:`write_popout_set`, read back as :class:`Sample`.

    The folder and its files are checked when the object is made; pixels are read lazily. The
    arrays are listed in ``metadata.csv`` order; PNGs not listed there are ignored.
    ``category_order`` lists the dimensions present, in :data:`DIMENSIONS` order, then the
    controls (as :class:`PopoutDataset` does), for the dissection tables.

    Raises:
        FileNotFoundError: a missing folder, ``metadata.csv``, image or mask.
        ValueError: ``metadata.csv`` without the expected columns, with unreadable values or an
            unknown dimension.
    """

    name = "popout"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"pop-out folder {str(self.root)!r} does not exist; write one with write_popout_set"
            )
        meta_path = self.root / "metadata.csv"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{str(meta_path)!r} is missing; {str(self.root)!r} is not a folder written by "
                "write_popout_set"
            )
        with open(meta_path, newline="") as fh:
            reader = csv.DictReader(fh)
            header = tuple(reader.fieldnames or ())
            missing = [c for c in _ARRAY_COLUMNS + _PARAM_COLUMNS if c not in header]
            if missing:
                raise ValueError(
                    f"{str(meta_path)!r} lacks columns {missing}; rewrite it with write_popout_set"
                )
            self._rows = [self._parse(row, meta_path, n + 2) for n, row in enumerate(reader)]
        present = {row["dimension"] for row in self._rows}
        self.category_order = [d for d in ALL_DIMENSIONS if d in present]
        for row in self._rows:
            sid = row["image_id"]
            if not (self.root / "images" / f"{sid}.png").is_file():
                raise FileNotFoundError(
                    f"image images/{sid}.png listed in metadata.csv is missing in {str(self.root)!r}"
                )
            if not (self.root / "masks" / f"{sid}.png").is_file():
                raise FileNotFoundError(
                    f"image {sid!r} has no mask: masks/{sid}.png is missing in {str(self.root)!r}"
                )

    @staticmethod
    def _parse(row: dict[str, str], path: Path, line: int) -> dict[str, object]:
        try:
            out: dict[str, object] = {"image_id": row["image_id"], "dimension": row["dimension"]}
            out["isoluminance"] = row["isoluminance"]
            for key in _ARRAY_COLUMNS[2:] + _PARAM_COLUMNS[:-1]:
                out[key] = int(row[key]) if key in _INT_COLUMNS else float(row[key])
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"{str(path)!r} line {line}: unreadable value ({err}); rewrite it with write_popout_set"
            ) from None
        if out["dimension"] not in ALL_DIMENSIONS:
            raise ValueError(
                f"{str(path)!r} line {line}: unknown dimension {out['dimension']!r}; "
                f"expected one of {', '.join(ALL_DIMENSIONS)}"
            )
        return out

    def __len__(self) -> int:
        return len(self._rows)

    def image_groups(self) -> list[str]:
        """The dimension of every array, in index order (for :func:`datasets.base.first`)."""
        return [str(row["dimension"]) for row in self._rows]

    def __getitem__(self, index: int) -> Sample:
        row = self._rows[index]
        sid = str(row["image_id"])
        image, raw = (_read_png(self.root / kind / f"{sid}.png", mode) for kind, mode in (("images", "RGB"),
                                                                                      ("masks", "L")))
        if not np.all((raw == 0) | (raw == 255)):
            raise ValueError(f"masks/{sid}.png is not a 0/255 mask; rewrite it with write_popout_set")
        mask = raw == 255
        if mask.shape != image.shape[:2]:
            raise ValueError(f"masks/{sid}.png is {mask.shape} but images/{sid}.png is {image.shape[:2]}")
        if mask_fraction(mask) != row["mask_fraction"]:
            raise ValueError(
                f"masks/{sid}.png covers {mask_fraction(mask):.6g} of the image but metadata.csv says "
                f"{row['mask_fraction']:.6g}; the folder is stale, rewrite it with write_popout_set"
            )
        params = PopoutParams(
            canvas=(row["canvas_h"], row["canvas_w"]),
            grid=(row["grid_rows"], row["grid_cols"]),
            jitter=row["jitter"],
            item_size=row["item_size"],
            contrast=row["contrast"],
            background=row["background"],
            item_lightness=row["item_lightness"],
            chroma=row["chroma"],
            supersample=row["supersample"],
            isoluminance=row["isoluminance"],
        )
        meta = {k: row[k] for k in _ARRAY_COLUMNS[1:]}
        meta["params"] = params
        return Sample(sid, image, mask[None], [str(row["dimension"])], meta=meta)

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))
