"""Readable layer names of the studies' models and their shapes.

``layer_aliases`` maps the readable layer names of the studies (``conv5_3``, ``pool4``,
``layer3``) to dotted module paths, and ``list_layers`` measures their shapes with one dummy
forward pass.

Layer conventions (digest section 4): every ``conv`` alias names the *ReLU after* the
convolution, i.e. post-ReLU activations as in He et al. 2019; ResNet's ``conv1`` is the stem's
ReLU (``relu``, called once per forward by torchvision's ``ResNet``: the residual blocks have
their own ``relu`` modules) and ``layer1..layer4`` are the outputs of the residual stages.
"""
from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import torch
from torch import nn

from dissect.models.backbones import torchvision

__all__ = ["layer_aliases", "list_layers", "detect_arch"]


def layer_aliases(model: nn.Module) -> dict[str, str]:
    """Readable layer names of ``model``, mapped to dotted module paths, in forward order.

    VGG: ``conv{b}_{i}`` = the ReLU after the i-th conv of block b, ``pool{b}`` = the max-pool
    ending block b (``vgg16``: conv1_1 -> ``features.1`` ... conv5_3 -> ``features.29``, pool5
    -> ``features.30``; the task models' encoders end at conv5_3, and
    :class:`dissect.models.heads.SceneVGG`'s pool5 is its top-level ``pool5``). AlexNet:
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



def detect_arch(model: nn.Module) -> str | None:
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
    arch = detect_arch(model) or ""
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
