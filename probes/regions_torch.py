"""Device-resident region scoring: the closed form of :mod:`probes.regions` in torch.

:class:`probes.regions.RegionScorer` builds, once per image and map size, the kernel matrix
``K`` (``(N + 1) x hw``, float64): one row per scored column (the regions, and any extra columns
such as a permutation null's) and a last row whose product with a flattened map is that map's
upsampled mean. Scoring is then

1. ``proj = A K^T`` for the ``C x hw`` flattened unit maps ``A`` (the region sums and the mean);
2. the population std of every upsampled map, ``||Ry (A - mu) Rx^T||_F / sqrt(H W)`` with the
   same factors ``Ry``, ``Rx`` (bidiagonal Cholesky, or dense QR when an axis is downsampled);
3. ``score = (proj[:, c] / divisor_c - multiplicity_c mu) / std`` (``RegionScorer.column_weights``;
   for a region ``divisor = n_r``, multiplicity 1), NaN for dead units and empty columns.

:class:`TorchRegionScorer` runs the three steps in torch on the maps' device (a GPU run then
never copies activations to the CPU, nor waits on CPU scoring) and reuses the numpy scorer's
kernel matrix and factors, so it scores exactly what the numpy path scores (every column of
``K``, the null's too). All arithmetic is float64 (on the device too); on CPU it equals
:meth:`RegionScorer.score` to about 1e-12 (tested at 1e-9). The dead-unit rule is the numpy
path's (``max == min`` or ``std <= DEAD_RTOL * max|A|``).
"""
from __future__ import annotations

import numpy as np
import torch

from probes.regions import NOT_FINITE_MESSAGE, RegionScorer
from probes.upsampling import DEAD_RTOL, resized_axis

__all__ = ["TorchRegionScorer"]


class TorchRegionScorer:
    """Score unit maps on their own device with a :class:`RegionScorer`'s kernels.

    Args:
        scorer: the numpy scorer; call its ``set_regions`` for each image as usual (this object
            follows it: device copies are keyed by the kernel matrix they come from).
        device: where the arithmetic runs (default: the device of the maps passed to ``score``).

    ``score(unit_maps)`` takes a ``C x h x w`` tensor (any float dtype; numpy arrays too) and
    returns the ``C x N`` float64 numpy scores of :meth:`RegionScorer.score`.
    """

    def __init__(self, scorer: RegionScorer, device: str | torch.device | None = None) -> None:
        self.scorer = scorer
        self.device = None if device is None else torch.device(device)
        self._cache: dict = {}

    def __getattr__(self, name: str):
        """Everything else (``n_pixels``, ``n_regions``, the null's sizes, ...) is the numpy scorer's."""
        scorer = self.__dict__.get("scorer")
        if scorer is None:
            raise AttributeError(name)
        return getattr(scorer, name)

    def set_regions(self, masks, fixation_map=None, **options) -> "TorchRegionScorer":
        """:meth:`RegionScorer.set_regions` of the wrapped scorer (same arguments); returns ``self``."""
        self.scorer.set_regions(masks, fixation_map, **options)
        return self

    def set_point_regions(self, shape, ys, xs, member, **options) -> "TorchRegionScorer":
        """:meth:`RegionScorer.set_point_regions` of the wrapped scorer; returns ``self``."""
        self.scorer.set_point_regions(shape, ys, xs, member, **options)
        return self

    def _on_device(self, h: int, w: int, device: torch.device):
        """Kernel matrix, pixel counts and std factors on ``device`` (cached per kernel matrix)."""
        k = self.scorer.kernel_matrix(h, w)
        key = (id(k), device)
        entry = self._cache.get(key)
        if entry is None or entry[0] is not k:
            height, width = self.scorer.image_shape
            ay, ax = resized_axis(height, h), resized_axis(width, w)
            as_t = lambda a: None if a is None else torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64,
                                                                     device=device)
            factors = tuple((as_t(a.r_diag), as_t(a.r_super), as_t(a.r_dense)) for a in (ay, ax))
            divisor, multiplicity = self.scorer.column_weights()
            n_pix = (torch.as_tensor(divisor, dtype=torch.float64, device=device),
                     torch.as_tensor(multiplicity, dtype=torch.float64, device=device))
            if len(self._cache) >= 8:  # a new image (set_regions) builds new matrices
                self._cache.clear()
            entry = self._cache[key] = (k, as_t(k), n_pix, factors, float(height) * float(width))
        return entry[1:]

    def score(self, unit_maps) -> np.ndarray:
        """``C x N`` float64 scores (numpy), as :meth:`RegionScorer.score`.

        Raises:
            ValueError: no regions set, maps not ``C x h x w`` or not finite.
        """
        if self.scorer.image_shape is None:
            raise ValueError("RegionScorer has no regions yet; call set_regions(masks, fixation_map) first")
        t = unit_maps if isinstance(unit_maps, torch.Tensor) else torch.as_tensor(np.asarray(unit_maps))
        device = self.device or t.device
        t = t.detach().to(device=device, dtype=torch.float64)
        if t.dim() != 3 or t.shape[1] < 1 or t.shape[2] < 1:
            raise ValueError(
                f"unit_maps must be a C x h x w stack (one map per unit), got shape {tuple(t.shape)}; "
                "index one image of a batch first"
            )
        n_units, h, w = t.shape
        n_cols = self.scorer.column_weights()[0].size
        if n_units == 0 or n_cols == 0:
            if n_units and not bool(torch.isfinite(t).all()):
                raise ValueError(NOT_FINITE_MESSAGE)
            return np.full((n_units, n_cols), np.nan)
        flat = t.reshape(n_units, h * w)
        hi, lo = flat.amax(dim=1), flat.amin(dim=1)
        if not bool(torch.isfinite(hi).all() & torch.isfinite(lo).all()):
            raise ValueError(NOT_FINITE_MESSAGE)
        k, (divisor, multiplicity), (fy, fx), n_out = self._on_device(h, w, t.device)
        proj = flat @ k.T  # step 1: every column's pixel sum, and the mean (last column)
        mean = proj[:, -1]
        # Step 2: ||Ry (A - mu) Rx^T||_F^2 / (H W), as probes.upsampling.std_and_dead.
        r = _apply_r(fy, t - mean[:, None, None], 1)
        r = _apply_r(fx, r, 2)
        std = torch.sqrt((r * r).sum(dim=(1, 2)) / n_out)
        dead = (hi == lo) | (std <= DEAD_RTOL * torch.maximum(hi.abs(), lo.abs()))
        # Step 3: He et al. 2019 eq. 1 / eq. 4 (probes.regions.scores_from_projection).
        out = (proj[:, :-1] / divisor[None, :] - multiplicity[None, :] * mean[:, None]) / std[:, None]
        out[dead, :] = float("nan")
        out[:, divisor == 0] = float("nan")
        return out.cpu().numpy()


def _apply_r(factor, x: torch.Tensor, dim: int) -> torch.Tensor:
    """``R @ x`` along ``dim`` (1 = rows, 2 = columns) of a ``C x h x w`` stack (bidiagonal or dense R)."""
    diag, sup, dense = factor
    if dense is not None:
        return torch.einsum("ih,chw->ciw", dense, x) if dim == 1 else torch.einsum("jw,chw->chj", dense, x)
    if dim == 1:
        out = diag[None, :, None] * x
        out[:, :-1, :] += sup[None, :, None] * x[:, 1:, :]
    else:
        out = diag[None, None, :] * x
        out[:, :, :-1] += sup[None, None, :] * x[:, :, 1:]
    return out
