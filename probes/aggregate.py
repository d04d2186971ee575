"""Streaming per-unit, per-category score aggregation with exact, order-free merging.

He et al. 2019 (sec. 4, Tables 2, 3, 7) score unit ``j`` of a layer for category ``c`` by the
mean of its region-wise NSS (eq. 1) over all regions of category ``c`` in a dataset, then report
per layer and category the mean of the ``k = 10`` largest unit scores and the number of units
scoring above ``T = 1.5`` (digest section 3; reference-implementations A.8).

:class:`UnitScoreAccumulator` keeps, per layer, unit and category, the sum of the scores and the
number of valid (non-NaN, i.e. live) scores, never the activations.

Sums are exact fixed-point integers (:mod:`probes.unit_scores`, which also defines the
dead-unit policies ``dead_units="skip"`` / ``"zero"`` and the ranked units), so adding and merging
are integer additions: shards merged in any order, a resumed run and a single pass give
bit-identical tables. A failed ``add`` or ``merge`` leaves the accumulator untouched: everything
is validated before anything changes.

The permutation null (``n_null = P > 0``: p-values, q-values, null top-k means, ``p_top_k``) and
the bootstrap over images (``n_bootstrap = B > 0``: percentile intervals) are kept as further
sums of the same kind, per layer next to the real ones; their draws, definitions and statistics
are :mod:`probes.null_bootstrap`.

Human ceiling (:meth:`UnitScoreAccumulator.add_ceiling`): per category, the fixed-point sum and
count of per-region values (the caller's leave-one-subject-out region NSS); the table's
``human_region_nss`` is their mean, NaN where none was added (datasets without subjects).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from probes.null_bootstrap import (TIE_TOL, bootstrap_array, bootstrap_columns, bootstrap_updates,
                                   bootstrap_weights, null_columns, null_permutation, null_top_k_columns,
                                   null_unit_stats, null_updates)
from probes.unit_scores import (DEAD_UNIT_POLICIES, MAX_ABS_SCORE, SCALE, SCALE_BITS, SUM_LIMIT, add_into, as_slice,
                                check_dead_unit_policy, check_sums, group_sums, means_and_ranked, to_fixed_point,
                                top_k_means)

# Names that moved to probes.unit_scores / probes.null_bootstrap stay importable from here.
__all__ = ["SCALE_BITS", "MAX_ABS_SCORE", "TIE_TOL", "UnitScoreAccumulator", "bootstrap_weights",
           "null_permutation", "DEAD_UNIT_POLICIES", "check_dead_unit_policy", "write_npz"]

_FORMAT = "saliency-dissect/UnitScoreAccumulator"
_VERSION = 2


@dataclass
class _Layer:
    """Per-layer state: ``C x K`` fixed-point sums and valid counts, ``K`` region counts, and
    the null (``C x P x K``) and bootstrap (``C x B x K``, ``B x K``) counterparts."""

    sums: np.ndarray  # int64, units of 2**-32
    counts: np.ndarray  # int64
    n_regions: np.ndarray  # int64
    null_sums: np.ndarray  # int64 C x P x K
    null_counts: np.ndarray  # int32 C x P x K
    boot_sums: np.ndarray  # int64 C x B x K
    boot_counts: np.ndarray  # int32 C x B x K
    boot_n_regions: np.ndarray  # int64 B x K
    # An upper bound of every |sum| above (None: unknown, recomputed on demand). While it stays
    # clear of 2**62, an add needs no elementwise overflow check (see UnitScoreAccumulator.add).
    bound: float | None = 0.0

    def abs_bound(self) -> float:
        if self.bound is None:
            # max(max, -min): no |a| temporary (sums stay below 2**62, so -min cannot overflow)
            self.bound = float(max((float(max(a.max(), -a.min())) if a.size else 0.0)
                                   for a in (self.sums, self.null_sums, self.boot_sums)))
        return self.bound

    @classmethod
    def empty(cls, n_units: int, k: int, n_null: int, n_boot: int) -> "_Layer":
        return cls(np.zeros((n_units, k), np.int64), np.zeros((n_units, k), np.int64), np.zeros(k, np.int64),
                   np.zeros((n_units, n_null, k), np.int64), np.zeros((n_units, n_null, k), np.int32),
                   bootstrap_array(n_units, n_boot, k, np.int64), bootstrap_array(n_units, n_boot, k, np.int32),
                   np.zeros((n_boot, k), np.int64))

    def arrays(self) -> dict:
        return {key: getattr(self, key) for key in _LAYER_KEYS}

    def set(self, key: str, a: np.ndarray) -> None:
        """Store a copy of ``a`` as ``key`` (the bootstrap arrays in their memory layout)."""
        if key in _BOOT_KEYS:
            setattr(self, key, bootstrap_array(*a.shape, a.dtype, values=a))
        else:
            setattr(self, key, a.copy())

    def grow(self, n_categories: int) -> None:
        extra = n_categories - self.n_regions.size
        if extra > 0:
            for key in _LAYER_KEYS:
                a = getattr(self, key)
                if key in _BOOT_KEYS:
                    grown = bootstrap_array(a.shape[0], a.shape[1], n_categories, a.dtype)
                    grown[..., :a.shape[2]] = a
                    setattr(self, key, grown)
                else:
                    setattr(self, key, np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, extra)]))


_LAYER_KEYS = ("sums", "counts", "n_regions", "null_sums", "null_counts", "boot_sums", "boot_counts",
               "boot_n_regions")
_LAYER_DTYPES = {"null_counts": np.int32, "boot_counts": np.int32}
_BOOT_KEYS = ("boot_sums", "boot_counts")  # C x B x K views of C x K x B memory (bootstrap_array)


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` to ``path`` (``.npz``) atomically and durably: a temporary file in the same
    folder, flushed to disk, then renamed onto ``path``, so an interrupted save leaves any previous
    file intact. Returns ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class UnitScoreAccumulator:
    """Sum and count of per-unit scores, per layer and category, over a stream of images.

    Args:
        categories: category order of the tables. When given, it is fixed: a region of any
            other category raises ``ValueError``. When ``None``, categories are added in the
            order first seen. Names are stored as ``str``.
        n_null: permutations ``P`` of the null kept per unit (0 = no null).
        n_bootstrap: bootstrap replicates ``B`` (0 = none).
        seed: seed of the bootstrap weights (:func:`bootstrap_weights`); the null's permutations
            are drawn by the caller from the same seed (:func:`null_permutation`).
    """

    def __init__(self, categories: Sequence[str] | None = None, *, n_null: int = 0, n_bootstrap: int = 0,
                 seed: int = 0) -> None:
        for name, value in (("n_null", n_null), ("n_bootstrap", n_bootstrap)):
            if isinstance(value, bool) or int(value) != value or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        self._fixed = categories is not None
        self._categories: list[str] = []
        self._index: dict[str, int] = {}
        self._layers: dict[str, _Layer] = {}
        self.n_null, self.n_bootstrap, self.seed = int(n_null), int(n_bootstrap), int(seed)
        self._ceiling_sums = np.zeros(0, np.int64)
        self._ceiling_counts = np.zeros(0, np.int64)
        for cat in categories or []:
            cat = str(cat)
            if cat in self._index:
                raise ValueError(f"categories lists {cat!r} twice; give each category once")
            self._index[cat] = len(self._categories)
            self._categories.append(cat)
        self._grow_ceiling()

    def _grow_ceiling(self) -> None:
        extra = len(self._categories) - self._ceiling_sums.size
        if extra > 0:
            self._ceiling_sums = np.pad(self._ceiling_sums, (0, extra))
            self._ceiling_counts = np.pad(self._ceiling_counts, (0, extra))

    # ------------------------------------------------------------------ properties

    @property
    def categories(self) -> list[str]:
        """Categories in table order."""
        return list(self._categories)

    @property
    def layers(self) -> list[str]:
        """Layers in first-added order."""
        return list(self._layers)

    def n_units(self, layer: str) -> int:
        """Number of units ``C`` of ``layer``."""
        if layer not in self._layers:
            raise ValueError(f"unknown layer {layer!r}; known layers: {self.layers}")
        return int(self._layers[layer].sums.shape[0])

    def __repr__(self) -> str:
        units = {name: int(st.sums.shape[0]) for name, st in self._layers.items()}
        return (f"UnitScoreAccumulator(layers={units}, categories={self._categories}, n_null={self.n_null}, "
                f"n_bootstrap={self.n_bootstrap})")

    # ------------------------------------------------------------------ accumulation

    def _category_index(self, cat: str) -> int:
        if cat not in self._index:
            if self._fixed:
                raise ValueError(
                    f"category {cat!r} is not among the accumulator's categories {self._categories}; "
                    "add it to `categories` or drop those regions"
                )
            self._index[cat] = len(self._categories)
            self._categories.append(cat)
            for st in self._layers.values():
                st.grow(len(self._categories))
            self._grow_ceiling()
        return self._index[cat]

    def _new_categories(self, cats: Sequence[str]) -> tuple[list[str], dict[str, int]]:
        """Categories of ``cats`` not known yet (first-seen order) and the index they would give.

        Mutates nothing, so callers can validate a whole update before applying it.

        Raises:
            ValueError: a new category while the categories are fixed.
        """
        new = [c for c in dict.fromkeys(cats) if c not in self._index]
        if new and self._fixed:
            raise ValueError(
                f"category {new[0]!r} is not among the accumulator's categories {self._categories}; "
                "add it to `categories` or drop those regions"
            )
        index = dict(self._index)
        for c in new:
            index[c] = len(index)
        return new, index

    def _check_units(self, layer: str, n_units: int) -> None:
        st = self._layers.get(layer)
        if st is not None and st.sums.shape[0] != n_units:
            raise ValueError(
                f"layer {layer!r} had {st.sums.shape[0]} units in earlier scores but got {n_units}; "
                "a layer's unit count is fixed (did two layers share a name?)"
            )

    def _padded(self, layer: str, key: str, n_units: int, n_categories: int) -> np.ndarray:
        """Current ``key`` array of ``layer`` as it would be with ``n_categories`` columns (read only:
        the array itself when no column is missing, else a padded copy)."""
        st = self._layers.get(layer)
        if st is None:
            st = _Layer.empty(n_units, 0, self.n_null, self.n_bootstrap)
        a = getattr(st, key)
        if a.shape[-1] == n_categories:
            return a
        return np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, n_categories - a.shape[-1])])

    def _layer(self, layer: str, n_units: int) -> _Layer:
        st = self._layers.get(layer)
        if st is None:
            st = _Layer.empty(n_units, len(self._categories), self.n_null, self.n_bootstrap)
            self._layers[layer] = st
        elif st.sums.shape[0] != n_units:
            raise ValueError(
                f"layer {layer!r} had {st.sums.shape[0]} units in earlier scores but got {n_units}; "
                "a layer's unit count is fixed (did two layers share a name?)"
            )
        return st

    def add(self, layer: str, scores, categories: Sequence[str], *, image: int | None = None,
            null_scores=None, null_categories: Sequence[str] | None = None, null_replicates=None,
            null_sizes=None) -> None:
        """Add the ``C x R`` scores of one image's ``R`` regions for ``layer``.

        NaN entries (the unit was dead on that image) are not counted for that unit. Every
        region column counts toward its category's ``n_regions``: pass only scorable regions
        (non-empty masks, and fixated ones on datasets with fixations).

        Args:
            layer: layer name.
            scores: ``C x R`` array (numpy or torch) of per-unit region scores.
            categories: ``R`` category names, one per column.
            image: the image's GLOBAL index in the dataset (required with ``n_bootstrap > 0``:
                it seeds the image's bootstrap weights). Add each image once per layer.
            null_scores: ``C x E`` scores of this image's maps on the regions of the images it is
                paired with by the null's permutations (``n_null > 0``). A column may hold the
                SUM of the scores of ``null_sizes[e]`` regions of one category and permutation
                (:class:`probes.regions.RegionScorer`'s group columns); NaN = dead unit.
            null_categories: ``E`` categories of those columns.
            null_replicates: ``E`` permutation indices in ``[0, n_null)``.
            null_sizes: ``E`` numbers of regions summed in each column (default: 1 each).

        Raises:
            ValueError: scores not 2-D, a length mismatch, a unit count different from this
                layer's earlier adds, infinite scores, ``|score| > 2**20``, an unknown category
                with fixed categories, a sum leaving the fixed-point range, a missing ``image``
                with a bootstrap, null columns without a null.
        """
        if not isinstance(layer, str) or not layer:
            raise ValueError(f"layer must be a non-empty string, got {layer!r}")
        fixed, valid, top = to_fixed_point(scores, layer)
        n_units, n_cols = fixed.shape
        cats = [str(c) for c in categories]
        if len(cats) != n_cols:
            raise ValueError(f"scores have {n_cols} region columns but {len(cats)} categories were given")
        if self.n_bootstrap and (image is None or isinstance(image, bool) or int(image) != image or image < 0):
            raise ValueError(f"image must be the image's global index (an integer >= 0) with a bootstrap, got {image!r}")
        null = None
        if null_scores is not None:
            if not self.n_null:
                raise ValueError("null_scores given but the accumulator keeps no null (n_null=0)")
            null, ntop = null_columns(null_scores, null_categories, null_replicates, null_sizes, layer, n_units,
                                      self.n_null)
        # A scalar bound of what this add can put into any one sum: when the layer's running bound
        # plus it stays below 2**62, no sum can overflow and the elementwise checks are skipped.
        w = bootstrap_weights(self.seed, int(image), self.n_bootstrap) if self.n_bootstrap and n_cols else None
        increment = (top + 2.0 ** -33) * SCALE * n_cols * (max(1, int(w.max())) if w is not None and w.size else 1)
        if null is not None:
            increment += (ntop + 2.0 ** -33) * SCALE * null[0].shape[1]
        current = self._layers.get(layer)
        check = (current.abs_bound() if current is not None else 0.0) + increment >= SUM_LIMIT / 2
        # Validate everything before changing anything: a failed add leaves self untouched.
        new, index = self._new_categories(cats + (null[2] if null else []))
        self._check_units(layer, n_units)
        k = len(index)
        kidx = np.array([index[c] for c in cats], dtype=np.int64)
        updates = []  # (key, index expression, increment)
        if n_cols:
            present, sums = group_sums(fixed, kidx, k)
            _, counts = group_sums(valid.astype(np.int64), kidx, k)
            n_reg = np.bincount(kidx, minlength=k)[present]
            if check:
                check_sums(self._padded(layer, "sums", n_units, k)[:, present], np.abs(sums).astype(np.float64),
                           layer)
            updates += [("sums", (slice(None), present), sums), ("counts", (slice(None), present), counts),
                        ("n_regions", (present,), n_reg)]
            if self.n_bootstrap:
                boot_now = self._padded(layer, "boot_sums", n_units, k) if check else None
                updates += bootstrap_updates(sums, counts, n_reg, present, w, boot_now, layer)
        if null is not None and null[0].shape[1]:
            null_now = self._padded(layer, "null_sums", n_units, k) if check else None
            updates += null_updates(null, index, k, self.n_null, null_now, layer)
        for c in new:
            self._category_index(c)
        st = self._layer(layer, n_units)
        for key, at, inc in updates:
            add_into(getattr(st, key), at, inc)
        st.bound = None if check else st.abs_bound() + increment  # None: recomputed exactly next time

    def add_ceiling(self, values, categories: Sequence[str]) -> None:
        """Add per-region human-ceiling values (e.g. leave-one-subject-out region NSS), NaN = none.

        Args:
            values: ``R`` floats, one per region (NaN where the region has no value).
            categories: ``R`` category names.

        Raises:
            ValueError: a length mismatch, infinite or too large values, an unknown category.
        """
        fixed, valid, _ = to_fixed_point(np.asarray(values, dtype=np.float64).reshape(1, -1), "ceiling", "values")
        cats = [str(c) for c in categories]
        if len(cats) != fixed.shape[1]:
            raise ValueError(f"{fixed.shape[1]} ceiling values but {len(cats)} categories")
        new, index = self._new_categories(cats)
        kidx = np.array([index[c] for c in cats], dtype=np.int64)
        for c in new:
            self._category_index(c)
        if kidx.size:
            np.add.at(self._ceiling_sums, kidx, fixed[0])
            np.add.at(self._ceiling_counts, kidx, valid[0].astype(np.int64))

    def _check_compatible(self, other: "UnitScoreAccumulator") -> None:
        mine = (self.n_null, self.n_bootstrap, self.seed)
        theirs = (other.n_null, other.n_bootstrap, other.seed)
        if mine != theirs:
            raise ValueError(
                f"cannot merge: (n_null, n_bootstrap, seed) = {mine} here but {theirs} in the other accumulator; "
                "shards must be run with the same --null, --bootstrap and --seed"
            )

    def merge(self, other: "UnitScoreAccumulator") -> "UnitScoreAccumulator":
        """Add ``other``'s sums and counts (null, bootstrap and ceiling included) into this one, in place.

        Integer sums make the result bit-identical to a single pass over both streams, in any
        merge order. New layers and (unless categories are fixed) new categories are appended
        in ``other``'s order.

        Returns:
            ``self``.

        Raises:
            ValueError: ``other`` is not an accumulator, a layer's unit count differs, ``other``
                has a category outside this accumulator's fixed categories, different null /
                bootstrap settings or seed, or a sum overflows.
        """
        if not isinstance(other, UnitScoreAccumulator):
            raise ValueError(f"can only merge another UnitScoreAccumulator, got {type(other).__name__}")
        self._check_compatible(other)
        # Snapshot a.merge(a) first, so that it doubles; another accumulator is only read (a
        # failed merge still leaves self untouched: everything is checked before any change).
        incoming = [(name, {key: a.copy() if other is self else a for key, a in st.arrays().items()})
                    for name, st in other._layers.items()]
        bounds = {name: st.abs_bound() for name, st in other._layers.items()}
        ceiling = (other._ceiling_sums.copy(), other._ceiling_counts.copy())
        other_cats = list(other._categories)
        if self._fixed:
            unknown = [c for c in other_cats if c not in self._index]
            if unknown:
                raise ValueError(
                    f"cannot merge: categories {unknown} are not among this accumulator's fixed "
                    f"categories {self._categories}"
                )
        for name, arrays in incoming:
            if name in self._layers and self._layers[name].sums.shape[0] != arrays["sums"].shape[0]:
                raise ValueError(
                    f"cannot merge layer {name!r}: {self._layers[name].sums.shape[0]} units here, "
                    f"{arrays['sums'].shape[0]} in the other accumulator"
                )
        # Validate the sums on the would-be category layout before registering any category.
        new, index = self._new_categories(other_cats)
        cols = np.array([index[c] for c in other_cats], dtype=np.int64)
        for name, arrays in incoming:
            # Elementwise only when the two bounds together could reach the limit (as in add).
            if name in self._layers and self._layers[name].abs_bound() + bounds[name] >= SUM_LIMIT / 2:
                for key in ("sums", "null_sums", "boot_sums"):
                    current = self._padded(name, key, arrays["sums"].shape[0], len(index))[..., cols]
                    check_sums(current, np.abs(arrays[key]).astype(np.float64), name)
        for c in new:
            self._category_index(c)
        at = as_slice(cols) if cols.size and np.all(np.diff(cols) > 0) else cols  # in place, no copies
        for name, arrays in incoming:
            known = self._layers[name].bound if name in self._layers else 0.0
            st = self._layer(name, arrays["sums"].shape[0])
            st.grow(len(self._categories))
            for key, a in arrays.items():
                getattr(st, key)[..., at] += a
            st.bound = None if known is None else known + bounds[name]  # |a + b| <= |a| + |b|
        self._ceiling_sums[cols] += ceiling[0]
        self._ceiling_counts[cols] += ceiling[1]
        return self

    # ------------------------------------------------------------------ tables

    def _unit_stats(self, st: _Layer, dead_units: str, min_valid: float) -> dict:
        """Scores, ranked mask, per-unit p and q values of one layer (``C x K`` each)."""
        scores, ranked = means_and_ranked(st.sums, st.counts, st.n_regions[None, :], dead_units, min_valid)
        p_values = np.full(scores.shape, np.nan)
        q_values = np.full(scores.shape, np.nan)
        null_scores = null_ranked = None
        if self.n_null:
            null_scores, null_ranked, p_values, q_values = null_unit_stats(
                scores, ranked, st.null_sums, st.null_counts, st.n_regions, dead_units, min_valid)
        return {"scores": scores, "ranked": ranked, "p": p_values, "q": q_values,
                "null_scores": null_scores, "null_ranked": null_ranked}

    def unit_table(self, dead_units: str = "skip", min_valid: float = 0.0) -> pd.DataFrame:
        """One row per layer x unit x category.

        Columns: ``layer, unit, category, score, n_regions, dead, n_valid, ranked, p_value,
        q_value``. ``score`` = the unit's mean under ``dead_units`` (:mod:`probes.unit_scores`: over
        the ``n_valid`` live regions with ``"skip"``, over all ``n_regions`` with ``"zero"``);
        NaN when undefined. ``dead`` = never live on a region of the category. ``ranked``: the
        unit enters rankings (:mod:`probes.unit_scores`, ``min_valid``). ``p_value``/``q_value``:
        permutation p-value and Benjamini-Hochberg q-value (NaN without a null or when not
        ranked). Order: layers first-added, units ascending, categories in table order.

        Raises:
            ValueError: an unknown ``dead_units`` or ``min_valid`` outside ``[0, 1]``.
        """
        min_valid = check_dead_unit_policy(dead_units, min_valid)
        frames = []
        k = len(self._categories)
        for name, st in self._layers.items():
            n_units = st.sums.shape[0]
            stats = self._unit_stats(st, dead_units, min_valid)
            frames.append(pd.DataFrame({
                "layer": np.full(n_units * k, name, dtype=object),
                "unit": np.repeat(np.arange(n_units, dtype=np.int64), k),
                "category": np.tile(np.array(self._categories, dtype=object), n_units),
                "score": stats["scores"].reshape(-1),
                "n_regions": np.tile(st.n_regions, n_units),
                "dead": (st.counts == 0).reshape(-1),
                "n_valid": st.counts.reshape(-1),
                "ranked": stats["ranked"].reshape(-1),
                "p_value": stats["p"].reshape(-1),
                "q_value": stats["q"].reshape(-1),
            }))
        if not frames:
            return pd.DataFrame({"layer": pd.Series(dtype=object), "unit": pd.Series(dtype=np.int64),
                                 "category": pd.Series(dtype=object), "score": pd.Series(dtype=np.float64),
                                 "n_regions": pd.Series(dtype=np.int64), "dead": pd.Series(dtype=bool),
                                 "n_valid": pd.Series(dtype=np.int64), "ranked": pd.Series(dtype=bool),
                                 "p_value": pd.Series(dtype=np.float64), "q_value": pd.Series(dtype=np.float64)})
        return pd.concat(frames, ignore_index=True)

    def summary(self, top_k: int = 10, threshold: float = 1.5, dead_units: str = "skip", min_valid: float = 0.0,
                alpha: float = 0.05) -> pd.DataFrame:
        """Per layer and category: top-k mean and count above threshold (He et al. 2019, Tables 2, 3, 7),
        with the permutation null, bootstrap intervals (:mod:`probes.null_bootstrap`) and the human ceiling
        (module docstring).

        Only ranked units enter: ``top_k_mean`` = mean of the ``top_k`` largest ranked unit
        scores (ties do not matter for a mean; with fewer than ``top_k`` ranked units, the mean
        of all of them; NaN with none); ``count_above_threshold`` = ranked units with score
        strictly ``> threshold``.

        Args:
            top_k: number of best units averaged (He et al.: 10), >= 1.
            threshold: score threshold (He et al.: 1.5).
            dead_units, min_valid: the dead-unit policy (:mod:`probes.unit_scores`).
            alpha: FDR level of ``count_significant``.

        Returns:
            DataFrame with columns ``layer, category, top_k_mean, count_above_threshold,
            n_units, n_dead, n_regions, n_ranked, null_top_k_mean, null_top_k_p95, p_top_k,
            count_significant, top_k_mean_lo, top_k_mean_hi, count_lo, count_hi,
            human_region_nss`` (null columns NaN without a null, interval columns NaN without a
            bootstrap), layers first-added, categories in table order.

        Raises:
            ValueError: ``top_k < 1``, a non-finite threshold, a bad policy.
        """
        if isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        top_k = int(top_k)
        threshold = float(threshold)
        if not np.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold}")
        min_valid = check_dead_unit_policy(dead_units, min_valid)
        with np.errstate(divide="ignore", invalid="ignore"):
            ceiling = self._ceiling_sums.astype(np.float64) / SCALE / self._ceiling_counts
        ceiling[self._ceiling_counts == 0] = np.nan
        nan = float("nan")
        rows = []
        for name, st in self._layers.items():
            stats = self._unit_stats(st, dead_units, min_valid)
            scores, ranked = stats["scores"], stats["ranked"]
            observed = top_k_means(scores, ranked, top_k)
            if self.n_null:
                null_cols = null_top_k_columns(stats["null_scores"], stats["null_ranked"], stats["q"], observed,
                                               top_k, alpha)
            if self.n_bootstrap:
                boot_cols = bootstrap_columns(st.boot_sums, st.boot_counts, st.boot_n_regions, top_k, threshold,
                                              dead_units, min_valid)
            for j, cat in enumerate(self._categories):
                live = ranked[:, j]
                row = {
                    "layer": name,
                    "category": cat,
                    "top_k_mean": float(observed[j]),
                    "count_above_threshold": int(np.count_nonzero(live & (scores[:, j] > threshold))),
                    "n_units": int(st.sums.shape[0]),
                    "n_dead": int(np.count_nonzero(st.counts[:, j] == 0)),
                    "n_regions": int(st.n_regions[j]),
                    "n_ranked": int(np.count_nonzero(live)),
                    "null_top_k_mean": nan, "null_top_k_p95": nan, "p_top_k": nan, "count_significant": nan,
                    "top_k_mean_lo": nan, "top_k_mean_hi": nan, "count_lo": nan, "count_hi": nan,
                    "human_region_nss": float(ceiling[j]),
                }
                if self.n_null:
                    row.update(null_cols[j])
                if self.n_bootstrap:
                    row.update(boot_cols[j])
                rows.append(row)
        columns = ["layer", "category", "top_k_mean", "count_above_threshold", "n_units", "n_dead", "n_regions",
                   "n_ranked", "null_top_k_mean", "null_top_k_p95", "p_top_k", "count_significant",
                   "top_k_mean_lo", "top_k_mean_hi", "count_lo", "count_hi", "human_region_nss"]
        return pd.DataFrame(rows, columns=columns)

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict:
        """Plain state: lists of names and int arrays (``.tolist()`` them for JSON).

        Keys: ``format, version, scale_bits, categories, categories_fixed, n_null, n_bootstrap,
        seed, layers, ceiling_sums, ceiling_counts`` and, one array per layer in ``layers``
        order, ``sums, counts, n_regions, null_sums, null_counts, boot_sums, boot_counts,
        boot_n_regions``. A generic merger adds every array of two states elementwise.
        """
        return self._state(copy=True)

    def _state(self, copy: bool) -> dict:
        """:meth:`state_dict`; with ``copy=False`` the arrays are the live ones (read them, never
        keep them: :meth:`save` writes them out without a ~90 MB copy per checkpoint)."""
        take = np.copy if copy else (lambda a: a)
        state = {
            "format": _FORMAT,
            "version": _VERSION,
            "scale_bits": SCALE_BITS,
            "categories": list(self._categories),
            "categories_fixed": bool(self._fixed),
            "n_null": self.n_null,
            "n_bootstrap": self.n_bootstrap,
            "seed": self.seed,
            "layers": list(self._layers),
            "ceiling_sums": take(self._ceiling_sums),
            "ceiling_counts": take(self._ceiling_counts),
        }
        for key in _LAYER_KEYS:
            state[key] = [take(getattr(st, key)) for st in self._layers.values()]
        return state

    @classmethod
    def from_state_dict(cls, state: dict) -> "UnitScoreAccumulator":
        """Rebuild an accumulator from :meth:`state_dict` output (arrays or nested lists).

        Version-1 states (before the null and the bootstrap) load with neither.

        Raises:
            ValueError: not an accumulator state, another version or scale, inconsistent shapes.
        """
        try:
            fmt, version, bits = str(state["format"]), int(state["version"]), int(state["scale_bits"])
            cats = [str(c) for c in state["categories"]]
            layers = [str(x) for x in state["layers"]]
            fixed = bool(state["categories_fixed"])
            n_null, n_boot, seed = (int(state.get(key, 0)) for key in ("n_null", "n_bootstrap", "seed"))
            present = [key for key in _LAYER_KEYS if key in state]
            arrays = {key: [np.asarray(a, dtype=_LAYER_DTYPES.get(key, np.int64)) for a in state[key]]
                      for key in present}
            ceiling = [np.asarray(state[key], dtype=np.int64).reshape(-1) if key in state else None
                       for key in ("ceiling_sums", "ceiling_counts")]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a UnitScoreAccumulator state ({err!r}); was it written by save()?") from None
        if fmt != _FORMAT or version not in (1, _VERSION) or bits != SCALE_BITS:
            raise ValueError(
                f"state is {fmt!r} version {version} with 2**-{bits} fixed point; this code reads "
                f"{_FORMAT!r} version {_VERSION} with 2**-{SCALE_BITS}"
            )
        needed = _LAYER_KEYS if version == _VERSION else _LAYER_KEYS[:3]
        if any(key not in arrays for key in needed):
            raise ValueError(f"not a UnitScoreAccumulator state (missing {[k for k in needed if k not in arrays]})")
        acc = cls(categories=cats if fixed else None, n_null=n_null, n_bootstrap=n_boot, seed=seed)
        if not fixed:
            for cat in cats:
                acc._category_index(cat)
        k = len(cats)
        if not all(len(arrays[key]) == len(layers) for key in needed):
            raise ValueError("inconsistent state: one array per layer is needed for each of " + ", ".join(needed))
        for i, name in enumerate(layers):
            sums = arrays["sums"][i]
            if sums.ndim != 2 or sums.shape[1] != k:
                raise ValueError(f"inconsistent state for layer {name!r}: sums of shape {sums.shape} with {k} categories")
            st = _Layer.empty(sums.shape[0], k, n_null, n_boot)
            for key in needed:
                a = arrays[key][i]
                if a.size == 0 and getattr(st, key).size == 0:  # JSON loses the shape of empty arrays
                    a = a.reshape(getattr(st, key).shape)
                if a.shape != getattr(st, key).shape:
                    raise ValueError(f"inconsistent state for layer {name!r}: {key} has shape {a.shape}, "
                                     f"expected {getattr(st, key).shape}")
                st.set(key, a)
            st.bound = None
            acc._layers[name] = st
        for attr, value in zip(("_ceiling_sums", "_ceiling_counts"), ceiling):
            if value is not None:
                if value.shape != (k,):
                    raise ValueError(f"inconsistent state: {attr[1:]} has shape {value.shape}, expected ({k},)")
                setattr(acc, attr, value.copy())
        return acc

    def save(self, path: str | os.PathLike) -> Path:
        """Write the state to an ``.npz`` file atomically (temporary file in the same folder, then ``os.replace``).

        An interrupted save leaves any previous file at ``path`` intact. The file is written at
        exactly ``path`` (no ``.npz`` suffix is appended).

        Returns:
            the path written.

        Raises:
            FileNotFoundError: the folder does not exist.
        """
        path = Path(path)
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            raise FileNotFoundError(f"folder {folder} does not exist; create it before saving {path.name}")
        state = self._state(copy=False)
        arrays = {
            "format": np.array(state["format"]),
            "version": np.array(state["version"], dtype=np.int64),
            "scale_bits": np.array(state["scale_bits"], dtype=np.int64),
            "categories": np.array(state["categories"], dtype=str).reshape(-1),
            "categories_fixed": np.array(state["categories_fixed"]),
            "layers": np.array(state["layers"], dtype=str).reshape(-1),
            **{key: np.array(state[key], dtype=np.int64) for key in ("n_null", "n_bootstrap", "seed")},
            "ceiling_sums": state["ceiling_sums"],
            "ceiling_counts": state["ceiling_counts"],
        }
        for i in range(len(state["layers"])):
            for key in _LAYER_KEYS:
                arrays[f"{key}_{i}"] = state[key][i]
        return write_npz(path, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "UnitScoreAccumulator":
        """Read a state written by :meth:`save`.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: the file is not an accumulator state.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no accumulator state at {path}; check the checkpoint folder")
        try:
            with np.load(path, allow_pickle=False) as data:
                files = dict(data.items())
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"{path} is not a readable .npz accumulator state ({err})") from None
        try:
            n_layers = int(files["layers"].size)
            state = {
                "format": str(files["format"]),
                "version": int(files["version"]),
                "scale_bits": int(files["scale_bits"]),
                "categories": [str(c) for c in files["categories"]],
                "categories_fixed": bool(files["categories_fixed"]),
                "layers": [str(x) for x in files["layers"]],
            }
            for key in ("n_null", "n_bootstrap", "seed", "ceiling_sums", "ceiling_counts"):
                if key in files:
                    state[key] = files[key]
            for key in _LAYER_KEYS:
                if f"{key}_0" in files or (n_layers == 0 and key in _LAYER_KEYS[:3]):
                    state[key] = [files[f"{key}_{i}"] for i in range(n_layers)]
            if n_layers == 0 and state["version"] == _VERSION:
                for key in _LAYER_KEYS:
                    state[key] = []
        except KeyError as err:
            raise ValueError(f"{path} is not an accumulator state (missing {err}); was it written by save()?") from None
        return cls.from_state_dict(state)
