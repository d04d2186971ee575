"""Exact per-unit region scores without upsampling: region-wise NSS (He et al. 2019 eq. 1) and NMM (eq. 4).

The z-score of a unit map ``A`` (``h x w``) bilinearly upsampled to the image (``H x W``),
``up(A) = Uy A Ux^T``, needs the map's upsampled mean and population std (digest section 2): both
are small ``h x w`` contractions (:mod:`probes.upsampling`, which also says when a unit is dead:
its row of scores is then NaN). The sum of ``up(A)`` over a pixel set ``M`` is
``<A, Uy^T M Ux>``, so each region is an ``h x w`` kernel ``K_r = Uy^T M_r Ux``, built once per
image and map size, and all units and regions of a layer reduce to one ``C x hw @ hw x R``
matrix product (digest section 3).

Extra columns (the permutation null of :mod:`dissect.studies.dissection`): ``set_regions(...,
extra_groups=...)`` appends ``E`` columns, each a *group* of pixel sets given as ``(rows, cols)``
index arrays at this image's resolution (another image's fixated pixels inside its masks, or
another pop-out array's target mask). Column ``e`` scores the SUM over its ``m_e`` sets of the
set's mean z-score: its kernel is ``sum_s K_s / n_s`` and the mean enters ``m_e`` times. The
null only ever needs such sums (per permutation and category), so one column per group instead
of one per region keeps the product small; they are further rows of the same kernel matrix, so
one product scores the real regions and every permuted pairing.

Two separate steps, so that another backend (``probes/regions_torch.py`` on a device) can reuse
the first and redo only the second:

1. **kernel building** (:meth:`RegionScorer.kernel_matrix`, numpy, once per image and map size):
   the ``(R + E + 1) x hw`` float64 matrix whose first ``R`` rows are the real regions' kernels,
   the next ``E`` rows the extra columns' kernels and the last row ``cy cx^T / (H W)``; with
   :meth:`RegionScorer.column_weights` (per column: ``divisor``, ``n_r`` for a real region and
   1 for a group, 0 for an empty region; and ``multiplicity``, 1 or ``m_e``);
2. **per-column arithmetic** (:func:`scores_from_projection`): given ``proj = maps @ K^T``
   (``C x (R + E + 1)``), the upsampled std of every unit and its dead flag (:func:`upsampled_std`),
   ``score = (proj[:, c] / divisor_c - multiplicity_c * mean) / std``, NaN for dead units and
   empty columns.

All arithmetic is float64. The naive references :func:`unit_region_nss_naive` and
:func:`unit_nmm_naive` upsample every map with ``F.interpolate`` and are used by the tests and
the benchmark only.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from probes.upsampling import DEAD_RTOL, ResizedAxis, interpolation_matrix, resized_axis, std_and_dead, upsampled_std

# DEAD_RTOL, interpolation_matrix and upsampled_std live in probes.upsampling; importable from here too.
__all__ = [
    "DEAD_RTOL",
    "interpolation_matrix",
    "RegionScorer",
    "scores_from_projection",
    "upsampled_std",
    "unit_region_nss",
    "unit_nmm",
    "unit_region_nss_naive",
    "unit_nmm_naive",
]

# The message of every non-finite-maps error (probes.regions_torch raises it too).
NOT_FINITE_MESSAGE = "unit_maps contain NaN or inf; check the layer's activations"


# --------------------------------------------------------------------------- input checks


def _as_unit_maps(unit_maps, check_finite: bool = True) -> np.ndarray:
    """``C x h x w`` C-ordered float64 numpy array from numpy or torch; finite values only."""
    return _as_float64(_as_stack(unit_maps), check_finite)


def _as_stack(unit_maps) -> np.ndarray:
    """``C x h x w`` numpy array of any real dtype (a CPU tensor's own memory, not a copy)."""
    if isinstance(unit_maps, torch.Tensor):
        unit_maps = unit_maps.detach()
        if unit_maps.device.type != "cpu" or unit_maps.dtype not in (torch.float32, torch.float64):
            unit_maps = unit_maps.to(device="cpu", dtype=torch.float64)
        arr = unit_maps.numpy()
    else:
        arr = np.asarray(unit_maps)
        if arr.dtype.kind not in "fiub":
            arr = arr.astype(np.float64)
    if arr.ndim != 3 or arr.shape[1] < 1 or arr.shape[2] < 1:
        raise ValueError(
            f"unit_maps must be a C x h x w stack (one map per unit), got shape {tuple(arr.shape)}; "
            "index one image of a batch first"
        )
    return arr


def _as_float64(arr: np.ndarray, check_finite: bool = True) -> np.ndarray:
    # C order whatever the input's layout (a channels-last activation would make every pass strided).
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if check_finite and not np.all(np.isfinite(arr)):
        raise ValueError(NOT_FINITE_MESSAGE)
    return arr


def _as_masks(masks) -> np.ndarray:
    """``R x H x W`` bool masks (a 2-D mask is one region); 0/1 values only."""
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[1] < 1 or masks.shape[2] < 1:
        raise ValueError(f"masks must be R x H x W (one mask per region), got shape {masks.shape}")
    if masks.dtype != bool:
        if masks.size and not np.all((masks == 0) | (masks == 1)):
            raise ValueError("masks must be boolean (or 0/1); threshold soft masks before scoring")
        masks = masks.astype(bool)
    return masks


def _as_fixation_map(fixation_map, shape: tuple[int, int]) -> np.ndarray:
    """``H x W`` bool map; any non-zero value marks a fixated pixel (duplicates collapse)."""
    if isinstance(fixation_map, torch.Tensor):
        fixation_map = fixation_map.detach().cpu().numpy()
    fix = np.asarray(fixation_map)
    if fix.shape != shape:
        raise ValueError(
            f"fixation_map is {fix.shape} but the masks are {shape[0]} x {shape[1]}; both must be at "
            "the image's own resolution"
        )
    if fix.dtype != bool:
        if fix.size and not np.all(np.isfinite(fix)):
            raise ValueError("fixation_map contains NaN or inf; pass a binary map of fixated pixels")
        fix = fix != 0
    return fix


# --------------------------------------------------------------------------- fast path


def _points_kernels(ys: np.ndarray, xs: np.ndarray, member: np.ndarray, ay: ResizedAxis, ax: ResizedAxis) -> np.ndarray:
    """``K_r = Uy^T M_r Ux`` for sparse ``M_r`` given as pixel lists: 4 scatter-adds per pixel.

    ``member`` is ``R x n``: whether pixel ``(ys[p], xs[p])`` belongs to region ``r``.
    """
    n_regions = member.shape[0]
    h, w = ay.n_in, ax.n_in
    r, p = np.nonzero(member)
    y, x = ys[p], xs[p]
    base = r * (h * w)
    rows = ((ay.i0[y], ay.w0[y]), (ay.i1[y], ay.w1[y]))
    cols = ((ax.i0[x], ax.w0[x]), (ax.i1[x], ax.w1[x]))
    idx = np.concatenate([base + iy * w + ix for iy, _ in rows for ix, _ in cols])
    wts = np.concatenate([wy * wx for _, wy in rows for _, wx in cols])
    k = np.bincount(idx, weights=wts, minlength=n_regions * h * w)
    return k.reshape(n_regions, h, w)


def _flat_points_kernels(region: np.ndarray, ys: np.ndarray, xs: np.ndarray, weight: np.ndarray, n_regions: int,
                         ay: ResizedAxis, ax: ResizedAxis) -> np.ndarray:
    """``K_e = sum_p weight[p] Uy^T 1_(ys[p], xs[p]) Ux`` over the pixels ``p`` of column ``region[p]``."""
    h, w = ay.n_in, ax.n_in
    if region.size == 0:
        return np.zeros((n_regions, h, w), dtype=np.float64)
    idx, wts = _flat_points_entries(region, ys, xs, weight, ay, ax)
    k = np.bincount(idx, weights=wts, minlength=n_regions * h * w)
    return k.reshape(n_regions, h, w)


def _flat_points_entries(region: np.ndarray, ys: np.ndarray, xs: np.ndarray, weight: np.ndarray,
                         ay: ResizedAxis, ax: ResizedAxis) -> tuple[np.ndarray, np.ndarray]:
    """The ``(flat index, weight)`` entries whose ``bincount`` is :func:`_flat_points_kernels`."""
    h, w = ay.n_in, ax.n_in
    base = region.astype(np.int64) * (h * w)
    rows = ((ay.i0[ys], ay.w0[ys]), (ay.i1[ys], ay.w1[ys]))
    cols = ((ax.i0[xs], ax.w0[xs]), (ax.i1[xs], ax.w1[xs]))
    idx = np.concatenate([base + iy * w + ix for iy, _ in rows for ix, _ in cols])
    wts = np.concatenate([wy * wx * weight for _, wy in rows for _, wx in cols])
    return idx, wts


# The extra columns are multiplied on the map cells some column touches when those are at most
# this fraction of the map (a gather of those cells, then a smaller BLAS product).
_USED_CELLS_FRACTION = 0.5


def _extra_sums(flat: np.ndarray, extra) -> np.ndarray:
    """``flat @ K_extra^T`` (``C x E``): dense rows, or ``(used cells, E x n_used)`` of
    :meth:`RegionScorer._split_kernels` (the zero cells left out)."""
    if isinstance(extra, np.ndarray):
        return flat @ extra.T
    used, kernels = extra
    return flat[:, used] @ kernels.T


def _mask_kernels(masks: np.ndarray, boxes: list, ay: ResizedAxis, ax: ResizedAxis) -> np.ndarray:
    """``K_r = Uy^T M_r Ux`` for dense masks, restricted to each mask's bounding box."""
    uy, ux = interpolation_matrix(ay.n_out, ay.n_in), interpolation_matrix(ax.n_out, ax.n_in)
    h, w = ay.n_in, ax.n_in
    out = np.zeros((masks.shape[0], h, w), dtype=np.float64)
    for r, box in enumerate(boxes):
        if box is None:
            continue
        y0, y1, x0, x1 = box
        m = masks[r, y0:y1, x0:x1].astype(np.float64)
        by, bx = m.shape
        # Pick the cheaper association of Uy^T (M Ux) vs (Uy^T M) Ux.
        if by * bx * w + by * w * h <= h * by * bx + h * bx * w:
            out[r] = uy[y0:y1].T @ (m @ ux[x0:x1])
        else:
            out[r] = (uy[y0:y1].T @ m) @ ux[x0:x1]
    return out


def _bounding_boxes(masks: np.ndarray) -> list:
    boxes = []
    rows_any = masks.any(axis=2)
    cols_any = masks.any(axis=1)
    for r in range(masks.shape[0]):
        ys = np.flatnonzero(rows_any[r])
        if ys.size == 0:
            boxes.append(None)
            continue
        xs = np.flatnonzero(cols_any[r])
        boxes.append((int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1))
    return boxes


def scores_from_projection(proj: np.ndarray, divisor: np.ndarray, multiplicity: np.ndarray, std: np.ndarray,
                           dead: np.ndarray) -> np.ndarray:
    """The per-column arithmetic after the kernel product (step 2 of the module docstring).

    ``score[j, c] = (proj[j, c] / divisor[c] - multiplicity[c] * mean[j]) / std[j]`` with
    ``mean = proj[:, -1]``: for a real region (``divisor = n_r``, multiplicity 1) the mean
    z-scored upsampled map over its pixels (He et al. 2019 eq. 1 / eq. 4); for a group column
    (divisor 1) the sum of that over its sets. NaN rows for dead units, NaN columns where
    ``divisor == 0`` (a region without pixels).

    Args:
        proj: ``C x (N + 1)`` products of the flattened maps with :meth:`RegionScorer.kernel_matrix`.
        divisor, multiplicity: ``N`` each (:meth:`RegionScorer.column_weights`).
        std, dead: from :func:`upsampled_std`.

    Returns:
        ``C x N`` float64 scores.
    """
    proj = np.asarray(proj, dtype=np.float64)
    mean = proj[:, -1]
    divisor = np.asarray(divisor)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (proj[:, :-1] / divisor[None, :] - np.asarray(multiplicity)[None, :] * mean[:, None]) \
            / np.asarray(std)[:, None]
    out[np.asarray(dead, dtype=bool), :] = np.nan
    out[:, divisor == 0] = np.nan
    return out


def _as_pixel_groups(extra_groups, shape: tuple[int, int]):
    """Flat ``(column, rows, cols, weight)`` of ``E`` groups of pixel sets, and each group's set count.

    A pixel of set ``s`` weighs ``1 / n_s`` (duplicates within a set collapse); empty sets are
    dropped. One ``np.unique`` over all sets at once (a few hundred sets per image for the null).
    """
    height, width = shape
    n_pix = height * width
    rows, cols, set_group = [], [], []
    for e, group in enumerate(extra_groups):
        for item in group:
            try:
                ys, xs = item
            except (TypeError, ValueError):
                raise ValueError("extra_groups must be a sequence of groups of (rows, cols) pixel-index pairs") from None
            ys = np.asarray(ys, dtype=np.int64).reshape(-1)
            xs = np.asarray(xs, dtype=np.int64).reshape(-1)
            if ys.shape != xs.shape:
                raise ValueError(f"extra group {e}: a pixel set with {ys.size} rows but {xs.size} cols")
            if ys.size:
                rows.append(ys)
                cols.append(xs)
                set_group.append(e)
    n_groups = len(extra_groups)
    set_group = np.array(set_group, dtype=np.int64)
    counts = np.bincount(set_group, minlength=n_groups).astype(np.int64)
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return (empty, empty, empty, np.zeros(0)), counts
    sizes = np.array([r.size for r in rows])
    ys, xs = np.concatenate(rows), np.concatenate(cols)
    outside = (ys < 0) | (ys >= height) | (xs < 0) | (xs >= width)  # one check for all sets
    if outside.any():
        e = set_group[np.searchsorted(np.cumsum(sizes), int(np.argmax(outside)), side="right")]
        raise ValueError(f"extra group {e} has pixels outside the {height} x {width} image; rescale it first")
    set_of = np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)
    keys = np.unique(set_of * n_pix + ys * width + xs)  # sorted by set, then pixel: duplicates within a set collapse
    set_id, pixel = np.divmod(keys, n_pix)
    ys, xs = np.divmod(pixel, width)
    weight = 1.0 / np.bincount(set_id, minlength=set_group.size)[set_id]
    return (set_group[set_id], ys, xs, weight), counts


class RegionScorer:
    """Mean z-scored upsampled unit map over each region's pixels, for every unit and region.

    Built once per image (``set_regions``) and reused for every layer of that image: the region
    kernels ``K_r = Uy^T M_r Ux`` are cached per map size ``h x w``, and the interpolation
    factors per ``(h, w, H, W)`` across images.

    With a fixation map, ``M_r`` = the unique fixated pixels inside mask ``r`` and the score is
    region-wise NSS (He et al. 2019, eq. 1). Without one, ``M_r`` = the mask and the score is
    NMM (eq. 4). Extra groups of pixel sets (``extra_groups``, e.g. the permutation null's
    regions of other images) add further columns after the ``R`` real ones.

    Args:
        masks: optional ``R x H x W`` bool masks (``set_regions`` can be called later).
        fixation_map: optional ``H x W`` binary fixation map (non-zero = fixated).
    """

    def __init__(self, masks=None, fixation_map=None) -> None:
        self._shape: tuple[int, int] | None = None
        self._n_pixels = np.zeros(0, dtype=np.int64)
        self._n_extra = np.zeros(0, dtype=np.int64)
        self._kernels: dict[tuple[int, int], np.ndarray] = {}
        self._points = None
        self._masks = None
        self._boxes = None
        self._extra = None
        if masks is not None:
            self.set_regions(masks, fixation_map)
        elif fixation_map is not None:
            raise ValueError("RegionScorer: a fixation_map needs masks; pass masks too")

    def set_regions(self, masks, fixation_map=None, extra_groups=None) -> "RegionScorer":
        """Use the regions of a new image.

        Args:
            masks: ``R x H x W`` bool masks at the image's resolution (2-D: one region).
            fixation_map: ``H x W`` binary map, or ``None`` for NMM (eq. 4).
            extra_groups: optional sequence of ``E`` groups, each a sequence of pixel sets
                ``(rows, cols)`` (0-based index arrays at this image's resolution; duplicates
                collapse, empty sets are dropped). Column ``R + e`` scores the sum over group
                ``e``'s sets of the set's mean z-score. A set is used as is (no fixation map is
                applied to it: pass fixated pixels for NSS columns).

        Returns:
            ``self``.

        Raises:
            ValueError: masks not ``R x H x W`` or not binary, fixation map of another shape,
                an extra pixel set outside the image.
        """
        masks = _as_masks(masks)
        shape = (int(masks.shape[1]), int(masks.shape[2]))
        if fixation_map is not None:
            fix = _as_fixation_map(fixation_map, shape)
            ys, xs = np.divmod(np.flatnonzero(fix), shape[1])  # faster than np.nonzero
            return self.set_point_regions(shape, ys, xs, masks[:, ys, xs], extra_groups)
        self._shape = shape
        self._kernels = {}
        self._points = None
        self._masks = masks
        self._boxes = _bounding_boxes(masks)
        self._n_pixels = np.array([np.count_nonzero(m) for m in masks], dtype=np.int64)
        return self._set_extra(extra_groups)

    def _set_extra(self, extra_groups) -> "RegionScorer":
        if extra_groups is not None and len(extra_groups):
            self._extra, self._n_extra = _as_pixel_groups(extra_groups, self._shape)
        else:
            self._extra, self._n_extra = None, np.zeros(0, dtype=np.int64)
        return self

    def set_point_regions(self, shape, ys, xs, member, extra_groups=None) -> "RegionScorer":
        """:meth:`set_regions` with a fixation map, given without dense masks (region NSS).

        Args:
            shape: the image's ``(H, W)``.
            ys, xs: the unique fixated pixels, in raster order (``np.nonzero(fixation_map)``).
            member: ``R x n`` bool, ``member[r, p]``: pixel ``(ys[p], xs[p])`` is inside mask ``r``
                (``masks[:, ys, xs]``).
            extra_groups: as in :meth:`set_regions`.

        Returns:
            ``self``; the same kernels, bit for bit, as ``set_regions(masks, fixation_map)``.

        Raises:
            ValueError: lengths that do not match, pixels outside the image.
        """
        shape = (int(shape[0]), int(shape[1]))
        ys, xs = np.asarray(ys, dtype=np.int64).reshape(-1), np.asarray(xs, dtype=np.int64).reshape(-1)
        member = np.asarray(member, dtype=bool)
        if member.ndim == 1:
            member = member[None]
        if ys.shape != xs.shape or member.ndim != 2 or member.shape[1] != ys.size:
            raise ValueError(f"set_point_regions: {ys.size} rows, {xs.size} cols and member of shape "
                             f"{member.shape}; member must be R x n for the n fixated pixels")
        if ys.size and (ys.min() < 0 or ys.max() >= shape[0] or xs.min() < 0 or xs.max() >= shape[1]):
            raise ValueError(f"set_point_regions: fixated pixels outside the {shape[0]} x {shape[1]} image")
        self._shape = shape
        self._kernels = {}
        self._points = (ys, xs, member)
        self._masks = self._boxes = None
        self._n_pixels = member.sum(axis=1).astype(np.int64)
        return self._set_extra(extra_groups)

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """The image's ``(H, W)`` (``None`` before :meth:`set_regions`)."""
        return self._shape

    @property
    def n_pixels(self) -> np.ndarray:
        """``R`` counts of the pixels each score averages over (fixated pixels in the mask, or mask area)."""
        return self._n_pixels.copy()

    @property
    def n_regions(self) -> int:
        """``R``, the number of real regions (the first ``R`` columns of :meth:`score`)."""
        return int(self._n_pixels.size)

    @property
    def n_extra(self) -> int:
        """``E``, the number of extra columns (after the real ones)."""
        return int(self._n_extra.size)

    @property
    def extra_sizes(self) -> np.ndarray:
        """``E`` numbers of non-empty pixel sets in each extra column (its multiplicity)."""
        return self._n_extra.copy()

    def column_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """``(divisor, multiplicity)`` of the ``R + E`` columns, for :func:`scores_from_projection`.

        ``divisor``: ``n_r`` for a real region, 1 for a non-empty extra group, 0 for an empty one.
        """
        divisor = np.concatenate([self._n_pixels, (self._n_extra > 0).astype(np.int64)])
        multiplicity = np.concatenate([np.ones(self._n_pixels.size), self._n_extra.astype(np.float64)])
        return divisor, multiplicity

    def kernels(self, h: int, w: int) -> np.ndarray:
        """``R x h x w`` kernels ``K_r = Uy^T M_r Ux`` for maps of size ``h x w`` (cached).

        ``<A, K_r>`` is the sum of ``up(A)`` over the pixels of region ``r``.
        """
        n_regions = self._n_pixels.size
        return self.kernel_matrix(h, w)[:n_regions].reshape(n_regions, int(h), int(w))

    def kernel_matrix(self, h: int, w: int) -> np.ndarray:
        """``(R + E + 1) x hw`` float64 (cached, do not modify): real kernels, extra kernels, mean row.

        The mean row is ``cy cx^T / (H W)``: its product with a flattened map is the map's
        upsampled mean. Step 1 of the module docstring; any backend multiplies flattened unit
        maps by its transpose and finishes with :func:`scores_from_projection`.
        """
        return self._extended_kernels(h, w)

    def _extended_kernels(self, h: int, w: int) -> np.ndarray:
        if self._shape is None:
            raise ValueError("RegionScorer has no regions yet; call set_regions(masks, fixation_map) first")
        key = (int(h), int(w))
        if key not in self._kernels:
            real, mean_row, ay, ax = self._real_and_mean_rows(*key)
            parts = [real]
            if self._extra is not None:
                extra = _flat_points_kernels(*self._extra, self._n_extra.size, ay, ax)
                parts.append(extra.reshape(-1, key[0] * key[1]))
            parts.append(mean_row)
            self._kernels[key] = np.concatenate(parts)
        return self._kernels[key]

    def _real_and_mean_rows(self, h: int, w: int):
        """``(R x hw real kernels, 1 x hw mean row, ay, ax)`` for maps of size ``h x w``."""
        ay, ax = resized_axis(self._shape[0], h), resized_axis(self._shape[1], w)
        if self._points is not None:
            real = _points_kernels(*self._points, ay, ax)
        else:
            real = _mask_kernels(self._masks, self._boxes, ay, ax)
        mean_row = np.outer(ay.colsum, ax.colsum) / (float(ay.n_out) * float(ax.n_out))
        return real.reshape(-1, h * w), mean_row.reshape(1, -1), ay, ax

    def _split_kernels(self, h: int, w: int):
        """What :meth:`score` multiplies by, per map size (cached): the ``(R + 1) x hw`` dense rows
        (real kernels and the mean row) and the extra columns, sparse where that is cheaper.

        The extra columns (the permutation null: other images' few fixated pixels, or their
        target masks) touch few cells of a large map, so the dense ``C x hw x E`` product mostly
        multiplies zeros. When the cells any extra column touches are at most half the map, the
        extra kernels are kept on those cells only (``(used, E x n_used)``, the same values as
        the dense rows: one ``bincount`` in the same pixel order) and the maps are gathered
        there. A product over fewer cells, or with fewer columns, sums in another order than the
        one dense product did, so scores can differ from it in the last bits (~1e-16); the
        accumulator's 2**-32 fixed point absorbs that (the CSVs of the checks in the issue notes
        were byte-identical).
        """
        key = ("split", int(h), int(w))
        if key not in self._kernels:
            if self._extra is None:  # no extra columns: the (R + 1)-row matrix itself
                self._kernels[key] = (self._extended_kernels(h, w), None)
            else:
                hw = int(h) * int(w)
                real, mean_row, ay, ax = self._real_and_mean_rows(int(h), int(w))
                n_cols = self._n_extra.size
                idx, wts = _flat_points_entries(*self._extra, ay, ax)
                keys, inverse = np.unique(idx, return_inverse=True)
                values = np.bincount(inverse.reshape(-1), weights=wts, minlength=keys.size)
                nonzero = values != 0
                keys, values = keys[nonzero], values[nonzero]
                columns, cells = np.divmod(keys, hw)
                used = np.unique(cells)
                if used.size <= _USED_CELLS_FRACTION * hw:  # only the cells some column touches
                    extra = np.zeros((n_cols, used.size))
                    extra[columns, np.searchsorted(used, cells)] = values
                    extra = (used, extra)
                else:
                    extra = np.zeros((n_cols, hw))
                    extra[columns, cells] = values
                self._kernels[key] = (np.concatenate([real, mean_row]), extra)
        return self._kernels[key]

    def score(self, unit_maps) -> np.ndarray:
        """``C x (R + E)`` float64 scores of every unit on every region (then every extra column).

        Args:
            unit_maps: ``C x h x w`` maps (numpy or torch, any float dtype, any device).

        Returns:
            ``C x (R + E)`` float64; NaN rows for dead units, NaN columns for regions with no pixel.

        Raises:
            ValueError: no regions set, maps not ``C x h x w`` or not finite.
        """
        if self._shape is None:
            raise ValueError("RegionScorer has no regions yet; call set_regions(masks, fixation_map) first")
        raw = _as_stack(unit_maps)
        n_units, h, w = raw.shape
        divisor, multiplicity = self.column_weights()
        # Max and min on the maps' own dtype (float32 activations: half the bytes; the float64
        # conversion is exact, so the values are the same). NaN and inf reach max/min.
        arr = None if raw.flags.c_contiguous else _as_float64(raw, check_finite=False)  # reshape would copy
        raw_flat = (raw if arr is None else arr).reshape(n_units, h * w)
        hi = raw_flat.max(axis=1, initial=-np.inf).astype(np.float64)
        lo = raw_flat.min(axis=1, initial=np.inf).astype(np.float64)
        if not (np.all(np.isfinite(hi)) and np.all(np.isfinite(lo))):
            raise ValueError(NOT_FINITE_MESSAGE)
        if arr is None:
            arr = _as_float64(raw, check_finite=False)
        flat = arr.reshape(n_units, h * w)
        if divisor.size == 0 or n_units == 0:
            return np.full((n_units, divisor.size), np.nan)
        ay, ax = resized_axis(self._shape[0], h), resized_axis(self._shape[1], w)
        # Step 1: the products give every column's pixel sum and the map's mean (last column).
        rows, extra = self._split_kernels(h, w)
        base = flat @ rows.T  # real columns ..., mean
        if extra is None:
            proj = base
        else:
            n_real = rows.shape[0] - 1
            proj = np.empty((n_units, divisor.size + 1))
            proj[:, :n_real] = base[:, :n_real]
            proj[:, -1] = base[:, -1]
            proj[:, n_real:-1] = _extra_sums(flat, extra)
        std, dead = std_and_dead(arr, proj[:, -1], hi, lo, ay, ax)
        # Step 2: He et al. 2019, eq. 1 / eq. 4: mean of z(up(A)) over the column's pixels.
        return scores_from_projection(proj, divisor, multiplicity, std, dead)


def unit_region_nss(unit_maps, fixation_map, masks) -> np.ndarray:
    """Region-wise NSS of every unit on every region of one image (He et al. 2019, eq. 1).

    ``Assoc(a_j, region r) = mean over the unique fixated pixels inside mask r of z(up(a_j))``,
    ``up`` = bilinear resize to the image size with half-pixel centres, ``z`` = z-score over the
    whole upsampled map with the population std. Computed exactly in closed form (module
    docstring); no upsampled map is materialised. For several layers of one image, build a
    :class:`RegionScorer` once and call ``score`` per layer.

    Args:
        unit_maps: ``C x h x w`` unit maps (numpy or torch).
        fixation_map: ``H x W`` binary fixation map at the image's resolution (non-zero =
            fixated; duplicates collapse).
        masks: ``R x H x W`` bool region masks.

    Returns:
        ``C x R`` float64: NaN rows for dead (constant) units, NaN columns for regions that
        contain no fixated pixel.

    Raises:
        ValueError: wrong shapes, non-binary masks, non-finite maps.
    """
    return RegionScorer(masks, fixation_map).score(unit_maps)


def unit_nmm(unit_maps, masks) -> np.ndarray:
    """Normalised mean under each mask of every unit (He et al. 2019, eq. 4).

    ``NMM(a_j, m_r) = mean over the pixels of mask r of z(up(a_j))`` (same ``up`` and ``z`` as
    :func:`unit_region_nss`). Its ceiling is ``sqrt((1 - p) / p)``, ``p`` = mask fraction.

    Args:
        unit_maps: ``C x h x w`` unit maps (numpy or torch).
        masks: ``R x H x W`` bool masks at the image's resolution.

    Returns:
        ``C x R`` float64: NaN rows for dead units, NaN columns for empty masks.

    Raises:
        ValueError: wrong shapes, non-binary masks, non-finite maps.
    """
    return RegionScorer(masks).score(unit_maps)


# --------------------------------------------------------------------------- naive references


def _naive_scores(unit_maps, weights: np.ndarray) -> np.ndarray:
    """Upsample each map with F.interpolate (float64), z-score, average over each pixel set."""
    arr = _as_unit_maps(unit_maps)
    n_units = arr.shape[0]
    n_regions, height, width = weights.shape
    out = np.full((n_units, n_regions), np.nan)
    chunk = max(1, (1 << 23) // (height * width))  # bound memory at ~64 MB of float64
    for start in range(0, n_units, chunk):
        block = torch.from_numpy(arr[start:start + chunk])
        up = F.interpolate(block[:, None], size=(height, width), mode="bilinear", align_corners=False)
        up = up[:, 0].numpy()
        for j, u in enumerate(up):
            a = arr[start + j]
            sd = u.std()  # population std, ddof = 0
            if a.max() == a.min() or sd <= DEAD_RTOL * np.abs(a).max():
                continue
            z = (u - u.mean()) / sd
            for r in range(n_regions):
                if weights[r].any():
                    out[start + j, r] = z[weights[r]].mean()
    return out


def unit_region_nss_naive(unit_maps, fixation_map, masks) -> np.ndarray:
    """Reference for :func:`unit_region_nss` that materialises every upsampled map (slow)."""
    masks = _as_masks(masks)
    fix = _as_fixation_map(fixation_map, masks.shape[1:])
    return _naive_scores(unit_maps, masks & fix[None])


def unit_nmm_naive(unit_maps, masks) -> np.ndarray:
    """Reference for :func:`unit_nmm` that materialises every upsampled map (slow)."""
    return _naive_scores(unit_maps, _as_masks(masks))
