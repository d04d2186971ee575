"""Score saliency models' OUTPUT maps on a dataset (``python cli.py evaluate``).

A *model* here is anything that gives one map per image (:class:`MapSource`): a classical model
(:mod:`dissect.classical`), a saliency network (``saliency_vgg16`` with a checkpoint), or a
folder of maps computed elsewhere (DeepGaze II, SAM, DVA, ...: ``<image_id>.npy|.png``).
:func:`run_evaluation` scores every model on every image:

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

Shard-safety (for a later split of the work): a per-image row depends only on that image, the
seed, and the dataset's list of fixation maps; the s-AUC negatives of image ``i`` are drawn with
``numpy.random.default_rng([seed, i])`` where ``i`` is the image's global position among the
dataset's images with fixations (:func:`probes.gaze.other_images_fixations`), and the AUC-Borji
and s-AUC permutations use ``seed``. Nothing depends on batch composition or run order.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from datasets.fixations import center_bias_map
from dissect import classical
from probes import metrics
from probes.gaze import (
    CEILING,
    EVALUATION_METRICS,
    FLOOR,
    center_bias_scores,
    gaze_scores,
    human_density,
    leave_one_subject_out,
    other_images_fixations,
)

__all__ = [
    "NETWORK_MODELS",
    "POPOUT_CEILING",
    "MapSource",
    "EvaluationResult",
    "classical_source",
    "network_source",
    "maps_source",
    "resolve_sources",
    "run_evaluation",
    "summarize",
]

#: Networks whose output is a saliency map (load them with a checkpoint: ``--weights``).
NETWORK_MODELS: tuple[str, ...] = ("saliency_vgg16",)
#: Model name of the per-image NMM ceiling rows on pop-out arrays.
POPOUT_CEILING = "nmm_ceiling"
_POPOUT_METRICS: tuple[str, ...] = ("nmm", "nmm_ratio")
_REFERENCE = (FLOOR, CEILING, POPOUT_CEILING)


@dataclass
class MapSource:
    """One model to evaluate: ``compute(sample) -> map`` (any size; resized to the image).

    Attributes:
        name: the ``model`` column (and the folder name under ``--save-maps``).
        weights: the ``weights`` column (``""`` for classical models, ``"external"`` for maps).
        kind: ``"classical"``, ``"network"`` or ``"maps"``.
        compute: the map of one :class:`datasets.base.Sample`.
        info: what run.json records about the model (options, weights detail, folder).
        check: optional pre-flight check of one sample (external maps: the file exists and is
            finite), run on every image before any model is computed.
    """

    name: str
    weights: str
    kind: str
    compute: Callable[[Any], np.ndarray]
    info: dict = field(default_factory=dict)
    check: Callable[[Any], None] | None = None


@dataclass
class EvaluationResult:
    """What :func:`run_evaluation` returns (the report writer turns it into files)."""

    per_image: pd.DataFrame
    summary: pd.DataFrame
    info: dict
    popout_dimensions: pd.DataFrame | None = None
    output_saliency: pd.DataFrame | None = None
    examples: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- model sources


def classical_source(method: str, **options) -> MapSource:
    """A :mod:`dissect.classical` model (``options`` passed to its function)."""
    if method not in classical.METHODS:
        raise ValueError(f"unknown classical model {method!r}; choose from {', '.join(classical.METHODS)}")
    defaults = classical.method_defaults(method)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"{method} does not take option(s) {unknown}; it takes {sorted(defaults)}")

    def compute(sample) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # grey images are recorded by run_evaluation instead
            return classical.saliency_map(sample.image, method, **options)

    return MapSource(method, "", "classical", compute, {"options": {**defaults, **options}})


def network_source(name: str, weights: str = "auto", *, image_size: int = 224, device: str = "cpu",
                   seed: int = 0) -> MapSource:
    """A saliency network of :data:`NETWORK_MODELS`, its map upsampled bilinearly to each image.

    The image is resized to ``image_size`` squared and ImageNet-normalised
    (:func:`dissect.dissection.preprocess`), as for ``dissect``.
    """
    if name not in NETWORK_MODELS:
        raise ValueError(f"{name!r} is not a saliency network; evaluate takes {', '.join(NETWORK_MODELS)} "
                         f"(or a classical model: {', '.join(classical.METHODS)})")
    import torch

    from dissect.dissection import preprocess
    from dissect.models import load_model

    model = load_model(name, weights=weights, seed=seed).to(device).eval()
    info = dict(getattr(model, "dissect_info", {}))

    def compute(sample) -> np.ndarray:
        batch = preprocess([sample.image], image_size).to(device)
        with torch.inference_mode():
            out = model(batch, out_size=sample.shape)
        return out[0].detach().cpu().double().numpy()

    label = str(info.get("weights_detail") or info.get("weights") or weights)
    return MapSource(name, label, "network", compute, {"model": info, "image_size": image_size})


def _load_map(folder: Path, image_id: str) -> np.ndarray:
    from dissect.stats_report import load_output_map

    m = load_output_map(folder, image_id)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[..., 0]
    if m.ndim != 2:
        raise ValueError(f"map {folder / image_id} has shape {m.shape}; a saliency map must be 2-D (H x W)")
    if not np.isfinite(m).all():
        raise ValueError(f"map {folder / image_id} holds NaN or inf values; fix or recompute it "
                         "(a map must be finite everywhere)")
    return m


def maps_source(folder: str | Path, name: str | None = None) -> MapSource:
    """Maps computed elsewhere: ``folder/<image_id>.npy`` (float) or ``.png``/``.jpg`` (grey).

    ``name`` defaults to the folder's name (so ``--save-maps DIR`` then ``--maps DIR/<model>``
    gives the same model name).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"maps folder {folder} does not exist or is not a folder")
    label = name or folder.name

    def check(sample) -> None:
        _load_map(folder, sample.image_id)

    def compute(sample) -> np.ndarray:
        return _load_map(folder, sample.image_id)

    return MapSource(label, "external", "maps", compute, {"folder": str(folder)}, check=check)


def resolve_sources(models: Sequence[str] = (), *, weights: str | None = None, maps: Sequence[str] = (),
                    image_size: int = 224, device: str = "cpu", seed: int = 0) -> list[MapSource]:
    """The command line's ``--model`` / ``--weights`` / ``--maps`` as :class:`MapSource` objects.

    ``maps`` entries are ``DIR`` or ``NAME=DIR``.

    Raises:
        ValueError: an unknown model (the message lists them), ``--weights`` without a network
            model, a model listed twice.
    """
    names = list(models)
    unknown = [m for m in names if m not in classical.METHODS and m not in NETWORK_MODELS]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r}; choose from {', '.join(classical.METHODS + NETWORK_MODELS)} "
                         "(or bring any other model's maps with --maps DIR)")
    if weights is not None and not any(m in NETWORK_MODELS for m in names):
        what = f"{names[0]} is a classical model" if names else "no network model was given"
        raise ValueError(f"--weights applies to a saliency network ({', '.join(NETWORK_MODELS)}); {what} "
                         "and takes no weights: drop --weights")
    sources = [classical_source(m) if m in classical.METHODS else
               network_source(m, weights or "auto", image_size=image_size, device=device, seed=seed)
               for m in names]
    for spec in maps:
        name, sep, folder = str(spec).partition("=")
        sources.append(maps_source(folder, name) if sep else maps_source(spec))
    _check_unique([s.name for s in sources], "name --maps folders with NAME=DIR")
    if not sources:
        raise ValueError("no model to evaluate: give --model (e.g. gbvs) and/or --maps DIR")
    return sources


def _check_unique(names: list[str], hint: str) -> None:
    twice = sorted({x for x in names if names.count(x) > 1})
    if twice:
        raise ValueError(f"model name(s) {twice} used twice; {hint}")


# --------------------------------------------------------------------------- evaluation


def _fixation_map(sample) -> np.ndarray | None:
    from dissect.attention_study import _sample_fixation_map

    return _sample_fixation_map(sample)


def _is_grey(image: np.ndarray) -> bool:
    return bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())


def _save_map(folder: Path, name: str, image_id: str, m: np.ndarray) -> None:
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f".{image_id}.npy.tmp"
    with open(tmp, "wb") as fh:
        np.save(fh, m)
    tmp.replace(target / f"{image_id}.npy")


def _gaze_row(m: np.ndarray, fix, density, other, bias, seed: int) -> dict[str, float]:
    scores = gaze_scores(m, fix, density, other_fixation_map=other, baseline=bias, seed=seed, borji=True)
    return {k: scores[k] for k in EVALUATION_METRICS}


def _popout_row(m: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    value, ceiling = metrics.nmm(m, mask), metrics.nmm_ceiling(mask)
    return {"nmm": value, "nmm_ratio": value / ceiling if ceiling > 0 else math.nan}


def run_evaluation(
    dataset,
    sources: Sequence[MapSource],
    *,
    sigma: float = 24.0,
    n_other: int = 10,
    seed: int = 0,
    ceiling: bool = True,
    max_images: int | None = None,
    save_maps: str | Path | None = None,
    n_examples: int = 3,
    progress: bool = True,
) -> EvaluationResult:
    """Score every model's map on every image of ``dataset`` (module docstring).

    Args:
        dataset: indexable dataset of :class:`datasets.base.Sample` (fixations, or pop-out
            arrays with ``meta["dimension"]`` and a target mask).
        sources: the models (:func:`resolve_sources`, :func:`classical_source`, ...).
        sigma: Gaussian sigma of the human density maps in pixels (OSIE: 24).
        n_other: other images pooled for s-AUC (Borji: 10).
        seed: seed of the s-AUC / AUC-Borji draws and of the ceiling's split halves.
        ceiling: compute the human ``human_loso`` rows (the slowest part on 15 observers).
        max_images: use only the first N images.
        save_maps: folder; each model's map (at the image's size, float64) is written to
            ``save_maps/<model>/<image_id>.npy`` as soon as it is computed.
        n_examples: images whose maps are kept for the example figure.
        progress: show a tqdm bar.

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
    from datasets.base import first
    from dissect.resize import resize_map

    sources = list(sources)
    if not sources:
        raise ValueError("no model to evaluate")
    _check_unique([s.name for s in sources], "give each MapSource its own name")
    data = first(dataset, max_images)
    n_total = len(data)
    if n_total == 0:
        raise ValueError(f"dataset {getattr(dataset, 'name', '')!r} has no images: check the data root")
    if int(n_other) != n_other or n_other < 1:
        raise ValueError(f"n_other must be a positive integer, got {n_other!r}")

    # Pass 1: fixations of every image (s-AUC pool), the kind of dataset, external maps checked.
    from dissect.attention_study import _FixationMaps, _Subset

    all_fix = _FixationMaps()
    has_fix, is_popout, grey = [], [], []
    checks = [s for s in sources if s.check is not None]
    for i in tqdm(range(n_total), desc="checking", unit="img", disable=not progress or not checks,
                  dynamic_ncols=True):
        sample = data[i]
        fix = _fixation_map(sample)
        has_fix.append(fix is not None)
        all_fix.append(fix if fix is not None else np.zeros(sample.shape, bool))
        is_popout.append("dimension" in sample.meta and len(sample.masks) >= 1)
        if _is_grey(sample.image):
            grey.append(sample.image_id)
        for s in checks:
            s.check(sample)
    gaze_mode = all(has_fix)
    popout_mode = all(is_popout)
    if not gaze_mode and not popout_mode:
        raise ValueError("evaluate needs a dataset with fixations (osie, osie-sr, salicon, folder with "
                         "fixations.csv, popout-gaze) or pop-out arrays with target masks (popout)")
    usable = [i for i in range(n_total) if not gaze_mode or all_fix.n_points(i) > 0]
    if not usable:
        raise ValueError("every image's fixation map is empty; nothing to score")
    pool = _Subset(all_fix, usable)
    if grey and not popout_mode:  # pop-out arrays are grey by design (luminance, orientation, ...)
        warnings.warn(f"{len(grey)} grey image(s) (all three channels equal; a grey file is converted to RGB "
                      "by the loader): the colour features of the models see nothing there; listed in run.json "
                      "grayscale_images", stacklevel=2)

    save_dir = Path(save_maps).expanduser() if save_maps is not None else None
    rows: list[dict] = []
    regions: list[pd.DataFrame] = []
    seconds = {s.name: 0.0 for s in sources}
    resized: dict[str, dict[str, int]] = {}
    n_constant = {s.name: 0 for s in sources}
    examples: dict = {"image_id": [], "image": [], "human": [], "maps": {s.name: [] for s in sources}}
    n_no_ceiling = 0
    t_start = time.perf_counter()
    bar = tqdm(total=len(usable), desc="evaluate", unit="img", disable=not progress, dynamic_ncols=True)
    try:
        for pos, index in enumerate(usable):
            sample = data[index]
            shape = sample.shape
            base = {"image": sample.image_id}
            dim = {"dimension": str(sample.meta["dimension"])} if popout_mode else {}
            if gaze_mode:
                fix = all_fix[index]
                density = human_density(sample, sigma)
                other = other_images_fixations(pool, pos, shape, n_other=n_other, seed=seed) if len(usable) > 1 else None
                bias = center_bias_map(shape)
            if popout_mode:
                mask = np.asarray(sample.masks[0], bool)
            keep = len(examples["image_id"]) < n_examples
            if keep:
                examples["image_id"].append(sample.image_id)
                examples["image"].append(sample.image)
                examples["human"].append(density if gaze_mode else mask.astype(np.float64))
            for s in sources:
                t0 = time.perf_counter()
                raw = np.asarray(s.compute(sample), dtype=np.float64)
                dt = time.perf_counter() - t0
                seconds[s.name] += dt
                if raw.ndim != 2:
                    raise ValueError(f"model {s.name} gave a map of shape {raw.shape} for image "
                                     f"{sample.image_id!r}; a saliency map must be 2-D")
                if not np.isfinite(raw).all():
                    raise ValueError(f"model {s.name} gave a map with NaN or inf for image {sample.image_id!r}")
                if raw.shape != shape:
                    key = f"{raw.shape[0]}x{raw.shape[1]}"
                    resized.setdefault(s.name, {})
                    resized[s.name][key] = resized[s.name].get(key, 0) + 1
                    m = resize_map(raw, shape)
                else:
                    m = raw
                if metrics.is_constant(m):
                    n_constant[s.name] += 1
                if save_dir is not None:
                    _save_map(save_dir, s.name, sample.image_id, m)
                if keep:
                    examples["maps"][s.name].append(m)
                row = {**base, "model": s.name, "weights": s.weights, **dim}
                if gaze_mode:
                    row.update(_gaze_row(m, fix, density, other, bias, seed))
                    if len(sample.masks):
                        reg = _region_scores(m, density, fix, sample)
                        regions.append(reg.assign(model=s.name, weights=s.weights))
                if popout_mode:
                    row.update(_popout_row(m, mask))
                row["seconds"] = dt
                rows.append(row)
            # reference rows: the floor (centre bias) and the ceilings
            bias_map = center_bias_map(shape)
            floor_row = {**base, "model": FLOOR, "weights": "", **dim}
            if gaze_mode:
                floor = center_bias_scores(fix, density, other_fixation_map=other, seed=seed, borji=True)
                floor_row.update({k: floor[k] for k in EVALUATION_METRICS})
            if popout_mode:
                floor_row.update(_popout_row(bias_map, mask))
            rows.append({**floor_row, "seconds": math.nan})
            if gaze_mode and ceiling:
                table = getattr(sample, "fixations", None)
                top = (leave_one_subject_out(table, shape, sigma, other_fixation_map=other, baseline=bias,
                                             seed=seed, borji=True) if table is not None else None)
                if top is None or top["n_subjects"] < 2:
                    n_no_ceiling += 1
                else:
                    rows.append({**base, "model": CEILING, "weights": "", **dim,
                                 **{k: top[k] for k in EVALUATION_METRICS}, "seconds": math.nan})
            if popout_mode:
                rows.append({**base, "model": POPOUT_CEILING, "weights": "", **dim,
                             "nmm": metrics.nmm_ceiling(mask), "nmm_ratio": 1.0, "seconds": math.nan})
            bar.update(1)
    except KeyboardInterrupt:
        bar.close()
        raise
    except (ValueError, RuntimeError) as exc:
        bar.close()
        if save_dir is not None:
            raise type(exc)(f"{exc} (maps computed so far are in {save_dir})") from exc
        raise
    bar.close()

    metric_cols = (EVALUATION_METRICS if gaze_mode else ()) + (_POPOUT_METRICS if popout_mode else ())
    columns = ["image", "model", "weights", *(["dimension"] if popout_mode else []), *metric_cols, "seconds"]
    per_image = pd.DataFrame(rows).reindex(columns=columns)
    summary = summarize(per_image, metric_cols)
    dims = _per_dimension(per_image) if popout_mode else None
    os_table = _output_saliency(regions) if regions else None
    n_images = len(usable)
    info = {
        "metrics": list(metric_cols),
        "mode": "+".join(m for m, on in (("fixations", gaze_mode), ("popout", popout_mode)) if on),
        "n_images": n_images,
        "n_images_skipped_empty": n_total - n_images,
        "n_images_without_ceiling": n_no_ceiling if gaze_mode and ceiling else None,
        "grayscale_images": grey,
        "maps_resized": {name: {"n_images": sum(v.values()), "from_shapes": v,
                                "method": "bilinear, half-pixel centres (align_corners=False)"}
                         for name, v in resized.items()},
        "n_constant_maps": n_constant,
        "seconds_per_image": {k: v / n_images for k, v in seconds.items()},
        "models": {s.name: {"kind": s.kind, "weights": s.weights, **s.info} for s in sources},
        "sigma": sigma, "n_other": n_other, "seed": seed, "ceiling": ceiling,
        "saved_maps": str(save_dir) if save_dir is not None else None,
        "seconds_total": time.perf_counter() - t_start,
    }
    return EvaluationResult(per_image, summary, info, dims, os_table, examples)


def _region_scores(m, density, fix, sample) -> pd.DataFrame:
    from probes.stats import region_output_scores

    return region_output_scores(m, density, fix, sample.masks, sample.categories, image_id=sample.image_id)


def _output_saliency(regions: list[pd.DataFrame]) -> pd.DataFrame:
    from probes.stats import output_saliency

    table = pd.concat(regions, ignore_index=True)
    parts = []
    for (model, weights), g in table.groupby(["model", "weights"], sort=False):
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
