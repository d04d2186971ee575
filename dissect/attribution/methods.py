"""Attention maps of classification networks, to compare with human gaze (digest section 5).

:func:`attention_maps` computes one ``N x H x W`` map per image with one of :data:`METHODS`:

- ``activation``: Lai et al. 2020, eq. 4, ``A = sum_d |Z_d|^p`` over a layer's channels.
- ``cam``: class activation map ``M_c = sum_k w_k^c f_k`` (Ebrahimpour et al. 2019, eq. 1) with
  the weights of a global-average-pooling + linear classifier, or weights fitted by
  :func:`fit_cam_regression` for models without one (VGG, AlexNet).
- ``gradcam``: captum ``LayerGradCam`` with ``relu_attributions=True`` (eq. 2-4).
- ``guided_backprop``, ``guided_gradcam``: captum ``GuidedBackprop``; captum's ``GuidedGradCam``
  rule computed from one forward and one backward (``_guided_gradcam``).
- Gradient methods run one forward per batch: with ``target=None`` the top-1 class is read
  from that same forward (never a separate forward only to find it).
- ``dense``: the Densely Connected Attention Model (Ebrahimpour et al. 2019, sec. 3.2), also
  available layer by layer from :func:`dense_attention_maps`.

Conventions fixed here:

- Layer-level maps are computed at the layer's resolution and upsampled to the input size
  bilinearly (``align_corners=False``); captum's default (nearest) is never used.
- Pixel-level methods reduce the ``3 x H x W`` attribution to one map by the maximum over colour
  channels of the absolute value (Simonyan et al.'s rule for saliency maps).
- The model runs in eval mode on its own device; the maps come back as float32 on the CPU.
  Every submodule's train/eval mode, every parameter's ``requires_grad``, every ``nn.ReLU``'s
  ``inplace`` flag and the module hooks are restored afterwards, also after an exception.
- Gradient methods freeze the parameters and differentiate a cloned input with
  ``requires_grad``; layer gradients come from forward hooks and ``torch.autograd.grad``, never
  ``register_full_backward_hook`` (it breaks on in-place ReLUs, pytorch#61519). torchvision's
  ReLUs are in-place: gradient methods switch every ``nn.ReLU`` to ``inplace=False`` for the
  call, so a hooked conv output keeps its pre-ReLU values and captum's ReLU hooks see the
  tensors they expect (captum documents in-place modules as unsupported by GuidedBackprop since
  its PR #837; captum 0.9 happens to cope, older releases do not).
- Guided methods refuse a model that calls ``F.relu`` / ``torch.relu`` outside ``nn.ReLU``
  modules (counted during the target forward): captum guides only ``nn.ReLU`` modules.
  torchvision's VGG, AlexNet and ResNet make no such call.
- Batch size does not change the maps: every image's score depends only on that image in eval
  mode, so the gradients of the summed scores are the per-image gradients.
"""
from __future__ import annotations

import contextlib
import numbers
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Callable, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from dissect.models.hooks import ActivationRecorder, LayerSpec, resolve_layer
from dissect.models.layers import layer_aliases

__all__ = ["METHODS", "attention_maps", "dense_attention_maps", "fit_cam_regression", "top1", "default_layer",
           "default_dense_layers"]

METHODS: tuple[str, ...] = ("activation", "cam", "gradcam", "guided_backprop", "guided_gradcam", "dense")

TargetSpec = Union[int, Sequence[int], torch.Tensor, None]

# Keyword options each method accepts through attention_maps(**options).
_OPTIONS: dict[str, tuple[str, ...]] = {
    "activation": ("p",),
    "cam": ("cam_weights",),
    "gradcam": (),
    "guided_backprop": (),
    "guided_gradcam": (),
    "dense": ("layers",),
}
_GRADIENT_METHODS = ("gradcam", "guided_backprop", "guided_gradcam", "dense")
# Relative tolerance of the check "logits == Linear(GAP(f))" that licenses CAM's own weights:
# float32 sums over 2048 channels (ResNet) and a different summation order than AdaptiveAvgPool2d.
_CAM_CHECK_RTOL = 1e-3
_FUNCTIONAL_RELUS = (F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_)


def attention_maps(
    model: nn.Module,
    images: torch.Tensor,
    method: str,
    layer: LayerSpec | None = None,
    target: TargetSpec = None,
    **options: Any,
) -> torch.Tensor:
    """One attention map per image, at the input resolution.

    Methods (``layer=None`` picks the default layer: the last conv alias, i.e. ``conv5_3`` for
    VGG16, ``conv5_4`` for VGG19, ``conv5`` for AlexNet, ``layer4`` for ResNet; for a model
    without aliases, the last ``nn.Conv2d`` module):

    - ``"activation"``: ``A = sum_d |Z_d|^p`` over the layer's channels (Lai et al. 2020, eq. 4),
      option ``p`` (default 2). Non-negative. Target-independent.
    - ``"cam"``: ``M_c = sum_k w_k^c f_k`` (Ebrahimpour et al. 2019, eq. 1; no bias, no ReLU:
      the map is signed). ``layer=None``: the input of the model's global average pooling if it
      has one (ResNet: ``layer4``), else the default layer. ``w`` is the final ``nn.Linear``'s
      weight when the logits are verified to equal ``Linear(GAP(f))``; otherwise pass
      ``cam_weights`` (``classes x channels``, e.g. from :func:`fit_cam_regression`), which are
      used whenever given.
    - ``"gradcam"``: captum ``LayerGradCam(model, layer)`` with ``relu_attributions=True``:
      ``ReLU(sum_k a_k f_k)``, ``a_k`` = spatial mean of ``d y_c / d f_k``. Non-negative.
    - ``"guided_backprop"``: captum ``GuidedBackprop``, reduced by ``max_colour |g|``.
      Non-negative. Works at the input: ``layer`` must be None.
    - ``"guided_gradcam"``: captum ``GuidedGradCam(model, layer)`` (bilinear upsampling),
      reduced by ``max_colour |g|``. Non-negative.
    - ``"dense"``: the cumulative map ``A_L+`` of :func:`dense_attention_maps` for ``layer=L``
      (default: the first layer, i.e. all layers combined); option ``layers`` (the dense
      model's layers). Non-negative for post-ReLU layers (all default layers).
      Target-independent.

    Args:
        model: a classifier (``N x classes`` logits; any output for ``activation`` and
            ``dense`` without a target). It may sit on any device; ``images`` are moved there.
        images: ``N x 3 x H x W`` float tensor, already normalised.
        method: one of :data:`METHODS`.
        layer: alias (``"conv5_3"``), dotted module path or module, see
            :func:`dissect.models.hooks.resolve_layer`.
        target: class per image: None (the model's top-1 class), an int for every image, or a
            length-N sequence / 1-D tensor of ints. Always validated; ignored by the
            target-independent methods.
        **options: the method's options listed above.

    Returns:
        ``N x H x W`` float32 CPU tensor.

    Raises:
        ValueError: unknown method, option or layer; a layer without ``N x C x h x w`` output;
            a target out of range (the message names the number of classes); ``cam`` without
            a GAP + linear classifier or ``cam_weights``; ``guided_*`` on a model calling
            ``F.relu`` outside ``nn.ReLU`` modules (captum could not guide those ReLUs).
    """
    if method not in METHODS:
        raise ValueError(f"unknown attention method {method!r}: use one of {', '.join(METHODS)}")
    unknown = sorted(set(options) - set(_OPTIONS[method]))
    if unknown:
        accepted = ", ".join(_OPTIONS[method]) or "none"
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for method {method!r} (it accepts: {accepted})")
    if method == "guided_backprop" and layer is not None:
        raise ValueError("guided_backprop works at the input and takes no layer: pass layer=None")
    x = _check_images(model, images)
    with _model_state(model, gradients=method in _GRADIENT_METHODS):
        if method == "dense":
            module = None if layer is None else resolve_layer(model, layer)[1]  # fail before the work
            maps, names = _dense(model, x, options.get("layers"), target)
            if module is not None and module not in names:
                raise ValueError(
                    f"layer {layer!r} is not one of the dense model's layers "
                    f"({', '.join(names.values())}): pick one of them or pass layers=[...]"
                )
            name = next(iter(names.values())) if module is None else names[module]
            return maps[f"{name}+"]
        return _METHOD_FUNCS[method](model, x, layer, target, **options)


def dense_attention_maps(
    model: nn.Module,
    images: torch.Tensor,
    layers: Sequence[LayerSpec] | None = None,
    target: TargetSpec = None,
) -> dict[str, torch.Tensor]:
    """Ebrahimpour et al.'s Densely Connected Attention Model (2019, sec. 3.2), layer by layer.

    No training. With ``f_n`` (``C x h x w``) the output of layer n, per image:

    - ``GT`` = mean of the last layer's output over channels and positions (the "mean
      activation of the last conv layer"; "last" = the last listed layer to run);
    - ``G_n = dGT / df_n`` (forward hooks + ``torch.autograd.grad``);
    - ``W_s = softmax over (x, y) of sum_c G_n`` (``1 x h x w``) and
      ``W_c = softmax over c of sum_(x,y) G_n`` (``C x 1 x 1``);
    - ``f_SCA = W_c * f_n + W_s * f_n``; the layer's map ``A_n`` = channel mean of ``f_SCA``,
      upsampled bilinearly to the input size;
    - cumulative maps ``A_n+ = A_m + A_(m-1) + ... + A_n`` from the last layer ``m`` down.

    ``GT`` is not a class score, so the maps do not depend on the target: ``target`` is
    accepted (and validated) for a uniform API, and ignored.

    Args:
        model: the model.
        images: ``N x 3 x H x W`` float tensor, already normalised.
        layers: the layers (alias, dotted path or module); default: the conv aliases (VGG
            ``conv1_1..conv5_3``, ResNet ``conv1, layer1..layer4``, AlexNet ``conv1..conv5``),
            or every ``nn.Conv2d`` of a model without aliases. Ordered by when they run.
        target: see :func:`attention_maps`; ignored.

    Returns:
        ``{name: A_n, f"{name}+": A_n+}`` for each layer in forward order; ``N x H x W`` float32
        CPU tensors, non-negative when the layers' outputs are (post-ReLU layers).

    Raises:
        ValueError: unknown, repeated or not-running layer; a layer that does not feed the last
            one (no gradient); an output modified in place later in the forward.
    """
    x = _check_images(model, images)
    with _model_state(model, gradients=True):
        return _dense(model, x, layers, target)[0]


def fit_cam_regression(
    model: nn.Module, images: torch.Tensor, layer: LayerSpec | None = None, *, batch_size: int = 32
) -> torch.Tensor:
    """Class weights for CAM on a model without a GAP + linear classifier (Ebrahimpour et al.).

    Least squares fit of the class scores on the layer's global-average-pooled features, with an
    intercept: ``logits ~ GAP(f) @ W.T + b`` over ``images`` (``torch.linalg.lstsq``, driver
    ``gelsd`` in float64 on the CPU, so dead units get weight 0). The intercept is dropped: CAM
    uses ``W`` only.

    Args:
        model: a classifier with ``N x classes`` logits.
        images: ``N x 3 x H x W`` normalised images; N must exceed the layer's channel count.
        layer: as for ``cam`` in :func:`attention_maps` (default: the GAP input if the model has
            one, else the last conv alias / last ``nn.Conv2d``).
        batch_size: images per forward pass.

    Returns:
        ``W``: ``classes x channels`` float32 CPU tensor, to pass as ``cam_weights=``.

    Raises:
        ValueError: too few images, bad ``batch_size``, unknown layer or non-4-D layer output.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    x = _check_images(model, images)
    feats, scores = [], []
    with _model_state(model, gradients=False):
        for start in range(0, x.shape[0], batch_size):
            f, logits, _, name = _cam_features(model, x[start:start + batch_size], layer)
            _check_logits(logits, "fit_cam_regression")
            feats.append(f.mean(dim=(2, 3)).double().cpu())
            scores.append(logits.double().cpu())
    gap, y = torch.cat(feats), torch.cat(scores)
    n, k = gap.shape
    if n <= k:
        raise ValueError(
            f"fit_cam_regression needs more images than layer {name!r} has channels plus one "
            f"({k + 1}), got {n}: pass more images"
        )
    design = torch.cat([gap, torch.ones(n, 1, dtype=gap.dtype)], dim=1)
    solution = torch.linalg.lstsq(design, y, driver="gelsd").solution  # (k + 1) x classes
    return solution[:k].T.float().contiguous()


def top1(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Predicted class per image (argmax of the logits, eval mode, no gradients).

    Args:
        model: a classifier with ``N x classes`` logits.
        images: ``N x 3 x H x W`` normalised images.

    Returns:
        LongTensor of N classes, on the CPU.

    Raises:
        ValueError: bad images, or a model output that is not ``N x classes``.
    """
    x = _check_images(model, images)
    with _model_state(model, gradients=False):
        logits = _forward(model, x)
    _check_logits(logits, "top1")
    return logits.argmax(dim=1).cpu()


# ---------------------------------------------------------------- methods


def _activation(model: nn.Module, x: torch.Tensor, layer: LayerSpec | None, target: TargetSpec,
                p: float = 2.0) -> torch.Tensor:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not p > 0:
        raise ValueError(f"p must be a positive number, got {p!r}")
    spec = default_layer(model) if layer is None else layer
    # ActivationRecorder copies inside the hook: a conv output keeps its pre-ReLU values.
    with ActivationRecorder(model, spec, device=None, eval_mode=False) as rec, torch.no_grad():
        logits = model(x)
    name = rec.names[0]
    _validate_target(target, logits, x.shape[0])
    z = _check_4d(rec.activations[name], name)
    return _upsample(z.abs().pow(p).sum(dim=1), x.shape[-2:])  # Lai et al. 2020, eq. 4


def _cam(model: nn.Module, x: torch.Tensor, layer: LayerSpec | None, target: TargetSpec,
         cam_weights: torch.Tensor | None = None) -> torch.Tensor:
    f, logits, linear, name = _cam_features(model, x, layer)
    t = _resolve_targets(target, logits, x.shape[0], "cam")
    k = f.shape[1]
    if cam_weights is not None:
        if not isinstance(cam_weights, torch.Tensor) or cam_weights.shape != (logits.shape[1], k):
            shape = tuple(cam_weights.shape) if isinstance(cam_weights, torch.Tensor) else type(cam_weights).__name__
            raise ValueError(
                f"cam_weights must be a {logits.shape[1]} x {k} tensor (classes x channels of layer "
                f"{name!r}), got {shape}: fit them with fit_cam_regression(model, images, layer)"
            )
        weights = cam_weights.detach().to(f.device, f.dtype)
    elif linear is not None and _is_gap_linear(f, logits, linear):
        weights = linear.weight.detach()
    elif linear is not None and layer is not None and f.shape[1] != linear.in_features:
        raise ValueError(
            f"cam with the classifier's own weights works at the input of the global average pooling "
            f"(leave the layer unset); layer {name!r} has {f.shape[1]} channels, the classifier takes "
            f"{linear.in_features}: drop the layer, or fit weights for it with fit_cam_regression"
        )
    else:
        raise ValueError(
            f"cam needs a global-average-pooling + linear classifier (e.g. resnet50); for "
            f"{_arch(model)} fit class weights first with fit_cam_regression(model, images, layer) "
            f"and pass cam_weights=... (CLI: --cam-fit-images N)"
        )
    cam = torch.einsum("nk,nkhw->nhw", weights[t], f)  # Ebrahimpour et al. 2019, eq. 1
    return _upsample(cam, x.shape[-2:])


class _TargetLogit(nn.Module):
    """The model's logit of each image's target class (``N x 1``), the target read in the same forward.

    captum needs a target before its forward; with ``target=None`` we would otherwise run a
    whole forward only to find the top-1 class. Wrapped, captum's own forward computes the
    logits, the top-1 class (``argmax``, not differentiated) and returns the chosen logit, and
    captum differentiates output 0: the gradients are those of ``logits[n, t_n]``, exactly as
    with ``target=t``, from one forward and one backward. Given targets are validated in the
    same forward (against the number of classes), and guided methods count ``F.relu`` calls
    in it (:func:`_relu_check`).
    """

    def __init__(self, model: nn.Module, target: TargetSpec, method: str, check_functional_relu: bool) -> None:
        super().__init__()
        self.model = model
        self.target = target
        self.method = method
        self.check_functional_relu = check_functional_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.check_functional_relu:
            with _relu_check(self.model):
                logits = self.model(x)
        else:
            logits = self.model(x)
        t = _resolve_targets(self.target, logits.detach(), x.shape[0], self.method)
        return logits.gather(1, t[:, None])


def _gradcam(model: nn.Module, x: torch.Tensor, layer: LayerSpec | None, target: TargetSpec) -> torch.Tensor:
    from captum.attr import LayerGradCam  # imported here: captum adds ~1 s to start-up

    name, module = resolve_layer(model, default_layer(model) if layer is None else layer)
    wrapped = _TargetLogit(model, target, "gradcam", check_functional_relu=False)
    with _grad_enabled():
        attr = LayerGradCam(wrapped, module).attribute(_grad_input(x), target=0, relu_attributions=True)
    # relu_attributions: Selvaraju et al.'s ReLU (captum's default keeps the sign, captum #179).
    return _upsample(_check_4d(attr, name)[:, 0], x.shape[-2:])


def _guided_backprop(model: nn.Module, x: torch.Tensor, layer: LayerSpec | None, target: TargetSpec) -> torch.Tensor:
    from captum.attr import GuidedBackprop

    wrapped = _TargetLogit(model, target, "guided_backprop", check_functional_relu=True)
    with _grad_enabled(), _quiet_captum():
        attr = GuidedBackprop(wrapped).attribute(_grad_input(x), target=0)
    return _pixel_map(attr)


def _guided_gradcam(model: nn.Module, x: torch.Tensor, layer: LayerSpec | None, target: TargetSpec) -> torch.Tensor:
    """captum's ``GuidedGradCam`` (bilinear upsampling), from one forward and one full backward.

    captum runs Grad-CAM and guided backprop as two separate forward + backward passes. Here one
    forward records the layer output ``f`` and puts a gradient hook on every ``nn.ReLU`` output;
    a first, short backward (logits -> ``f``, hooks inactive) gives the plain gradient at ``f``
    for Grad-CAM; the second runs to the input with the hooks clamping each ReLU's incoming
    gradient at 0 (``relu(grad_out) * 1[x > 0] = relu(grad_out * 1[x > 0])``: captum's
    guided-backprop rule). The map is ``guided_grad * up(ReLU(sum_k mean(df_k) f_k))``, as captum.
    """
    name, module = resolve_layer(model, default_layer(model) if layer is None else layer)
    guided = [False]
    recorded: list[torch.Tensor] = []

    def clamp(grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0) if guided[0] else grad

    def relu_hook(m: nn.Module, inputs, output) -> None:
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(clamp)

    def layer_hook(m: nn.Module, inputs, output) -> None:
        recorded.append(output)

    handles = [m.register_forward_hook(relu_hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    handles.append(module.register_forward_hook(layer_hook))
    try:
        with _grad_enabled():
            x_in = _grad_input(x)
            with _relu_check(model):
                logits = model(x_in)
            t = _resolve_targets(target, _check_logits(logits, "guided_gradcam").detach(), x.shape[0],
                                 "guided_gradcam")
            if not recorded:
                raise ValueError(f"layer {name!r} did not run in the forward pass: pick a layer the model uses")
            if len(recorded) > 1:
                raise ValueError(f"layer {name!r} ran {len(recorded)} times in one forward: pick a layer that runs once")
            f = _check_4d(recorded[0], name)
            score = logits.gather(1, t[:, None]).sum()
            (grad_f,) = torch.autograd.grad(score, f, retain_graph=True)
            weights = torch.mean(grad_f, dim=(2, 3), keepdim=True)  # captum LayerGradCam
            cam = F.relu(torch.sum(weights * f, dim=1, keepdim=True)).detach()
            guided[0] = True
            (grad_x,) = torch.autograd.grad(score, x_in)
    finally:
        for h in handles:
            h.remove()
    attr = grad_x * F.interpolate(cam, size=x.shape[-2:], mode="bilinear")
    return _pixel_map(attr)


_METHOD_FUNCS: dict[str, Callable[..., torch.Tensor]] = {
    "activation": _activation,
    "cam": _cam,
    "gradcam": _gradcam,
    "guided_backprop": _guided_backprop,
    "guided_gradcam": _guided_gradcam,
}


def _dense(
    model: nn.Module, x: torch.Tensor, layers: Sequence[LayerSpec] | None, target: TargetSpec
) -> tuple[dict[str, torch.Tensor], dict[nn.Module, str]]:
    """Dense maps and ``{module: name}`` in forward order; the caller owns the model state."""
    if layers is None:
        layers = default_dense_layers(model)
    elif isinstance(layers, (str, nn.Module)):
        layers = [layers]
    resolved: dict[nn.Module, str] = {}
    for spec in layers:
        name, module = resolve_layer(model, spec)
        if module in resolved:
            raise ValueError(f"layer {name!r} is listed twice (also as {resolved[module]!r}): list each layer once")
        resolved[module] = name
    if not resolved:
        raise ValueError("layers is empty: name at least one layer (alias or dotted path)")

    outputs: dict[nn.Module, tuple[torch.Tensor, int]] = {}  # module -> (output, version at capture)

    def hook(module: nn.Module, inputs, output) -> None:
        name = resolved[module]
        if module in outputs:
            raise ValueError(f"layer {name!r} ran twice in one forward (a shared module): pick a module that runs once")
        _check_4d(output, name)
        outputs[module] = (output, output._version)

    handles = [m.register_forward_hook(hook) for m in resolved]
    try:
        with _grad_enabled():
            logits = model(_grad_input(x))
    finally:
        for h in handles:
            h.remove()
    _validate_target(target, logits, x.shape[0])
    missing = [n for m, n in resolved.items() if m not in outputs]
    if missing:
        raise ValueError(f"layer(s) {', '.join(missing)} did not run in the forward pass: pick layers the model uses")
    for module, (out, version) in outputs.items():
        if out._version != version:
            raise ValueError(
                f"the output of layer {resolved[module]!r} is modified in place later in the forward: "
                "pick another layer (e.g. the module after the in-place operation)"
            )
    order = list(outputs)  # dicts keep insertion order = forward order
    feats = [outputs[m][0] for m in order]
    with _grad_enabled():
        gt = feats[-1].mean(dim=(1, 2, 3)).sum()  # GT per image, summed: per-image gradients
        grads = torch.autograd.grad(gt, feats, allow_unused=True)
    size = x.shape[-2:]
    per_layer: dict[nn.Module, torch.Tensor] = {}
    for module, f, g in zip(order, feats, grads):
        if g is None:
            raise ValueError(
                f"layer {resolved[module]!r} does not feed the last layer {resolved[order[-1]]!r}: "
                "the dense model needs layers on one path"
            )
        f, g = f.detach(), g.detach()
        n, c, h, w = f.shape
        w_s = torch.softmax(g.sum(dim=1).reshape(n, h * w), dim=1).reshape(n, 1, h, w)
        w_c = torch.softmax(g.sum(dim=(2, 3)), dim=1).reshape(n, c, 1, 1)
        f_sca = w_c * f + w_s * f  # Ebrahimpour et al. 2019, sec. 3.2
        per_layer[module] = _upsample(f_sca.mean(dim=1), size)
    maps: dict[str, torch.Tensor] = {}
    cumulative: dict[nn.Module, torch.Tensor] = {}
    with torch.inference_mode(False):  # normal tensors out, also under the caller's inference_mode
        total = torch.zeros_like(per_layer[order[-1]])
        for module in reversed(order):  # A_i = A_m + ... + A_i, from the last layer down
            total = total + per_layer[module]
            cumulative[module] = total
    for module in order:
        maps[resolved[module]] = per_layer[module]
        maps[f"{resolved[module]}+"] = cumulative[module]
    return maps, {m: resolved[m] for m in order}


# ---------------------------------------------------------------- private helpers


@contextlib.contextmanager
def _model_state(model: nn.Module, gradients: bool) -> Iterator[None]:
    """Eval mode (and, for gradients, frozen parameters and non-in-place ReLUs), restored on exit."""
    modes = {m: m.training for m in model.modules()}
    requires = {p: p.requires_grad for p in model.parameters()}
    relus = {m: m.inplace for m in model.modules() if isinstance(m, nn.ReLU)}
    try:
        model.eval()
        if gradients:
            for p in requires:
                p.requires_grad_(False)
            for m in relus:
                m.inplace = False
        yield
    finally:
        for m, training in modes.items():
            m.training = training
        for p, flag in requires.items():
            p.requires_grad_(flag)
        for m, inplace in relus.items():
            m.inplace = inplace


@contextlib.contextmanager
def _grad_enabled() -> Iterator[None]:
    # Callers may hold torch.no_grad() or torch.inference_mode(); gradient paths need neither.
    with torch.inference_mode(False), torch.enable_grad():
        yield


@contextlib.contextmanager
def _quiet_captum() -> Iterator[None]:
    with warnings.catch_warnings():
        # Emitted on every GuidedBackprop call; the hooks are removed by captum in a finally.
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")
        yield


def _grad_input(x: torch.Tensor) -> torch.Tensor:
    """A fresh leaf copy of the input that requires grad (the caller's tensor is never touched)."""
    with torch.inference_mode(False):
        return x.detach().clone().requires_grad_(True)


def _check_images(model: nn.Module, images: Any) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor N x 3 x H x W, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[0] == 0 or not images.is_floating_point():
        raise ValueError(
            f"images must be a non-empty float tensor N x 3 x H x W, got shape {tuple(images.shape)} "
            f"and dtype {images.dtype}"
        )
    param = next(iter(model.parameters()), None)
    if param is None:
        return images.detach()
    dtype = param.dtype if param.is_floating_point() else images.dtype
    return images.detach().to(param.device, dtype)


def _forward(model: nn.Module, x: torch.Tensor, check_functional_relu: bool = False) -> torch.Tensor:
    """Logits without gradients; optionally checks that every ReLU is an ``nn.ReLU`` module."""
    with torch.no_grad():
        if not check_functional_relu:
            return model(x)
        with _relu_check(model):
            return model(x)


@contextlib.contextmanager
def _relu_check(model: nn.Module) -> Iterator[None]:
    """Refuse a forward (run inside) that calls ``F.relu`` / ``torch.relu`` outside ``nn.ReLU`` modules."""
    counter = _FunctionalReluCounter()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    handles = []
    try:
        for m in relus:
            handles.append(m.register_forward_pre_hook(counter.enter))
            handles.append(m.register_forward_hook(counter.leave))
        with counter:
            yield
    finally:
        for h in handles:
            h.remove()
    if counter.count:
        raise ValueError(
            f"the model calls torch.relu / F.relu outside nn.ReLU modules ({counter.count} call(s) "
            "per forward): captum's guided backprop only modifies nn.ReLU modules, so the map would "
            "be wrong; use nn.ReLU modules in the model"
        )


class _FunctionalReluCounter(TorchFunctionMode):
    """Counts relu calls made outside ``nn.ReLU`` modules (torchvision's models make none)."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.count = 0

    def enter(self, module: nn.Module, inputs) -> None:
        self.depth += 1

    def leave(self, module: nn.Module, inputs, output) -> None:
        self.depth -= 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.depth == 0 and func in _FUNCTIONAL_RELUS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def _check_logits(logits: Any, what: str) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{what} needs a classifier whose output is N x classes; the model returned {shape}")
    return logits


def _resolve_targets(target: TargetSpec, logits: torch.Tensor, n: int, method: str) -> torch.Tensor:
    """LongTensor of N classes on the logits' device: the given target(s) or the top-1 class."""
    _check_logits(logits, method)
    n_classes = logits.shape[1]
    if target is None:
        target = logits.argmax(dim=1)
    elif isinstance(target, bool) or (isinstance(target, torch.Tensor) and target.dtype == torch.bool):
        raise ValueError(f"target must be an int or a sequence of ints, got {target!r}")
    if isinstance(target, numbers.Integral):
        t = torch.full((n,), int(target), dtype=torch.long)
    else:
        try:
            t = torch.as_tensor(target)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"target must be an int or a sequence of ints, got {target!r}") from err
        if t.is_floating_point() or t.is_complex() or t.ndim != 1 or t.shape[0] != n:
            raise ValueError(
                f"target must be an int or {n} ints (one per image), got shape {tuple(t.shape)} "
                f"and dtype {t.dtype}"
            )
        t = t.long()
    bad = t[(t < 0) | (t >= n_classes)]
    if bad.numel():
        raise ValueError(
            f"target {int(bad[0])} is out of range: the model has {n_classes} classes (use 0..{n_classes - 1})"
        )
    with torch.inference_mode(False):
        # A normal tensor even under the caller's inference_mode: captum's gather saves it for backward.
        return t.to(logits.device).clone()


def _validate_target(target: TargetSpec, logits: Any, n: int) -> None:
    """Target-independent methods still reject a malformed target (never silently ignore a typo)."""
    if target is not None:
        _resolve_targets(target, logits, n, "a target")


def default_layer(model: nn.Module) -> LayerSpec:
    """The last conv alias (conv5_3, layer4, ...) or, without aliases, the last nn.Conv2d."""
    aliases = [a for a in layer_aliases(model) if a.startswith(("conv", "layer"))]
    if aliases:
        return aliases[-1]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{_arch(model)} has no nn.Conv2d to default to: pass layer=...")
    return convs[-1]


def default_dense_layers(model: nn.Module) -> list[LayerSpec]:
    aliases = [a for a in layer_aliases(model) if a.startswith(("conv", "layer"))]
    if aliases:
        return aliases
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{_arch(model)} has no nn.Conv2d to default to: pass layers=[...]")
    return convs


def _cam_features(
    model: nn.Module, x: torch.Tensor, layer: LayerSpec | None
) -> tuple[torch.Tensor, torch.Tensor, nn.Linear | None, str]:
    """``(f, logits, final Linear or None, layer name)`` from one no-grad forward.

    ``layer=None``: ``f`` is the input of the last global average pooling (``AdaptiveAvgPool2d``
    to 1 x 1) if one ran, else the default layer's output. The final Linear is the one whose
    output is the model's output (the same tensor object).
    """
    gaps = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d) and _is_global(m.output_size)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    spec = default_layer(model) if layer is None else layer
    name, module = resolve_layer(model, spec)
    seen: dict[str, Any] = {}

    def gap_hook(m: nn.Module, inputs) -> None:
        seen["gap"] = (inputs[0].detach().clone(), m)

    def linear_hook(m: nn.Module, inputs, output) -> None:
        seen.setdefault("linears", []).append((m, output))

    def layer_hook(m: nn.Module, inputs, output) -> None:
        seen["layer"] = output.detach().clone() if isinstance(output, torch.Tensor) else output

    handles = []
    try:
        handles += [m.register_forward_pre_hook(gap_hook) for m in gaps]
        handles += [m.register_forward_hook(linear_hook) for m in linears]
        handles.append(module.register_forward_hook(layer_hook))
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    if layer is None and "gap" in seen:
        f, gap = seen["gap"]
        name = next((n for n, m in model.named_modules() if m is gap), "avgpool")
        name = f"input of {name}"
    elif "layer" in seen:
        f = seen["layer"]
    else:
        raise ValueError(f"layer {name!r} did not run in the forward pass: pick a layer the model uses")
    final = next((m for m, out in seen.get("linears", []) if out is logits), None)
    return _check_4d(f, name), logits, final, name


def _is_global(size: Any) -> bool:
    sizes = size if isinstance(size, (tuple, list)) else (size, size)
    return all(s == 1 for s in sizes)


def _is_gap_linear(f: torch.Tensor, logits: torch.Tensor, linear: nn.Linear) -> bool:
    """Do the logits equal ``Linear(GAP(f))``? Only then are the Linear's weights CAM weights."""
    if logits.ndim != 2 or linear.in_features != f.shape[1]:
        return False
    expected = F.linear(f.mean(dim=(2, 3)), linear.weight, linear.bias)
    scale = max(1.0, float(logits.abs().max()))
    return bool(torch.allclose(expected, logits, rtol=_CAM_CHECK_RTOL, atol=_CAM_CHECK_RTOL * scale))


def _check_4d(t: Any, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.ndim != 4:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"layer {name!r} outputs {shape}, not N x C x h x w: pick a convolutional layer")
    return t


def _upsample(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``N x h x w`` -> ``N x H x W`` float32 CPU, bilinear with ``align_corners=False``."""
    with torch.inference_mode(False):  # normal tensors out, also under the caller's inference_mode
        up = F.interpolate(maps.detach()[:, None], size=tuple(size), mode="bilinear", align_corners=False)
        return up[:, 0].float().cpu()


def _pixel_map(attr: torch.Tensor) -> torch.Tensor:
    """``N x 3 x H x W`` attribution -> ``N x H x W``: max over colour channels of ``|g|``."""
    with torch.inference_mode(False):
        return attr.detach().abs().amax(dim=1).float().cpu()


def _arch(model: nn.Module) -> str:
    info = getattr(model, "dissect_info", None)
    if isinstance(info, dict) and info.get("arch"):
        return str(info["arch"])
    return type(model).__name__
