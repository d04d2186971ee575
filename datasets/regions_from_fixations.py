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

import hashlib
import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from datasets.fixations import density_map

__all__ = ["UNLABELLED", "CACHE_ENV", "fixation_clusters", "cached_fixation_clusters", "region_cache_dir"]

UNLABELLED = "unlabelled"

# Folder of the region cache (cached_fixation_clusters); unset or empty: no cache.
CACHE_ENV = "SALIENCY_DISSECT_REGION_CACHE"
# Bump when fixation_clusters' output for the same input and options changes.
_CACHE_VERSION = 1


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


def region_cache_dir() -> Path | None:
    """The region cache folder: ``$SALIENCY_DISSECT_REGION_CACHE``, or ``None`` (no cache) if unset or empty."""
    value = os.environ.get(CACHE_ENV, "")
    return Path(value).expanduser() if value else None


def _cache_key(fix: np.ndarray, params: dict) -> str:
    """sha256 of everything the clusters depend on: the fixated pixels, the shape and the options."""
    digest = hashlib.sha256()
    digest.update(repr((_CACHE_VERSION, fix.shape, sorted(params.items()))).encode())
    digest.update(np.flatnonzero(fix).astype(np.int64).tobytes())
    return digest.hexdigest()


def cached_fixation_clusters(
    fixation_map: np.ndarray,
    sigma: float = 24.0,
    threshold: float = 0.15,
    min_fixations: int = 3,
    connectivity: int = 1,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, list[str]]:
    """:func:`fixation_clusters`, remembered on disk so a second run does not recompute them.

    The clusters are a pure function of the fixated pixels and the options, so the cache key
    is their sha256 (the image's fixation data and every option; a changed fixation file or
    option is a new key, never a stale hit). Each image's regions are one small compressed
    ``<key>.npz`` (a label map) in ``cache_dir``, default :func:`region_cache_dir`
    (``$SALIENCY_DISSECT_REGION_CACHE``; the CLI sets it to ``~/.cache/saliency-dissect/regions``);
    without a folder this is :func:`fixation_clusters`. Writes are atomic (temporary file +
    rename), so parallel loaders and interrupted runs never leave a half-written entry; an
    unreadable entry is recomputed and replaced.

    Returns and raises as :func:`fixation_clusters`.
    """
    params = {"sigma": float(sigma), "threshold": float(threshold), "min_fixations": int(min_fixations),
              "connectivity": int(connectivity)}
    folder = Path(cache_dir).expanduser() if cache_dir is not None else region_cache_dir()
    if folder is None:
        return fixation_clusters(fixation_map, sigma, threshold, min_fixations, connectivity)
    fix = np.asarray(fixation_map)
    if fix.ndim == 2 and fix.size:
        fix = fix.astype(bool)
        path = folder / f"{_cache_key(fix, params)}.npz"
        try:
            with np.load(path) as stored:
                labels, n = stored["labels"], int(stored["n"])
            if labels.shape == fix.shape:
                masks = labels[None] == np.arange(1, n + 1, dtype=labels.dtype)[:, None, None]
                return masks, [UNLABELLED] * n
        except (OSError, KeyError, ValueError, EOFError):
            pass  # missing or unreadable entry: recompute it
    masks, cats = fixation_clusters(fixation_map, sigma, threshold, min_fixations, connectivity)
    if fix.ndim == 2 and fix.size:
        labels = np.zeros(fix.shape, dtype=np.uint8 if len(masks) < 255 else np.int32)
        for k, mask in enumerate(masks):
            labels[mask] = k + 1
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.{id(masks)}.tmp.npz")
            np.savez_compressed(tmp, labels=labels, n=np.int64(len(masks)))
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only or full cache folder only costs the recomputation
    return masks, cats
