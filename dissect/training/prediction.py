"""Prediction: a trained model's saliency maps at each image's own resolution, and loading a
checkpoint written by training."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from dissect.models.inputs import preprocess
from dissect.models.zoo import load_model
from dissect.training.losses import upsample
from dissect.training.prefix import encoder_stages, run_stages

__all__ = ["saliency_maps", "load_trained", "predict", "group", "ungroup", "readout"]


def predict(top: Callable[[torch.Tensor], torch.Tensor], feats: torch.Tensor,
            shapes: Sequence[tuple[int, int]]) -> list[tuple[list[int], torch.Tensor]]:
    """``top(feats)`` upsampled to the images' own sizes: ``[(rows, N_rows x H x W)]`` per size."""
    return group(top(feats), shapes)


def group(maps: torch.Tensor, shapes: Sequence[tuple[int, int]]) -> list[tuple[list[int], torch.Tensor]]:
    """Read-out maps ``N x 1 x h x w`` upsampled per image size: ``[(rows, N_rows x H x W)]``."""
    groups = []
    for shape in dict.fromkeys(shapes):
        rows = [i for i, s in enumerate(shapes) if s == shape]
        groups.append((rows, upsample(maps[rows], shape)))
    return groups


def ungroup(groups: list[tuple[list[int], torch.Tensor]]) -> list[torch.Tensor]:
    """The maps of :func:`group` back in batch order."""
    n = sum(len(rows) for rows, _ in groups)
    out: list[torch.Tensor | None] = [None] * n
    for rows, maps in groups:
        for j, i in enumerate(rows):
            out[i] = maps[j]
    return out


def saliency_maps(model: nn.Module, samples, image_size: int = 224, batch_size: int = 8,
                  device: str | torch.device = "cpu") -> list[np.ndarray]:
    """The model's saliency map of each sample at the sample's own resolution (float32)."""
    samples = list(samples)
    out = []
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            chunk = samples[start:start + batch_size]
            x = preprocess([s.image for s in chunk], image_size).to(device)
            maps = ungroup(predict(lambda f: readout(model, f), x, [s.shape for s in chunk]))
            out += [m.float().cpu().numpy() for m in maps]
    return out


def readout(model: nn.Module, x: torch.Tensor, start: int = 0) -> torch.Tensor:
    """``N x 1 x h x w`` read-out of the encoder chain from stage ``start`` on."""
    return model.readout(run_stages(encoder_stages(model)[start:], x))


def load_trained(path: str | os.PathLike) -> nn.Module:
    """A checkpoint written by training (any task model), via :func:`load_model`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        arch = torch.load(path, map_location="cpu", weights_only=True).get("arch")
    except Exception as exc:
        raise ValueError(f"could not read checkpoint {path}: {exc}") from None
    if arch is None:
        raise ValueError(f"{path} is not a saliency-dissect checkpoint (no 'arch'): write it with save_checkpoint")
    return load_model(arch, weights=str(path))
