"""FGSM robustness: how often a one-step perturbation changes a model's top-1 label (Lai et al. 2020, eq. 11).

A study of :mod:`dissect.runner`: each batch of images (resized like
:func:`dissect.models.inputs.preprocess`, kept in [0, 1]) is attacked once per epsilon with
:func:`dissect.attribution.fgsm.fgsm_perturb` and the changed labels are counted, so it resumes,
shards and merges like every study.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from torch import nn

from dissect.attribution.fgsm import Normalized, attack_state, check_epsilon, fgsm_perturb, logits_of
from dissect.checks import check_count
from dissect.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from dissect.models.inputs import preprocess
from dissect import models  # load_model looked up at call time
from dissect.reports.tables import model_columns
from dissect.runner import RecordState, Study, register, run_pass
from dissect.studies.identity import run_identity

__all__ = ["RobustnessStudy", "fooling_rate", "fooling_rates", "robustness_table"]


@register
class RobustnessStudy(Study):
    """The FGSM fooling rate of ``model`` at each of ``epsilons`` (see :func:`fooling_rate`)."""

    kind, desc = "robustness", "FGSM"

    def __init__(self, model: nn.Module, dataset, epsilons: Sequence[float], *, image_size: int | None = 224,
                 batch_size: int = 8) -> None:
        self.epsilons = [check_epsilon(eps) for eps in epsilons]
        self.batch_size = check_count("batch_size", batch_size)
        self.n_items = len(dataset)
        if self.n_items == 0:
            raise ValueError(f"dataset {getattr(dataset, 'name', '')!r} has no images: check the data root")
        self.model, self.dataset, self.image_size = model, dataset, image_size
        if len(self.epsilons) == 1:
            self.desc = f"FGSM eps={self.epsilons[0]:.4g}"

    def fingerprint(self) -> dict:
        return {**run_identity(self.model, self.dataset, self.image_size), "epsilons": self.epsilons}

    def info(self) -> dict:
        return {"epsilons": self.epsilons, "image_size": self.image_size, "batch_size": self.batch_size}

    def load(self, items: range, first: bool = False):
        samples = [self.dataset[i] for i in items]
        # mean 0, std 1: the same resize as preprocess, pixels left in [0, 1].
        return preprocess([s.image for s in samples], self.image_size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    def forward(self, pixels: torch.Tensor) -> list[int]:
        changed = []
        for eps in self.epsilons:
            adv, labels = fgsm_perturb(self.model, pixels, eps)
            with attack_state(self.model), torch.no_grad():
                after = logits_of(Normalized(self.model, IMAGENET_MEAN, IMAGENET_STD), adv).argmax(dim=1)
            changed.append(int((after != labels).sum()))
        return changed

    def score(self, state: RecordState, pixels: torch.Tensor, changed: list[int]) -> None:
        state.add_counts({"n_images": len(pixels), "n_changed": {str(k): n for k, n in enumerate(changed)}})

    @classmethod
    def finish(cls, state: RecordState, info: dict) -> list[dict]:
        n = state.counts.get("n_images", 0)
        changed = state.counts.get("n_changed", {})
        return [{"epsilon": eps, "n_images": n, "n_changed": changed.get(str(k), 0),
                 "fooling_rate": changed.get(str(k), 0) / n if n else float("nan")}
                for k, eps in enumerate(info["epsilons"])]


def fooling_rate(model: nn.Module, dataset, epsilon: float, *, image_size: int | None = 224, batch_size: int = 8,
                 progress: bool = True) -> dict:
    """FGSM fooling rate: the fraction of images whose top-1 prediction changes [Lai et al. 2020, eq. 11].

    Each image is resized like :func:`dissect.models.inputs.preprocess` and kept in [0, 1]; the
    model's own top-1 prediction is the label of an untargeted FGSM step of size ``epsilon``
    (:func:`dissect.attribution.fgsm_perturb`: the ImageNet normalisation runs inside a wrapper,
    the result is clamped to [0, 1]); ``fooling_rate = n_changed / n_images``. The model runs in
    eval mode on its own device, with frozen parameters; its modes and ``requires_grad`` flags
    are restored.

    Args:
        model: ImageNet-normalised classifier with ``N x K`` logits.
        dataset: indexable dataset of :class:`datasets.base.Sample` (no fixations needed).
        epsilon: perturbation size in pixel units, in [0, 1] (e.g. 8/255).
        image_size: side of the square network input (``None``: keep the images' size).
        batch_size: images per attack step.
        progress: show a tqdm progress bar.

    Returns:
        ``{"epsilon", "n_images", "n_changed", "fooling_rate"}``.

    Raises:
        ValueError: ``epsilon`` outside [0, 1], an empty dataset, ``batch_size < 1``, a model
            without ``N x K`` outputs.
    """
    return fooling_rates(model, dataset, [epsilon], image_size=image_size, batch_size=batch_size,
                         progress=progress)[0]


def fooling_rates(model: nn.Module, dataset, epsilons: Sequence[float], *, image_size: int | None = 224,
                  batch_size: int = 8, progress: bool = True, checkpoint_dir: str | Path | None = None,
                  resume: bool = False) -> list[dict]:
    """:func:`fooling_rate` at each of ``epsilons``, in one pass over the images (one row per epsilon)."""
    study = RobustnessStudy(model, dataset, epsilons, image_size=image_size, batch_size=batch_size)
    done = run_pass(study, checkpoint_dir=checkpoint_dir, resume=resume, progress=progress)
    return RobustnessStudy.finish(done.state, done.info)



def robustness_table(names: Sequence[str], dataset, epsilons: Sequence[float], *, weights: str = "auto", seed: int = 0,
                     device: str = "cpu", image_size: int | None = 224, batch_size: int = 8,
                     progress: bool = True) -> tuple[pd.DataFrame, list[dict]]:
    """``robustness.csv`` (one row per model and epsilon, labelled with the model columns) and each
    model's ``dissect_info``; the models of :func:`dissect.models.load_model` are loaded one at a time."""
    rows, infos = [], []
    for name in names:
        model = models.load_model(name, weights=weights, seed=seed).to(device)
        infos.append(getattr(model, "dissect_info", {}))
        rows += [{**model_columns(infos[-1]), **row} for row in fooling_rates(
            model, dataset, epsilons, image_size=image_size, batch_size=batch_size, progress=progress)]
    return pd.DataFrame(rows), infos
