"""The data side of training: image ids and splits, each split read once into network inputs and
fixations (:class:`Split`), batch assembly, and the epoch order (a pure function of seed and epoch)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from datasets.base import Subset
from dissect.models.inputs import resized_input

__all__ = ["image_ids", "read_ids", "split_dataset", "Split", "read_split", "fixation_batch", "density_batch",
           "batch_indices"]


def image_ids(dataset) -> list[str]:
    """``Sample.image_id`` of every image, without decoding images where the loader allows."""
    if isinstance(dataset, Subset):  # its _items would be the base's (Subset forwards attributes)
        base = image_ids(dataset.dataset)
        return [base[i] for i in dataset.indices]
    items = getattr(dataset, "_items", None)
    if isinstance(items, list) and items and all(isinstance(it, tuple) and isinstance(it[0], str) for it in items):
        return [it[0] for it in items]
    return [s.image_id for s in dataset]


def read_ids(path: str | os.PathLike) -> list[str]:
    """One image id per line (blank lines and ``#`` comments ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ids file {path} does not exist")
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def split_dataset(dataset, *, train_ids: Sequence[str] | None = None, val_ids: Sequence[str] | None = None,
                  val_fraction: float | None = None, seed: int = 0):
    """``(train, val)`` :class:`datasets.base.Subset` views.

    Either explicit ids (``val_ids`` without ``train_ids``: every other image trains) or a
    seeded random ``val_fraction`` (default 0.1).

    Raises:
        ValueError: an id not in the dataset (the first is named), a split that would be empty,
            an image in both splits.
    """
    from datasets.base import Subset

    ids = image_ids(dataset)
    where = {image_id: i for i, image_id in enumerate(ids)}
    name = getattr(dataset, "name", "the dataset")

    def indices(wanted: Sequence[str], what: str) -> list[int]:
        missing = [w for w in wanted if w not in where]
        if missing:
            raise ValueError(f"{what} id {missing[0]!r} is not in {name} ({len(missing)} of {len(wanted)} ids "
                             f"unknown; ids are Sample.image_id, e.g. {ids[0]!r})")
        return [where[w] for w in dict.fromkeys(wanted)]

    if train_ids is not None or val_ids is not None:
        if val_fraction is not None:
            raise ValueError("give either --train-ids/--val-ids or --val-fraction, not both")
        val = indices(val_ids, "validation") if val_ids is not None else []
        train = indices(train_ids, "training") if train_ids is not None else \
            [i for i in range(len(ids)) if i not in set(val)]
        both = set(train) & set(val)
        if both:
            raise ValueError(f"image {ids[min(both)]!r} is in both the training and the validation ids")
    else:
        fraction = 0.1 if val_fraction is None else float(val_fraction)
        if not 0 < fraction < 1:
            raise ValueError(f"--val-fraction must be in (0, 1), got {val_fraction!r}")
        order = np.random.default_rng(seed).permutation(len(ids))
        n_val = int(round(fraction * len(ids)))
        val, train = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
    if not val:
        raise ValueError(f"the validation split of {name} is empty: give --val-ids or a larger --val-fraction")
    if not train:
        raise ValueError(f"the training split of {name} is empty: give --train-ids or a smaller --val-fraction")
    return Subset(dataset, train), Subset(dataset, val)


@dataclass
class Split:
    """The network inputs and fixations of one split, read once."""

    ids: list[str]
    images: np.ndarray  # N x S x S x 3 uint8
    shapes: list[tuple[int, int]]
    fixations: list[np.ndarray]  # flat indices of the fixated pixels at the image's resolution
    projections: dict = field(default_factory=dict)  # (i, h, w) -> A_h^T Fix A_w


def read_split(subset, size: int, what: str, progress: bool, need_fixations: bool = True) -> Split:
    """Network inputs and fixations of a split (``need_fixations=False``: an image without
    fixations gets an empty index array)."""
    ids, images, shapes, fixations = [], [], [], []
    for sample in tqdm(subset, total=len(subset), desc=f"read {what}", unit="img", disable=not progress,
                       dynamic_ncols=True):
        if not need_fixations and sample.fixation_map is None:
            ids.append(sample.image_id)
            images.append(resized_input(sample.image, size))
            shapes.append(sample.shape)
            fixations.append(np.zeros(0, dtype=np.int64))
            continue
        if sample.fixation_map is None:
            raise ValueError(f"dataset {subset.name} has no fixations (image {sample.image_id!r}): training a "
                             "saliency model needs human gaze, e.g. --dataset osie, salicon or a folder with "
                             "fixations.csv")
        if not sample.fixation_map.any():
            raise ValueError(f"image {sample.image_id!r} has no fixated pixel: NSS is undefined; drop it from "
                             f"the {what} ids")
        ids.append(sample.image_id)
        images.append(resized_input(sample.image, size))
        shapes.append(sample.shape)
        fixations.append(np.flatnonzero(sample.fixation_map))
    return Split(ids, np.stack(images), shapes, fixations)


def fixation_batch(split: Split, index: np.ndarray, device) -> torch.Tensor:
    h, w = split.shapes[index[0]]
    fix = torch.zeros(len(index), h * w, device=device)
    for row, i in enumerate(index):
        fix[row, torch.from_numpy(split.fixations[i])] = 1.0
    return fix.view(len(index), h, w)


def density_batch(split: Split, index: np.ndarray, sigma: float, device) -> torch.Tensor:
    from datasets.fixations import density_map

    maps = []
    for i in index:
        fix = np.zeros(split.shapes[i], dtype=bool)
        fix.flat[split.fixations[i]] = True
        maps.append(density_map(fix, sigma))
    return torch.from_numpy(np.stack(maps)).to(device=device, dtype=torch.float32)


def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The permutation of epoch ``epoch``: a pure function of ``(seed, epoch)``."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def batch_indices(seed: int, step: int, n: int, batch: int) -> np.ndarray:
    """Images of training step ``step`` (1-based), ``drop_last`` epochs as He et al."""
    per_epoch = n // batch
    epoch, pos = divmod(step - 1, per_epoch)
    return _epoch_order(seed, epoch, n)[pos * batch:(pos + 1) * batch]
