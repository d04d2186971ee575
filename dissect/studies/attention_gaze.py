"""Attention maps vs human gaze over a dataset (Lai et al. 2020; Ebrahimpour et al. 2019).

:func:`run_attention_study` computes each attention method's map (:mod:`dissect.attribution`)
for every image with fixations, upsamples it to the image's own size and scores it against the
image's fixations with :func:`probes.gaze.gaze_scores`, next to a floor (centre bias) and a
ceiling (human leave-one-subject-out) per image. It is a study of :mod:`dissect.runner`, so
it resumes, shards, merges and runs on Ray without code of its own for any of them.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from datasets.base import Subset, interleaved_order
from datasets.fixations import (center_bias_map, fixation_pool, human_density, other_images_fixations,
                                resize_map)
from dissect.attribution import methods as attention
from dissect.attribution.methods import default_layer
from dissect.checks import check_count, check_seed
from dissect.models.backbones import model_device
from dissect.models.hooks import resolve_layer
from dissect.models.inputs import preprocess
from dissect.reports.attention import attention_console, write_attention_files
from dissect.runner import RecordState, Study, register, run_pass
from dissect.studies.identity import jsonable, run_identity
from probes.gaze import CEILING, FLOOR, GAZE_METRICS, gaze_scores, leave_one_subject_out, summarize_gaze
from probes.metrics import is_constant, prepare

__all__ = ["PER_IMAGE_COLUMNS", "AttentionResult", "AttentionStudy", "run_attention_study", "write_attention_report"]

#: Columns of the per-image table of :func:`run_attention_study`.
PER_IMAGE_COLUMNS: tuple[str, ...] = ("image", "method", "layer", *GAZE_METRICS)

# Methods whose map lives at the input (no layer to choose).
_PIXEL_METHODS = ("guided_backprop",)


def _check_methods(methods: Sequence[str] | str) -> list[str]:
    if isinstance(methods, str):
        methods = [methods]
    methods = list(methods)
    if not methods:
        raise ValueError(f"methods is empty; pick one or more of {attention.METHODS}")
    unknown = [m for m in methods if m not in attention.METHODS]
    if unknown:
        raise ValueError(f"unknown attention method(s) {unknown}; choose from {attention.METHODS}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods listed twice: {methods}")
    return methods


def _as_layer_list(spec: Any) -> list[Any]:
    if spec is None or isinstance(spec, (str, nn.Module)):
        return [spec]
    spec = list(spec)
    if not spec:
        raise ValueError("an empty layer list; pass None for the method's default layer")
    return spec


def _layer_plan(model: nn.Module, methods: list[str], layers: Any) -> dict[str, list[tuple[str, Any]]]:
    """``{method: [(label, layer spec), ...]}`` for every method but ``dense``."""
    if isinstance(layers, Mapping):
        unknown = [m for m in layers if m not in methods]
        if unknown:
            raise ValueError(f"layers given for method(s) {unknown} that are not in methods {methods}")
        if "dense" in layers:
            raise ValueError("choose the dense model's layers with dense_layers=, not layers={'dense': ...}")
        per_method = {m: _as_layer_list(layers.get(m)) for m in methods}
    else:
        shared = _as_layer_list(layers)
        per_method = {m: ([None] if m in _PIXEL_METHODS else shared) for m in methods}
    plan: dict[str, list[tuple[str, Any]]] = {}
    for method in methods:
        if method == "dense":
            continue
        entries = []
        for spec in per_method[method]:
            if spec is None:  # the method's default layer, named (conv5_3, layer4, ...)
                label = "" if method in _PIXEL_METHODS else resolve_layer(model, default_layer(model))[0]
            else:
                label = resolve_layer(model, spec)[0]  # also fails early on an unknown name
            entries.append((label, spec))
        labels = [e[0] for e in entries]
        if len(set(labels)) != len(labels):
            raise ValueError(f"layers listed twice for method {method!r}: {labels}")
        plan[method] = entries
    return plan


@dataclass
class AttentionResult:
    """A finished attention study: the per-image table, its summary, ``run.json`` facts, overlay examples."""

    per_image: pd.DataFrame
    summary: pd.DataFrame
    info: dict
    examples: dict | None = None
    model_info: dict | None = field(default=None, repr=False)


@register
class AttentionStudy(Study):
    """Every method's attention map against every image's human gaze (see :func:`run_attention_study`)."""

    kind, desc = "attention", "attention vs gaze"

    def __init__(self, model: nn.Module, dataset, methods: Sequence[str] | str, *, layers: Any = None,
                 image_size: int | None = 224, batch_size: int = 4, sigma: float = 24.0, n_other: int = 10,
                 seed: int = 0, dense_layers: Sequence[Any] | None = None, duration_weighted: bool = False,
                 ceiling: bool = True, options: Mapping[str, Mapping[str, Any]] | None = None,
                 n_examples: int = 3, run_key: dict | None = None, pool: tuple | None = None) -> None:
        self.methods = _check_methods(methods)
        self.batch_size = check_count("batch_size", batch_size)
        self.seed = check_seed(seed)
        if int(n_other) != n_other or n_other < 1:
            raise ValueError(f"n_other must be a positive integer, got {n_other!r}")
        n_total = len(dataset)
        if n_total == 0:
            raise ValueError(f"dataset {getattr(dataset, 'name', '')!r} has no images: check the data root")
        self.plan = _layer_plan(model, self.methods, layers)
        self.options = dict(options or {})
        unknown = [m for m in self.options if m not in self.methods]
        if unknown:
            raise ValueError(f"options given for method(s) {unknown} that are not in methods {self.methods}")
        if "dense" in self.options:
            raise ValueError("choose the dense model's layers with dense_layers=, not options={'dense': ...}")
        self.model, self.dataset, self.image_size, self.sigma = model, dataset, image_size, sigma
        self.n_other, self.dense_layers, self.duration_weighted = n_other, dense_layers, duration_weighted
        self.ceiling, self.run_key = ceiling, run_key
        self.device = model_device(model)
        # Before any model work: every image's fixated pixels (fails on an image without
        # fixations), kept compactly for the other-image s-AUC negatives.
        self.all_maps, self.usable = pool if pool is not None else fixation_pool(dataset)
        self.pool = Subset(self.all_maps, self.usable)
        self.n_items = len(self.usable)
        self.n_skipped_empty = n_total - len(self.usable)
        where = {index: pos for pos, index in enumerate(self.usable)}
        # overlays.png: n_examples images taken round-robin over the dataset's categories
        self.examples = [where[i] for i in interleaved_order(dataset)[:n_examples] if i in where]

    def fingerprint(self) -> dict:
        return jsonable({**run_identity(self.model, self.dataset, self.image_size, self.run_key),
                         "n_images": len(self.dataset), "methods": self.methods, "options": self.options,
                         "layers": {m: [label for label, _ in entries] for m, entries in self.plan.items()},
                         "dense_layers": self.dense_layers, "sigma": self.sigma, "n_other": self.n_other,
                         "seed": self.seed, "duration_weighted": self.duration_weighted, "ceiling": self.ceiling})

    def info(self) -> dict:
        return {"methods": self.methods, "layers": {m: [label for label, _ in e] for m, e in self.plan.items()},
                "image_size": self.image_size, "batch_size": self.batch_size, "sigma": self.sigma,
                "duration_weighted": self.duration_weighted,
                "n_other": int(min(self.n_other, max(len(self.usable) - 1, 0))), "seed": self.seed,
                "device": str(self.device), "n_images_skipped_empty": self.n_skipped_empty,
                "overlay_positions": self.examples}

    def load(self, items: range, first: bool = False):
        samples = [self.dataset[self.usable[pos]] for pos in items]
        return items, samples, preprocess([s.image for s in samples], self.image_size)

    def forward(self, loaded):
        batch = loaded[2].to(self.device)
        maps: dict[tuple[str, str], torch.Tensor] = {}
        seconds, dense_names = dict.fromkeys(self.methods, 0.0), []
        for method in self.methods:
            t0 = time.perf_counter()
            if method == "dense":
                for name, m in attention.dense_attention_maps(self.model, batch, layers=self.dense_layers).items():
                    maps[(method, name)] = m.detach().cpu()
                    if not name.endswith("+") and name not in dense_names:
                        dense_names.append(name)
            else:
                for label, spec in self.plan[method]:
                    maps[(method, label)] = attention.attention_maps(
                        self.model, batch, method, layer=spec, **self.options.get(method, {})).detach().cpu()
            seconds[method] += time.perf_counter() - t0
        return maps, seconds, dense_names

    def _overlay_key(self, method: str, maps) -> tuple[str, str] | None:
        """The map an overlay shows for ``method``: its first layer, the dense model's full map."""
        if method == "dense":
            return next((key for key in maps if key[0] == "dense" and key[1].endswith("+")), None)
        return (method, self.plan[method][0][0])

    def score(self, state: RecordState, loaded, output) -> None:
        items, samples, _ = loaded
        maps, seconds, dense_names = output
        state.note("dense_layers", dense_names)
        counts = {"n_images": 0, "n_images_without_ceiling": 0, "n_fixations": 0, "n_fixations_dropped": 0,
                  "n_constant_maps": dict.fromkeys(self.methods, 0),
                  "n_nonfinite_maps": dict.fromkeys(self.methods, 0), "seconds": seconds}
        rows: list[dict] = []
        seed = self.seed
        for k, (pos, sample) in enumerate(zip(items, samples)):
            shape = sample.shape
            fix = self.all_maps[self.usable[pos]]
            density = human_density(sample, self.sigma, duration_weighted=self.duration_weighted)
            other = (other_images_fixations(self.pool, pos, shape, n_other=self.n_other, seed=seed)
                     if len(self.usable) > 1 else None)
            bias = center_bias_map(shape)
            example = pos in self.examples
            if example:
                state.add_rows("examples", [{"position": pos, "image": sample.image_id}])
                state.arrays[f"{pos:07d}-image"] = np.asarray(sample.image)
                state.arrays[f"{pos:07d}-human"] = density
            # The human maps are validated once per image, not once per method and metric.
            fix, density, bias = prepare(fix, "fixation_map"), prepare(density, "density"), prepare(bias, "baseline")
            other = None if other is None else prepare(other, "other_fixation_map")
            shown = {self._overlay_key(m, maps): m for m in self.methods} if example else {}
            for (method, label), m in maps.items():
                if not bool(torch.isfinite(m[k]).all()):
                    counts["n_nonfinite_maps"][method] += 1
                    scores = dict.fromkeys(GAZE_METRICS, math.nan)
                    full = None
                else:
                    counts["n_constant_maps"][method] += int(is_constant(m[k]))
                    full = resize_map(m[k], shape)
                    scores = gaze_scores(full, fix, density, other_fixation_map=other, baseline=bias, seed=seed)
                if (method, label) in shown:
                    state.arrays[f"{pos:07d}-map-{method}"] = full if full is not None else np.zeros(shape)
                rows.append({"image": sample.image_id, "method": method, "layer": label, **scores})
            rows.append({"image": sample.image_id, "method": FLOOR, "layer": "",
                         **gaze_scores(bias, fix, density, other_fixation_map=other, baseline=bias, seed=seed)})
            loso = None
            if self.ceiling and getattr(sample, "fixations", None) is not None:
                loso = leave_one_subject_out(sample.fixations, shape, self.sigma, other_fixation_map=other,
                                             baseline=bias, seed=seed, duration_weighted=self.duration_weighted)
            if loso is not None and loso["n_subjects"] >= 2:
                rows.append({"image": sample.image_id, "method": CEILING, "layer": "",
                             **{key: loso[key] for key in GAZE_METRICS}})
            elif self.ceiling:
                counts["n_images_without_ceiling"] += 1
            counts["n_images"] += 1
            counts["n_fixations"] += int(sample.meta.get("n_fixations", 0))
            counts["n_fixations_dropped"] += int(sample.meta.get("n_dropped", 0))
        state.add_rows("per_image", rows)
        state.add_counts(counts)

    @classmethod
    def finish(cls, state: RecordState, info: dict) -> AttentionResult:
        table = state.table("per_image")
        per_image = table.reindex(columns=list(PER_IMAGE_COLUMNS)) if len(table.columns) else \
            pd.DataFrame(columns=list(PER_IMAGE_COLUMNS))
        counts = state.counts
        n = max(counts.get("n_images", 0), 1)
        seconds = counts.get("seconds", {})
        timings = dict(info.get("timings_s", {}))
        final = {key: info[key] for key in ("methods", "layers")}
        final["dense_layers"] = state.notes.get("dense_layers", [])
        final.update({key: info[key] for key in ("image_size", "batch_size", "sigma", "duration_weighted", "n_other",
                                                 "seed", "device")})
        final.update({"n_images": counts.get("n_images", 0), "n_images_skipped_empty": info["n_images_skipped_empty"],
                      "n_images_without_ceiling": counts.get("n_images_without_ceiling", 0),
                      "n_fixations": counts.get("n_fixations", 0),
                      "n_fixations_dropped": counts.get("n_fixations_dropped", 0), "n_rows": len(per_image),
                      "n_constant_maps": counts.get("n_constant_maps", {}),
                      "n_nonfinite_maps": counts.get("n_nonfinite_maps", {}),
                      "seconds_per_image": {m: round(seconds.get(m, 0.0) / n, 6) for m in info["methods"]},
                      "timings_s": {"maps": timings.get("forward", 0.0), "scoring": timings.get("scoring", 0.0),
                                    "total": timings.get("total", 0.0)}})
        if "shards" in info:
            final["shards"] = info["shards"]
        return AttentionResult(per_image, summarize_gaze(per_image), final,
                               _examples(state, info.get("overlay_positions", []), info["methods"]))

    @classmethod
    def write(cls, result: AttentionResult, out: Path, params: dict) -> dict[str, Path]:
        return write_attention_files(result, out, params)

    @classmethod
    def console(cls, result: AttentionResult, params: dict, merged: int = 0) -> list[str]:
        return [] if merged else attention_console(result, params)


def _examples(state: RecordState, positions: list[int], methods: list[str]) -> dict | None:
    """The overlay examples of ``state`` in the order of ``positions`` (``None`` when it holds none)."""
    table = state.table("examples")
    if not len(table):
        return None
    ids = dict(zip(table["position"].astype(int), table["image"]))
    kept = [p for p in positions if p in ids]
    return {"images": [state.arrays[f"{p:07d}-image"] for p in kept], "titles": [ids[p] for p in kept],
            "human": [state.arrays[f"{p:07d}-human"] for p in kept],
            "maps": {m: [state.arrays[f"{p:07d}-map-{m}"] for p in kept] for m in methods}}


def run_attention_study(
    model: nn.Module,
    dataset,
    methods: Sequence[str] | str,
    *,
    layers: Any = None,
    image_size: int | None = 224,
    batch_size: int = 4,
    sigma: float = 24.0,
    n_other: int = 10,
    seed: int = 0,
    progress: bool = True,
    dense_layers: Sequence[Any] | None = None,
    duration_weighted: bool = False,
    ceiling: bool = True,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    shard: tuple[int, int] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    checkpoint_every: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Score attention maps against human gaze on every image of a dataset.

    For each image the preprocessed batch (:func:`dissect.models.inputs.preprocess`, ImageNet
    normalisation, ``image_size`` square) goes through :func:`dissect.attribution.attention_maps`
    once per method and layer (target: the model's top-1 class); each map is upsampled to the
    image's own size bilinearly (``align_corners=False``) and scored with
    :func:`probes.gaze.gaze_scores` against the image's unique fixated pixels and its density map
    (:func:`datasets.fixations.human_density`, ``sigma``). s-AUC uses the fixations of ``n_other``
    other images (:func:`datasets.fixations.other_images_fixations`, seeded per image); IG uses
    the centre-bias map as baseline. ``"dense"`` (Ebrahimpour et al.'s Densely Connected
    Attention Model) gets one row per single-layer map and per cumulative map (layer names
    ending in ``"+"``).

    Each image also gets the reference rows ``center_bias`` (floor, :func:`probes.gaze.center_bias_scores`
    convention, IG = 0) and ``human_loso`` (ceiling, :func:`probes.gaze.leave_one_subject_out`;
    only for images whose fixations table has >= 2 subjects; the others are counted in
    ``info["n_images_without_ceiling"]``), both with layer ``""``.

    Degenerate maps do not stop a run: a constant map is scored (NSS, CC, MAE NaN; see
    :func:`probes.gaze.gaze_scores`) and counted in ``info["n_constant_maps"]``; a map with NaN/inf
    gets a row of NaN and is counted in ``info["n_nonfinite_maps"]``. An image whose fixation map is
    empty (a SALICON file without points) is skipped and counted in ``info["n_images_skipped_empty"]``.

    Args:
        model: classifier taking ``N x 3 x S x S`` ImageNet-normalised images; it runs on the
            device of its parameters and ends in the state it started (the attribution's contract).
        dataset: indexable dataset of :class:`datasets.base.Sample` with fixations.
        methods: one or more of :data:`dissect.attribution.METHODS`.
        layers: ``None`` (each method's default layer, labelled by its name, e.g. ``"conv5_3"``; ``guided_backprop``
            works at the input, labelled ``""``), a layer (alias, dotted path or module) or a list
            of layers for every layer-level method, or ``{method: layer or list}``.
        image_size: side of the square network input (``None``: keep the images' size).
        batch_size: images per batch.
        sigma: Gaussian sigma of the human density maps, in image pixels (OSIE: 24).
        n_other: other images pooled for s-AUC (Borji: 10).
        seed: seed of the other-image draws and of the s-AUC permutations.
        progress: show a tqdm progress bar.
        dense_layers: layers of the dense model (default: :func:`dissect.attribution.dense_attention_maps`'s).
        duration_weighted: human densities with Ebrahimpour et al.'s duration weights (they used sigma 20).
        ceiling: compute the human leave-one-subject-out rows (the slowest part on OSIE: 15 subjects).
        options: per-method keyword options for :func:`dissect.attribution.attention_maps`, e.g.
            ``{"cam": {"cam_weights": fit_cam_regression(model, images)}}`` for VGG.
        shard: ``(i, n)``: only the i-th of n disjoint parts (whole batches of the images with
            fixations, :mod:`dissect.runner.shards`); the s-AUC pool and every per-image seed stay
            those of the whole dataset. Merge parts with ``python cli.py merge``
            (:func:`dissect.runner.merge_folders`).
        checkpoint_dir, resume, checkpoint_every: a resumable checkpoint (:func:`dissect.runner.run_pass`).

    Returns:
        ``(per_image, summary, info)``: ``per_image`` with :data:`PER_IMAGE_COLUMNS`, one row per
        image x method x layer (plus reference rows); ``summary`` from
        :func:`probes.gaze.summarize_gaze`; ``info`` with counts and timings
        (``seconds_per_image[method]``: time in the attention method per image).

    Raises:
        ValueError: an empty dataset, an image without fixations, unknown methods or layers,
            ``batch_size < 1`` or ``n_other < 1``.
    """
    study = AttentionStudy(model, dataset, methods, layers=layers, image_size=image_size, batch_size=batch_size,
                           sigma=sigma, n_other=n_other, seed=seed, dense_layers=dense_layers,
                           duration_weighted=duration_weighted, ceiling=ceiling, options=options)
    done = run_pass(study, checkpoint_dir=checkpoint_dir, resume=resume, shard=shard,
                    checkpoint_every=checkpoint_every, progress=progress)
    result = AttentionStudy.finish(done.state, done.info)
    return result.per_image, result.summary, result.info


def write_attention_report(model, dataset, methods: Sequence[str], out_dir: str | os.PathLike, *,
                           params: dict | None = None, n_examples: int = 3, progress: bool = True,
                           **study_options) -> dict[str, Path]:
    """Run the study and write its tables and figures (:func:`dissect.reports.attention.write_attention_files`).

    Args:
        model, dataset, methods: as for :func:`run_attention_study`.
        out_dir: the run folder (created; must be writable).
        params: extra run parameters for ``run.json`` (model, weights, versions, ...).
        n_examples: images shown in ``overlays.png``, taken round-robin over the dataset's
            categories (:func:`datasets.base.interleaved_order`), each map labelled with its NSS.
        **study_options: the options of :class:`AttentionStudy` (``image_size``, ``sigma``, ...).

    Returns:
        ``{name: path}`` of the written files.
    """
    study = AttentionStudy(model, dataset, methods, n_examples=n_examples, **study_options)
    done = run_pass(study, progress=progress)
    result = AttentionStudy.finish(done.state, done.info)
    params = dict(params or {})
    params.setdefault("model", getattr(model, "dissect_info", None))
    params.setdefault("dataset", getattr(dataset, "name", None))
    return AttentionStudy.write(result, Path(out_dir), params)
