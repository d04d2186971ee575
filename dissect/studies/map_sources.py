"""What ``evaluate`` scores: one map per image from a model (:class:`MapSource`).

A *model* is anything that gives one map per image: a classical model (:mod:`dissect.classical`),
a saliency network (``saliency_vgg16`` with a checkpoint), or a folder of maps computed elsewhere
(DeepGaze II, SAM, DVA, ...: ``<image_id>.npy|.png``, read by :func:`load_output_map`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from dissect import classical
from dissect.models.inputs import preprocess
from dissect.models.zoo import load_model

__all__ = ["NETWORK_MODELS", "MapSource", "classical_source", "network_source", "maps_source", "resolve_sources",
           "load_output_map", "check_unique"]

#: Networks whose output is a saliency map (load them with a checkpoint: ``--weights``).
NETWORK_MODELS: tuple[str, ...] = ("saliency_vgg16",)


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


def load_output_map(maps_dir: Path, image_id: str) -> np.ndarray:
    """Read a model's output map for one image (``.npy`` float or ``.png``/``.jpg`` grey)."""
    for ext in (".npy", ".png", ".jpg", ".jpeg"):
        path = maps_dir / f"{image_id}{ext}"
        if path.exists():
            try:
                if ext == ".npy":
                    return np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
                with Image.open(path) as im:
                    return np.asarray(im.convert("F"), dtype=np.float64)
            except (OSError, ValueError, SyntaxError) as exc:
                raise ValueError(f"cannot read output map {path}: {exc}; replace the file") from None
    raise FileNotFoundError(f"no output map for image {image_id!r} in {maps_dir} "
                            "(expected <image_id>.npy or .png)")


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
    (:func:`dissect.models.inputs.preprocess`), as for ``dissect``.
    """
    if name not in NETWORK_MODELS:
        raise ValueError(f"{name!r} is not a saliency network; evaluate takes {', '.join(NETWORK_MODELS)} "
                         f"(or a classical model: {', '.join(classical.METHODS)})")
    import torch

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
    check_unique([s.name for s in sources], "name --maps folders with NAME=DIR")
    if not sources:
        raise ValueError("no model to evaluate: give --model (e.g. gbvs) and/or --maps DIR")
    return sources


def check_unique(names: list[str], hint: str) -> None:
    twice = sorted({x for x in names if names.count(x) > 1})
    if twice:
        raise ValueError(f"model name(s) {twice} used twice; {hint}")
