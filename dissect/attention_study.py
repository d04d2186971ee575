"""Attention maps vs human gaze over a dataset, and FGSM robustness (Lai et al. 2020; Ebrahimpour et al. 2019).

:func:`run_attention_study` computes each attention method's map (:mod:`dissect.attention`) for
every image, upsamples it to the image's own size and scores it against the image's fixations
with :func:`probes.gaze.gaze_scores`, next to a floor (centre bias) and a ceiling (human
leave-one-subject-out) per image. :func:`fooling_rate` measures how often a one-step FGSM
perturbation changes the model's top-1 prediction (Lai et al. 2020, eq. 11).
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from datasets.fixations import center_bias_map, fixation_map
from dissect import attention
from dissect.attention import _default_layer as default_layer
from dissect.checks import check_count, check_seed
from dissect.dissection import preprocess
from dissect.hooks import resolve_layer
from dissect.models import IMAGENET_MEAN, IMAGENET_STD, model_device
from dissect.resize import resize_map
from probes.metrics import is_constant, prepare
from probes.gaze import (
    CEILING,
    FLOOR,
    GAZE_METRICS,
    gaze_scores,
    human_density,
    leave_one_subject_out,
    other_images_fixations,
    summarize_gaze,
)

__all__ = ["PER_IMAGE_COLUMNS", "run_attention_study", "fixation_pool", "fgsm_perturb", "fooling_rate"]

#: Columns of the per-image table of :func:`run_attention_study`.
PER_IMAGE_COLUMNS: tuple[str, ...] = ("image", "method", "layer", *GAZE_METRICS)

_NO_FIXATIONS = "the gaze comparison needs a dataset with fixations (osie, salicon, folder with fixations.csv)"
# Methods whose map lives at the input (no layer to choose).
_PIXEL_METHODS = ("guided_backprop",)


# --------------------------------------------------------------------------- helpers


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


class _FixationMaps(Sequence):
    """Binary fixation maps of a dataset, stored as fixated pixel indices (OSIE: ~140 per image
    instead of 480,000 booleans), rebuilt on access for :func:`other_images_fixations`."""

    def __init__(self) -> None:
        self._items: list[tuple[np.ndarray, np.ndarray, tuple[int, int]]] = []

    def append(self, fix: np.ndarray) -> None:
        rows, cols = np.nonzero(fix)
        self._items.append((rows.astype(np.int32), cols.astype(np.int32), fix.shape))

    def __len__(self) -> int:
        return len(self._items)

    def n_points(self, index: int) -> int:
        return len(self._items[index][0])

    def __getitem__(self, index: int) -> np.ndarray:
        rows, cols, shape = self._items[index]
        out = np.zeros(shape, dtype=bool)
        out[rows, cols] = True
        return out


class _Subset(Sequence):
    """The items of ``base`` at ``indices`` (other-image pools skip images without fixations)."""

    def __init__(self, base: Sequence, indices: Sequence[int]) -> None:
        self._base, self._indices = base, list(indices)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int):
        return self._base[self._indices[index]]


def _sample_fixation_map(sample) -> np.ndarray | None:
    fix = getattr(sample, "fixation_map", None)
    if fix is not None:
        return np.asarray(fix, dtype=bool)
    table = getattr(sample, "fixations", None)
    if table is None:
        return None
    return fixation_map(table["x"].to_numpy(), table["y"].to_numpy(), sample.shape)


def fixation_pool(dataset) -> tuple[_FixationMaps, list[int]]:
    """Every image's fixated pixels (compactly) and the indices of the images that have any.

    The first pass of :func:`run_attention_study` (the s-AUC negatives come from all images);
    shards compute it once and pass it to each piece.

    Raises:
        ValueError: an empty dataset, an image without fixations, every fixation map empty.
    """
    n_total = len(dataset)
    if n_total == 0:
        raise ValueError(f"dataset {getattr(dataset, 'name', '')!r} has no images: check the data root")
    all_maps = _FixationMaps()
    for i in range(n_total):
        sample = dataset[i]
        fix = _sample_fixation_map(sample)
        if fix is None:
            raise ValueError(f"image {sample.image_id!r} has no fixations: {_NO_FIXATIONS}")
        all_maps.append(fix)
    usable = [i for i in range(n_total) if all_maps.n_points(i) > 0]
    if not usable:
        raise ValueError(f"every image's fixation map is empty: {_NO_FIXATIONS}")
    return all_maps, usable


# --------------------------------------------------------------------------- gaze study


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
    shard: Any = None,
    pool: tuple | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Score attention maps against human gaze on every image of a dataset.

    For each image the preprocessed batch (:func:`dissect.dissection.preprocess`, ImageNet
    normalisation, ``image_size`` square) goes through :func:`dissect.attention.attention_maps`
    once per method and layer (target: the model's top-1 class); each map is upsampled to the
    image's own size bilinearly (``align_corners=False``) and scored with
    :func:`probes.gaze.gaze_scores` against the image's unique fixated pixels and its density map
    (:func:`probes.gaze.human_density`, ``sigma``). s-AUC uses the fixations of ``n_other`` other
    images (:func:`probes.gaze.other_images_fixations`, seeded per image); IG uses the centre-bias
    map as baseline. ``"dense"`` (Ebrahimpour et al.'s Densely Connected Attention Model) gets
    one row per single-layer map and per cumulative map (layer names ending in ``"+"``).

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
            device of its parameters and ends in the state it started (dissect.attention's contract).
        dataset: indexable dataset of :class:`datasets.base.Sample` with fixations.
        methods: one or more of :data:`dissect.attention.METHODS`.
        layers: ``None`` (each method's default layer, labelled by its name, e.g. ``"conv5_3"``; ``guided_backprop``
            works at the input, labelled ``""``), a layer (alias, dotted path or module) or a list
            of layers for every layer-level method, or ``{method: layer or list}``.
        image_size: side of the square network input (``None``: keep the images' size).
        batch_size: images per batch.
        sigma: Gaussian sigma of the human density maps, in image pixels (OSIE: 24).
        n_other: other images pooled for s-AUC (Borji: 10).
        seed: seed of the other-image draws and of the s-AUC permutations.
        progress: show a tqdm progress bar.
        dense_layers: layers of the dense model (default: :func:`dissect.attention.dense_attention_maps`'s).
        duration_weighted: human densities with Ebrahimpour et al.'s duration weights (they used sigma 20).
        ceiling: compute the human leave-one-subject-out rows (the slowest part on OSIE: 15 subjects).
        options: per-method keyword options for :func:`dissect.attention.attention_maps`, e.g.
            ``{"cam": {"cam_weights": fit_cam_regression(model, images)}}`` for VGG.
        shard: ``(i, n)``: only the i-th of n disjoint parts (whole batches of the images with
            fixations, :func:`dissect.shards.shard_batches`; a ``range`` of batch numbers also
            works); the s-AUC pool and every per-image seed stay those of the whole dataset.
            Merge parts with ``python cli.py merge`` (:mod:`dissect.shards`).
        pool: :func:`fixation_pool` of ``dataset``, when already computed.

    Returns:
        ``(per_image, summary, info)``: ``per_image`` with :data:`PER_IMAGE_COLUMNS`, one row per
        image x method x layer (plus reference rows); ``summary`` from
        :func:`probes.gaze.summarize_gaze`; ``info`` with counts and timings
        (``seconds_per_image[method]``: time in the attention method per image).

    Raises:
        ValueError: an empty dataset, an image without fixations, unknown methods or layers,
            ``batch_size < 1`` or ``n_other < 1``.
    """
    methods = _check_methods(methods)
    batch_size = check_count("batch_size", batch_size)
    seed = check_seed(seed)
    if int(n_other) != n_other or n_other < 1:
        raise ValueError(f"n_other must be a positive integer, got {n_other!r}")
    n_total = len(dataset)
    if n_total == 0:
        raise ValueError(f"dataset {getattr(dataset, 'name', '')!r} has no images: check the data root")
    plan = _layer_plan(model, methods, layers)
    options = dict(options or {})
    unknown = [m for m in options if m not in methods]
    if unknown:
        raise ValueError(f"options given for method(s) {unknown} that are not in methods {methods}")
    if "dense" in options:
        raise ValueError("choose the dense model's layers with dense_layers=, not options={'dense': ...}")
    device = model_device(model)

    # First pass: fail before any model work if an image lacks fixations, and keep every image's
    # fixated pixels (compactly) for the other-image s-AUC negatives.
    all_maps, usable = pool if pool is not None else fixation_pool(dataset)
    pool = _Subset(all_maps, usable)
    starts = range(0, len(usable), batch_size)
    if shard is not None:
        from dissect.shards import shard_batches

        part = shard_batches(len(starts), shard)
        starts = starts[part.start:part.stop]

    seconds = dict.fromkeys(methods, 0.0)
    n_constant = dict.fromkeys(methods, 0)
    n_nonfinite = dict.fromkeys(methods, 0)
    counts = {"n_images": 0, "n_images_skipped_empty": n_total - len(usable), "n_images_without_ceiling": 0,
              "n_fixations": 0, "n_fixations_dropped": 0}
    rows: list[dict] = []
    dense_names: list[str] = []  # the dense model's layers, as dissect.attention names them
    t_start = time.perf_counter()
    t_score = 0.0
    bar = tqdm(total=sum(len(usable[s:s + batch_size]) for s in starts), desc="attention vs gaze", unit="img",
               disable=not progress, dynamic_ncols=True)
    try:
        for start in starts:
            chunk = usable[start:start + batch_size]
            samples = [dataset[i] for i in chunk]
            batch = preprocess([s.image for s in samples], image_size).to(device)
            maps: dict[tuple[str, str], torch.Tensor] = {}
            for method in methods:
                t0 = time.perf_counter()
                if method == "dense":
                    for name, m in attention.dense_attention_maps(model, batch, layers=dense_layers).items():
                        maps[(method, name)] = m.detach().cpu()
                        if not name.endswith("+") and name not in dense_names:
                            dense_names.append(name)
                else:
                    for label, spec in plan[method]:
                        maps[(method, label)] = attention.attention_maps(
                            model, batch, method, layer=spec, **options.get(method, {})).detach().cpu()
                seconds[method] += time.perf_counter() - t0
            t0 = time.perf_counter()
            for k, (index, sample) in enumerate(zip(chunk, samples)):
                shape = sample.shape
                fix = all_maps[index]
                density = human_density(sample, sigma, duration_weighted=duration_weighted)
                pos = start + k  # the image's position among usable images
                other = (other_images_fixations(pool, pos, shape, n_other=n_other, seed=seed)
                         if len(usable) > 1 else None)
                bias = center_bias_map(shape)
                # The human maps are validated once per image, not once per method and metric.
                fix, density, bias = prepare(fix, "fixation_map"), prepare(density, "density"), prepare(bias, "baseline")
                other = None if other is None else prepare(other, "other_fixation_map")
                for (method, label), m in maps.items():
                    if not bool(torch.isfinite(m[k]).all()):
                        n_nonfinite[method] += 1
                        scores = dict.fromkeys(GAZE_METRICS, math.nan)
                    else:
                        n_constant[method] += int(is_constant(m[k]))
                        scores = gaze_scores(resize_map(m[k], shape), fix, density, other_fixation_map=other,
                                             baseline=bias, seed=seed)
                    rows.append({"image": sample.image_id, "method": method, "layer": label, **scores})
                rows.append({"image": sample.image_id, "method": FLOOR, "layer": "",
                             **gaze_scores(bias, fix, density, other_fixation_map=other, baseline=bias, seed=seed)})
                loso = None
                if ceiling and getattr(sample, "fixations", None) is not None:
                    loso = leave_one_subject_out(sample.fixations, shape, sigma, other_fixation_map=other,
                                                 baseline=bias, seed=seed, duration_weighted=duration_weighted)
                if loso is not None and loso["n_subjects"] >= 2:
                    rows.append({"image": sample.image_id, "method": CEILING, "layer": "",
                                 **{key: loso[key] for key in GAZE_METRICS}})
                elif ceiling:
                    counts["n_images_without_ceiling"] += 1
                counts["n_images"] += 1
                counts["n_fixations"] += int(sample.meta.get("n_fixations", 0))
                counts["n_fixations_dropped"] += int(sample.meta.get("n_dropped", 0))
            t_score += time.perf_counter() - t0
            bar.update(len(chunk))
    finally:
        bar.close()

    per_image = pd.DataFrame(rows, columns=list(PER_IMAGE_COLUMNS))
    n = max(counts["n_images"], 1)
    info = {
        "methods": methods,
        "layers": {m: [label for label, _ in plan[m]] for m in plan},
        "dense_layers": dense_names,
        "image_size": image_size,
        "batch_size": batch_size,
        "sigma": sigma,
        "duration_weighted": duration_weighted,
        "n_other": int(min(n_other, max(len(usable) - 1, 0))),
        "seed": seed,
        "device": str(device),
        **counts,
        "n_rows": len(per_image),
        "n_constant_maps": n_constant,
        "n_nonfinite_maps": n_nonfinite,
        "seconds_per_image": {m: round(s / n, 6) for m, s in seconds.items()},
        "timings_s": {"maps": round(sum(seconds.values()), 4), "scoring": round(t_score, 4),
                      "total": round(time.perf_counter() - t_start, 4)},
    }
    return per_image, summarize_gaze(per_image), info


# --------------------------------------------------------------------------- FGSM robustness


class _Normalize(nn.Module):
    """``model((x - mean) / std)``: lets the attack work on [0, 1] pixels."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        device = model_device(model)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


@contextlib.contextmanager
def _attack_state(model: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm statistics and dropout must not depend on the batch) and frozen
    parameters (only the input needs a gradient); every flag restored afterwards, also on error."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in grads:
            p.requires_grad_(False)
        yield
    finally:
        for m, training in modes:
            m.train(training)
        for p, flag in grads:
            p.requires_grad_(flag)


def _check_epsilon(epsilon: float) -> float:
    try:
        eps = float(epsilon)
    except (TypeError, ValueError):
        raise ValueError(f"epsilon must be a number in [0, 1] (pixel units), got {epsilon!r}") from None
    if not (0.0 <= eps <= 1.0):
        raise ValueError(
            f"epsilon must be in [0, 1] (pixel units: images in [0, 1] before normalisation, "
            f"e.g. 8/255 = {8 / 255:.4f}), got {epsilon!r}"
        )
    return eps


def _logits(wrapped: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    out = wrapped(pixels)
    if out.ndim != 2:
        raise ValueError(
            f"FGSM needs a classifier with N x K logits, the model returned shape {tuple(out.shape)}"
        )
    return out


def _loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # Per-image loss ("none"): captum differentiates each element, so each image's gradient is its
    # own; a mean would shrink gradients by 1/N, under captum's 1e-6 zero threshold.
    return F.cross_entropy(logits, labels, reduction="none")


def _perturb(wrapped: nn.Module, pixels: torch.Tensor, epsilon: float, labels: torch.Tensor) -> torch.Tensor:
    from captum.robust import FGSM

    attack = FGSM(wrapped, loss_func=_loss, lower_bound=0.0, upper_bound=1.0)
    # An input that already requires grad spares captum's "did not require gradients" warning.
    x = pixels.detach().clone().requires_grad_(True)
    return attack.perturb(x, epsilon=epsilon, target=labels).detach()


def fgsm_perturb(
    model: nn.Module,
    pixels: torch.Tensor,
    epsilon: float,
    labels: torch.Tensor | Sequence[int] | None = None,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One untargeted FGSM step on [0, 1] pixels (Goodfellow et al. 2015), with captum's ``FGSM``.

    ``x' = clamp(x + epsilon * sign(d CE(model(norm(x)), y) / dx), 0, 1)`` where ``norm`` is the
    ImageNet normalisation applied *inside* a wrapper module, so ``epsilon`` is in pixel units
    whatever the normalisation. The loss is the per-image cross entropy of the logits. captum
    leaves an input element unchanged where ``|gradient| <= 1e-6`` (its ``zero_thresh``).

    Args:
        model: classifier taking normalised ``N x 3 x S x S`` images, returning ``N x K`` logits.
        pixels: ``N x 3 x S x S`` images in [0, 1] (not normalised).
        epsilon: step size in [0, 1].
        labels: labels to move away from; default the model's own top-1 predictions.
        mean, std: the normalisation the model expects.

    Returns:
        ``(perturbed pixels, labels)`` on the model's device.

    Raises:
        ValueError: ``epsilon`` outside [0, 1], pixels outside [0, 1] or not ``N x 3 x S x S``,
            a model without ``N x K`` outputs.
    """
    eps = _check_epsilon(epsilon)
    if pixels.ndim != 4:
        raise ValueError(f"pixels must be N x C x H x W, got shape {tuple(pixels.shape)}")
    if pixels.numel() and (pixels.min() < 0 or pixels.max() > 1):
        raise ValueError("pixels must lie in [0, 1] (unnormalised images); the normalisation happens inside")
    device = model_device(model)
    pixels = pixels.detach().to(device, torch.float32)
    with _attack_state(model):
        wrapped = _Normalize(model, mean, std)
        if labels is None:
            with torch.no_grad():
                labels = _logits(wrapped, pixels).argmax(dim=1)
        else:
            labels = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1)
        adv = _perturb(wrapped, pixels, eps, labels)
    return adv, labels


def fooling_rate(
    model: nn.Module,
    dataset,
    epsilon: float,
    *,
    image_size: int | None = 224,
    batch_size: int = 8,
    progress: bool = True,
) -> dict:
    """FGSM fooling rate: the fraction of images whose top-1 prediction changes [Lai et al. 2020, eq. 11].

    Each image is resized like :func:`dissect.dissection.preprocess` and kept in [0, 1]; the
    model's own top-1 prediction is the label of an untargeted FGSM step of size ``epsilon``
    (:func:`fgsm_perturb`: the ImageNet normalisation runs inside a wrapper, the result is
    clamped to [0, 1]); ``fooling_rate = n_changed / n_images``. The model runs in eval mode
    on its own device, with frozen parameters; its modes and ``requires_grad`` flags are restored.

    Args:
        model: ImageNet-normalised classifier with ``N x K`` logits.
        dataset: indexable dataset of :class:`datasets.base.Sample` (no fixations needed).
        epsilon: perturbation size in pixel units, in [0, 1] (e.g. 8/255).
        image_size: side of the square network input (``None``: keep the images' size).
        batch_size: images per attack step.
        progress: show a tqdm progress bar.

    Returns:
        ``{"epsilon", "n_images", "n_changed", "fooling_rate"}``.

    Raises:
        ValueError: ``epsilon`` outside [0, 1], an empty dataset, ``batch_size < 1``, a model
            without ``N x K`` outputs.
    """
    eps = _check_epsilon(epsilon)
    batch_size = check_count("batch_size", batch_size)
    n_total = len(dataset)
    if n_total == 0:
        raise ValueError(f"dataset {getattr(dataset, 'name', '')!r} has no images: check the data root")
    n_changed = 0
    bar = tqdm(total=n_total, desc=f"FGSM eps={eps:.4g}", unit="img", disable=not progress, dynamic_ncols=True)
    try:
        for start in range(0, n_total, batch_size):
            samples = [dataset[i] for i in range(start, min(start + batch_size, n_total))]
            # mean 0, std 1: the same resize as preprocess, pixels left in [0, 1].
            pixels = preprocess([s.image for s in samples], image_size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
            adv, labels = fgsm_perturb(model, pixels, eps)
            with _attack_state(model), torch.no_grad():
                after = _logits(_Normalize(model, IMAGENET_MEAN, IMAGENET_STD), adv).argmax(dim=1)
            n_changed += int((after != labels).sum())
            bar.update(len(samples))
    finally:
        bar.close()
    return {"epsilon": eps, "n_images": n_total, "n_changed": n_changed, "fooling_rate": n_changed / n_total}
