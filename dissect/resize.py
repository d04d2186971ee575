"""Resize a map to an image's size the way the whole toolkit does (digest section 1)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from probes.metrics import is_constant

__all__ = ["resize_map"]


def resize_map(saliency, shape: tuple[int, int]) -> np.ndarray:
    """``h x w`` map (numpy or torch) -> ``H x W`` float64, bilinear with half-pixel centres
    (``align_corners=False``, identical to PIL's bilinear).

    Computed in float64. A map that is constant by the metrics' rule
    (:func:`probes.metrics.is_constant`, judged in the map's own dtype) comes back exactly
    constant: interpolation weights that do not sum to exactly 1 would otherwise turn a dead map
    into rounding noise with a finite, meaningless NSS instead of NaN.
    """
    shape = (int(shape[0]), int(shape[1]))
    if isinstance(saliency, torch.Tensor):
        saliency = saliency.detach().cpu()
    if is_constant(saliency):
        return np.full(shape, float(saliency.reshape(-1)[0]))
    t = torch.as_tensor(np.asarray(saliency), dtype=torch.float64)
    if tuple(t.shape) != shape:
        t = F.interpolate(t[None, None], size=shape, mode="bilinear", align_corners=False)[0, 0]
    return t.numpy()
