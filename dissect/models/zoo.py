"""The model zoo: :func:`load_model` builds any model of the studies with known weights; checkpoints.

``load_model`` builds one of :data:`ALL_MODEL_NAMES` in eval mode with ImageNet, seeded random or
file weights and records what it used in ``model.dissect_info``, so every report can state it:
the ImageNet classifiers of :data:`MODEL_NAMES` (:mod:`dissect.models.backbones`) and He et
al.'s task models of :data:`HEAD_NAMES` (:mod:`dissect.models.heads`: a VGG16 encoder + a
saliency or scene head), so a fine-tuned checkpoint is dissected exactly like the pretrained
backbone. :func:`save_checkpoint` writes a checkpoint ``load_model`` reads back.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dissect.models import heads
from dissect.models.backbones import (ALL_MODEL_NAMES, CHECKPOINT_FORMAT, HEAD_IMAGENET, HEAD_NAMES, assign_state,
                                      load_backbone, read_weights_file, resolve_weights_file, sha256_prefix)
from dissect.models.layers import detect_arch

__all__ = ["load_model", "save_checkpoint", "weights_identity"]

_PLAIN_TYPES = (str, int, float, bool, type(None))


def load_model(
    name: str, weights: str | os.PathLike = "auto", *, seed: int = 0, progress: bool = False,
    classifier: bool = True,
) -> nn.Module:
    """Build a model of the zoo in eval mode with the requested weights.

    The choice is recorded as ``model.dissect_info = {"arch", "weights", "weights_detail",
    "seed", "requested"}`` with ``weights`` one of ``"imagenet"``, ``"random"``, ``"file"``, or,
    for :data:`HEAD_NAMES`, ``"imagenet-encoder"`` (ImageNet VGG16 encoder, fresh head).
    ``weights_detail`` is the seed, the torchvision weights enum, or the file's absolute path
    and sha256 prefix. Task models add ``"encoder"`` (the encoder's record; not for files) and
    ``scene_vgg16`` adds ``"n_classes", "hidden", "dropout"``.

    Args:
        name: one of :data:`ALL_MODEL_NAMES`: a classifier of :data:`MODEL_NAMES` or a task
            model of :data:`HEAD_NAMES` (:class:`dissect.models.heads.SaliencyVGG`,
            :class:`dissect.models.heads.SceneVGG` with 26 classes and hidden width 1024).
        weights: ``"imagenet"`` (torchvision's ``IMAGENET1K_V1``, downloaded once to torch's hub
            cache), ``"random"`` (torchvision's initialisation seeded with ``seed``; the global
            RNG state is restored afterwards), a path to a state dict or to a checkpoint written
            by :func:`save_checkpoint`, or ``"auto"``: ImageNet if cached or downloadable,
            otherwise random weights with a :class:`UserWarning`. For a task model,
            ``"imagenet"`` / ``"auto"`` (or ``"imagenet-encoder"``, as recorded) give the ImageNet
            VGG16 encoder and a fresh head seeded with ``seed``; ``"random"`` gives the encoder of
            ``load_model("vgg16", "random", seed=seed)`` and a head seeded with ``seed``; a file
            must hold that task model (its scene classifier sizes are read from the weights).
        seed: seed of the random initialisation (same seed -> identical state dict).
        progress: show a download progress bar.
        classifier: ``False`` builds VGG16 / VGG19 without the parameters of their fully
            connected classifier (124M of VGG16's 138M; seconds and ~500 MB), for work that
            only reads ``features`` (the CLI's ``dissect`` of conv / pool layers). Every other
            tensor is exactly the full model's (random weights: the same seeded values, the
            classifier's share of the random stream is skipped, not drawn differently);
            ``model.classifier`` is then a stand-in that refuses to run. Other models are
            always complete. The default builds the whole model.

    Returns:
        The model on CPU, in eval mode, with ``dissect_info`` set.

    Raises:
        ValueError: unknown ``name`` or ``weights``, or a weights file for another architecture.
        FileNotFoundError: ``weights`` is a path that does not exist.
        RuntimeError: ``weights="imagenet"`` and the weights can be neither found nor downloaded.
    """
    if name not in ALL_MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}: use one of {', '.join(ALL_MODEL_NAMES)}")
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            f"weights must be 'auto', 'imagenet', 'random' or a file path, got {type(weights).__name__}"
        )
    if not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    requested = os.fspath(weights)

    if name in HEAD_NAMES:
        model, info = _load_head(name, requested, seed, progress)
        model.eval()
        model.dissect_info = {"arch": name, "weights": info.pop("weights"),
                              "weights_detail": info.pop("weights_detail"), "seed": seed,
                              "requested": requested, **info}
        return model

    return load_backbone(name, requested, seed, progress, classifier)


def save_checkpoint(model: nn.Module, path: str | os.PathLike, *, payload: Mapping[str, Any] | None = None,
                    **extra: Any) -> Path:
    """Save ``model``'s weights with its architecture and metadata, loadable by :func:`load_model`.

    The file is a dict ``{"format", "arch", "state_dict", "dissect_info", "extra"}`` written with
    ``torch.save``; it loads with ``torch.load(..., weights_only=True)``.

    Args:
        model: a model from :func:`load_model` (or any module with ``dissect_info["arch"]``).
        path: output file; parent folders are created.
        payload: more top-level entries of the file (tensors allowed), e.g. a trainer's
            optimiser state; :func:`load_model` ignores them.
        **extra: plain metadata to store (str, int, float, bool, None, and lists/dicts of them),
            e.g. ``step=4000, dataset="SALICON"``.

    Returns:
        The absolute path written.

    Raises:
        ValueError: the architecture is unknown or ``extra`` holds a non-plain value.
    """
    info = dict(getattr(model, "dissect_info", {}) or {})
    arch = info.get("arch") or detect_arch(model)
    if arch is None:
        raise ValueError(
            "cannot tell the model's architecture: build it with load_model() or set "
            "model.dissect_info = {'arch': ...} before save_checkpoint"
        )
    for key, value in extra.items():
        if not _is_plain(value):
            raise ValueError(
                f"checkpoint metadata {key!r} has type {type(value).__name__}: store only str, "
                "numbers, bools, None, or lists/dicts of them"
            )
    if not all(_is_plain(v) for v in info.values()):
        info = {k: v for k, v in info.items() if _is_plain(v)}
    path = Path(path).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "arch": arch,
            "state_dict": state,
            "dissect_info": info,
            "extra": dict(extra),
            **dict(payload or {}),
        },
        path,
    )
    return path


def weights_identity(model: nn.Module) -> str:
    """What identifies a model's weights in a run's fingerprint: its ``dissect_info`` record, or, for a
    model from outside the zoo, a digest of its parameters (``state_dict sha256:...``)."""
    detail = getattr(model, "dissect_info", {}).get("weights_detail")
    if detail is not None:
        return detail
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"state_dict sha256:{digest.hexdigest()[:16]}"


def _load_head(name: str, requested: str, seed: int, progress: bool) -> tuple[nn.Module, dict]:
    """A task model of HEAD_NAMES and its record (without arch, seed, requested)."""
    cls = {"saliency_vgg16": heads.SaliencyVGG, "scene_vgg16": heads.SceneVGG,
           "saliency_resnet50": heads.SaliencyResNet}[name]
    if requested in ("random", "imagenet", "auto", HEAD_IMAGENET):
        encoder = "imagenet" if requested == HEAD_IMAGENET else requested
        model = cls(encoder_weights=encoder, seed=seed, progress=progress)
        info = {k: v for k, v in model.dissect_info.items() if k not in ("arch", "seed", "requested")}
        return model, info
    path = resolve_weights_file(requested)
    state, stored = read_weights_file(name, path)
    options: dict[str, Any] = {}
    if name == "scene_vgg16":
        options = _scene_options(state, stored)
    elif name == "saliency_resnet50":  # the deepest stage in the file is the one read out
        options = {"readout_layer": max((k.split(".")[0] for k in state if k.startswith("layer")),
                                        default="layer4")}
    with torch.device("meta"):  # no wasted random init; every tensor comes from the file
        model = cls(encoder_weights="random", seed=seed, **options)
    assign_state(model, name, state, path)
    return model, {"weights": "file", "weights_detail": f"{path} sha256:{sha256_prefix(path)}",
                   **options}


def _scene_options(state: Mapping[str, torch.Tensor], stored: Mapping) -> dict[str, Any]:
    """SceneVGG's sizes from its last Linear (``n_classes x hidden``), dropout from the record."""
    options: dict[str, Any] = {}
    last = state.get("classifier.6.weight")
    if isinstance(last, torch.Tensor) and last.dim() == 2:
        options.update(n_classes=int(last.shape[0]), hidden=int(last.shape[1]))
    dropout = stored.get("dropout")
    if isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and 0 <= dropout < 1:
        options["dropout"] = float(dropout)
    return options




def _is_plain(value: Any) -> bool:
    if isinstance(value, _PLAIN_TYPES):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False
