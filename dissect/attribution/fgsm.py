"""FGSM: one untargeted fast-gradient-sign step on [0, 1] pixels (Goodfellow et al. 2015), with captum.

The attack of Lai et al. 2020's robustness test (:func:`dissect.studies.robustness.fooling_rate`).
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from dissect.models.backbones import IMAGENET_MEAN, IMAGENET_STD, model_device

__all__ = ["fgsm_perturb", "Normalized", "attack_state", "check_epsilon", "logits_of"]


class Normalized(nn.Module):
    """``model((x - mean) / std)``: lets the attack work on [0, 1] pixels."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        device = model_device(model)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


@contextlib.contextmanager
def attack_state(model: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm statistics and dropout must not depend on the batch) and frozen
    parameters (only the input needs a gradient); every flag restored afterwards, also on error."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in grads:
            p.requires_grad_(False)
        yield
    finally:
        for m, training in modes:
            m.train(training)
        for p, flag in grads:
            p.requires_grad_(flag)


def check_epsilon(epsilon: float) -> float:
    try:
        eps = float(epsilon)
    except (TypeError, ValueError):
        raise ValueError(f"epsilon must be a number in [0, 1] (pixel units), got {epsilon!r}") from None
    if not (0.0 <= eps <= 1.0):
        raise ValueError(
            f"epsilon must be in [0, 1] (pixel units: images in [0, 1] before normalisation, "
            f"e.g. 8/255 = {8 / 255:.4f}), got {epsilon!r}"
        )
    return eps


def logits_of(wrapped: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    out = wrapped(pixels)
    if out.ndim != 2:
        raise ValueError(
            f"FGSM needs a classifier with N x K logits, the model returned shape {tuple(out.shape)}"
        )
    return out


def _loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # Per-image loss ("none"): captum differentiates each element, so each image's gradient is its
    # own; a mean would shrink gradients by 1/N, under captum's 1e-6 zero threshold.
    return F.cross_entropy(logits, labels, reduction="none")


def _one_step(wrapped: nn.Module, pixels: torch.Tensor, epsilon: float, labels: torch.Tensor) -> torch.Tensor:
    from captum.robust import FGSM

    attack = FGSM(wrapped, loss_func=_loss, lower_bound=0.0, upper_bound=1.0)
    # An input that already requires grad spares captum's "did not require gradients" warning.
    x = pixels.detach().clone().requires_grad_(True)
    return attack.perturb(x, epsilon=epsilon, target=labels).detach()


def fgsm_perturb(
    model: nn.Module,
    pixels: torch.Tensor,
    epsilon: float,
    labels: torch.Tensor | Sequence[int] | None = None,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One untargeted FGSM step on [0, 1] pixels (Goodfellow et al. 2015), with captum's ``FGSM``.

    ``x' = clamp(x + epsilon * sign(d CE(model(norm(x)), y) / dx), 0, 1)`` where ``norm`` is the
    ImageNet normalisation applied *inside* a wrapper module, so ``epsilon`` is in pixel units
    whatever the normalisation. The loss is the per-image cross entropy of the logits. captum
    leaves an input element unchanged where ``|gradient| <= 1e-6`` (its ``zero_thresh``).

    Args:
        model: classifier taking normalised ``N x 3 x S x S`` images, returning ``N x K`` logits.
        pixels: ``N x 3 x S x S`` images in [0, 1] (not normalised).
        epsilon: step size in [0, 1].
        labels: labels to move away from; default the model's own top-1 predictions.
        mean, std: the normalisation the model expects.

    Returns:
        ``(perturbed pixels, labels)`` on the model's device.

    Raises:
        ValueError: ``epsilon`` outside [0, 1], pixels outside [0, 1] or not ``N x 3 x S x S``,
            a model without ``N x K`` outputs.
    """
    eps = check_epsilon(epsilon)
    if pixels.ndim != 4:
        raise ValueError(f"pixels must be N x C x H x W, got shape {tuple(pixels.shape)}")
    if pixels.numel() and (pixels.min() < 0 or pixels.max() > 1):
        raise ValueError("pixels must lie in [0, 1] (unnormalised images); the normalisation happens inside")
    device = model_device(model)
    pixels = pixels.detach().to(device, torch.float32)
    with attack_state(model):
        wrapped = Normalized(model, mean, std)
        if labels is None:
            with torch.no_grad():
                labels = logits_of(wrapped, pixels).argmax(dim=1)
        else:
            labels = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1)
        adv = _one_step(wrapped, pixels, eps, labels)
    return adv, labels
