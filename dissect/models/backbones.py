"""ImageNet classification backbones: torchvision CNNs built with known weights, recorded in ``dissect_info``.

:func:`load_backbone` builds one of :data:`MODEL_NAMES` in eval mode with ImageNet, seeded random
or file weights (the classifiers of :func:`dissect.models.load_model`); the task models of
:mod:`dissect.models.heads` build their encoders with it. Weights files are read with
``torch.load(..., weights_only=True)``: a file can hold tensors, never code.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn


def _import_torchvision():
    """``import torchvision`` without importing ``torch._dynamo`` (2-3 s of every start-up).

    torchvision's package import reaches ``torchvision.ops.roi_align``, whose only use of
    dynamo is ``from torch._dynamo.utils import is_compile_supported``, called when an RoI op
    runs (never by this project). For the duration of the import that name comes from a
    stand-in whose function imports the real ``torch._dynamo.utils`` on its first call; the
    stand-in is removed right after, so ``torch.compile`` and any later ``import torch._dynamo``
    get the real modules. Skipped when torchvision or dynamo is already loaded.
    """
    import sys
    import types

    if "torchvision" in sys.modules or "torch._dynamo" in sys.modules or "torch._dynamo.utils" in sys.modules:
        import torchvision
        return torchvision

    def is_compile_supported(device_type):
        from torch._dynamo.utils import is_compile_supported as real  # the real module, loaded now

        return real(device_type)

    stand_in = types.ModuleType("torch._dynamo.utils")
    stand_in.is_compile_supported = is_compile_supported
    sys.modules["torch._dynamo.utils"] = stand_in
    try:
        import torchvision
    finally:
        if sys.modules.get("torch._dynamo.utils") is stand_in:
            del sys.modules["torch._dynamo.utils"]
    return torchvision


torchvision = _import_torchvision()


torchvision = _import_torchvision()

__all__ = ["MODEL_NAMES", "HEAD_NAMES", "ALL_MODEL_NAMES", "IMAGENET_MEAN", "IMAGENET_STD", "CHECKPOINT_FORMAT",
           "HEAD_IMAGENET", "ClassifierNotBuilt", "model_device", "load_backbone", "resolve_weights_file",
           "read_weights_file", "assign_state", "sha256_prefix", "torchvision"]

# The ImageNet classification backbones (torchvision architectures with a 1000-class output).
MODEL_NAMES: tuple[str, ...] = ("vgg16", "vgg19", "resnet50", "alexnet")
# He et al. 2019's task models (dissect.models.heads): VGG16 features[:30] + a saliency / scene head.
HEAD_NAMES: tuple[str, ...] = ("saliency_vgg16", "scene_vgg16", "saliency_resnet50")
ALL_MODEL_NAMES: tuple[str, ...] = MODEL_NAMES + HEAD_NAMES

# torchvision's ImageNet preprocessing (RGB, inputs in [0, 1]); He et al.'s PyTorch code uses them.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# IMAGENET1K_V1 everywhere: the classic weights the 2019-2020 studies used (torchvision's
# DEFAULT for resnet50 is V2, a different, newer training recipe).
_IMAGENET_WEIGHTS = {
    "vgg16": "VGG16_Weights",
    "vgg19": "VGG19_Weights",
    "resnet50": "ResNet50_Weights",
    "alexnet": "AlexNet_Weights",
}

CHECKPOINT_FORMAT = "saliency-dissect-checkpoint"
# dissect_info["weights"] of a task model with an ImageNet encoder; accepted back as `weights`
# so a run's record rebuilds its model.
HEAD_IMAGENET = "imagenet-encoder"


class _WeightsUnavailable(RuntimeError):
    """ImageNet weights are neither cached nor downloadable."""


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    return next(iter(model.parameters()), torch.zeros(0)).device


def load_backbone(name: str, requested: str, seed: int, progress: bool = False,
                  classifier: bool = True, stacklevel: int = 2) -> nn.Module:
    """A classifier of :data:`MODEL_NAMES` in eval mode with ``dissect_info`` set.

    ``requested`` is ``"imagenet"``, ``"random"``, ``"auto"`` or a weights file (see
    :func:`dissect.models.load_model`, which checks the arguments and documents them).
    """
    if requested == HEAD_IMAGENET:
        raise ValueError(
            f"weights {HEAD_IMAGENET!r} is for the task models {', '.join(HEAD_NAMES)}: "
            f"use weights='imagenet' for {name}"
        )
    lean = not classifier and name in _LEAN_VGG
    if requested == "random":
        model, kind, detail = _build(_build_random, lean, name, seed), "random", f"seed={seed}"
    elif requested in ("imagenet", "auto"):
        try:
            (model, detail), kind = _build(_build_imagenet, lean, name, progress), "imagenet"
        except _WeightsUnavailable as err:
            if requested == "imagenet":
                raise RuntimeError(str(err)) from err.__cause__
            warnings.warn(
                f"{err} -> using RANDOM weights (seed={seed}) for {name}: results will be "
                "meaningless for science (pass weights='random' (CLI: --weights random) to silence this warning)",
                UserWarning,
                stacklevel=stacklevel + 1,
            )
            model, kind, detail = _build(_build_random, lean, name, seed), "random", f"seed={seed}"
    else:
        path = resolve_weights_file(requested)
        state, _ = read_weights_file(name, path)
        model, kind = _build(_build_with_state, lean, name, state, path), "file"
        detail = f"{path} sha256:{sha256_prefix(path)}"

    model.eval()
    model.dissect_info = {
        "arch": name,
        "weights": kind,
        "weights_detail": detail,
        "seed": seed,
        "requested": requested,
    }
    return model


def _constructor(name: str):
    return getattr(torchvision.models, name)


# Models that load_model(classifier=False) builds without their classifier (torchvision VGG:
# features -> avgpool -> classifier, initialised in that module order).
_LEAN_VGG = {"vgg16": "D", "vgg19": "E"}


class ClassifierNotBuilt(RuntimeError):
    """Raised by the stand-in classifier of ``load_model(..., classifier=False)`` when it is run
    (every feature layer has run by then: a dry forward that records them may catch it)."""


class _NoClassifier(nn.Module):
    """Stands in for the classifier that ``load_model(..., classifier=False)`` did not build."""

    def forward(self, x):
        raise ClassifierNotBuilt(
            "this model was built without its classifier (load_model(..., classifier=False), as the "
            "dissect command does for feature layers); load it with classifier=True to run the classifier"
        )


def _build(builder, lean: bool, *args):
    """``builder(*args)``, with ``lean=True`` only when asked (builders are patched by tests)."""
    return builder(*args, lean=True) if lean else builder(*args)


def _advance_cpu_rng(n: int) -> None:
    """Consume ``n`` draws of the CPU generator as ``n`` float32 ``uniform_`` values would."""
    buf = torch.empty(min(n, 1 << 22))
    while n > 0:
        k = min(n, buf.numel())
        buf[:k].uniform_()
        n -= k


def _build_random(name: str, seed: int, lean: bool = False) -> nn.Module:
    """torchvision's own initialisation, seeded, without touching the caller's RNG state."""
    if not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if not lean:
            return _constructor(name)(weights=None)
        # The same stream as torchvision's VGG(make_layers(cfg)): the convs are constructed,
        # then the classifier's Linears (whose draws we skip: one per float32 parameter, as
        # their kaiming_uniform_/uniform_ take), then VGG's init loop re-draws the convs
        # (kaiming_normal_) before the Linears (never built here). Tested against the full model.
        from torchvision.models import vgg as tv_vgg

        features = tv_vgg.make_layers(tv_vgg.cfgs[_LEAN_VGG[name]], batch_norm=False)
        with torch.device("meta"):
            model = tv_vgg.VGG(nn.Sequential(), init_weights=False)
        _advance_cpu_rng(sum(p.numel() for p in model.classifier.parameters()))
        for m in features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
        model.features = features
        model.classifier = _NoClassifier()
        return model


def _imagenet_enum(name: str):
    return getattr(torchvision.models, _IMAGENET_WEIGHTS[name]).IMAGENET1K_V1


def _cache_path(name: str) -> Path:
    url = _imagenet_enum(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _build_imagenet(name: str, progress: bool, lean: bool = False) -> tuple[nn.Module, str]:
    enum = _imagenet_enum(name)
    cached = _cache_path(name)
    was_cached = cached.is_file()
    try:
        state = enum.get_state_dict(progress=progress, check_hash=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        # OSError covers URLError, HTTPError, socket timeouts and ConnectionError.
        if was_cached:
            msg = (f"could not read the cached ImageNet weights for {name} at {cached} ({err}): "
                   "delete the file to download it again, or use weights='random' or a local file")
        else:
            msg = (f"could not download ImageNet weights for {name} (no network?): use "
                   f"weights='random' or a local file, or put {cached.name} in the torch cache "
                   f"dir {cached.parent}")
        raise _WeightsUnavailable(msg) from err
    return _build_with_state(name, state, None, lean), f"{type(enum).__name__}.{enum.name}"


def resolve_weights_file(requested: str) -> Path:
    path = Path(requested).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file not found: {path} (use weights='auto', 'imagenet', 'random' or an existing file)"
        )
    return path


def read_weights_file(name: str, path: Path) -> tuple[Mapping[str, torch.Tensor], Mapping]:
    """The state dict in ``path`` (a checkpoint of ``name`` or a plain state dict) and the
    checkpoint's stored ``dissect_info`` (empty for a plain state dict)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a torch archive
        raise ValueError(f"could not read weights file {path}: {err}") from err
    info: Mapping = {}
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        if obj.get("arch") != name:
            raise ValueError(_wrong_arch_message(name, obj.get("arch"), path))
        state = obj["state_dict"]
        info = obj.get("dissect_info") if isinstance(obj.get("dissect_info"), Mapping) else {}
    else:
        state = obj
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights file {path} holds no state dict (a mapping of names to tensors)")
    return state, info


def _wrong_arch_message(name: str, arch: Any, path: Path) -> str:
    """One line: whose checkpoint ``path`` is and the call that loads it."""
    msg = f"weights file {path} is a checkpoint of architecture {arch!r}, not {name!r}: "
    if arch not in ALL_MODEL_NAMES:
        return msg + f"{arch!r} is not one of {', '.join(ALL_MODEL_NAMES)}"
    msg += f"load it with load_model({arch!r}, weights={str(path)!r})"
    if arch in HEAD_NAMES and name in MODEL_NAMES:
        # A task checkpoint has no fc6-fc8: there is no unambiguous classifier to build.
        msg += " (its VGG16 encoder is the model's .features)"
    elif arch == "vgg16" and name in HEAD_NAMES:
        cls = "SaliencyVGG" if name == "saliency_vgg16" else "SceneVGG"
        msg += f", or put a fresh head on it with dissect.models.heads.{cls}(encoder_weights=...)"
    return msg


def _build_with_state(name: str, state: Mapping[str, torch.Tensor], path: Path | None,
                      lean: bool = False) -> nn.Module:
    """Build on the meta device (no wasted random init: seconds for VGG) and assign ``state``
    (``lean``: all but the classifier's tensors, which are checked but not kept)."""
    with torch.device("meta"):
        model = _constructor(name)(weights=None)
    if not lean:
        return assign_state(model, name, state, path)
    _check_keys(name, path, model.state_dict(), state)
    model.classifier = _NoClassifier()
    kept = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    return assign_state(model, name, kept, path)


def assign_state(model: nn.Module, name: str, state: Mapping[str, torch.Tensor],
                  path: Path | None) -> nn.Module:
    """Replace the (meta) tensors of ``model`` by ``state``'s, cast to the model's dtypes."""
    expected = model.state_dict()
    _check_keys(name, path, expected, state)
    # Cast to the architecture's dtypes: assign=True would otherwise keep e.g. fp16 files' dtype.
    model.load_state_dict({k: state[k].to(expected[k].dtype) for k in expected}, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # cannot happen for the zoo, whose state dicts hold every tensor
        raise RuntimeError(f"{name}: tensors {left[:3]} were not loaded from the weights")
    return model


def _check_keys(name: str, path: Path | None, expected: Mapping, got: Mapping) -> None:
    """One-line ValueError naming the first mismatching keys (torch's message is pages long)."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k} {tuple(got[k].shape)} != {tuple(v.shape)}"
              for k, v in expected.items() if k in got and got[k].shape != v.shape]
    if not (missing or unexpected or shapes):
        return
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            parts.append(f"{label} {', '.join(items[:3])}{more}")
    source = f"weights file {path}" if path is not None else "the ImageNet state dict"
    hint = ""
    guess = _guess_head(got)
    if guess is not None and guess != name:
        hint = f" (it looks like a {guess} state dict: load it with load_model({guess!r}, weights=...))"
    raise ValueError(f"{source} does not match architecture {name}: {'; '.join(parts)}{hint}")


def _guess_head(state: Mapping[str, torch.Tensor]) -> str | None:
    """The task model a plain state dict belongs to, from its head's keys (None: not a head)."""
    if "features.28.weight" not in state or "features.30.weight" in state:
        return None
    if "readout.weight" in state:
        return "saliency_vgg16"
    first = state.get("classifier.0.weight")
    if isinstance(first, torch.Tensor) and first.dim() == 2 and first.shape[1] == 512:
        return "scene_vgg16"  # vgg16's fc6 reads 512 * 7 * 7 = 25088 inputs
    return None


def sha256_prefix(path: Path, n: int = 12) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:n]


