"""The model zoo: build torchvision CNNs with known weights and name their layers.

``load_model`` builds one of :data:`ALL_MODEL_NAMES` in eval mode with ImageNet, seeded random or
file weights and records what it used in ``model.dissect_info``, so every report can state it:
the ImageNet classifiers of :data:`MODEL_NAMES` and He et al.'s task models of
:data:`HEAD_NAMES` (:mod:`dissect.heads`: a VGG16 encoder + a saliency or scene head), so a
fine-tuned checkpoint is dissected exactly like the pretrained backbone.
``layer_aliases`` maps the readable layer names of the studies (``conv5_3``, ``pool4``,
``layer3``) to dotted module paths, and ``list_layers`` measures their shapes with one dummy
forward pass.

Layer conventions (digest section 4): every ``conv`` alias names the *ReLU after* the
convolution, i.e. post-ReLU activations as in He et al. 2019; ResNet's ``conv1`` is the stem's
ReLU (``relu``, called once per forward by torchvision's ``ResNet``: the residual blocks have
their own ``relu`` modules) and ``layer1..layer4`` are the outputs of the residual stages.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
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

__all__ = [
    "model_device",
    "MODEL_NAMES",
    "HEAD_NAMES",
    "ALL_MODEL_NAMES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "load_model",
    "save_checkpoint",
    "layer_aliases",
    "list_layers",
]

# The ImageNet classification backbones (torchvision architectures with a 1000-class output).
MODEL_NAMES: tuple[str, ...] = ("vgg16", "vgg19", "resnet50", "alexnet")
# He et al. 2019's task models (dissect.heads): VGG16 features[:30] + a saliency / scene head.
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

_CHECKPOINT_FORMAT = "saliency-dissect-checkpoint"
# dissect_info["weights"] of a task model with an ImageNet encoder; accepted back as `weights`
# so a run's record rebuilds its model.
_HEAD_IMAGENET = "imagenet-encoder"
_PLAIN_TYPES = (str, int, float, bool, type(None))


class _WeightsUnavailable(RuntimeError):
    """ImageNet weights are neither cached nor downloadable."""


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    return next(iter(model.parameters()), torch.zeros(0)).device


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
            model of :data:`HEAD_NAMES` (:class:`dissect.heads.SaliencyVGG`,
            :class:`dissect.heads.SceneVGG` with 26 classes and hidden width 1024).
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

    if requested == _HEAD_IMAGENET:
        raise ValueError(
            f"weights {_HEAD_IMAGENET!r} is for the task models {', '.join(HEAD_NAMES)}: "
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
                stacklevel=2,
            )
            model, kind, detail = _build(_build_random, lean, name, seed), "random", f"seed={seed}"
    else:
        path = _resolve_file(requested)
        state, _ = _read_state(name, path)
        model, kind = _build(_build_with_state, lean, name, state, path), "file"
        detail = f"{path} sha256:{_sha256_prefix(path)}"

    model.eval()
    model.dissect_info = {
        "arch": name,
        "weights": kind,
        "weights_detail": detail,
        "seed": seed,
        "requested": requested,
    }
    return model


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
    arch = info.get("arch") or _detect_arch(model)
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
            "format": _CHECKPOINT_FORMAT,
            "arch": arch,
            "state_dict": state,
            "dissect_info": info,
            "extra": dict(extra),
            **dict(payload or {}),
        },
        path,
    )
    return path


def layer_aliases(model: nn.Module) -> dict[str, str]:
    """Readable layer names of ``model``, mapped to dotted module paths, in forward order.

    VGG: ``conv{b}_{i}`` = the ReLU after the i-th conv of block b, ``pool{b}`` = the max-pool
    ending block b (``vgg16``: conv1_1 -> ``features.1`` ... conv5_3 -> ``features.29``, pool5
    -> ``features.30``; the task models' encoders end at conv5_3, and
    :class:`dissect.heads.SceneVGG`'s pool5 is its top-level ``pool5``). AlexNet:
    ``conv1..conv5`` = the ReLU after each conv, ``pool{k}`` = the max-pool after conv k
    (pool1, pool2, pool5). ResNet: ``conv1`` = the stem ReLU
    (``relu``), ``layer1..layer4``. Indices are computed from the module structure, so VGG19
    gets conv3_4, conv4_4, conv5_4 and truncated encoders (``features[:30]``) work too.

    The architecture is taken from ``model.dissect_alias_family`` (a class attribute custom
    models may set to ``"vgg"``, ``"alexnet"`` or ``"resnet"``), ``model.dissect_info["arch"]``,
    or the model's torchvision class.

    Args:
        model: the model.

    Returns:
        ``{alias: dotted path}``; empty for an unknown architecture.
    """
    family = _detect_family(model)
    if family == "resnet":
        names = ["relu", "layer1", "layer2", "layer3", "layer4"]
        aliases = ["conv1", "layer1", "layer2", "layer3", "layer4"]
        modules = dict(model.named_modules())
        return {a: n for a, n in zip(aliases, names) if n in modules}
    features = getattr(model, "features", None)
    if family not in ("vgg", "alexnet") or not isinstance(features, nn.Sequential):
        return {}
    out: dict[str, str] = {}
    block, conv_in_block, conv_total = 1, 0, 0
    pending_conv = False  # a conv whose ReLU has not been seen yet
    for idx, module in enumerate(features):
        path = f"features.{idx}"
        if isinstance(module, nn.Conv2d):
            conv_in_block += 1
            conv_total += 1
            pending_conv = True
        elif isinstance(module, nn.ReLU) and pending_conv:
            # He et al. 2019: activations are post-ReLU, so the alias names the ReLU.
            out[f"conv{block}_{conv_in_block}" if family == "vgg" else f"conv{conv_total}"] = path
            pending_conv = False
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            out[f"pool{block}" if family == "vgg" else f"pool{conv_total}"] = path
            block, conv_in_block = block + 1, 0
    # A truncated VGG encoder whose next pool is a top-level module (SceneVGG.pool5).
    pool = getattr(model, f"pool{block}", None)
    if family == "vgg" and conv_in_block and isinstance(pool, (nn.MaxPool2d, nn.AvgPool2d)):
        out[f"pool{block}"] = f"pool{block}"
    return out


def list_layers(model: nn.Module, input_size: int = 224) -> pd.DataFrame:
    """Names, channels, stride and map size of the model's layers, from one dummy forward pass.

    Lists the aliases of :func:`layer_aliases`; for a model without aliases, every leaf
    Conv2d / ReLU / pooling module with a 4-D output. The stride is the product of the strides
    of the convs and pools on the main path before the layer (a module whose input is not the
    current main-path map, such as a ResNet ``downsample`` branch, does not count).

    Args:
        model: the model (its train/eval mode is restored afterwards).
        input_size: side of the square dummy input, in pixels.

    Returns:
        DataFrame with columns ``name, module, channels, stride, height, width``.

    Raises:
        ValueError: ``input_size`` is not a positive int.
    """
    if not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"input_size must be a positive int, got {input_size!r}")
    aliases = layer_aliases(model)
    modules = dict(model.named_modules())
    if aliases:
        wanted = {path: alias for alias, path in aliases.items()}
    else:
        leaf_types = (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                      nn.AdaptiveMaxPool2d)
        wanted = {p: p for p, m in modules.items()
                  if p and isinstance(m, leaf_types) and not list(m.children())}

    events: list[tuple[str, int, tuple[int, ...], tuple[int, ...]]] = []

    def _hook(path: str):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor) and inputs and isinstance(inputs[0], torch.Tensor):
                events.append((path, _stride_of(module), tuple(inputs[0].shape), tuple(output.shape)))
        return hook

    watched = set(wanted)
    watched.update(p for p, m in modules.items()
                   if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)))
    first_conv = next((m for m in modules.values() if isinstance(m, nn.Conv2d)), None)
    in_channels = first_conv.in_channels if first_conv is not None else 3
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    modes = {m: m.training for m in model.modules()}
    handles = [modules[p].register_forward_hook(_hook(p)) for p in watched]
    try:
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(1, in_channels, input_size, input_size, device=device, dtype=dtype))
    except RuntimeError as exc:
        raise ValueError(f"a {input_size} x {input_size} input does not fit this model "
                         f"({str(exc).splitlines()[0]}): use a larger input size, e.g. 224") from None
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training

    rows, seen = [], set()
    main_h, stride = input_size, 1
    for path, own_stride, in_shape, out_shape in events:
        if len(in_shape) != 4 or len(out_shape) != 4:
            continue
        # A module reading the current main-path map advances it; a parallel branch (ResNet's
        # downsample, run after conv3 on the block's input) reads an older, larger map.
        if in_shape[2] == main_h:
            stride *= own_stride
            main_h = out_shape[2]
        if path in wanted and path not in seen:
            seen.add(path)
            rows.append({"name": wanted[path], "module": path, "channels": out_shape[1],
                         "stride": stride, "height": out_shape[2], "width": out_shape[3]})
    order = {p: i for i, p in enumerate(wanted)}
    rows.sort(key=lambda r: order[r["module"]])
    return pd.DataFrame(rows, columns=["name", "module", "channels", "stride", "height", "width"])


# ---------------------------------------------------------------- private helpers


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


def _resolve_file(requested: str) -> Path:
    path = Path(requested).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file not found: {path} (use weights='auto', 'imagenet', 'random' or an existing file)"
        )
    return path


def _read_state(name: str, path: Path) -> tuple[Mapping[str, torch.Tensor], Mapping]:
    """The state dict in ``path`` (a checkpoint of ``name`` or a plain state dict) and the
    checkpoint's stored ``dissect_info`` (empty for a plain state dict)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a torch archive
        raise ValueError(f"could not read weights file {path}: {err}") from err
    info: Mapping = {}
    if isinstance(obj, Mapping) and obj.get("format") == _CHECKPOINT_FORMAT:
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
        msg += f", or put a fresh head on it with dissect.heads.{cls}(encoder_weights=...)"
    return msg


def _load_head(name: str, requested: str, seed: int, progress: bool) -> tuple[nn.Module, dict]:
    """A task model of HEAD_NAMES and its record (without arch, seed, requested)."""
    from dissect import heads  # lazy: dissect.heads builds its encoder with load_model

    cls = {"saliency_vgg16": heads.SaliencyVGG, "scene_vgg16": heads.SceneVGG,
           "saliency_resnet50": heads.SaliencyResNet}[name]
    if requested in ("random", "imagenet", "auto", _HEAD_IMAGENET):
        encoder = "imagenet" if requested == _HEAD_IMAGENET else requested
        model = cls(encoder_weights=encoder, seed=seed, progress=progress)
        info = {k: v for k, v in model.dissect_info.items() if k not in ("arch", "seed", "requested")}
        return model, info
    path = _resolve_file(requested)
    state, stored = _read_state(name, path)
    options: dict[str, Any] = {}
    if name == "scene_vgg16":
        options = _scene_options(state, stored)
    elif name == "saliency_resnet50":  # the deepest stage in the file is the one read out
        options = {"readout_layer": max((k.split(".")[0] for k in state if k.startswith("layer")),
                                        default="layer4")}
    with torch.device("meta"):  # no wasted random init; every tensor comes from the file
        model = cls(encoder_weights="random", seed=seed, **options)
    _assign_state(model, name, state, path)
    return model, {"weights": "file", "weights_detail": f"{path} sha256:{_sha256_prefix(path)}",
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


def _build_with_state(name: str, state: Mapping[str, torch.Tensor], path: Path | None,
                      lean: bool = False) -> nn.Module:
    """Build on the meta device (no wasted random init: seconds for VGG) and assign ``state``
    (``lean``: all but the classifier's tensors, which are checked but not kept)."""
    with torch.device("meta"):
        model = _constructor(name)(weights=None)
    if not lean:
        return _assign_state(model, name, state, path)
    _check_keys(name, path, model.state_dict(), state)
    model.classifier = _NoClassifier()
    kept = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    return _assign_state(model, name, kept, path)


def _assign_state(model: nn.Module, name: str, state: Mapping[str, torch.Tensor],
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


def _sha256_prefix(path: Path, n: int = 12) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:n]


def _is_plain(value: Any) -> bool:
    if isinstance(value, _PLAIN_TYPES):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _detect_arch(model: nn.Module) -> str | None:
    info = getattr(model, "dissect_info", None)
    if isinstance(info, Mapping) and info.get("arch"):
        return str(info["arch"])
    if isinstance(model, torchvision.models.VGG):
        n_conv = sum(isinstance(m, nn.Conv2d) for m in model.features)
        return {13: "vgg16", 16: "vgg19"}.get(n_conv)
    if isinstance(model, torchvision.models.AlexNet):
        return "alexnet"
    if isinstance(model, torchvision.models.ResNet):
        n_blocks = [len(getattr(model, f"layer{i}")) for i in range(1, 5)]
        bottleneck = isinstance(model.layer1[0], torchvision.models.resnet.Bottleneck)
        return "resnet50" if bottleneck and n_blocks == [3, 4, 6, 3] else None
    return None


def _detect_family(model: nn.Module) -> str | None:
    family = getattr(model, "dissect_alias_family", None)
    if family in ("vgg", "alexnet", "resnet"):
        return family
    arch = _detect_arch(model) or ""
    for prefix in ("vgg", "alexnet", "resnet"):
        if arch.startswith(prefix):
            return prefix
    for cls, fam in ((torchvision.models.VGG, "vgg"), (torchvision.models.AlexNet, "alexnet"),
                     (torchvision.models.ResNet, "resnet")):
        if isinstance(model, cls):
            return fam
    return None


def _stride_of(module: nn.Module) -> int:
    """Row stride of a conv / pool module (1 for anything else)."""
    if not isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        return 1
    stride = module.stride
    if stride is None:  # pools default stride to kernel_size
        stride = module.kernel_size
    return int(stride[0] if isinstance(stride, (tuple, list)) else stride)
