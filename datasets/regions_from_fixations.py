"""Salient regions as clusters of fixations, for gaze data without annotated regions.

He et al. (2019, sec. 4) define the salient regions of OSIE as clusters of human fixations and then
label each cluster by hand (OSIE-SR). Without those labels we find the clusters automatically:

1. blur the binary fixation map with a Gaussian (``sigma`` px, zero padding) and min-max it to
   [0, 1]: the OSIE fixation density map (``datasets.fixations.density_map``);
2. keep the pixels whose density is ``>= threshold`` (a fraction of the image's peak density);
3. split them into connected components (``scipy.ndimage.label``; 4-connectivity with
   ``connectivity=1``, 8-connectivity with ``connectivity=2``);
4. keep the components that contain at least ``min_fixations`` unique fixated pixels, so a lone
   glance does not make a region.

Every region gets the category ``"unlabelled"``. Defaults: ``sigma = 24`` px is OSIE's blur (about
1 degree of visual angle at OSIE's viewing distance); ``threshold = 0.15`` and ``min_fixations = 3``
were set on OSIE image 1023, whose OSIE-SR regions are known (He's ``exa_data/1023.npy``: 5 regions
holding 39, 37, 34, 27, 9 of the 161 fixated pixels, 15 on the background): the defaults give 5
clusters holding 37, 36, 34, 27, 8 (19 on the background). Images 1001 and 1002 give 6 and 4.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from datasets.fixations import density_map

__all__ = ["UNLABELLED", "fixation_clusters"]

UNLABELLED = "unlabelled"


def fixation_clusters(
    fixation_map: np.ndarray,
    sigma: float = 24.0,
    threshold: float = 0.15,
    min_fixations: int = 3,
    connectivity: int = 1,
) -> tuple[np.ndarray, list[str]]:
    """Salient regions of one image as connected clusters of its fixation density.

    Region ``k`` is a connected component of ``{p : D(p) >= threshold}``, ``D`` the min-max
    normalised density map (Gaussian ``sigma``, zero padding), kept when it holds at least
    ``min_fixations`` unique fixated pixels. Regions are ordered by their number of fixated
    pixels, largest first (ties: raster order of the component's first pixel).

    Args:
        fixation_map: ``H x W`` binary map of unique fixated pixels.
        sigma: Gaussian blur in pixels (> 0).
        threshold: density level in (0, 1] that separates regions from background.
        min_fixations: smallest number of fixated pixels a region must hold (>= 1).
        connectivity: 1 (4-neighbours) or 2 (8-neighbours) for ``scipy.ndimage.label``.

    Returns:
        ``(masks, categories)``: ``R x H x W`` bool masks (``R`` may be 0, e.g. for an image
        without fixations) and ``R`` times ``"unlabelled"``.

    Raises:
        ValueError: a map that is not 2-D, or a parameter out of range.
    """
    fix = np.asarray(fixation_map)
    if fix.ndim != 2 or fix.size == 0:
        raise ValueError(f"fixation_map must be a non-empty H x W map, got shape {fix.shape}")
    fix = fix.astype(bool)
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in (0, 1] (a fraction of the peak density), got {threshold}")
    if int(min_fixations) < 1:
        raise ValueError(f"min_fixations must be >= 1, got {min_fixations}")
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 (4-neighbours) or 2 (8-neighbours), got {connectivity}")
    h, w = fix.shape
    if not fix.any():
        return np.zeros((0, h, w), dtype=bool), []

    dens = density_map(fix, sigma=sigma, normalize=True)
    labels, n = ndimage.label(dens >= threshold, structure=ndimage.generate_binary_structure(2, connectivity))
    counts = np.bincount(labels[fix], minlength=n + 1)
    counts[0] = 0  # background
    keep = [k for k in range(1, n + 1) if counts[k] >= min_fixations]
    # Stable sort: equal counts keep label order, which is raster order of first pixels.
    keep.sort(key=lambda k: -counts[k])
    masks = np.stack([labels == k for k in keep]) if keep else np.zeros((0, h, w), dtype=bool)
    return masks, [UNLABELLED] * len(keep)
