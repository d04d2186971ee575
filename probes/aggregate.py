"""Streaming per-unit, per-category score aggregation with exact, order-free merging.

He et al. 2019 (sec. 4, Tables 2, 3, 7) score unit ``j`` of a layer for category ``c`` by the
mean of its region-wise NSS (eq. 1) over all regions of category ``c`` in a dataset, then report
per layer and category the mean of the ``k = 10`` largest unit scores and the number of units
scoring above ``T = 1.5`` (digest section 3; reference-implementations A.8).

:class:`UnitScoreAccumulator` keeps, per layer, unit and category, the sum of the scores and the
number of valid (non-NaN) scores, never the activations.

Exactness (we fix): sums are stored as int64 fixed-point numbers in units of ``2**-32``. Each
score is rounded to the nearest multiple of ``2**-32`` before it is added (error <= ``2**-33``
~ 1.2e-10 per score and per mean, far below the 1e-5 agreement we promise), so adding and
merging are integer additions: shards merged in any order, a resumed run and a single pass give
bit-identical tables. Scores must satisfy ``|score| <= 2**20`` (a region NSS is bounded by
``sqrt(H W)``, a few hundred for 800 x 600 images); larger values raise ``ValueError``, and so
does a sum that would reach ``2**62`` in magnitude (``2**30`` in score units, well inside int64:
the guard is checked in float64 before adding, so sums never wrap). A failed ``add`` or
``merge`` leaves the accumulator untouched: everything is validated before anything changes.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["SCALE_BITS", "MAX_ABS_SCORE", "UnitScoreAccumulator"]

SCALE_BITS = 32
MAX_ABS_SCORE = 2.0 ** 20
_SCALE = 2.0 ** SCALE_BITS
_SUM_LIMIT = 2.0 ** 62  # guard well inside int64 (2**63 - 1)
_FORMAT = "saliency-dissect/UnitScoreAccumulator"
_VERSION = 1


@dataclass
class _Layer:
    """Per-layer state: ``C x K`` fixed-point sums and valid counts, ``K`` region counts."""

    sums: np.ndarray  # int64, units of 2**-32
    counts: np.ndarray  # int64
    n_regions: np.ndarray  # int64

    def grow(self, n_categories: int) -> None:
        extra = n_categories - self.n_regions.size
        if extra > 0:
            self.sums = np.pad(self.sums, ((0, 0), (0, extra)))
            self.counts = np.pad(self.counts, ((0, 0), (0, extra)))
            self.n_regions = np.pad(self.n_regions, (0, extra))


def _check_sums(sums: np.ndarray, increment_bound: np.ndarray, layer: str) -> None:
    """Refuse an addition after which some ``|sum|`` could reach ``2**62`` (bound in float64).

    Sums and bounds are multiples of ``2**-32`` below ``2**63``, so the float64 test is exact
    where it matters (at the powers of two around the limit).
    """
    if sums.size and np.any(np.abs(sums).astype(np.float64) + increment_bound >= _SUM_LIMIT):
        raise ValueError(
            f"layer {layer!r}: accumulated score sums would exceed the fixed-point range "
            f"(2**{62 - SCALE_BITS} in score units); split the dataset into shards and report them separately"
        )


class UnitScoreAccumulator:
    """Sum and count of per-unit scores, per layer and category, over a stream of images.

    Args:
        categories: category order of the tables. When given, it is fixed: a region of any
            other category raises ``ValueError``. When ``None``, categories are added in the
            order first seen. Names are stored as ``str``.
    """

    def __init__(self, categories: Sequence[str] | None = None) -> None:
        self._fixed = categories is not None
        self._categories: list[str] = []
        self._index: dict[str, int] = {}
        self._layers: dict[str, _Layer] = {}
        for cat in categories or []:
            cat = str(cat)
            if cat in self._index:
                raise ValueError(f"categories lists {cat!r} twice; give each category once")
            self._index[cat] = len(self._categories)
            self._categories.append(cat)

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
        return f"UnitScoreAccumulator(layers={units}, categories={self._categories})"

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

    def _padded_sums(self, layer: str, n_units: int, n_categories: int) -> np.ndarray:
        """Current sums of ``layer`` as they would be with ``n_categories`` columns (a copy)."""
        st = self._layers.get(layer)
        sums = st.sums if st is not None else np.zeros((n_units, 0), np.int64)
        return np.pad(sums, ((0, 0), (0, n_categories - sums.shape[1])))

    def _layer(self, layer: str, n_units: int) -> _Layer:
        st = self._layers.get(layer)
        if st is None:
            k = len(self._categories)
            st = _Layer(np.zeros((n_units, k), np.int64), np.zeros((n_units, k), np.int64),
                        np.zeros(k, np.int64))
            self._layers[layer] = st
        elif st.sums.shape[0] != n_units:
            raise ValueError(
                f"layer {layer!r} had {st.sums.shape[0]} units in earlier scores but got {n_units}; "
                "a layer's unit count is fixed (did two layers share a name?)"
            )
        return st

    def add(self, layer: str, scores, categories: Sequence[str]) -> None:
        """Add the ``C x R`` scores of one image's ``R`` regions for ``layer``.

        NaN entries (the unit was dead on that image) are not counted for that unit. Every
        region column counts toward its category's ``n_regions``: pass only scorable regions
        (non-empty masks, and fixated ones on datasets with fixations).

        Args:
            layer: layer name.
            scores: ``C x R`` array (numpy or torch) of per-unit region scores.
            categories: ``R`` category names, one per column.

        Raises:
            ValueError: scores not 2-D, a length mismatch, a unit count different from this
                layer's earlier adds, infinite scores, ``|score| > 2**20``, an unknown category
                with fixed categories, or a sum leaving the fixed-point range.
        """
        if not isinstance(layer, str) or not layer:
            raise ValueError(f"layer must be a non-empty string, got {layer!r}")
        if hasattr(scores, "detach"):  # torch tensor
            scores = scores.detach().cpu().numpy()
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 2:
            raise ValueError(f"scores must be C x R (units x regions), got shape {scores.shape}")
        n_units, n_cols = scores.shape
        cats = [str(c) for c in categories]
        if len(cats) != n_cols:
            raise ValueError(f"scores have {n_cols} region columns but {len(cats)} categories were given")
        if np.isinf(scores).any():
            raise ValueError(f"layer {layer!r}: scores contain inf; a score is a finite number or NaN (dead unit)")
        valid = ~np.isnan(scores)
        values = np.where(valid, scores, 0.0)
        if values.size and np.abs(values).max() > MAX_ABS_SCORE:
            raise ValueError(
                f"layer {layer!r}: |score| {np.abs(values).max():.6g} exceeds {MAX_ABS_SCORE:.0f} (2**20), the "
                "fixed-point range; such a score signals a broken map, not a real NSS"
            )
        # Validate everything before changing anything: a failed add leaves self untouched.
        new, index = self._new_categories(cats)
        self._check_units(layer, n_units)
        k = len(index)
        kidx = np.array([index[c] for c in cats], dtype=np.int64)
        onehot = np.zeros((n_cols, k), dtype=np.int64)
        onehot[np.arange(n_cols), kidx] = 1
        # Scaling by a power of two is exact; rint rounds half to even, deterministically.
        fixed = np.rint(values * _SCALE).astype(np.int64)
        if n_cols:
            _check_sums(self._padded_sums(layer, n_units, k), np.abs(fixed).astype(np.float64) @ onehot, layer)
        for c in new:
            self._category_index(c)
        st = self._layer(layer, n_units)
        if n_cols == 0:
            return
        st.sums += fixed @ onehot
        st.counts += valid.astype(np.int64) @ onehot
        st.n_regions += onehot.sum(axis=0)

    def merge(self, other: "UnitScoreAccumulator") -> "UnitScoreAccumulator":
        """Add ``other``'s sums and counts into this accumulator, in place.

        Integer sums make the result bit-identical to a single pass over both streams, in any
        merge order. New layers and (unless categories are fixed) new categories are appended
        in ``other``'s order.

        Returns:
            ``self``.

        Raises:
            ValueError: ``other`` is not an accumulator, a layer's unit count differs, ``other``
                has a category outside this accumulator's fixed categories, or a sum overflows.
        """
        if not isinstance(other, UnitScoreAccumulator):
            raise ValueError(f"can only merge another UnitScoreAccumulator, got {type(other).__name__}")
        # Snapshot first, so that a.merge(a) doubles and a failed merge leaves self untouched.
        incoming = [(name, st.sums.copy(), st.counts.copy(), st.n_regions.copy())
                    for name, st in other._layers.items()]
        other_cats = list(other._categories)
        if self._fixed:
            unknown = [c for c in other_cats if c not in self._index]
            if unknown:
                raise ValueError(
                    f"cannot merge: categories {unknown} are not among this accumulator's fixed "
                    f"categories {self._categories}"
                )
        for name, sums, _, _ in incoming:
            if name in self._layers and self._layers[name].sums.shape[0] != sums.shape[0]:
                raise ValueError(
                    f"cannot merge layer {name!r}: {self._layers[name].sums.shape[0]} units here, "
                    f"{sums.shape[0]} in the other accumulator"
                )
        # Validate the sums on the would-be category layout before registering any category.
        new, index = self._new_categories(other_cats)
        cols = np.array([index[c] for c in other_cats], dtype=np.int64)
        for name, sums, _, _ in incoming:
            if name in self._layers:
                current = self._padded_sums(name, sums.shape[0], len(index))
                bound = np.zeros(current.shape, dtype=np.float64)
                bound[:, cols] = np.abs(sums).astype(np.float64)
                _check_sums(current, bound, name)
        for c in new:
            self._category_index(c)
        for name, sums, counts, n_regions in incoming:
            st = self._layer(name, sums.shape[0])
            st.grow(len(self._categories))
            st.sums[:, cols] += sums
            st.counts[:, cols] += counts
            st.n_regions[cols] += n_regions
        return self

    # ------------------------------------------------------------------ tables

    def _scores(self, st: _Layer) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            scores = st.sums.astype(np.float64) / _SCALE / st.counts
        scores[st.counts == 0] = np.nan
        return scores

    def unit_table(self) -> pd.DataFrame:
        """One row per layer x unit x category.

        Columns: ``layer, unit, category, score, n_regions, dead, n_valid``. ``score`` = mean
        of the unit's scores over the regions of the category where it was live (``n_valid`` of
        them, out of the category's ``n_regions``); NaN and ``dead=True`` when it never was
        (including categories with no region in this layer). Order: layers first-added, units
        ascending, categories in table order.
        """
        frames = []
        k = len(self._categories)
        for name, st in self._layers.items():
            n_units = st.sums.shape[0]
            frames.append(pd.DataFrame({
                "layer": np.full(n_units * k, name, dtype=object),
                "unit": np.repeat(np.arange(n_units, dtype=np.int64), k),
                "category": np.tile(np.array(self._categories, dtype=object), n_units),
                "score": self._scores(st).reshape(-1),
                "n_regions": np.tile(st.n_regions, n_units),
                "dead": (st.counts == 0).reshape(-1),
                "n_valid": st.counts.reshape(-1),
            }))
        if not frames:
            return pd.DataFrame({"layer": pd.Series(dtype=object), "unit": pd.Series(dtype=np.int64),
                                 "category": pd.Series(dtype=object), "score": pd.Series(dtype=np.float64),
                                 "n_regions": pd.Series(dtype=np.int64), "dead": pd.Series(dtype=bool),
                                 "n_valid": pd.Series(dtype=np.int64)})
        return pd.concat(frames, ignore_index=True)

    def summary(self, top_k: int = 10, threshold: float = 1.5) -> pd.DataFrame:
        """Per layer and category: top-k mean and count above threshold (He et al. 2019, Tables 2, 3, 7).

        Only live units (at least one valid score for the category) enter: ``top_k_mean`` = mean
        of the ``top_k`` largest live unit scores (ties do not matter for a mean; with fewer
        than ``top_k`` live units, the mean of all of them; NaN with none);
        ``count_above_threshold`` = live units with score strictly ``> threshold``.

        Args:
            top_k: number of best units averaged (He et al.: 10), >= 1.
            threshold: score threshold (He et al.: 1.5).

        Returns:
            DataFrame with columns ``layer, category, top_k_mean, count_above_threshold,
            n_units, n_dead, n_regions``, layers first-added, categories in table order.

        Raises:
            ValueError: ``top_k < 1`` or a non-finite threshold.
        """
        if isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        top_k = int(top_k)
        threshold = float(threshold)
        if not np.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold}")
        rows = []
        for name, st in self._layers.items():
            scores = self._scores(st)
            for j, cat in enumerate(self._categories):
                live = np.sort(scores[st.counts[:, j] > 0, j])[::-1]
                rows.append({
                    "layer": name,
                    "category": cat,
                    "top_k_mean": float(live[:top_k].mean()) if live.size else float("nan"),
                    "count_above_threshold": int(np.count_nonzero(live > threshold)),
                    "n_units": int(st.sums.shape[0]),
                    "n_dead": int(st.sums.shape[0] - live.size),
                    "n_regions": int(st.n_regions[j]),
                })
        columns = ["layer", "category", "top_k_mean", "count_above_threshold", "n_units", "n_dead", "n_regions"]
        return pd.DataFrame(rows, columns=columns)

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict:
        """Plain state: lists of names and int64 arrays (``.tolist()`` them for JSON).

        Keys: ``format, version, scale_bits, categories, categories_fixed, layers, sums, counts,
        n_regions`` (the last three: one array per layer, in ``layers`` order).
        """
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "scale_bits": SCALE_BITS,
            "categories": list(self._categories),
            "categories_fixed": bool(self._fixed),
            "layers": list(self._layers),
            "sums": [st.sums.copy() for st in self._layers.values()],
            "counts": [st.counts.copy() for st in self._layers.values()],
            "n_regions": [st.n_regions.copy() for st in self._layers.values()],
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "UnitScoreAccumulator":
        """Rebuild an accumulator from :meth:`state_dict` output (arrays or nested lists).

        Raises:
            ValueError: not an accumulator state, another version or scale, inconsistent shapes.
        """
        try:
            fmt, version, bits = str(state["format"]), int(state["version"]), int(state["scale_bits"])
            cats = [str(c) for c in state["categories"]]
            layers = [str(x) for x in state["layers"]]
            fixed = bool(state["categories_fixed"])
            arrays = [[np.asarray(a, dtype=np.int64) for a in state[key]] for key in ("sums", "counts", "n_regions")]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a UnitScoreAccumulator state ({err!r}); was it written by save()?") from None
        if fmt != _FORMAT or version != _VERSION or bits != SCALE_BITS:
            raise ValueError(
                f"state is {fmt!r} version {version} with 2**-{bits} fixed point; this code reads "
                f"{_FORMAT!r} version {_VERSION} with 2**-{SCALE_BITS}"
            )
        acc = cls(categories=cats if fixed else None)
        if not fixed:
            for cat in cats:
                acc._category_index(cat)
        k = len(cats)
        if not all(len(a) == len(layers) for a in arrays):
            raise ValueError("inconsistent state: one sums/counts/n_regions array per layer is needed")
        for name, sums, counts, n_regions in zip(layers, *arrays):
            if sums.ndim != 2 or sums.shape[1] != k or counts.shape != sums.shape or n_regions.shape != (k,):
                raise ValueError(f"inconsistent state for layer {name!r}: shapes {sums.shape}, "
                                 f"{counts.shape}, {n_regions.shape} with {k} categories")
            acc._layers[name] = _Layer(sums.copy(), counts.copy(), n_regions.copy())
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
        state = self.state_dict()
        arrays = {
            "format": np.array(state["format"]),
            "version": np.array(state["version"], dtype=np.int64),
            "scale_bits": np.array(state["scale_bits"], dtype=np.int64),
            "categories": np.array(state["categories"], dtype=str).reshape(-1),
            "categories_fixed": np.array(state["categories_fixed"]),
            "layers": np.array(state["layers"], dtype=str).reshape(-1),
        }
        for i in range(len(state["layers"])):
            for key in ("sums", "counts", "n_regions"):
                arrays[f"{key}_{i}"] = state[key][i]
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
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
                **{key: [files[f"{key}_{i}"] for i in range(n_layers)] for key in ("sums", "counts", "n_regions")},
            }
        except KeyError as err:
            raise ValueError(f"{path} is not an accumulator state (missing {err}); was it written by save()?") from None
        return cls.from_state_dict(state)
