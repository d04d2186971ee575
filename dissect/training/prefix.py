"""The frozen prefix: the encoder's trainable units, freezing all but the last ``K``, where the
encoder chain splits, and :class:`FeatureCache`, the prefix's output computed once per image."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from dissect.models.inputs import preprocess
from dissect.training.config import check_k

__all__ = ["encoder_stages", "encoder_units", "parse_finetune", "freeze_units", "split_point", "run_stages",
           "train_mode", "FeatureCache"]


def encoder_stages(model: nn.Module) -> list[nn.Module]:
    """The encoder as a chain of stages (what :func:`split_point` indexes)."""
    return model.encoder_stages() if hasattr(model, "encoder_stages") else list(model.features)


def encoder_units(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """The encoder's trainable units in forward order: VGG convs, or ResNet's stem and blocks."""
    names = {id(m): n for n, m in model.named_modules()}
    if hasattr(model, "encoder_stages"):
        blocks = [m for m in model.encoder_stages()[4:]]
        return [("conv1", [model.conv1, model.bn1])] + [(names[id(b)], [b]) for b in blocks]
    return [(names[id(m)], [m]) for m in model.features if isinstance(m, nn.Conv2d)]


def parse_finetune(value: int | str, model: nn.Module) -> int:
    """``K`` as an int in ``0 .. number of units`` (``"all"`` = every unit)."""
    return check_k(value, len(encoder_units(model)))


def freeze_units(model: nn.Module, k: int) -> list[str]:
    """Freeze the encoder except its last ``k`` units (the head stays trainable); the names left
    trainable. For VGG this is :func:`dissect.models.heads.freeze_encoder`."""
    units = encoder_units(model)
    for stage in encoder_stages(model):
        for p in stage.parameters():
            p.requires_grad_(False)
    for _, modules in units[len(units) - k:]:
        for m in modules:
            for p in m.parameters():
                p.requires_grad_(True)
    return [name for name, _ in units[len(units) - k:]]


def split_point(model: nn.Module, k: int) -> int:
    """Index in the encoder chain of the first trainable stage (the chain's length for ``k = 0``)."""
    stages = encoder_stages(model)
    units = encoder_units(model)
    if k == 0:
        return len(stages)
    first = units[len(units) - k][1][0]
    return next(i for i, s in enumerate(stages) if s is first)


def run_stages(stages: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """``x`` through ``stages`` in order."""
    for stage in stages:
        x = stage(x)
    return x


def train_mode(model: nn.Module) -> None:
    """Train mode, except BatchNorm: frozen running statistics (see :mod:`dissect.training`)."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


class FeatureCache:
    """The frozen prefix's output for every image, computed once.

    Args:
        prefix: the frozen stages (an empty list caches the preprocessed input itself).
        images: ``N x S x S x 3`` uint8 network inputs (already resized).
        dtype: ``"float32"`` or ``"float16"`` storage.
        where: ``"memory"``, ``"disk"`` (a memmap at ``path``) or ``"auto"`` (disk when the
            cache is larger than ``memory_mb``).
        chunk: images per forward while filling (fixed, so a resumed run refills it bit-identically).
    """

    def __init__(self, prefix: Sequence[nn.Module], images: np.ndarray, *, dtype: str = "float32",
                 where: str = "auto", memory_mb: int = 4096, path: Path | None = None,
                 device: torch.device | str = "cpu", chunk: int = 16, progress: bool = False) -> None:
        self.torch_dtype = torch.float16 if dtype == "float16" else torch.float32
        n = len(images)
        device = torch.device(device)
        with torch.no_grad():
            probe = run_stages(prefix, preprocess(list(images[:1]), None).to(device))
        self.item_shape = tuple(probe.shape[1:])
        nbytes = n * int(np.prod(self.item_shape)) * (2 if dtype == "float16" else 4)
        self.nbytes = nbytes
        self.on_disk = where == "disk" or (where == "auto" and nbytes > memory_mb * 2 ** 20)
        np_dtype = np.float16 if dtype == "float16" else np.float32
        if self.on_disk:
            if path is None:
                raise ValueError("a disk cache needs a path")
            path.parent.mkdir(parents=True, exist_ok=True)
            self.data = np.lib.format.open_memmap(path, mode="w+", dtype=np_dtype, shape=(n, *self.item_shape))
        else:
            self.data = np.empty((n, *self.item_shape), dtype=np_dtype)
        bar = tqdm(total=n, desc="cache", unit="img", disable=not progress, dynamic_ncols=True)
        with torch.no_grad():
            for start in range(0, n, chunk):
                batch = preprocess(list(images[start:start + chunk]), None).to(device)
                self.data[start:start + chunk] = run_stages(prefix, batch).to(self.torch_dtype).cpu().numpy()
                bar.update(len(batch))
        bar.close()
        if self.on_disk:
            self.data.flush()

    def __len__(self) -> int:
        return len(self.data)

    def get(self, index: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """Float32 features of images ``index``."""
        return torch.from_numpy(np.ascontiguousarray(self.data[index])).to(device=device, dtype=torch.float32)
