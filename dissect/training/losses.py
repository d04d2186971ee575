"""Training losses: STRA-Net's, and -NSS of the read-out upsampled to each image, in closed form
(:func:`nss_loss_upsampled`, on the fixation maps' projections); a batch's loss per size group."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dissect.training.config import TrainConfig
from dissect.training.data import Split, density_batch, fixation_batch

__all__ = ["stra_loss", "upsample", "nss_loss_upsampled", "nss_batch_loss", "batch_loss"]


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
    """:func:`dissect.models.heads.nss_loss` of ``upsample(maps, shape)`` without building the big maps.

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


def _fixation_projection(split: "Split", i: int, h: int, w: int) -> torch.Tensor:
    """``A_h^T Fix A_w`` (``h x w``, float64) of image ``i``'s binary fixation map, cached."""
    key = (i, h, w)
    if key not in split.projections:
        big_h, big_w = split.shapes[i]
        ys, xs = np.divmod(split.fixations[i], big_w)
        a_h, a_w = _interp(h, big_h, "cpu"), _interp(w, big_w, "cpu")
        split.projections[key] = a_h[torch.from_numpy(ys)].T @ a_w[torch.from_numpy(xs)]
    return split.projections[key]


def nss_batch_loss(maps: torch.Tensor, split: Split, index: np.ndarray, shapes, device) -> torch.Tensor:
    """-NSS of the batch (:func:`nss_loss_upsampled` per size group, weighted by count)."""
    h, w = maps.shape[-2:]
    total = 0.0
    for shape in dict.fromkeys(shapes):
        rows = [i for i, s in enumerate(shapes) if s == shape]
        proj = torch.stack([_fixation_projection(split, int(index[r]), h, w) for r in rows]).to(device)
        n_fix = torch.tensor([len(split.fixations[index[r]]) for r in rows], dtype=torch.float64, device=device)
        total = total + nss_loss_upsampled(maps[rows], proj, n_fix, shape) * (len(rows) / len(shapes))
    return total


def batch_loss(cfg: TrainConfig, groups: list[tuple[list[int], torch.Tensor]], split: Split,
               index: np.ndarray, device) -> torch.Tensor:
    """The batch's STRA-Net loss (``cfg.loss == "nss"`` goes to :func:`nss_batch_loss`); images of
    different sizes are scored per size group, weighted by count."""
    total, n = 0.0, sum(len(rows) for rows, _ in groups)
    for rows, pred in groups:
        fix = fixation_batch(split, index[rows], device)
        part = stra_loss(pred, fix, density_batch(split, index[rows], cfg.sigma, device), cfg.loss_weights)
        total = total + part * (len(rows) / n)
    return total
