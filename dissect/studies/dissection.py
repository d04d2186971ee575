"""Dissection: score every unit of chosen layers against annotated regions (He et al. 2019).

For every image of a dataset the model runs once; each recorded layer's unit maps are scored
against the image's regions at the image's *own* resolution, with the exact closed form of
:mod:`probes.regions` (no upsampled stack is ever materialised):

* datasets with fixations: region-wise NSS, He et al. 2019 eq. 1 (``metric = "region_nss"``);
* datasets without fixations (pop-out arrays): NMM under the region mask, eq. 4 (``metric = "nmm"``).

Scores stream into a :class:`probes.aggregate.UnitScoreAccumulator` (fixed-point sums, so shards
and resumed runs merge bit-exactly); no activation outlives its batch. The pass, its checkpoints
(at most every ``checkpoint_seconds``, default 30: a save of six VGG16 layers' null and
bootstrap state is ~90 MB, and after every batch the saves took ~10% of a run), ``resume``,
shards and merging are :mod:`dissect.runner`'s; this module is the per-batch work.

Permutation null (``null = P``, the definitions are in :mod:`probes.aggregate`): before the
pass, the scorable regions of every image are collected as pixel sets
(:class:`dissect.studies.image_regions.RegionBank`: fixated pixels inside the mask with
fixations; the mask itself on pop-out arrays, i.e. other arrays' target masks). For permutation
``p`` (:func:`probes.aggregate.null_permutation`, seeded by ``(seed, p, N)``), image ``i``'s unit
maps are also scored against the regions of image ``perm_p[i]``, as extra columns of the same
region-kernel matrix (:class:`probes.regions.RegionScorer`), so the null costs no extra forward
pass. A partner of another size has its regions rescaled to this image (pixel centres mapped to
the nearest pixel; masks resized by nearest neighbour); OSIE and pop-out images all share one
size, so nothing is rescaled there. The bootstrap weights depend on ``(seed, global image
index)`` only. Both are therefore independent of batches and shards.

Human ceiling: on datasets whose fixations carry a ``subject`` column, each scored region also
gets its leave-one-subject-out region NSS (:mod:`probes.ceiling`), averaged per category into
``human_region_nss``; NaN elsewhere.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from datasets.base import first
from dissect.checks import check_count, check_device
from dissect.models.backbones import model_device
from dissect.models.hooks import ActivationRecorder, CopyBuffers, unique_layers
from dissect.reports.dissection import console_lines, write_dissection_reports
from dissect.runner import Pass, State, Study, merge_passes, read_part, register, run_pass
from dissect.studies.identity import run_identity
from dissect.studies.image_regions import BANK_THREADS, RegionBank, load_batch, null_groups
from probes.aggregate import UnitScoreAccumulator, check_dead_unit_policy, null_permutation
from probes.labels import unit_labels
from probes.regions import RegionScorer
from probes.regions_torch import TorchRegionScorer

__all__ = ["DissectionResult", "DissectionState", "DissectionStudy", "run_dissection", "result_from_accumulator",
           "merge_dissections"]

_COUNTS = ("n_images", "n_images_without_regions", "n_regions_scored", "n_regions_empty", "n_regions_unfixated",
           "n_fixations_clamped", "n_fixations_dropped", "n_fixations")


@dataclass
class DissectionResult:
    """What :func:`run_dissection` returns.

    Attributes:
        units: long table, one row per layer x unit x category
            (``layer, unit, category, score, n_regions, dead, n_valid, ranked, p_value, q_value``).
        summary: one row per layer x category (``layer, category, top_k_mean,
            count_above_threshold, n_units, n_dead, n_regions``, then the null, bootstrap and
            ceiling columns of :meth:`probes.aggregate.UnitScoreAccumulator.summary`).
        info: run facts for ``run.json`` (metric, counts of images and skipped regions, timings).
        accumulator: the raw accumulator (merge it with another shard's).
        labels: one row per layer x unit (:func:`probes.labels.unit_labels`).
        run: the pass this result came from (:class:`dissect.runner.Pass`; for merging shards).
    """

    units: pd.DataFrame
    summary: pd.DataFrame
    info: dict = field(default_factory=dict)
    accumulator: UnitScoreAccumulator | None = None
    labels: pd.DataFrame | None = None
    run: Pass | None = None


class DissectionState(State):
    """The accumulator, the run's counts and its metric (``"nmm"`` or ``"region_nss"``)."""

    def __init__(self, acc: UnitScoreAccumulator, counts: dict | None = None, metric: str | None = None) -> None:
        self.acc, self.counts, self.metric = acc, dict(counts or {}), metric

    def save(self, path: Path) -> None:
        self.acc.save(path)

    def meta(self) -> dict:
        return {"counts": self.counts, "metric": self.metric}

    @classmethod
    def load(cls, path: Path, meta: dict) -> "DissectionState":
        return cls(UnitScoreAccumulator.load(path), meta["counts"], meta["metric"])

    def copy(self) -> "DissectionState":
        return DissectionState(UnitScoreAccumulator.from_state_dict(self.acc.state_dict()), self.counts, self.metric)

    def merge(self, later: State) -> None:
        if self.metric is not None and later.metric is not None and later.metric != self.metric:
            raise ValueError(f"shards disagree on the metric ({sorted([self.metric, later.metric])}): the dataset "
                             "mixes images with and without fixations")
        self.acc.merge(later.acc)
        for key, value in later.counts.items():
            self.counts[key] = self.counts.get(key, 0) + value
        self.metric = self.metric or later.metric


class _AllRecorded(Exception):
    """Raised by a hook once every recorded layer has run: the rest of the forward is skipped."""


@contextlib.contextmanager
def _stop_when_recorded(modules):
    """Abort the forward pass as soon as every module in ``modules`` has produced its output.

    Dissection needs nothing after the deepest recorded layer (VGG16 conv5_3: pool5 and the
    classifier are skipped). Registered after the recorder's hooks, so the copies are taken
    first. Yields a function that re-arms the hooks before each forward.
    """
    pending: set[int] = set()

    def arm() -> None:
        pending.clear()
        pending.update(id(m) for m in modules)

    def hook(module, inputs, output):
        pending.discard(id(module))
        if not pending:
            raise _AllRecorded

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield arm
    finally:
        for handle in handles:
            handle.remove()


def _check_metric(metric: str | None, sample) -> str:
    if min(sample.shape) < 2:
        raise ValueError(f"image {sample.image_id!r} is {sample.shape[0]} x {sample.shape[1]} pixels: every unit map "
                         "over it is constant, so every unit would be dead; drop images smaller than 2 x 2")
    kind = "nmm" if sample.fix is None else "region_nss"  # not .fixation_map: that builds the dense map
    if metric is not None and kind != metric:
        raise ValueError(
            f"image {sample.image_id!r} {'has no' if kind == 'nmm' else 'has'} fixations while earlier images "
            f"{'had' if metric == 'region_nss' else 'had none'}: a dataset is scored either by region NSS "
            "(all images with fixations) or by NMM (none)"
        )
    return kind


@register
class DissectionStudy(Study):
    """Every unit of ``layers`` scored against every image's regions (see :func:`run_dissection`).

    Thread pools (set deliberately, not left to fight): the forward pass uses torch's intra-op
    pool (``torch.get_num_threads()``); scoring runs in one worker thread beside it, on arrays
    far too small to gain from threads, so numpy's BLAS is limited to 1 thread for the run
    (``threadpoolctl.threadpool_limits(1, "blas")``, restored afterwards) and the float64
    conversion of the activations happens in numpy, never in a second OpenMP team. The
    scores do not depend on the thread counts.
    """

    kind, desc = "dissect", "dissect"
    State = DissectionState

    def __init__(self, model: torch.nn.Module, layers, dataset, *, image_size: int | None = 224, batch_size: int = 8,
                 device: str | torch.device = "cpu", top_k: int = 10, threshold: float = 1.5,
                 categories: Sequence[str] | None = None, progress: bool = True, max_images: int | None = None,
                 dead_units: str = "zero", run_key: dict | None = None, null: int = 100, bootstrap: int = 200,
                 seed: int = 0, min_valid: float = 0.5, ceiling_sigma: float | None = 24.0) -> None:
        self.batch_size = check_count("batch_size", batch_size)
        self.min_valid = check_dead_unit_policy(dead_units, min_valid)
        for name, value in (("null", null), ("bootstrap", bootstrap)):
            if isinstance(value, bool) or int(value) != value or value < 0:
                raise ValueError(f"{name} must be an integer >= 0 (0 switches it off), got {value!r}")
        if int(top_k) < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if not np.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number, got {threshold}")
        if max_images is not None:  # the first N in an order interleaving the categories (datasets.base.first)
            dataset = first(dataset, check_count("max_images", max_images))
        self.n_items = len(dataset)
        if self.n_items == 0:
            raise ValueError(f"dataset {getattr(dataset, 'name', '')!r} has no images: check the data root")
        if isinstance(layers, (str, torch.nn.Module)):
            layers = [layers]
        resolved, repeated = unique_layers(model, layers)
        if repeated:
            warnings.warn("same layer listed twice, scored once: " + ", ".join(f"{a} is {b}" for a, b in repeated),
                          UserWarning, stacklevel=3)
        self.model, self.dataset, self.progress = model, dataset, progress
        self.layer_names = [name for name, _ in resolved]
        self.modules = [module for _, module in resolved]
        self.device = check_device(device)
        self.image_size, self.top_k, self.threshold, self.dead_units = image_size, top_k, threshold, dead_units
        self.null, self.bootstrap, self.seed, self.ceiling_sigma = int(null), int(bootstrap), int(seed), ceiling_sigma
        self.max_images = max_images
        # A dataset that knows its categories (OSIE-SR's 12, the pop-out dimensions) gets a row for
        # each of them, in its order, even where a subset has no region of one (n_regions = 0).
        self.categories = list(categories) if categories else getattr(dataset, "category_order", None)
        self.run_key = run_key
        self.bank: RegionBank | None = None
        self.permutations: np.ndarray | None = None

    def fingerprint(self) -> dict:
        """What must not change between an interrupted run and its resumption."""
        fingerprint = {"layers": list(self.layer_names),
                       **run_identity(self.model, self.dataset, self.image_size, self.run_key)}
        if self.max_images is not None:  # checkpoints of the former first-N-by-index order are not resumed
            fingerprint["image_order"] = "interleaved"
        fingerprint["dead_units"] = self.dead_units
        fingerprint.update(null=self.null, bootstrap=self.bootstrap, seed=self.seed, ceiling_sigma=self.ceiling_sigma)
        return fingerprint

    def info(self) -> dict:
        info = {"layers": self.layer_names, "image_size": self.image_size, "batch_size": self.batch_size,
                "device": str(self.device), "top_k": self.top_k, "threshold": self.threshold,
                "dead_units": self.dead_units, "min_valid": float(self.min_valid), "null": self.null,
                "bootstrap": self.bootstrap, "seed": self.seed, "ceiling_sigma": self.ceiling_sigma}
        if self.max_images is not None:
            info["max_images"] = int(self.max_images)
        return info

    def new_state(self) -> DissectionState:
        return DissectionState(UnitScoreAccumulator(categories=self.categories, n_null=self.null,
                                                    n_bootstrap=self.bootstrap, seed=self.seed))

    def begin(self, state: DissectionState, remaining: range) -> None:
        self._metric = state.metric
        if self.null:  # every image's regions, read before the run (timed as null_regions)
            self.bank = RegionBank(self.dataset, self.n_items, self.image_size, self.ceiling_sigma, self.progress)
            self.permutations = np.stack([null_permutation(self.seed, p, self.n_items) for p in range(self.null)])

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        # On CPU the activation copies of batch k+1 reuse the memory of batch k-1 once it is scored
        # (two batches' worth in rotation; fresh memory of that size page-faults on every write).
        home = model_device(self.model)
        self.model.to(self.device)
        on_device = self.device.type != "cpu"
        self.buffers = None if on_device else CopyBuffers()
        try:
            with ActivationRecorder(self.model, self.layer_names, device=None if on_device else "cpu",
                                    buffers=self.buffers) as self.recorder, \
                    _stop_when_recorded(self.modules) as self.arm, \
                    threadpool_limits(limits=1, user_api="blas"):
                self.scorer = RegionScorer()  # used by the single scoring thread only
                if on_device:  # kernels built by the numpy scorer, the products on the device
                    self.scorer = TorchRegionScorer(self.scorer, self.device)
                yield
        finally:
            self.model.to(home)

    def load(self, items: range, first: bool = False):
        # The first batch is read with the bank's threads: the model waits for it.
        records, batch = load_batch(self.dataset, items.start, items.stop, self.image_size, self.bank,
                                    self.ceiling_sigma, BANK_THREADS if first else 1)
        return items.start, records, batch

    def forward(self, loaded):
        _, records, batch = loaded
        for record in records:
            self._metric = _check_metric(self._metric, record)
        self.arm()
        try:
            with torch.inference_mode():
                self.model(batch.to(self.device))
        except _AllRecorded:
            pass
        return {name: self.recorder.activations[name] for name in self.layer_names}

    def release(self, loaded, activations) -> None:
        if self.buffers is not None:  # scored: the next forward copies into this batch's memory
            self.buffers.give_back(activations)

    def score(self, state: DissectionState, loaded, activations) -> None:
        """Score one batch into the run's accumulator (one batch at a time, in order).

        No batch-sized accumulator is built and merged (with a bootstrap that was ~90 MB a batch
        for six VGG16 layers). A batch that fails half-way leaves the accumulator partly updated,
        but the run then stops without saving it: the checkpoint on disk stays at the last save.
        """
        start, records, _ = loaded
        counts = dict.fromkeys(_COUNTS, 0)
        acc, scorer = state.acc, self.scorer
        for i, rec in enumerate(records):
            state.metric = _check_metric(state.metric, rec)
            counts["n_images"] += 1
            counts["n_fixations_clamped"] += rec.n_clamped
            counts["n_fixations_dropped"] += rec.n_dropped
            counts["n_fixations"] += rec.n_fixations
            counts["n_regions_empty"] += rec.n_empty
            counts["n_regions_unfixated"] += rec.n_unfixated
            # The null pairs this image's maps with another image's regions even when it has none.
            groups, null_cats, null_reps = null_groups(self.bank, self.permutations, start + i, rec)
            if not rec.sets:
                counts["n_images_without_regions"] += 1
                if not groups:
                    continue
            counts["n_regions_scored"] += len(rec.sets)
            if rec.fix is None:
                scorer.set_regions(rec.masks(), None, extra_groups=groups)
            else:  # the fixated pixels and which region holds each: no dense R x H x W masks to rebuild
                scorer.set_point_regions(rec.shape, *rec.fix, rec.member, extra_groups=groups)
            n_real, sizes = scorer.n_regions, scorer.extra_sizes
            for name in self.layer_names:
                # NaN marks a constant (dead) map; the dead-unit policy is applied at table time.
                # A numpy view on CPU: the float64 conversion then runs in this thread alone, never
                # in a second OpenMP team next to the forward's.
                maps = activations[name][i]
                scores = scorer.score(maps.numpy() if maps.device.type == "cpu" else maps)
                acc.add(name, scores[:, :n_real], rec.categories, image=start + i,
                        null_scores=scores[:, n_real:] if groups else None,
                        null_categories=null_cats, null_replicates=null_reps, null_sizes=sizes)
            if rec.ceiling is not None:
                acc.add_ceiling(rec.ceiling, rec.categories)
        for key, value in counts.items():
            state.counts[key] = state.counts.get(key, 0) + value

    @classmethod
    def finish(cls, state: DissectionState, info: dict) -> DissectionResult:
        """The tables of a finished (or merged) run, in ``run.json``'s order of facts."""
        options = {k: v for k, v in info.items() if k not in ("max_images", "shard", "shards", "resumed_from_image",
                                                             "timings_s")}
        timings = dict(info.get("timings_s", {}))
        if "prepare" in timings:  # the pass's preparation is the null's region bank
            timings = {"forward": timings["forward"], "scoring": timings["scoring"],
                       "null_regions": timings["prepare"], "total": timings["total"]}
        final = {"metric": state.metric, **options, "resumed_from_image": info.get("resumed_from_image", 0),
                 **state.counts, "timings_s": timings}
        for key in ("max_images", "shards"):
            if key in info:
                final[key] = info[key]
        return result_from_accumulator(state.acc, final)

    @classmethod
    def write(cls, result: DissectionResult, out: Path, params: dict) -> dict[str, Path]:
        return write_dissection_reports(result, out, params)

    @classmethod
    def console(cls, result: DissectionResult, params: dict, merged: int = 0) -> list[str]:
        return console_lines(result, params, merged)


def result_from_accumulator(acc: UnitScoreAccumulator, info: dict) -> DissectionResult:
    """The tables of a finished run from its accumulator and ``info`` (``top_k``, ``threshold``, ...).

    The one place where accumulated state becomes tables: a single run, a resumed run and merged
    shards all end here, so they give the same tables.
    """
    dead_units, min_valid = info.get("dead_units", "zero"), info.get("min_valid", 0.5)
    units = acc.unit_table(dead_units=dead_units, min_valid=min_valid)
    summary = acc.summary(top_k=info["top_k"], threshold=info["threshold"], dead_units=dead_units,
                          min_valid=min_valid)
    return DissectionResult(units=units, summary=summary, info=info, accumulator=acc, labels=unit_labels(units))


def run_dissection(
    model: torch.nn.Module,
    layers,
    dataset,
    *,
    image_size: int | None = 224,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    top_k: int = 10,
    threshold: float = 1.5,
    categories: Sequence[str] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    max_images: int | None = None,
    dead_units: str = "zero",
    run_key: dict | None = None,
    null: int = 100,
    bootstrap: int = 200,
    seed: int = 0,
    min_valid: float = 0.5,
    ceiling_sigma: float | None = 24.0,
    shard: tuple[int, int] | None = None,
    checkpoint_seconds: float = 30.0,
) -> DissectionResult:
    """Dissect ``layers`` of any ``nn.Module`` on ``dataset``.

    Args:
        model: any PyTorch model taking ``N x 3 x S x S`` ImageNet-normalised images.
        layers: a layer name (alias such as ``conv5_3``, or dotted module path), a module, or a list.
        dataset: an indexable dataset of :class:`datasets.base.Sample` (``len``, ``[i]``).
        image_size: side of the square network input (``None``: keep the images' size).
        batch_size: images per forward pass.
        device: where the model runs (``"cpu"``, ``"cuda"``, ...). On a non-CPU device the
            activations stay there and are scored there too (:mod:`probes.regions_torch`, the
            same closed form in float64 torch), so a GPU run is bound by the forward pass.
        top_k, threshold: summary statistics (He et al.: 10 and 1.5).
        categories: the categories of the tables, in order (default: the dataset's
            ``category_order`` if it has one, e.g. He et al.'s 12 for OSIE-SR, else first seen);
            a region of another category is an error.
        checkpoint_dir: folder for the resumable state (``progress.json`` naming a ``state-N.npz``,
            :mod:`dissect.runner.passes`).
        resume: continue from ``checkpoint_dir`` if it holds a run with the same settings.
        progress: show a tqdm progress bar.
        max_images: stop after this many images (quick looks; recorded in ``info``).
        dead_units: a unit whose map is constant on an image: ``"zero"`` (default, He et al.'s
            code: the region scores 0, so mostly-dead units cannot rank on a few regions) or
            ``"skip"`` (digest section 3: that region is left out of the unit's mean; a unit
            live on fewer than ``min_valid`` of a category's regions is not ranked).
            ``n_valid`` in the unit table counts the regions a unit was live on either way.
        run_key: anything else that identifies the run for ``resume`` (the CLI passes the
            dataset's loader options).
        null: permutations ``P`` of the permutation null (0 = off; module docstring and
            :mod:`probes.aggregate` for the definitions).
        bootstrap: bootstrap replicates ``B`` over images (0 = off).
        seed: seed of the null's permutations and the bootstrap weights.
        min_valid: with ``dead_units="skip"``, the fraction of a category's regions a unit must
            be live on to be ranked (default 0.5).
        ceiling_sigma: Gaussian sigma (px) of the leave-one-subject-out human ceiling
            (``None``: no ceiling).
        shard: ``(i, n)``: run only the i-th of n disjoint parts of the images
            (:func:`dissect.runner.shards.shard_images`: contiguous runs of whole batches, so
            every image meets the same batch, and gets the same bits, as in a single run). Image
            indices stay global (``dataset[k]`` with the same ``k`` as a single run, so
            anything seeded per image uses the global index). ``info["shard"]`` records the
            part; with ``checkpoint_dir`` a finished shard also writes ``shard.json`` there.
            Merge the parts with :func:`merge_dissections`.
        checkpoint_seconds: with ``checkpoint_dir``, the least number of seconds between two
            saves of the state (0: after every batch). The state is also saved after the last
            batch and when the run is interrupted (Ctrl-C, or an error outside scoring).

    Returns:
        :class:`DissectionResult`.

    Raises:
        ValueError: empty dataset, unknown layer (the message lists the valid names), a dataset
            mixing images with and without fixations, a checkpoint of a different run.
    """
    study = DissectionStudy(model, layers, dataset, image_size=image_size, batch_size=batch_size, device=device,
                            top_k=top_k, threshold=threshold, categories=categories, progress=progress,
                            max_images=max_images, dead_units=dead_units, run_key=run_key, null=null,
                            bootstrap=bootstrap, seed=seed, min_valid=min_valid, ceiling_sigma=ceiling_sigma)
    if isinstance(checkpoint_seconds, bool) or not isinstance(checkpoint_seconds, (int, float)) \
            or not checkpoint_seconds >= 0:
        raise ValueError(f"checkpoint_seconds must be a number of seconds >= 0 (0: after every batch), "
                         f"got {checkpoint_seconds!r}")
    done = run_pass(study, checkpoint_dir=checkpoint_dir, resume=resume, shard=shard,
                    checkpoint_seconds=float(checkpoint_seconds), progress=progress)
    result = DissectionStudy.finish(done.state, done.info)
    if shard is not None:
        result.info["shard"] = {**done.info["shard"], "fingerprint": done.fingerprint,
                                "counts": dict(done.state.counts)}
    result.run = done
    return result


def merge_dissections(items: Sequence) -> DissectionResult:
    """Merge the shards of one dissection into the result a single run gives.

    Args:
        items: :class:`DissectionResult` objects returned by ``run_dissection(..., shard=(i, n))``,
            or their ``checkpoint_dir`` folders, in any order.

    Returns:
        a ``DissectionResult`` whose ``units`` and ``summary`` equal a single run's bit for bit;
        ``info`` as a single run's, with summed counts and timings, ``resumed_from_image = 0``
        and ``shards`` (each part's images and timings).

    Raises:
        ValueError: see :func:`dissect.runner.shards.check_parts`; a result or folder that is not
            a dissection shard.
    """
    parts = []
    for k, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            part = read_part(item)
            if part.kind != DissectionStudy.kind:
                raise ValueError(f"{item} is not a dissection shard")
        else:
            run = getattr(item, "run", None)
            if run is None or "shard" not in run.info:
                raise ValueError(f"item {k} is not a dissection shard (run it with shard=(i, n))")
            # A copy: merging must not change the caller's results.
            part = Pass(run.kind, run.state.copy(), run.info, run.fingerprint, name=f"result {k}")
        parts.append(part)
    merged = merge_passes(parts)
    result = DissectionStudy.finish(merged.state, merged.info)
    result.run = merged
    return result

