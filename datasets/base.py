"""The record every dataset yields, and the protocol a dataset follows.

A dataset is any iterable of :class:`Sample` with a ``__len__`` and a ``name``.
Loaders never import torch hooks or models: data flows datasets -> dissect -> probes.
"""
from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Iterator, Protocol, Sequence

import numpy as np

__all__ = ["Sample", "Dataset", "LazyDataset", "ListDataset", "Subset", "first", "interleaved_order",
           "as_rgb_uint8"]


@dataclass
class Sample:
    """One image with its human data and annotated regions.

    Attributes:
        image_id: stable identifier (file stem), used in reports and for resuming.
        image: ``H x W x 3`` uint8 RGB array at the image's own resolution (other dtypes are
            refused: a float image in [0, 1] would otherwise be read as almost black).
        masks: ``R x H x W`` bool array, one mask per annotated region (``R`` may be 0). A 2-D
            array is taken as ONE mask and must be binary (0 and one non-zero value); an
            integer label map is refused (split it with :func:`datasets.folder.instance_masks`).
        categories: ``R`` category names, one per mask.
        fixation_map: ``H x W`` bool map of the unique fixated pixels (MATLAB rounding,
            digest section 1), or ``None`` for datasets without gaze (pop-out arrays).
        fixations: optional table of raw fixation points (pandas DataFrame with columns
            ``x, y`` in 1-based pixel coordinates, OSIE/MATLAB convention, plus
            ``subject`` and ``duration`` in ms where known).
        meta: free-form metadata (dataset specific, e.g. pop-out dimension and mask fraction).
    """

    image_id: str
    image: np.ndarray
    masks: np.ndarray
    categories: list[str]
    fixation_map: np.ndarray | None = None
    fixations: object | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        img = np.asarray(self.image)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(
                f"image {self.image_id!r}: expected an H x W x 3 RGB array, got shape {img.shape}"
            )
        if img.dtype != np.uint8:
            raise ValueError(
                f"image {self.image_id!r}: expected a uint8 RGB array (0..255), got dtype {img.dtype}; "
                "convert it first, e.g. (img * 255).round().astype(np.uint8) for floats in [0, 1]"
            )
        h, w = img.shape[:2]
        raw = np.asarray(self.masks)
        n_values = np.unique(raw[raw != 0]).size if raw.ndim == 2 and raw.dtype != bool else 1
        if n_values > 1:
            # A label map (0 = background, 1..R = regions) cast to bool would silently become ONE region.
            raise ValueError(
                f"image {self.image_id!r}: masks is a 2-D array with {n_values} different non-zero values, "
                "i.e. a label map, not one binary mask; split it into one mask per region first "
                "(datasets.folder.instance_masks(label_map) returns the ids and R x H x W masks)"
            )
        masks = raw.astype(bool, copy=False)  # a bool stack is used as it is (64 masks: 30 MB at 800 x 600)
        if masks.ndim == 2:
            masks = masks[None]
        if masks.size == 0:
            masks = np.zeros((0, h, w), dtype=bool)
        if masks.ndim != 3 or masks.shape[1:] != (h, w):
            raise ValueError(
                f"image {self.image_id!r}: masks have shape {masks.shape}, expected R x {h} x {w} "
                "(one mask per region at the image's own resolution)"
            )
        if len(self.categories) != masks.shape[0]:
            raise ValueError(
                f"image {self.image_id!r}: {masks.shape[0]} masks but {len(self.categories)} categories"
            )
        self.masks = masks
        self.categories = [str(c) for c in self.categories]
        if self.fixation_map is not None:
            fix = np.asarray(self.fixation_map).astype(bool)
            if fix.shape != (h, w):
                raise ValueError(
                    f"image {self.image_id!r}: fixation map is {fix.shape[0]} x {fix.shape[1]} but the "
                    f"image is {h} x {w}; build the map at the image's own resolution "
                    "(datasets.fixations.fixation_map or rescale_points)"
                )
            self.fixation_map = fix

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the image."""
        return self.image.shape[0], self.image.shape[1]


class Dataset(Protocol):
    """What the dissection engine needs from a dataset."""

    name: str

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Sample]: ...

    def __getitem__(self, index: int) -> Sample: ...


class LazyDataset(ABC):
    """Base of the file-backed loaders: ``self._items`` lists one entry per image and
    ``self._load(i)`` reads image ``i`` only when it is asked for."""

    name: str
    _items: list

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Sample:
        i = operator.index(index)
        n = len(self._items)
        if not -n <= i < n:
            raise IndexError(f"index {index} out of range for {self.name} with {n} images")
        return self._load(i % n)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self._items)):
            yield self._load(i)

    @abstractmethod
    def _load(self, i: int) -> Sample:
        """Read image ``i`` in the loader's own format."""


class ListDataset:
    """A dataset over an in-memory list of samples (tests, notebooks, small studies)."""

    def __init__(self, samples: Sequence[Sample], name: str = "in-memory") -> None:
        self.samples = list(samples)
        self.name = name

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)


class Subset:
    """A lazy view of some images of a dataset (in the given order)."""

    def __init__(self, dataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = list(indices)
        self.name = getattr(dataset, "name", type(dataset).__name__)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:
        return self.dataset[self.indices[index]]

    def __iter__(self) -> Iterator[Sample]:
        return (self.dataset[i] for i in self.indices)

    def __getattr__(self, name: str):
        # What describes the whole dataset (root, seed, category_order, ...) is the base's.
        if name.startswith("__") or name in ("dataset", "indices"):
            raise AttributeError(name)
        if name == "image_groups":  # the base's groups, for this view's images
            groups = getattr(self.dataset, "image_groups")

            def image_groups() -> list:
                base = groups()  # once, not once per image
                return [base[i] for i in self.indices]

            return image_groups
        return getattr(self.dataset, name)


def interleaved_order(dataset) -> list[int]:
    """Image indices in an order that takes one image of each group in turn.

    A dataset that knows the group of each image cheaply (``dataset.image_groups()``: the pop-out
    dimension of each array) is read round-robin over its groups, in the order the groups first
    appear (hue_000, luminance_000, ..., hue_001, ...), each group in its own order; any other
    dataset keeps its own order (OSIE: file order).
    """
    groups_of = getattr(dataset, "image_groups", None)
    if groups_of is None:
        return list(range(len(dataset)))
    groups: dict = {}
    for index, group in enumerate(groups_of()):
        groups.setdefault(group, []).append(index)
    queues = list(groups.values())
    order = []
    for rank in range(max((len(q) for q in queues), default=0)):
        order += [q[rank] for q in queues if rank < len(q)]
    return order


def first(dataset, n: int | None):
    """The first ``n`` images of ``dataset`` in :func:`interleaved_order` (all of them when ``n``
    is None or ``>= len``), lazily: a quick look at the pop-out set sees every dimension.

    Raises:
        ValueError: ``n`` is not an integer >= 1.
    """
    if n is None:
        return dataset
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"the number of images must be an integer >= 1, got {n!r}")
    if n >= len(dataset):
        return dataset
    return Subset(dataset, interleaved_order(dataset)[:int(n)])


def as_rgb_uint8(image, what: str = "image") -> tuple[np.ndarray, str | None]:
    """An ``H x W x 3`` uint8 RGB copy of a grayscale, RGB, RGBA, uint8 or float image.

    Grayscale (``H x W`` or ``H x W x 1``) is repeated over 3 channels, RGBA drops its alpha,
    floats in [0, 1] are scaled to 0..255 and rounded.

    Returns:
        ``(image, note)``: ``note`` says what was converted (``None`` for an RGB uint8 input).

    Raises:
        ValueError: another shape, a float image outside [0, 1] or with NaN, an integer image
            outside 0..255; the message names ``what``.
    """
    img = np.asarray(image)
    dtype = img.dtype
    notes = []
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img, notes = np.repeat(img[:, :, None], 3, axis=2), ["grayscale -> RGB"]
    elif img.ndim == 3 and img.shape[2] == 4:
        img, notes = img[:, :, :3], ["RGBA -> RGB (alpha dropped)"]
    if img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2], default=0) < 1:
        raise ValueError(f"{what}: expected an H x W x 3 RGB (or grayscale, RGBA) array, got shape {img.shape}")
    if img.dtype == np.uint8:
        pass
    elif np.issubdtype(img.dtype, np.floating):
        if not np.all(np.isfinite(img)) or img.min() < 0 or img.max() > 1:
            raise ValueError(f"{what}: a float image must hold values in [0, 1] (got {np.nanmin(img):.4g} .. "
                             f"{np.nanmax(img):.4g}); pass uint8 0..255 or floats in [0, 1]")
        img, notes = np.round(img * 255.0).astype(np.uint8), notes + ["float [0, 1] -> uint8"]
    elif np.issubdtype(img.dtype, np.integer) or img.dtype == bool:
        if img.dtype != bool and (img.min() < 0 or img.max() > 255):
            raise ValueError(f"{what}: integer pixel values must lie in 0..255, got {img.min()} .. {img.max()}")
        img, notes = img.astype(np.uint8) * (255 if img.dtype == bool else 1), notes + [f"{dtype} -> uint8"]
    else:
        raise ValueError(f"{what}: unsupported pixel type {img.dtype}; pass uint8 0..255 or floats in [0, 1]")
    return np.ascontiguousarray(img), ("; ".join(notes) if notes else None)
