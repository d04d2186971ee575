"""Record layer activations with forward hooks whose lifetime the caller owns.

``ActivationRecorder`` is a context manager: it registers one forward hook per layer on enter
and removes every hook on exit, also when the ``with`` body raises. Each hook stores a *copy*
of the module's output: torchvision's ReLUs are in-place, so a stored ``output.detach()`` of a
Conv2d would be rewritten to post-ReLU values on CPU but not on GPU (digest section 4).

Layers are addressed by readable alias (``conv5_3``, see :func:`dissect.models.layer_aliases`),
by dotted module path (``features.29``, ``layer4.2.conv3``) or by the module object.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, Union

import torch
from torch import nn

from dissect.models.layers import layer_aliases

__all__ = ["resolve_layer", "unique_layers", "ActivationRecorder", "CopyBuffers", "record_activations"]

LayerSpec = Union[str, nn.Module]
_REPEAT_POLICIES = ("error", "last", "first")
_ROOT_NAME = "model"


def resolve_layer(model: nn.Module, layer: LayerSpec) -> tuple[str, nn.Module]:
    """Find the module a layer name points to.

    Args:
        model: the model.
        layer: an alias (``"conv5_3"``), a dotted module path (``"features.29"``) or a module
            of ``model``.

    Returns:
        ``(name, module)``: the alias or path given; for a module object, its alias if it has
        one, else its dotted path (``"model"`` for the model itself).

    Raises:
        ValueError: unknown name, or a module that is not part of ``model``; the message lists
            the aliases and hints at the dotted paths.
        TypeError: ``layer`` is neither a string nor a module.
    """
    aliases = layer_aliases(model)
    if isinstance(layer, nn.Module):
        for path, module in model.named_modules():
            if module is layer:
                by_path = {p: a for a, p in aliases.items()}
                return by_path.get(path, path or _ROOT_NAME), module
        raise ValueError(
            f"module {type(layer).__name__} is not a submodule of the model: pass a module of "
            "this model, an alias or a dotted module path"
        )
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a str or an nn.Module, got {type(layer).__name__}")
    if layer in aliases:
        return layer, model.get_submodule(aliases[layer])
    if layer:
        try:
            return layer, model.get_submodule(layer)
        except AttributeError:
            pass
    raise ValueError(_unknown_layer_message(model, layer, aliases))


def _layer_list(layers) -> list:
    """``layers`` as a list: one name/module, or an iterable of them (TypeError otherwise)."""
    if isinstance(layers, (str, nn.Module)):
        return [layers]
    if not isinstance(layers, Iterable):
        raise TypeError(f"layers must be a layer name, a module, or a list of them, got {type(layers).__name__} "
                        f"{layers!r}; e.g. ActivationRecorder(model, ['conv5_3'])")
    return list(layers)


def unique_layers(model: nn.Module, layers) -> tuple[list[tuple[str, nn.Module]], list[tuple[str, str]]]:
    """Resolve ``layers`` and drop the ones that name a module already listed.

    ``conv5_3`` and ``features.29`` are the same module of VGG16: it is kept once, under the
    first name given.

    Returns:
        ``([(name, module), ...], [(dropped name, kept name), ...])``.
    """
    kept: list[tuple[str, nn.Module]] = []
    dropped: list[tuple[str, str]] = []
    for layer in _layer_list(layers):
        name, module = resolve_layer(model, layer)
        same = next((n for n, m in kept if m is module), None)
        if same is None:
            kept.append((name, module))
        else:
            dropped.append((name, same))
    return kept, dropped


class CopyBuffers:
    """Memory that :class:`ActivationRecorder`'s copies reuse, handed back by the caller.

    A loop that is done with a forward's activations gives them back (:meth:`give_back`); the
    next forward copies into that memory instead of fresh memory. On CPU a fresh tensor of more
    than 32 MB (VGG16 conv1 at batch 8: 103 MB) is a new mapping whose every page faults on
    first write: the copy into it took 35 ms, into reused memory 15 ms. Values are the same:
    a copy is a copy. Only memory given back is reused, so a caller that keeps its tensors (in
    a list, say) never sees them overwritten.

    Only tensors of at least ``min_bytes`` are kept: glibc's malloc serves smaller ones (up to
    its 32 MB mmap ceiling) from memory it already holds, and keeping them aside made ResNet50's
    dissection slower (1.25x vs 1.19x the forward: the forward's own tensors then needed fresh
    pages). Each layer keeps at most ``per_layer`` free tensors; a batch smaller than a free
    tensor (the last of a dataset) gets a leading slice of it.
    """

    def __init__(self, per_layer: int = 2, min_bytes: int = 32 << 20) -> None:
        self.per_layer = int(per_layer)
        self.min_bytes = int(min_bytes)
        self._free: dict[str, list[torch.Tensor]] = {}

    def take(self, name: str, like: torch.Tensor, device: torch.device) -> torch.Tensor:
        """A contiguous tensor shaped like ``like`` on ``device``: reused memory when it fits."""
        free = self._free.get(name, []) if like.numel() * like.element_size() >= self.min_bytes else []
        n, rest = like.shape[:1], like.shape[1:]
        for k, buf in enumerate(free):
            if (buf.dtype == like.dtype and buf.device == device and buf.dim() == like.dim() and buf.dim() > 0
                    and buf.shape[1:] == rest and buf.shape[0] >= n[0]):
                del free[k]
                return buf[:n[0]]
        return torch.empty(like.shape, dtype=like.dtype, device=device)

    def give_back(self, activations: dict[str, torch.Tensor]) -> None:
        """Hand back one forward's ``{name: tensor}`` (the caller no longer reads them)."""
        for name, tensor in activations.items():
            if not isinstance(tensor, torch.Tensor):
                continue
            base = tensor if tensor._base is None else tensor._base
            if base.numel() * base.element_size() < self.min_bytes:
                continue
            free = self._free.setdefault(name, [])
            if all(b is not base for b in free):
                free.append(base)
                del free[:-self.per_layer]  # the newest ones


class ActivationRecorder:
    """Context manager that stores copies of layer outputs during forward passes.

    After each forward, ``rec.activations[name]`` holds the layer's output (``N x C x h x w``
    for conv layers) as a copy on ``device``, in the standard contiguous layout whatever layout
    the layer produced (torch keeps a channels-last input channels-last through the network):
    with ``keep=False`` the latest forward's tensor
    (replaced each forward, nothing accumulates in a loop); with ``keep=True`` a list with one
    tensor per forward. Stored tensors are ordinary tensors (not inference tensors), also when
    the forward runs under ``torch.inference_mode()``, and never require grad.

    A module that runs more than once per forward (ResNet ``Bottleneck.relu`` runs 3 times per
    block) is ambiguous: by default (``on_repeat="error"``) its second call raises ValueError;
    ``"last"`` keeps the last call's output, ``"first"`` the first. A "forward" is one call of
    ``model`` itself; a submodule called directly, outside a call of ``model``, is recorded
    as a forward of its own (no repeat check).

    Example::

        with ActivationRecorder(model, ["conv4_3", "conv5_3"]) as rec, torch.inference_mode():
            model(images)
        conv53 = rec.activations["conv5_3"]

    Args:
        model: the model.
        layers: one layer or a list of layers (alias, dotted path or module, see
            :func:`resolve_layer`).
        device: where to store the copies; ``None`` keeps the model's device.
        keep: keep every forward's output (a list per layer) instead of the latest.
        eval_mode: put the model in eval mode on enter and restore every submodule's previous
            train/eval mode on exit.
        on_repeat: ``"error"``, ``"last"`` or ``"first"``, for a module called twice per forward.
        buffers: a :class:`CopyBuffers` to copy into memory given back from earlier forwards
            (the dissection engine's loop); not with ``keep=True``.

    Raises:
        ValueError: unknown layer, empty ``layers``, unknown ``on_repeat``, or ``buffers``
            with ``keep=True``.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec],
        *,
        device: str | torch.device | None = "cpu",
        keep: bool = False,
        eval_mode: bool = True,
        on_repeat: Literal["error", "last", "first"] = "error",
        buffers: CopyBuffers | None = None,
    ) -> None:
        if on_repeat not in _REPEAT_POLICIES:
            raise ValueError(f"on_repeat must be one of {_REPEAT_POLICIES}, got {on_repeat!r}")
        if buffers is not None and keep:
            raise ValueError("buffers reuse memory a later forward overwrites; keep=True keeps every "
                             "forward's copy: pass one or the other")
        layers = _layer_list(layers)
        resolved: dict[str, nn.Module] = {}
        for layer in layers:
            name, module = resolve_layer(model, layer)
            resolved[name] = module
        if not resolved:
            raise ValueError("layers is empty: name at least one layer (alias or dotted path)")
        self.model = model
        self.layers: dict[str, nn.Module] = resolved
        self.device = None if device is None else torch.device(device)
        self.keep = keep
        self.eval_mode = eval_mode
        self.on_repeat = on_repeat
        self.buffers = buffers
        self.activations: dict[str, torch.Tensor | list[torch.Tensor]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._modes: dict[nn.Module, bool] = {}
        self._forward_id = 0  # counts calls of the model itself
        self._depth = 0  # > 0 while the model's forward runs
        self._last_call: dict[str, int] = {}

    @property
    def names(self) -> list[str]:
        """The layer names, in the order given."""
        return list(self.layers)

    def __enter__(self) -> "ActivationRecorder":
        if self._handles:
            raise RuntimeError("this ActivationRecorder is already active: do not nest it")
        self.activations = {}
        self._forward_id, self._depth, self._last_call = 0, 0, {}
        if self.eval_mode:
            self._modes = {m: m.training for m in self.model.modules()}
            self.model.eval()
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._forward_starts))
            # always_call: the depth must come back to 0 also when the forward raises.
            self._handles.append(
                self.model.register_forward_hook(self._forward_ends, always_call=True))
            for name, module in self.layers.items():
                self._handles.append(module.register_forward_hook(self._make_hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook and restore train/eval modes; safe to call more than once."""
        while self._handles:
            self._handles.pop().remove()
        for module, training in self._modes.items():
            module.training = training
        self._modes = {}

    def _forward_starts(self, module: nn.Module, inputs) -> None:
        if self._depth == 0:
            self._forward_id += 1
        self._depth += 1

    def _forward_ends(self, module: nn.Module, inputs, output) -> None:
        self._depth = max(self._depth - 1, 0)

    def _make_hook(self, name: str):
        def hook(module: nn.Module, inputs, output) -> None:
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"layer {name!r} returned {type(output).__name__}, not a tensor: record a "
                    "module whose output is a single tensor"
                )
            inside = self._depth > 0
            repeat = inside and self._last_call.get(name) == self._forward_id
            self._last_call[name] = self._forward_id if inside else -1
            if repeat:
                if self.on_repeat == "error":
                    raise ValueError(
                        f"layer {name!r} ran twice in one forward (a shared module, e.g. ResNet "
                        "Bottleneck.relu): record a module that runs once (e.g. the whole block "
                        "'layer1.0') or pass on_repeat='last' or 'first'"
                    )
                if self.on_repeat == "first":
                    return
            # Copy now: an in-place op later in the graph (ReLU(inplace=True)) would rewrite a
            # stored view. inference_mode(False) makes the copy an ordinary tensor. The copy is
            # in the standard contiguous layout (a channels-last batch, as preprocess makes from
            # HWC images, stays channels-last), so a unit's map is one contiguous block.
            with torch.inference_mode(False):
                out = output.detach()
                device = self.device if self.device is not None else out.device
                if self.buffers is None:
                    copy = out.to(device, copy=True, memory_format=torch.contiguous_format)
                else:
                    copy = self.buffers.take(name, out, device)
                    copy.copy_(out)
            if not self.keep:
                self.activations[name] = copy
            elif repeat:
                self.activations[name][-1] = copy
            else:
                self.activations.setdefault(name, []).append(copy)

        return hook


def record_activations(
    model: nn.Module,
    images: torch.Tensor,
    layers: LayerSpec | Iterable[LayerSpec],
    *,
    device: str | torch.device | None = "cpu",
    on_repeat: Literal["error", "last", "first"] = "error",
) -> dict[str, torch.Tensor]:
    """One forward pass of ``images`` under ``torch.no_grad()``, returning the layers' outputs.

    Args:
        model: the model (put in eval mode for the pass, then restored).
        images: input batch ``N x 3 x H x W`` on the model's device, already normalised.
        layers: layer(s) to record, see :class:`ActivationRecorder`.
        device: where to store the outputs (``None``: the model's device).
        on_repeat: policy for a module called twice per forward.

    Returns:
        ``{name: tensor}`` in the order of ``layers``.
    """
    with ActivationRecorder(model, layers, device=device, on_repeat=on_repeat) as rec:
        with torch.no_grad():
            model(images)
    return {name: rec.activations[name] for name in rec.names}


def _unknown_layer_message(model: nn.Module, layer: str, aliases: dict[str, str]) -> str:
    info = getattr(model, "dissect_info", None)
    arch = info.get("arch") if isinstance(info, dict) and info.get("arch") else type(model).__name__
    paths = [p for p, _ in model.named_modules() if p]
    if len(paths) > 6:
        sample = ", ".join(paths[:3]) + ", ..., " + ", ".join(paths[-3:])
    else:
        sample = ", ".join(paths)
    alias_part = f"use an alias ({', '.join(aliases)}) or" if aliases else "use"
    return (
        f"unknown layer {layer!r} for {arch}: {alias_part} a dotted module path "
        f"({len(paths)} paths: {sample}; list them with model.named_modules())"
    )
