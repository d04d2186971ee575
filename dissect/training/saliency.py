"""He et al.'s saliency trainer (:func:`train_saliency`, described in :mod:`dissect.training`): the
model of a :class:`TrainConfig`, its losses and validation scores, run through :func:`fit`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from dissect.models.zoo import load_model
from dissect.training.config import TrainConfig
from dissect.training.data import Split, read_split
from dissect.training.losses import batch_loss, nss_batch_loss
from dissect.training.loop import fit, prepare_run_folder, run_fingerprint, setup_model
from dissect.training.prediction import group, predict, readout, ungroup

__all__ = ["VAL_METRICS", "build_saliency_model", "train_saliency"]


VAL_METRICS = ("nss", "cc", "kl", "sim", "auc_judd")


def build_saliency_model(cfg: TrainConfig) -> nn.Module:
    """The untrained model of ``cfg``; with random encoder weights exactly
    ``load_model("saliency_vgg16", weights="random", seed=cfg.seed)``."""
    from dissect.models import heads

    if cfg.backbone == "resnet50":
        return heads.SaliencyResNet(cfg.encoder_weights, readout_layer=cfg.readout_layer or "layer4",
                                    seed=cfg.seed)
    if cfg.encoder_weights in ("auto", "imagenet", "random"):
        return load_model("saliency_vgg16", weights=cfg.encoder_weights, seed=cfg.seed)
    return heads.SaliencyVGG(encoder_weights=cfg.encoder_weights, seed=cfg.seed)


def train_saliency(train_set, val_set, out_dir: str | os.PathLike, cfg: TrainConfig, *,
                   resume: bool = False, overwrite: bool = False, dataset_info: dict | None = None,
                   on_step: Callable[[int], None] | None = None) -> dict[str, Path]:
    """Train a saliency model; see :mod:`dissect.training` for what is written.

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
    train = read_split(train_set, cfg.image_size, "train", cfg.progress)
    val = read_split(val_set, cfg.image_size, "val", cfg.progress)
    if len(train.ids) < cfg.batch_size:
        raise ValueError(f"the training split has {len(train.ids)} images, fewer than --batch-size "
                         f"{cfg.batch_size}: lower --batch-size")
    floor = _floor_scores(val, cfg.sigma)

    def top(feats: torch.Tensor) -> torch.Tensor:
        return readout(model, feats, cut)

    def loss_of(maps: torch.Tensor, index: np.ndarray) -> torch.Tensor:
        shapes = [train.shapes[i] for i in index]
        if cfg.loss == "nss":
            return nss_batch_loss(maps, train, index, shapes, device)
        return batch_loss(cfg, group(maps, shapes), train, index, device)

    def evaluate(features) -> dict:
        maps = []
        for start in range(0, len(val.ids), cfg.batch_size):
            index = np.arange(start, min(start + cfg.batch_size, len(val.ids)))
            groups = predict(top, features(index), [val.shapes[i] for i in index])
            maps += [m.cpu().numpy() for m in ungroup(groups)]
        return {**_val_scores(maps, val, cfg.sigma), **{f"floor_{m}": v for m, v in floor.items()}}

    paths, _ = fit(out, cfg, model, k, cut, train, val, metric="nss", top=top, loss_of=loss_of, evaluate=evaluate,
                   fingerprint=run_fingerprint(cfg, dataset_info, train, val),
                   run_info={"command": "train saliency", "trainable_units": units, "dataset": dataset_info,
                             "floor": floor},
                   resume=resume, on_step=on_step)
    return paths


def _val_scores(maps: Sequence[np.ndarray], split: Split, sigma: float) -> dict[str, float]:
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


def _floor_scores(split: Split, sigma: float) -> dict[str, float]:
    from datasets.fixations import center_bias_map

    return _val_scores([center_bias_map(s) for s in split.shapes], split, sigma)
