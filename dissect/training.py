"""Train He et al.'s saliency models (setups I and II) with a frozen-prefix cache and exact resume.

``train_saliency(train, val, out, cfg)`` fine-tunes :class:`dissect.heads.SaliencyVGG` (or
:class:`dissect.heads.SaliencyResNet`) on a dataset with fixations and writes, in ``out``:

* ``best.pt`` (best validation NSS), ``last.pt`` (also holds the optimiser, schedule and RNG
  state for ``resume``) and ``checkpoints/step-NNNNNN.pt`` at every evaluation (hard links to
  that evaluation's ``last.pt``: the weights are written once), all loadable by
  ``load_model(arch, weights=path)`` and ``cli.py dissect --model ARCH --weights PATH``;
* ``train_log.csv`` (step, loss, lr, seconds = cumulative training wall time), ``val.csv``
  (step, NSS, CC, KL, SIM, AUC-Judd on the validation images at their own resolution, with the
  centre-bias floor in ``floor_*`` columns), ``run.json`` and ``curves.png``.

Defaults follow He et al.'s PyTorch script (reference-implementations A.3): Adam 5e-3, batch 20,
lr x 0.8 every 500 steps, 10 000 steps, loss -NSS with the population std on binary fixation
maps at the dataset's own resolution, 224 x 224 input. ``finetune = K``: setup I (``K = 0``,
only the 1x1 read-out trains) or setup II (the last ``K`` convs of VGG16 also train; ``"all"``
= 13). For ResNet-50 ``K`` counts residual blocks (the stem counts as one), and every
BatchNorm keeps its ImageNet running statistics (eval mode; its affine parameters train in
the trainable blocks), so the frozen part stays a fixed function of the image.

**Frozen-prefix cache.** There is no augmentation, so the encoder up to the first trainable
unit is a fixed function of each image: its output is computed once per image (in memory, or
in a disk memmap ``cache/`` in the run folder when larger than ``cache_memory_mb``) and training
runs only the trainable top. Cached and uncached training compute the same function; they
differ only in float32 rounding of the prefix's convolutions, whose kernels may group batches
differently (~1e-7 relative per activation; Adam turns it into weights ~3e-4 of their norm apart
after a few steps; tested at 1e-3). ``cache_dtype="float16"`` halves the cache; its rounding
(relative 2^-11 per activation) keeps each step's loss within 5e-4 and the weights within 3e-2
of their norm (conv5_3 after 4 Adam steps; 1e-3 for the read-out alone) of float32 caching
(tested at those tolerances): fine for setup I, a visible perturbation for setup II.

**Resume.** The data order is a pure function of ``(seed, epoch)`` (a permutation per epoch,
``drop_last`` as He et al.), so ``last.pt`` (model, Adam, StepLR, torch RNG, best NSS) is the
whole state: on CPU, a run killed at any point and resumed ends bitwise equal to an
uninterrupted run with the same settings. A non-finite loss (e.g. constant predictions) stops
with :class:`TrainingError` naming the step; the checkpoints already written stay.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from datasets.base import Subset
from dissect.dissection import _resized, environment_versions, preprocess
from dissect.models import load_model, save_checkpoint
from dissect.reports import _atomic_to_csv, atomic_write_json, check_writable

__all__ = [
    "TrainConfig", "TrainingError", "build_saliency_model", "encoder_units", "freeze_units",
    "split_point", "FeatureCache", "split_dataset", "image_ids", "read_ids", "stra_loss",
    "saliency_maps", "upsample", "nss_loss_upsampled", "train_saliency", "load_trained", "VAL_METRICS",
]

VAL_METRICS = ("nss", "cc", "kl", "sim", "auc_judd")
LOSSES = ("nss", "kl+cc+nss+sim")
_STATE_KEY = "training"
# Settings that may change between an interrupted run and its resumption.
_RESUMABLE = ("steps", "device", "progress", "cache", "cache_memory_mb")


class TrainingError(ValueError):
    """Training cannot go on (non-finite loss, a run folder of another run); one line."""


@dataclass
class TrainConfig:
    """Every setting of a training run (written to ``run.json``)."""

    finetune: int | str = 0
    backbone: str = "vgg16"
    readout_layer: str | None = None
    encoder_weights: str = "auto"
    seed: int = 0
    steps: int = 10_000
    batch_size: int = 20
    lr: float = 5e-3
    lr_decay: float = 0.8
    decay_every: int = 500
    eval_every: int = 500
    loss: str = "nss"
    loss_weights: tuple[float, float, float, float] = (10.0, 2.0, 1.0, 1.0)
    image_size: int = 224
    sigma: float = 24.0
    cache: str = "auto"
    cache_dtype: str = "float32"
    cache_memory_mb: int = 4096
    device: str = "cpu"
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        """Raise a one-line ValueError for a setting outside its range."""
        positive = {"steps": self.steps, "batch_size": self.batch_size, "decay_every": self.decay_every,
                    "eval_every": self.eval_every, "image_size": self.image_size}
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"--lr must be a positive number, got {self.lr!r}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"--lr-decay must be in (0, 1], got {self.lr_decay!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if len(self.loss_weights) != 4 or not all(math.isfinite(w) for w in self.loss_weights):
            raise ValueError(f"--loss-weights needs 4 finite numbers KL,CC,NSS,SIM, got {self.loss_weights!r}")
        if self.backbone not in ("vgg16", "resnet50"):
            raise ValueError(f"--backbone must be vgg16 or resnet50, got {self.backbone!r}")
        if self.backbone == "vgg16" and self.readout_layer not in (None, "conv5_3"):
            raise ValueError("--readout-layer is for --backbone resnet50 (VGG16 reads out conv5_3, as He et al.)")
        if self.cache not in ("auto", "memory", "disk", "off"):
            raise ValueError(f"--cache must be auto, memory, disk or off, got {self.cache!r}")
        if self.cache_dtype not in ("float32", "float16"):
            raise ValueError(f"--cache-dtype must be float32 or float16, got {self.cache_dtype!r}")
        _check_k(self.finetune, _n_units(self.backbone, self.readout_layer))


# ------------------------------------------------------------------------------------- models


def build_saliency_model(cfg: TrainConfig) -> nn.Module:
    """The untrained model of ``cfg``; with random encoder weights exactly
    ``load_model("saliency_vgg16", weights="random", seed=cfg.seed)``."""
    from dissect import heads

    if cfg.backbone == "resnet50":
        return heads.SaliencyResNet(cfg.encoder_weights, readout_layer=cfg.readout_layer or "layer4",
                                    seed=cfg.seed)
    if cfg.encoder_weights in ("auto", "imagenet", "random"):
        return load_model("saliency_vgg16", weights=cfg.encoder_weights, seed=cfg.seed)
    return heads.SaliencyVGG(encoder_weights=cfg.encoder_weights, seed=cfg.seed)


def _stages(model: nn.Module) -> list[nn.Module]:
    return model.encoder_stages() if hasattr(model, "encoder_stages") else list(model.features)


def encoder_units(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """The encoder's trainable units in forward order: VGG convs, or ResNet's stem and blocks."""
    names = {id(m): n for n, m in model.named_modules()}
    if hasattr(model, "encoder_stages"):
        blocks = [m for m in model.encoder_stages()[4:]]
        return [("conv1", [model.conv1, model.bn1])] + [(names[id(b)], [b]) for b in blocks]
    return [(names[id(m)], [m]) for m in model.features if isinstance(m, nn.Conv2d)]


def _n_units(backbone: str, readout_layer: str | None) -> int:
    """Trainable units of an encoder without building it: VGG16's 13 convs, or ResNet-50's stem
    plus its residual blocks up to the read-out stage (3, 4, 6, 3 per stage)."""
    if backbone != "resnet50":
        return 13
    stages = ("layer1", "layer2", "layer3", "layer4")
    last = stages.index(readout_layer) + 1 if readout_layer in stages else 4
    return 1 + sum((3, 4, 6, 3)[:last])


def parse_finetune(value: int | str, model: nn.Module) -> int:
    """``K`` as an int in ``0 .. number of units`` (``"all"`` = every unit)."""
    return _check_k(value, len(encoder_units(model)))


def _check_k(value: int | str, n: int) -> int:
    if value == "all":
        return n
    try:
        k = int(value)
    except (TypeError, ValueError):
        k = -1
    if isinstance(value, bool) or k < 0 or k > n or str(value).strip() != str(k):
        raise ValueError(f"--finetune must be an integer in 0..{n} or 'all' for this encoder, got {value!r}")
    return k


def freeze_units(model: nn.Module, k: int) -> list[str]:
    """Freeze the encoder except its last ``k`` units (the head stays trainable); the names left
    trainable. For VGG this is :func:`dissect.heads.freeze_encoder`."""
    units = encoder_units(model)
    for stage in _stages(model):
        for p in stage.parameters():
            p.requires_grad_(False)
    for _, modules in units[len(units) - k:]:
        for m in modules:
            for p in m.parameters():
                p.requires_grad_(True)
    return [name for name, _ in units[len(units) - k:]]


def split_point(model: nn.Module, k: int) -> int:
    """Index in the encoder chain of the first trainable stage (the chain's length for ``k = 0``)."""
    stages = _stages(model)
    units = encoder_units(model)
    if k == 0:
        return len(stages)
    first = units[len(units) - k][1][0]
    return next(i for i, s in enumerate(stages) if s is first)


def _run(stages: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for stage in stages:
        x = stage(x)
    return x


def _train_mode(model: nn.Module) -> None:
    """Train mode, except BatchNorm: frozen running statistics (see the module docstring)."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


# ------------------------------------------------------------------------------------- cache


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
            probe = _run(prefix, preprocess(list(images[:1]), None).to(device))
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
                self.data[start:start + chunk] = _run(prefix, batch).to(self.torch_dtype).cpu().numpy()
                bar.update(len(batch))
        bar.close()
        if self.on_disk:
            self.data.flush()

    def __len__(self) -> int:
        return len(self.data)

    def get(self, index: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """Float32 features of images ``index``."""
        return torch.from_numpy(np.ascontiguousarray(self.data[index])).to(device=device, dtype=torch.float32)


# -------------------------------------------------------------------------------------- data


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
class _Split:
    """The network inputs and fixations of one split, read once."""

    ids: list[str]
    images: np.ndarray  # N x S x S x 3 uint8
    shapes: list[tuple[int, int]]
    fixations: list[np.ndarray]  # flat indices of the fixated pixels at the image's resolution
    projections: dict = field(default_factory=dict)  # (i, h, w) -> A_h^T Fix A_w


def _read_split(subset, size: int, what: str, progress: bool, need_fixations: bool = True) -> _Split:
    """Network inputs and fixations of a split (``need_fixations=False``: an image without
    fixations gets an empty index array)."""
    ids, images, shapes, fixations = [], [], [], []
    for sample in tqdm(subset, total=len(subset), desc=f"read {what}", unit="img", disable=not progress,
                       dynamic_ncols=True):
        if not need_fixations and sample.fixation_map is None:
            ids.append(sample.image_id)
            images.append(_resized(sample.image, size))
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
        images.append(_resized(sample.image, size))
        shapes.append(sample.shape)
        fixations.append(np.flatnonzero(sample.fixation_map))
    return _Split(ids, np.stack(images), shapes, fixations)


def _fixation_batch(split: _Split, index: np.ndarray, device) -> torch.Tensor:
    h, w = split.shapes[index[0]]
    fix = torch.zeros(len(index), h * w, device=device)
    for row, i in enumerate(index):
        fix[row, torch.from_numpy(split.fixations[i])] = 1.0
    return fix.view(len(index), h, w)


def _density_batch(split: _Split, index: np.ndarray, sigma: float, device) -> torch.Tensor:
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


def _batch_indices(seed: int, step: int, n: int, batch: int) -> np.ndarray:
    """Images of training step ``step`` (1-based), ``drop_last`` epochs as He et al."""
    per_epoch = n // batch
    epoch, pos = divmod(step - 1, per_epoch)
    return _epoch_order(seed, epoch, n)[pos * batch:(pos + 1) * batch]


# -------------------------------------------------------------------------------------- losses


def stra_loss(pred: torch.Tensor, fixations: torch.Tensor, density: torch.Tensor,
              weights: Sequence[float] = (10.0, 2.0, 1.0, 1.0)) -> torch.Tensor:
    """STRA-Net's loss (Lai et al. 2019; reference-implementations B): ``w_KL KL - w_CC CC - w_NSS NSS
    - w_SIM SIM``, batch mean.

    The prediction is min-maxed per image (our read-out is signed; STRA-Net's sigmoid output is
    non-negative), then max-normalised as STRA-Net; KL, CC and SIM use the sum-normalised maps
    clipped to ``[eps, 1 - eps]`` (Keras ``K.epsilon() = 1e-7``), NSS the population std. KL is
    the standard ``sum G log(G / P)``, not custom_loss.py's variant with ``- sum min(G, P)``.
    """
    eps = 1e-7
    w_kl, w_cc, w_nss, w_sim = weights
    flat = pred.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    p = (flat - lo) / (hi - lo)
    g = density.flatten(1)
    p_sum = (p / p.sum(1, keepdim=True)).clamp(eps, 1 - eps)
    g_sum = (g / g.sum(1, keepdim=True)).clamp(eps, 1 - eps)
    kl = (g_sum * torch.log(g_sum / p_sum)).sum(1)
    pc, gc = p - p.mean(1, keepdim=True), g - g.mean(1, keepdim=True)
    cc = (pc * gc).sum(1) / torch.sqrt((pc ** 2).sum(1) * (gc ** 2).sum(1))
    sim = torch.minimum(p_sum, g_sum).sum(1)
    fix = fixations.flatten(1)
    z = (p - p.mean(1, keepdim=True)) / p.std(1, correction=0, keepdim=True)
    nss = (z * fix).sum(1) / fix.sum(1)
    return (w_kl * kl - w_cc * cc - w_nss * nss - w_sim * sim).mean()


# ---------------------------------------------------------------------------------- prediction


def _interp_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """``n_out x n_in`` matrix of 1-D linear interpolation with half-pixel centres."""
    eye = torch.eye(n_in, dtype=torch.float64)[None]
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].T.contiguous()


_INTERP: dict[tuple[int, int], torch.Tensor] = {}


def upsample(maps: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``N x 1 x h x w`` -> ``N x H x W``, bilinear with half-pixel centres as
    ``F.interpolate(..., align_corners=False)`` (equal to float rounding), computed as the
    separable product ``A_h S A_w^T``: its backward is two matmuls, where interpolate's
    backward scatters (measured ~50x slower on CPU at 14 x 14 -> 600 x 800)."""
    (h, w), (big_h, big_w) = maps.shape[-2:], (int(shape[0]), int(shape[1]))
    a_h, a_w = (_interp(n_in, n_out, maps.device).to(maps.dtype) for n_in, n_out in ((h, big_h), (w, big_w)))
    return a_h @ maps[:, 0] @ a_w.T


def nss_loss_upsampled(maps: torch.Tensor, fix_proj: torch.Tensor, n_fix: torch.Tensor,
                       shape: Sequence[int]) -> torch.Tensor:
    """:func:`dissect.heads.nss_loss` of ``upsample(maps, shape)`` without building the big maps.

    With ``U = A_h S A_w^T`` (:func:`upsample`), NSS needs only ``mean(U)`` ``= a_h^T S a_w / HW``,
    ``mean(U^2) = tr(S^T G_h S G_w) / HW`` (``G = A^T A``) and the sum of ``U`` over the fixated
    pixels ``= <S, A_h^T Fix A_w>``: ``h x w``-sized algebra in float64 (no cancellation
    trouble), so setup I costs the 1x1 conv. A (numerically) constant map gives NaN, as
    ``nss_loss``.

    Args:
        maps: read-out maps ``N x 1 x h x w``.
        fix_proj: ``N x h x w`` projections ``A_h^T Fix A_w`` of the binary fixation maps.
        n_fix: ``N`` numbers of fixated pixels.
        shape: ``(H, W)`` of the fixation maps.
    """
    (h, w), (big_h, big_w) = maps.shape[-2:], (int(shape[0]), int(shape[1]))
    a_h, a_w = (_interp(n_in, n_out, maps.device) for n_in, n_out in ((h, big_h), (w, big_w)))
    s = maps[:, 0].double()
    area = big_h * big_w
    mean = torch.einsum("i,nij,j->n", a_h.sum(0), s, a_w.sum(0)) / area
    second = (s * (a_h.T @ a_h @ s @ (a_w.T @ a_w))).sum((1, 2)) / area
    var = second - mean ** 2
    var = torch.where(var > 1e-12 * second.abs(), var, torch.full_like(var, float("nan")))
    nss = ((s * fix_proj).sum((1, 2)) / n_fix - mean) / var.sqrt()
    return -nss.mean().float()


def _interp(n_in: int, n_out: int, device) -> torch.Tensor:
    if (n_in, n_out) not in _INTERP:
        _INTERP[(n_in, n_out)] = _interp_matrix(n_in, n_out)
    return _INTERP[(n_in, n_out)].to(device)


def _fixation_projection(split: "_Split", i: int, h: int, w: int) -> torch.Tensor:
    """``A_h^T Fix A_w`` (``h x w``, float64) of image ``i``'s binary fixation map, cached."""
    key = (i, h, w)
    if key not in split.projections:
        big_h, big_w = split.shapes[i]
        ys, xs = np.divmod(split.fixations[i], big_w)
        a_h, a_w = _interp(h, big_h, "cpu"), _interp(w, big_w, "cpu")
        split.projections[key] = a_h[torch.from_numpy(ys)].T @ a_w[torch.from_numpy(xs)]
    return split.projections[key]


def _predict(top: Callable[[torch.Tensor], torch.Tensor], feats: torch.Tensor,
             shapes: Sequence[tuple[int, int]]) -> list[tuple[list[int], torch.Tensor]]:
    """``top(feats)`` upsampled to the images' own sizes: ``[(rows, N_rows x H x W)]`` per size."""
    return _group(top(feats), shapes)


def _group(maps: torch.Tensor, shapes: Sequence[tuple[int, int]]) -> list[tuple[list[int], torch.Tensor]]:
    """Read-out maps ``N x 1 x h x w`` upsampled per image size: ``[(rows, N_rows x H x W)]``."""
    groups = []
    for shape in dict.fromkeys(shapes):
        rows = [i for i, s in enumerate(shapes) if s == shape]
        groups.append((rows, upsample(maps[rows], shape)))
    return groups


def _ungroup(groups: list[tuple[list[int], torch.Tensor]]) -> list[torch.Tensor]:
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
            maps = _ungroup(_predict(lambda f: _readout(model, f), x, [s.shape for s in chunk]))
            out += [m.float().cpu().numpy() for m in maps]
    return out


def _readout(model: nn.Module, x: torch.Tensor, start: int = 0) -> torch.Tensor:
    """``N x 1 x h x w`` read-out of the encoder chain from stage ``start`` on."""
    return model.readout(_run(_stages(model)[start:], x))


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


# ---------------------------------------------------------------------------------- evaluation


def _val_scores(maps: Sequence[np.ndarray], split: _Split, sigma: float) -> dict[str, float]:
    """Mean of :data:`VAL_METRICS` over the validation images (maps min-maxed: KL needs >= 0)."""
    from datasets.fixations import density_map
    from probes.gaze import gaze_scores

    import warnings

    rows = []
    for m, i in zip(maps, range(len(split.ids))):
        fix = np.zeros(split.shapes[i], dtype=bool)
        fix.flat[split.fixations[i]] = True
        m = m.astype(np.float64)
        span = m.max() - m.min()
        m = (m - m.min()) / span if span > 0 else m
        scores = gaze_scores(m, fix, density_map(fix, sigma))
        rows.append([scores[k] for k in VAL_METRICS])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column (a constant model): NaN
        return dict(zip(VAL_METRICS, np.nanmean(np.asarray(rows, dtype=np.float64), axis=0).tolist()))


def _floor_scores(split: _Split, sigma: float) -> dict[str, float]:
    from datasets.fixations import center_bias_map

    return _val_scores([center_bias_map(s) for s in split.shapes], split, sigma)


# ---------------------------------------------------------------------------------- the trainer


def _fingerprint(cfg: TrainConfig, dataset_info: dict, train: _Split, val: _Split) -> dict:
    settings = {k: v for k, v in asdict(cfg).items() if k not in _RESUMABLE}
    settings["loss_weights"] = list(settings["loss_weights"])
    return {"settings": settings, "dataset": dataset_info, "train_ids": train.ids, "val_ids": val.ids}


def _save(model: nn.Module, path: Path, extra: dict, training: dict | None = None) -> None:
    """A :func:`save_checkpoint` file (plus the training state), written atomically."""
    tmp = path.with_name(path.name + ".tmp")
    save_checkpoint(model, tmp, payload={_STATE_KEY: training} if training is not None else None, **extra)
    os.replace(tmp, path)


def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes a copy of ``src`` (a hard link where the file system allows), atomically."""
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _curves(log: pd.DataFrame, val: pd.DataFrame, path: Path, metric: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    try:
        if len(log):
            a.plot(log["step"], log["loss"], lw=0.8)
        a.set_xlabel("step")
        a.set_ylabel("training loss")
        if len(val):
            b.plot(val["step"], val[metric], marker="o", label="model")
            if f"floor_{metric}" in val:
                b.axhline(val[f"floor_{metric}"].iloc[0], color="grey", ls="--", label="centre-bias floor")
            b.legend(loc="best")
        b.set_xlabel("step")
        b.set_ylabel(f"validation {metric}")
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        tmp = path.with_name(path.stem + ".tmp.png")
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)


def _existing_run(out: Path) -> bool:
    return (out / "run.json").exists() or (out / "last.pt").exists()


def prepare_run_folder(out_dir: str | os.PathLike, resume: bool, overwrite: bool) -> Path:
    """The run folder, refusing to mix runs: an existing run needs ``resume`` or ``overwrite``."""
    out = check_writable(out_dir)
    if _existing_run(out) and not (resume or overwrite):
        raise TrainingError(f"{out} already holds a training run: pass --resume to continue it, --overwrite to "
                            "discard it, or choose another --out")
    if resume and _existing_run(out) and not (out / "last.pt").exists():
        raise TrainingError(f"{out} has no last.pt to resume from: use --overwrite to start again")
    if overwrite and not resume:
        for name in ("last.pt", "best.pt", "run.json", "train_log.csv", "val.csv", "curves.png"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        shutil.rmtree(out / "cache", ignore_errors=True)
    return out


def setup_model(model: nn.Module, cfg: TrainConfig, device) -> tuple[int, list[str], list[nn.Parameter], int]:
    """Freeze ``model`` for ``cfg.finetune``: ``(K, trainable unit names, parameters, cut)``."""
    k = parse_finetune(cfg.finetune, model)
    units = freeze_units(model, k)
    model.to(device)
    return k, units, [p for p in model.parameters() if p.requires_grad], split_point(model, k)


def fit(out: Path, cfg: TrainConfig, model: nn.Module, k: int, cut: int, train: "_Split", val: "_Split", *,
        metric: str, top: Callable, loss_of: Callable, evaluate: Callable, fingerprint: dict, run_info: dict,
        resume: bool, on_step: Callable[[int], None] | None = None) -> tuple[dict[str, Path], list[dict]]:
    """The training loop shared by the saliency and scene trainers.

    ``top(feats)`` runs the trainable part on the frozen prefix's output, ``loss_of(output,
    index)`` gives the batch loss, ``evaluate(features) -> dict`` scores the validation split
    (``features(index)`` gives its prefix outputs) and must hold ``metric`` (higher = better:
    ``best.pt``). Writes checkpoints, ``train_log.csv``, ``val.csv``, ``run.json``, ``curves.png``.
    """
    device = torch.device(cfg.device)
    params = [p for p in model.parameters() if p.requires_grad]
    stages = _stages(model)
    init_info = dict(model.dissect_info)
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.decay_every, gamma=cfg.lr_decay)
    step, best_score, seconds = 0, -math.inf, 0.0
    log_rows: list[dict] = []
    val_rows: list[dict] = []
    paths = {"best": out / "best.pt", "last": out / "last.pt", "train_log": out / "train_log.csv",
             "val": out / "val.csv", "run": out / "run.json", "curves": out / "curves.png"}
    if resume and paths["last"].exists():
        state = torch.load(paths["last"], map_location="cpu", weights_only=True)
        saved = state.get(_STATE_KEY)
        if saved is None:
            raise TrainingError(f"{paths['last']} holds no training state: it was not written by cli.py train")
        if saved["fingerprint"] != fingerprint:
            diff = _first_difference(saved["fingerprint"], fingerprint)
            raise TrainingError(f"{out} holds another run ({diff}): use the same settings to resume, or another --out")
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        torch.set_rng_state(saved["torch_rng"])
        step, best_score, seconds = int(saved["step"]), float(saved["best"]), float(saved["seconds"])
        if paths["train_log"].exists():
            log_rows = [r for r in pd.read_csv(paths["train_log"]).to_dict("records") if r["step"] <= step]
        if paths["val"].exists():
            val_rows = [r for r in pd.read_csv(paths["val"]).to_dict("records") if r["step"] <= step]

    model_cols = {"model": init_info.get("arch"), "weights": init_info.get("weights_detail"), "finetune": k}
    run_info = {**run_info, "config": asdict(cfg), "finetune_k": k, "initial_weights": init_info,
                "trainable_parameters": [n for n, p in model.named_parameters() if p.requires_grad],
                "n_trainable": int(sum(p.numel() for p in params)), "n_train": len(train.ids),
                "n_val": len(val.ids), "train_ids": train.ids, "val_ids": val.ids,
                "versions": environment_versions(), "notes": _notes(init_info)}

    # The frozen prefix, cached or recomputed every step.
    use_cache = cfg.cache != "off" and step < cfg.steps  # a finished run being reopened needs no cache
    caches: dict[str, FeatureCache] = {}
    t_cache = time.perf_counter()
    if use_cache:
        model.eval()
        for name, split in (("train", train), ("val", val)):
            caches[name] = FeatureCache(stages[:cut], split.images, dtype=cfg.cache_dtype,
                                        where="auto" if cfg.cache == "auto" else cfg.cache,
                                        memory_mb=cfg.cache_memory_mb, path=out / "cache" / f"{name}.npy",
                                        device=device, progress=cfg.progress)
    run_info["cache"] = {"enabled": use_cache, "dtype": cfg.cache_dtype if use_cache else None,
                         "on_disk": any(c.on_disk for c in caches.values()),
                         "bytes": int(sum(c.nbytes for c in caches.values())),
                         "seconds": round(time.perf_counter() - t_cache, 3)}
    atomic_write_json(paths["run"], run_info)

    def features(split_name: str, split: _Split, index: np.ndarray) -> torch.Tensor:
        if use_cache:
            return caches[split_name].get(index, device)
        with torch.no_grad():
            return _run(stages[:cut], preprocess(list(split.images[index]), None).to(device))

    def validate(at: int) -> dict:
        model.eval()
        with torch.inference_mode():
            return {"step": at, **model_cols, **evaluate(lambda index: features("val", val, index))}

    def write_tables(final: bool = False) -> None:
        log = pd.DataFrame(log_rows, columns=["step", "loss", "lr", "seconds", "model", "weights", "finetune"])
        vals = pd.DataFrame(val_rows)
        _atomic_to_csv(log, paths["train_log"])
        _atomic_to_csv(vals, paths["val"])
        if final:
            _curves(log, vals, paths["curves"], metric,
                    f"{init_info.get('arch')} K={k} ({init_info.get('weights_detail')})")

    def checkpoint(at: int, row: dict) -> None:
        nonlocal best_score
        # One file per evaluation: last.pt (with the training state); the step checkpoint and
        # best.pt are hard links to it (copies where links fail), so the weights are written once.
        extra = {"step": at, "finetune": k, f"val_{metric}": row[metric], "run": str(out)}
        improved = row[metric] > best_score  # False for NaN
        if improved:
            best_score = row[metric]
        training = {"fingerprint": fingerprint, "step": at, "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(), "torch_rng": torch.get_rng_state(),
                    "best": best_score, "seconds": seconds}
        _save(model, paths["last"], extra, training)
        (out / "checkpoints").mkdir(exist_ok=True)
        if at > 0:
            _link_or_copy(paths["last"], out / "checkpoints" / f"step-{at:06d}.pt")
        if improved:
            _link_or_copy(paths["last"], paths["best"])
        write_tables()

    if step == 0 and not val_rows:
        val_rows.append(validate(0))
        checkpoint(0, val_rows[-1])
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train K={k}", unit="step", disable=not cfg.progress,
               dynamic_ncols=True)
    running = None
    try:
        while step < cfg.steps:
            t0 = time.perf_counter()
            step += 1
            index = _batch_indices(cfg.seed, step, len(train.ids), cfg.batch_size)
            _train_mode(model)
            lr = optimizer.param_groups[0]["lr"]
            loss = loss_of(top(features("train", train, index)), index)
            if not torch.isfinite(loss):
                last = val_rows[-1]["step"] if val_rows else 0
                raise TrainingError(f"the training loss is {float(loss.detach())} at step {step} (constant predictions? a "
                                    f"too large --lr?); stopped, the last good checkpoint is {paths['last']} "
                                    f"(step {last})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            seconds += time.perf_counter() - t0
            value = float(loss.detach())
            log_rows.append({"step": step, "loss": value, "lr": lr, "seconds": round(seconds, 4), **model_cols})
            running = value if running is None else 0.9 * running + 0.1 * value
            bar.update(1)
            bar.set_postfix(loss=f"{running:.3f}")
            if step % cfg.eval_every == 0 or step == cfg.steps:
                val_rows.append(validate(step))
                bar.set_postfix(loss=f"{running:.3f}", **{f"val_{metric}": f"{val_rows[-1][metric]:.3f}"})
                checkpoint(step, val_rows[-1])
            if on_step is not None:
                on_step(step)
    finally:
        bar.close()
        caches.clear()  # a disk cache is rebuilt on resume: never left behind
        shutil.rmtree(out / "cache", ignore_errors=True)
    write_tables(final=True)
    model.cpu().eval()
    best = max((r for r in val_rows if np.isfinite(r[metric])), key=lambda r: r[metric], default=None)
    atomic_write_json(paths["run"], {**run_info, "finished_step": step,
                                     "best_step": best["step"] if best else None,
                                     f"best_val_{metric}": best[metric] if best else None})
    return paths, val_rows


def train_saliency(train_set, val_set, out_dir: str | os.PathLike, cfg: TrainConfig, *,
                   resume: bool = False, overwrite: bool = False, dataset_info: dict | None = None,
                   on_step: Callable[[int], None] | None = None) -> dict[str, Path]:
    """Train a saliency model; see the module docstring for what is written.

    Args:
        train_set, val_set: datasets with fixations (e.g. from :func:`split_dataset`).
        out_dir: the run folder.
        cfg: the settings.
        resume: continue the run in ``out_dir`` from ``last.pt`` (same settings; ``steps`` may grow).
        overwrite: discard a run already in ``out_dir``.
        dataset_info: how the data was opened (name, root, options), recorded and checked on resume.
        on_step: called after every finished step with its number (tests use it to stop a run).

    Returns:
        ``{"best", "last", "train_log", "val", "run", "curves"}`` paths.

    Raises:
        ValueError: bad settings or data; :class:`TrainingError` for a non-finite loss or a
            folder holding another run.
    """
    cfg.check()
    out = prepare_run_folder(out_dir, resume, overwrite)
    device = torch.device(cfg.device)
    dataset_info = dict(dataset_info or {"name": getattr(train_set, "name", "")})
    model = build_saliency_model(cfg)
    k, units, _, cut = setup_model(model, cfg, device)
    train = _read_split(train_set, cfg.image_size, "train", cfg.progress)
    val = _read_split(val_set, cfg.image_size, "val", cfg.progress)
    if len(train.ids) < cfg.batch_size:
        raise ValueError(f"the training split has {len(train.ids)} images, fewer than --batch-size "
                         f"{cfg.batch_size}: lower --batch-size")
    floor = _floor_scores(val, cfg.sigma)

    def top(feats: torch.Tensor) -> torch.Tensor:
        return _readout(model, feats, cut)

    def loss_of(maps: torch.Tensor, index: np.ndarray) -> torch.Tensor:
        shapes = [train.shapes[i] for i in index]
        if cfg.loss == "nss":
            return _nss_batch_loss(maps, train, index, shapes, device)
        return _batch_loss(cfg, _group(maps, shapes), train, index, device)

    def evaluate(features) -> dict:
        maps = []
        for start in range(0, len(val.ids), cfg.batch_size):
            index = np.arange(start, min(start + cfg.batch_size, len(val.ids)))
            groups = _predict(top, features(index), [val.shapes[i] for i in index])
            maps += [m.cpu().numpy() for m in _ungroup(groups)]
        return {**_val_scores(maps, val, cfg.sigma), **{f"floor_{m}": v for m, v in floor.items()}}

    paths, _ = fit(out, cfg, model, k, cut, train, val, metric="nss", top=top, loss_of=loss_of, evaluate=evaluate,
                   fingerprint=_fingerprint(cfg, dataset_info, train, val),
                   run_info={"command": "train saliency", "trainable_units": units, "dataset": dataset_info,
                             "floor": floor},
                   resume=resume, on_step=on_step)
    return paths


def _nss_batch_loss(maps: torch.Tensor, split: _Split, index: np.ndarray, shapes, device) -> torch.Tensor:
    """-NSS of the batch (:func:`nss_loss_upsampled` per size group, weighted by count)."""
    h, w = maps.shape[-2:]
    total = 0.0
    for shape in dict.fromkeys(shapes):
        rows = [i for i, s in enumerate(shapes) if s == shape]
        proj = torch.stack([_fixation_projection(split, int(index[r]), h, w) for r in rows]).to(device)
        n_fix = torch.tensor([len(split.fixations[index[r]]) for r in rows], dtype=torch.float64, device=device)
        total = total + nss_loss_upsampled(maps[rows], proj, n_fix, shape) * (len(rows) / len(shapes))
    return total


def _batch_loss(cfg: TrainConfig, groups: list[tuple[list[int], torch.Tensor]], split: _Split,
                index: np.ndarray, device) -> torch.Tensor:
    """The batch's STRA-Net loss (``cfg.loss == "nss"`` goes to :func:`_nss_batch_loss`); images of
    different sizes are scored per size group, weighted by count."""
    total, n = 0.0, sum(len(rows) for rows, _ in groups)
    for rows, pred in groups:
        fix = _fixation_batch(split, index[rows], device)
        part = stra_loss(pred, fix, _density_batch(split, index[rows], cfg.sigma, device), cfg.loss_weights)
        total = total + part * (len(rows) / n)
    return total


def _first_difference(saved: dict, now: dict) -> str:
    for key in now:
        if saved.get(key) != now.get(key):
            if isinstance(now[key], dict) and isinstance(saved.get(key), dict):
                for sub in now[key]:
                    if saved[key].get(sub) != now[key][sub]:
                        return f"{sub}: {saved[key].get(sub)!r} there, {now[key][sub]!r} now"
            if isinstance(now[key], list) and isinstance(saved.get(key), list):
                return f"{key}: {len(saved[key])} ids there, {len(now[key])} now, or other ids"
            return f"{key} differs"
    return "settings differ"


def _notes(info: dict) -> list[str]:
    if str(info.get("weights", "")).startswith("random"):
        return ["RANDOM encoder weights (no ImageNet pretraining): not He et al.'s models; numbers "
                "from this run are not comparable with the paper's"]
    return []
