"""Score saliency models' OUTPUT maps on a dataset (``python cli.py evaluate``).

Each model gives one map per image (:class:`dissect.studies.map_sources.MapSource`: a classical
model, a saliency network, or maps computed elsewhere). :func:`run_evaluation` scores every
model on every image:

* datasets with fixations: NSS, CC, KL, SIM, AUC-Judd, AUC-Borji, s-AUC and IG
  (:data:`probes.gaze.EVALUATION_METRICS`), with the conventions, floor and ceiling of
  ``cli.py attention`` (:mod:`probes.gaze`): the floor row ``center_bias`` (IG 0 by
  construction), the ceiling row ``human_loso`` (leave one subject out for the fixation metrics,
  split half for CC and SIM, NaN for KL); with region annotations also the output saliency
  ``OS_c`` and output difference ``OD_c`` per category (He et al. 2019, eq. 2, 3;
  :func:`probes.stats.region_output_scores`);
* pop-out arrays (samples whose ``meta`` has a ``dimension``): NMM under the target mask (He et
  al. eq. 4), the per-image ceiling ``sqrt((1 - p) / p)`` (row ``nmm_ceiling``) and the
  centre-bias floor; the mean per pop-out dimension.

Every map is scored at the image's own resolution: a map of another size is resized
bilinearly (half-pixel centres, as He et al.'s code did) and the resizing is recorded in
``info["maps_resized"]``.

Shard-safety: a per-image row depends only on that image, the seed, and the dataset's list of
fixation maps; the s-AUC negatives of image ``i`` are drawn with
``numpy.random.default_rng([seed, i])`` where ``i`` is the image's global position among the
dataset's images with fixations (:func:`datasets.fixations.other_images_fixations`), and the
AUC-Borji and s-AUC permutations use ``seed``. Nothing depends on batch composition or run
order; the study runs on :mod:`dissect.runner` (one image per batch), which shards, resumes
and merges it.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from datasets.base import Subset, first
from datasets.fixations import FixationMaps, center_bias_map, human_density, other_images_fixations, resize_map
from datasets.fixations import sample_fixation_map
from dissect.reports.evaluation import evaluation_console, write_evaluation_report
from dissect.runner import RecordState, Study, register, run_pass
from dissect.studies.identity import jsonable
from dissect.studies.map_sources import MapSource, check_unique
from probes import metrics
from probes.gaze import CEILING, EVALUATION_METRICS, FLOOR, center_bias_scores, gaze_scores, leave_one_subject_out

__all__ = ["POPOUT_CEILING", "EvaluationResult", "EvaluationStudy", "run_evaluation", "summarize"]

#: Model name of the per-image NMM ceiling rows on pop-out arrays.
POPOUT_CEILING = "nmm_ceiling"
_POPOUT_METRICS: tuple[str, ...] = ("nmm", "nmm_ratio")
_REFERENCE = (FLOOR, CEILING, POPOUT_CEILING)
_RESIZE_METHOD = "bilinear, half-pixel centres (align_corners=False)"


@dataclass
class EvaluationResult:
    """What :func:`run_evaluation` returns (the report writer turns it into files)."""

    per_image: pd.DataFrame
    summary: pd.DataFrame
    info: dict
    popout_dimensions: pd.DataFrame | None = None
    output_saliency: pd.DataFrame | None = None
    examples: dict = field(default_factory=dict)
    #: per-region scores behind ``output_saliency`` (one table for every image x model)
    regions: pd.DataFrame | None = None


def _is_grey(image: np.ndarray) -> bool:
    return bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())


def _save_map(folder: Path, name: str, image_id: str, m: np.ndarray) -> None:
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f".{image_id}.npy.tmp"
    with open(tmp, "wb") as fh:
        np.save(fh, m)
    tmp.replace(target / f"{image_id}.npy")


def _popout_row(m: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    value, ceiling = metrics.nmm(m, mask), metrics.nmm_ceiling(mask)
    return {"nmm": value, "nmm_ratio": value / ceiling if ceiling > 0 else math.nan}


@register
class EvaluationStudy(Study):
    """Every model's map on every scored image (module docstring; :func:`run_evaluation`)."""

    kind, desc = "evaluate", "evaluate"
    execution_keys = ()

    def __init__(self, dataset, sources: Sequence[MapSource], *, sigma: float = 24.0, n_other: int = 10,
                 seed: int = 0, ceiling: bool = True, max_images: int | None = None,
                 save_maps: str | Path | None = None, n_examples: int = 3, progress: bool = True,
                 run_key: dict | None = None) -> None:
        self.sources = list(sources)
        if not self.sources:
            raise ValueError("no model to evaluate")
        check_unique([s.name for s in self.sources], "give each MapSource its own name")
        self.data = first(dataset, max_images)
        n_total = len(self.data)
        if n_total == 0:
            raise ValueError(f"dataset {getattr(dataset, 'name', '')!r} has no images: check the data root")
        if int(n_other) != n_other or n_other < 1:
            raise ValueError(f"n_other must be a positive integer, got {n_other!r}")
        self.sigma, self.n_other, self.seed, self.ceiling, self.n_examples = sigma, n_other, seed, ceiling, n_examples
        self.save_dir = Path(save_maps).expanduser() if save_maps is not None else None
        self.run_key, self.dataset_name, self.max_images = run_key, getattr(dataset, "name", None), max_images

        # Pass 1: fixations of every image (s-AUC pool), the kind of dataset, external maps checked.
        self.all_fix = FixationMaps()
        has_fix, is_popout, self.grey = [], [], []
        checks = [s for s in self.sources if s.check is not None]
        for i in tqdm(range(n_total), desc="checking", unit="img", disable=not progress or not checks,
                      dynamic_ncols=True):
            sample = self.data[i]
            fix = sample_fixation_map(sample)
            has_fix.append(fix is not None)
            self.all_fix.append(fix if fix is not None else np.zeros(sample.shape, bool))
            is_popout.append("dimension" in sample.meta and len(sample.masks) >= 1)
            if _is_grey(sample.image):
                self.grey.append(sample.image_id)
            for s in checks:
                s.check(sample)
        self.gaze_mode, self.popout_mode = all(has_fix), all(is_popout)
        if not self.gaze_mode and not self.popout_mode:
            raise ValueError("evaluate needs a dataset with fixations (osie, osie-sr, salicon, folder with "
                             "fixations.csv, popout-gaze) or pop-out arrays with target masks (popout)")
        self.usable = [i for i in range(n_total) if not self.gaze_mode or self.all_fix.n_points(i) > 0]
        if not self.usable:
            raise ValueError("every image's fixation map is empty; nothing to score")
        self.pool = Subset(self.all_fix, self.usable)
        self.n_items, self.batch_size, self.n_total = len(self.usable), 1, n_total
        if self.grey and not self.popout_mode:  # pop-out arrays are grey by design (luminance, orientation, ...)
            warnings.warn(f"{len(self.grey)} grey image(s) (all three channels equal; a grey file is converted to RGB "
                          "by the loader): the colour features of the models see nothing there; listed in run.json "
                          "grayscale_images", stacklevel=3)

    def fingerprint(self) -> dict:
        return jsonable({"run_key": self.run_key or {}, "n_images": self.n_total, "dataset": self.dataset_name,
                         "models": self._models(), "sigma": self.sigma, "n_other": self.n_other,
                         "seed": self.seed, "ceiling": self.ceiling, "max_images": self.max_images})

    def _models(self) -> dict:
        return {s.name: {"kind": s.kind, "weights": s.weights, **s.info} for s in self.sources}

    def metric_columns(self) -> tuple[str, ...]:
        return (EVALUATION_METRICS if self.gaze_mode else ()) + (_POPOUT_METRICS if self.popout_mode else ())

    def info(self) -> dict:
        return {"metrics": list(self.metric_columns()),
                "mode": "+".join(m for m, on in (("fixations", self.gaze_mode), ("popout", self.popout_mode)) if on),
                "n_images_skipped_empty": self.n_total - len(self.usable), "grayscale_images": self.grey,
                "ceiling_rows": bool(self.gaze_mode and self.ceiling), "models": self._models(),
                "sigma": self.sigma, "n_other": self.n_other, "seed": self.seed, "ceiling": self.ceiling,
                "saved_maps": str(self.save_dir) if self.save_dir is not None else None}

    def load(self, items: range, first: bool = False):
        return [(pos, self.data[self.usable[pos]]) for pos in items]

    @contextlib.contextmanager
    def _saved_maps_hint(self) -> Iterator[None]:
        """A failure names the folder where the maps computed so far are (with ``save_maps``)."""
        try:
            yield
        except (ValueError, RuntimeError) as exc:
            if self.save_dir is None:
                raise
            raise type(exc)(f"{exc} (maps computed so far are in {self.save_dir})") from exc

    def forward(self, loaded):
        """Each model's map of each image, at the image's size (the maps are the "model work")."""
        with self._saved_maps_hint():
            return self._maps(loaded)

    def _maps(self, loaded):
        out = []
        for pos, sample in loaded:
            shape, maps = sample.shape, {}
            for s in self.sources:
                t0 = time.perf_counter()
                raw = np.asarray(s.compute(sample), dtype=np.float64)
                dt = time.perf_counter() - t0
                if raw.ndim != 2:
                    raise ValueError(f"model {s.name} gave a map of shape {raw.shape} for image "
                                     f"{sample.image_id!r}; a saliency map must be 2-D")
                if not np.isfinite(raw).all():
                    raise ValueError(f"model {s.name} gave a map with NaN or inf for image {sample.image_id!r}")
                resized = f"{raw.shape[0]}x{raw.shape[1]}" if raw.shape != shape else None
                m = resize_map(raw, shape) if resized else raw
                if self.save_dir is not None:
                    _save_map(self.save_dir, s.name, sample.image_id, m)
                maps[s.name] = (m, dt, resized)
            out.append(maps)
        return out

    def score(self, state: RecordState, loaded, output) -> None:
        with self._saved_maps_hint():
            self._score(state, loaded, output)

    def _score(self, state: RecordState, loaded, output) -> None:
        rows, seed = [], self.seed
        counts = {"n_images": 0, "n_images_without_ceiling": 0, "n_constant_maps": {}, "maps_resized": {},
                  "seconds": {}}
        for (pos, sample), maps in zip(loaded, output):
            shape = sample.shape
            base = {"image": sample.image_id}
            dim = {"dimension": str(sample.meta["dimension"])} if self.popout_mode else {}
            if self.gaze_mode:
                fix = self.all_fix[self.usable[pos]]
                density = human_density(sample, self.sigma)
                other = (other_images_fixations(self.pool, pos, shape, n_other=self.n_other, seed=seed)
                         if len(self.usable) > 1 else None)
                bias = center_bias_map(shape)
            if self.popout_mode:
                mask = np.asarray(sample.masks[0], bool)
            keep = pos < self.n_examples  # the dataset's first images, in a shard too
            if keep:
                state.add_rows("examples", [{"position": pos, "image": sample.image_id}])
                state.arrays[f"{pos:07d}-image"] = np.asarray(sample.image)
                state.arrays[f"{pos:07d}-human"] = density if self.gaze_mode else mask.astype(np.float64)
            for s in self.sources:
                m, dt, resized = maps[s.name]
                counts["seconds"][s.name] = counts["seconds"].get(s.name, 0.0) + dt
                counts["n_constant_maps"][s.name] = counts["n_constant_maps"].get(s.name, 0) + int(
                    metrics.is_constant(m))
                if resized:
                    per = counts["maps_resized"].setdefault(s.name, {})
                    per[resized] = per.get(resized, 0) + 1
                if keep:
                    state.arrays[f"{pos:07d}-map-{s.name}"] = m
                row = {**base, "model": s.name, "weights": s.weights, **dim}
                if self.gaze_mode:
                    scores = gaze_scores(m, fix, density, other_fixation_map=other, baseline=bias, seed=seed,
                                         borji=True)
                    row.update({k: scores[k] for k in EVALUATION_METRICS})
                    if len(sample.masks):
                        state.add_rows("regions", _region_scores(m, density, fix, sample).assign(
                            model=s.name, weights=s.weights))
                if self.popout_mode:
                    row.update(_popout_row(m, mask))
                row["seconds"] = dt
                rows.append(row)
            # reference rows: the floor (centre bias) and the ceilings
            floor_row = {**base, "model": FLOOR, "weights": "", **dim}
            if self.gaze_mode:
                floor = center_bias_scores(fix, density, other_fixation_map=other, seed=seed, borji=True)
                floor_row.update({k: floor[k] for k in EVALUATION_METRICS})
            if self.popout_mode:
                floor_row.update(_popout_row(center_bias_map(shape), mask))
            rows.append({**floor_row, "seconds": math.nan})
            if self.gaze_mode and self.ceiling:
                table = getattr(sample, "fixations", None)
                top = (leave_one_subject_out(table, shape, self.sigma, other_fixation_map=other, baseline=bias,
                                             seed=seed, borji=True) if table is not None else None)
                if top is None or top["n_subjects"] < 2:
                    counts["n_images_without_ceiling"] += 1
                else:
                    rows.append({**base, "model": CEILING, "weights": "", **dim,
                                 **{k: top[k] for k in EVALUATION_METRICS}, "seconds": math.nan})
            if self.popout_mode:
                rows.append({**base, "model": POPOUT_CEILING, "weights": "", **dim,
                             "nmm": metrics.nmm_ceiling(mask), "nmm_ratio": 1.0, "seconds": math.nan})
            counts["n_images"] += 1
        state.add_rows("per_image", rows)
        state.add_counts(counts)

    @classmethod
    def finish(cls, state: RecordState, info: dict) -> EvaluationResult:
        metric_cols = tuple(info["metrics"])
        popout = "popout" in info["mode"]
        columns = ["image", "model", "weights", *(["dimension"] if popout else []), *metric_cols, "seconds"]
        per_image = state.table("per_image").reindex(columns=columns)
        regions = state.table("regions")
        counts = state.counts
        n_images = counts.get("n_images", 0)
        seconds = counts.get("seconds", {})
        final = {"metrics": list(metric_cols), "mode": info["mode"], "n_images": n_images,
                 "n_images_skipped_empty": info["n_images_skipped_empty"],
                 "n_images_without_ceiling": counts.get("n_images_without_ceiling", 0) if info["ceiling_rows"]
                 else None,
                 "grayscale_images": info["grayscale_images"],
                 "maps_resized": {name: {"n_images": sum(v.values()), "from_shapes": v, "method": _RESIZE_METHOD}
                                  for name, v in counts.get("maps_resized", {}).items()},
                 "n_constant_maps": {name: counts.get("n_constant_maps", {}).get(name, 0) for name in info["models"]},
                 "seconds_per_image": {name: seconds.get(name, 0.0) / max(n_images, 1) for name in info["models"]},
                 **{k: info[k] for k in ("models", "sigma", "n_other", "seed", "ceiling", "saved_maps")},
                 "seconds_total": info.get("timings_s", {}).get("total", 0.0)}
        if "shards" in info:
            final["shards"] = info["shards"]
        return EvaluationResult(per_image, summarize(per_image, metric_cols), final,
                                _per_dimension(per_image) if popout else None,
                                _output_saliency(regions) if len(regions) else None, _examples(state, info),
                                regions if len(regions) else None)

    @classmethod
    def write(cls, result: EvaluationResult, out: Path, params: dict) -> dict[str, Path]:
        return write_evaluation_report(result, out, params)

    @classmethod
    def console(cls, result: EvaluationResult, params: dict, merged: int = 0) -> list[str]:
        return [] if merged else evaluation_console(result)


def _examples(state: RecordState, info: dict) -> dict:
    table = state.table("examples")
    examples: dict = {"image_id": [], "image": [], "human": [], "maps": {name: [] for name in info["models"]}}
    for pos, image_id in sorted(zip(table.get("position", []), table.get("image", []))):
        examples["image_id"].append(image_id)
        examples["image"].append(state.arrays[f"{int(pos):07d}-image"])
        examples["human"].append(state.arrays[f"{int(pos):07d}-human"])
        for name in info["models"]:
            examples["maps"][name].append(state.arrays[f"{int(pos):07d}-map-{name}"])
    return examples


def run_evaluation(dataset, sources: Sequence[MapSource], *, sigma: float = 24.0, n_other: int = 10, seed: int = 0,
                   ceiling: bool = True, max_images: int | None = None, save_maps: str | Path | None = None,
                   n_examples: int = 3, progress: bool = True, shard=None, checkpoint_dir=None, resume: bool = False,
                   checkpoint_every: int | None = None) -> EvaluationResult:
    """Score every model's map on every image of ``dataset`` (module docstring).

    Args:
        dataset: indexable dataset of :class:`datasets.base.Sample` (fixations, or pop-out
            arrays with ``meta["dimension"]`` and a target mask).
        sources: the models (:func:`dissect.studies.map_sources.resolve_sources`, ``classical_source``, ...).
        sigma: Gaussian sigma of the human density maps in pixels (OSIE: 24).
        n_other: other images pooled for s-AUC (Borji: 10).
        seed: seed of the s-AUC / AUC-Borji draws and of the ceiling's split halves.
        ceiling: compute the human ``human_loso`` rows (the slowest part on 15 observers).
        max_images: use only the first N images.
        save_maps: folder; each model's map (at the image's size, float64) is written to
            ``save_maps/<model>/<image_id>.npy`` as soon as it is computed.
        n_examples: images whose maps are kept for the example figure.
        progress: show a tqdm bar.
        shard: ``(i, n)``: score only part ``i`` of ``n`` (one image a "batch": contiguous ranges
            of global positions among the scored images). Pass 1 (fixations, checks) still
            reads every image, so the s-AUC negatives, seeds and example images are a single
            run's; merge the parts with ``python cli.py merge``.
        checkpoint_dir, resume, checkpoint_every: a resumable checkpoint (:func:`dissect.runner.run_pass`).

    Returns:
        :class:`EvaluationResult`: ``per_image`` (``image, model, weights, [dimension,]
        <metrics>, seconds``; ``seconds`` is the time to produce the map), ``summary``
        (:func:`summarize`), ``info`` (counts, resized maps, grey images, timings),
        ``popout_dimensions`` (model x dimension means, pop-out only), ``output_saliency``
        (model x category OS / OD, datasets with fixations and regions only).

    Raises:
        ValueError: no sources or images, a dataset that has neither fixations nor pop-out
            targets, an external map that is missing (the first one is named), not 2-D or not
            finite; a model map with NaN (named). Every check on external maps runs before any
            model is computed.
    """
    study = EvaluationStudy(dataset, sources, sigma=sigma, n_other=n_other, seed=seed, ceiling=ceiling,
                            max_images=max_images, save_maps=save_maps, n_examples=n_examples, progress=progress)
    done = run_pass(study, checkpoint_dir=checkpoint_dir, resume=resume, shard=shard,
                    checkpoint_every=checkpoint_every, progress=progress)
    return EvaluationStudy.finish(done.state, done.info)


def _region_scores(m, density, fix, sample) -> pd.DataFrame:
    from probes.stats import region_output_scores

    return region_output_scores(m, density, fix, sample.masks, sample.categories, image_id=sample.image_id)


def _output_saliency(regions: pd.DataFrame) -> pd.DataFrame:
    from probes.stats import output_saliency

    parts = []
    for (model, weights), g in regions.groupby(["model", "weights"], sort=False):
        parts.append(output_saliency(g).assign(model=model, weights=weights))
    out = pd.concat(parts, ignore_index=True)
    return out[["model", "weights", "category", "OS", "OD", "n_regions", "n_skipped"]]


def _per_dimension(per_image: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (model, weights, dim), g in per_image.groupby(["model", "weights", "dimension"], sort=False):
        v = g["nmm"].astype(float)
        rows.append({"model": model, "weights": weights, "dimension": dim, "n": len(g),
                     "nmm_mean": v.mean(), "nmm_sem": v.sem(ddof=1),
                     "nmm_ratio_mean": g["nmm_ratio"].astype(float).mean()})
    return pd.DataFrame(rows)


def summarize(per_image: pd.DataFrame, metric_cols: Sequence[str]) -> pd.DataFrame:
    """One row per model (and weights): ``n`` and ``<metric>_mean``, ``<metric>_sem`` per metric.

    ``sem = std(ddof=1) / sqrt(k)`` over the ``k`` non-NaN values (pandas ``sem``; NaN for
    ``k < 2``); a mean skips NaN values. ``seconds_mean`` is the mean time per map. Models keep
    their order of first appearance; the reference rows (floor ``center_bias``, ceilings
    ``human_loso`` / ``nmm_ceiling``) come last.
    """
    cols = [*metric_cols, "seconds"]
    values = per_image[cols].astype(np.float64)
    groups = values.groupby([per_image["model"], per_image["weights"].fillna("")], sort=False)
    mean, sem, n = groups.mean(), groups.sem(ddof=1), groups.size()
    out = pd.DataFrame({"n": n})
    for key in metric_cols:
        out[f"{key}_mean"] = mean[key]
        out[f"{key}_sem"] = sem[key]
    out["seconds_mean"] = mean["seconds"]
    out = out.reset_index()
    rank = out["model"].map({name: k + 1 for k, name in enumerate(_REFERENCE)}).fillna(0)
    out = out.assign(_rank=rank).sort_values("_rank", kind="stable").drop(columns="_rank")
    return out.reset_index(drop=True)
