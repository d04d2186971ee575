"""Attention maps against literal, formula-by-formula implementations and hand-computed cases."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dissect.attribution.methods import METHODS, attention_maps, dense_attention_maps, fit_cam_regression, top1
from dissect.models.hooks import ActivationRecorder


class TinyNet(nn.Module):
    """Two conv stages with in-place ReLUs (like torchvision) + global average pooling + Linear."""

    def __init__(self, inplace=True, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=inplace), nn.MaxPool2d(2),
            nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(inplace=inplace),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 6))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            self.features[3].bias += 0.3  # keep most relu2 units alive on random inputs

    def forward(self, x):
        return self.head(self.features(x))


class TinyVGG(TinyNet):
    """VGG-like: a 2 x 2 adaptive pool + Linear, so no GAP + linear structure for CAM."""

    def __init__(self):
        super().__init__()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(20, 6))


class HandNet(nn.Module):
    """conv (2 x 2, stride 2) picking each channel's top-left pixel -> GAP -> Linear, hand-set."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 2, stride=2, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.conv.weight.zero_()
            for k in range(3):
                self.conv.weight[k, k, 0, 0] = 1.0
            self.fc.weight.copy_(torch.tensor([[1.0, -3.0, 0.5], [0.2, 0.1, -1.0]]))
            self.fc.bias.copy_(torch.tensor([0.3, -0.2]))

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(1))


class Tripwire(nn.Module):
    """Identity that raises inside the forward: always, or only when gradients are on."""

    def __init__(self):
        super().__init__()
        self.mode = "off"

    def forward(self, x):
        if self.mode == "always" or (self.mode == "grad" and torch.is_grad_enabled()):
            raise RuntimeError("tripwire")
        return x


class FunctionalReluNet(TinyNet):
    def forward(self, x):
        return self.head(F.relu(self.features[3](self.features[2](self.features[1](self.features[0](x))))))


def _images(n=3, size=16, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _plain(model):
    """A copy with non-in-place ReLUs, for the literal references."""
    plain = copy.deepcopy(model)
    for m in plain.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return plain


def _up(maps, size):
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def _split(model, k, x):
    """``(f, logits)``: the output of ``features[:k]`` (with grad) and the rest of the forward."""
    f = model.features[:k](x)
    return f, model.head(model.features[k:](f))


def _literal_gradcam(model, x, k, target):
    plain = _plain(model)
    f, logits = _split(plain, k, x)
    score = logits[torch.arange(len(x)), target].sum()
    (g,) = torch.autograd.grad(score, f)
    alpha = g.mean(dim=(2, 3))  # Selvaraju et al.: spatial mean of d y_c / d f
    cam = torch.relu((alpha[:, :, None, None] * f).sum(dim=1))
    return _up(cam.detach(), x.shape[-2:])


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        # Springenberg et al.: pass the gradient where the input was positive AND it is positive.
        return grad * (x > 0) * (grad > 0)


def _literal_guided_backprop(model, x, target):
    x = x.clone().requires_grad_(True)
    feat = model.features
    h = _GuidedReLU.apply(feat[3](feat[2](_GuidedReLU.apply(feat[0](x)))))
    logits = model.head(h)
    (g,) = torch.autograd.grad(logits[torch.arange(len(x)), target].sum(), x)
    return g.abs().amax(dim=1)


def _no_hooks(model):
    return all(
        not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)
        for m in model.modules()
    )


def _state(model):
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)],
    )


# ------------------------------------------------------------------ hand-computed cases

# 1-D bilinear upsampling 2 -> 4 with align_corners=False: source coordinate (i + 0.5) / 2 - 0.5,
# i.e. -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
U = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])


def _hand_input():
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(3))  # only [::2, ::2] matters
    x[0, 0, ::2, ::2] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    x[0, 1, ::2, ::2] = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    x[0, 2, ::2, ::2] = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    return x


def test_gradcam_and_cam_hand_computed():
    model, x = HandNet(), _hand_input()
    # Class 0: sum_k w_k f_k = f0 - 3 f1 + 0.5 f2 = [[2, -1], [3, 2]]; d y / d f_k = w_k / 4.
    cam_layer = torch.tensor([[2.0, -1.0], [3.0, 2.0]])
    grad_cam_layer = torch.tensor([[0.5, 0.0], [0.75, 0.5]])  # ReLU(cam) / 4
    cam = attention_maps(model, x, "cam", target=0)
    gradcam = attention_maps(model, x, "gradcam", layer="conv", target=0)
    torch.testing.assert_close(cam[0], U @ cam_layer @ U.T)
    torch.testing.assert_close(gradcam[0], U @ grad_cam_layer @ U.T)
    assert gradcam.dtype == torch.float32 and gradcam.device.type == "cpu"


# ------------------------------------------------------------------ against literal implementations


@pytest.mark.parametrize("k, layer", [(5, "features.4"), (4, "features.3")])
def test_gradcam_matches_literal(k, layer):
    model, x = TinyNet(), _images()
    target = torch.tensor([0, 3, 5])
    got = attention_maps(model, x, "gradcam", layer=layer, target=target)
    torch.testing.assert_close(got, _literal_gradcam(model, x, k, target), rtol=1e-5, atol=1e-6)


def test_gradcam_default_layer_and_top1_target():
    model, x = TinyNet(), _images()
    pred = top1(model, x)
    torch.testing.assert_close(pred, model(x).argmax(1))
    # Default for a model without aliases: the last nn.Conv2d (features.3, pre-ReLU).
    torch.testing.assert_close(attention_maps(model, x, "gradcam"), _literal_gradcam(model, x, 4, pred),
                               rtol=1e-5, atol=1e-6)


def test_guided_backprop_matches_literal():
    model, x = TinyNet(), _images()
    target = [1, 2, 4]
    got = attention_maps(model, x, "guided_backprop", target=target)
    want = _literal_guided_backprop(_plain(model), x, torch.tensor(target))
    assert (want > 0).float().mean() > 0.3  # the reference is not trivially zero
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_guided_gradcam_matches_literal():
    model, x = TinyNet(), _images()
    target = torch.tensor([1, 2, 4])
    got = attention_maps(model, x, "guided_gradcam", layer="features.4", target=target)
    # Grad-CAM >= 0, so max_c |gb_c * cam| = cam * max_c |gb_c|.
    want = _literal_gradcam(model, x, 5, target) * _literal_guided_backprop(_plain(model), x, target)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_activation_matches_formula():
    model, x = TinyNet(), _images()
    with torch.no_grad():
        z = _plain(model).features[:4](x)  # conv2 output, pre-ReLU: negative values test |.|
    for p in (2, 1):
        want = torch.zeros(z.shape[0], *z.shape[2:])
        for d in range(z.shape[1]):  # Lai et al. 2020, eq. 4
            want += z[:, d].abs() ** p
        got = attention_maps(model, x, "activation", layer="features.3", p=p)
        torch.testing.assert_close(got, _up(want, x.shape[-2:]), rtol=1e-5, atol=1e-5)


def _literal_dense(model, x):
    plain = _plain(model)
    feat = plain.features
    x = x.clone().requires_grad_(True)
    f1 = feat[1](feat[0](x))
    f3 = feat[3](feat[2](f1))
    f4 = feat[4](f3)
    layers = {"features.1": f1, "features.3": f3, "features.4": f4}
    maps = {name: [] for name in layers}
    for n in range(x.shape[0]):
        gt = f4[n].mean()  # mean activation of the last layer
        grads = torch.autograd.grad(gt, list(layers.values()), retain_graph=True)
        for (name, f), g in zip(layers.items(), grads):
            f, g = f[n].detach(), g[n]
            c, h, w = f.shape
            es = torch.exp(g.sum(dim=0))
            w_s = es / es.sum()  # softmax over (x, y)
            ec = torch.exp(torch.stack([g[j].sum() for j in range(c)]))
            w_c = ec / ec.sum()  # softmax over channels
            acc = torch.zeros(h, w)
            for j in range(c):
                acc += w_c[j] * f[j] + w_s * f[j]
            maps[name].append(acc / c)
    up = {name: _up(torch.stack(m), x.shape[-2:]) for name, m in maps.items()}
    return {
        **up,
        "features.4+": up["features.4"],
        "features.3+": up["features.4"] + up["features.3"],
        "features.1+": up["features.4"] + up["features.3"] + up["features.1"],
    }


def test_dense_matches_literal():
    model, x = TinyNet(), _images()
    layers = ["features.4", "features.1", "features.3"]  # any order: sorted by the forward
    got = dense_attention_maps(model, x, layers=layers)
    want = _literal_dense(model, x)
    assert list(got) == ["features.1", "features.1+", "features.3", "features.3+", "features.4", "features.4+"]
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6)
    # attention_maps returns a cumulative map; default = the first layer (all combined).
    combined = attention_maps(model, x, "dense", layers=layers, target=2)  # target: ignored
    torch.testing.assert_close(combined, want["features.1+"], rtol=1e-5, atol=1e-6)
    mid = attention_maps(model, x, "dense", layer=model.features[3], layers=layers)
    torch.testing.assert_close(mid, want["features.3+"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="not one of the dense model's layers"):
        attention_maps(model, x, "dense", layer="features.0", layers=layers)


def test_cam_matches_hand_sum_on_gap_linear_model():
    model, x = TinyNet(), _images()
    target = [5, 0, 2]
    with ActivationRecorder(model, "features.4") as rec, torch.no_grad():
        model(x)
    f = rec.activations["features.4"]
    w = model.head[2].weight.detach()
    want = torch.zeros(f.shape[0], *f.shape[2:])
    for n, c in enumerate(target):
        for k in range(f.shape[1]):
            want[n] += w[c, k] * f[n, k]
    want = _up(want, x.shape[-2:])
    torch.testing.assert_close(attention_maps(model, x, "cam", target=target), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(attention_maps(model, x, "cam", layer="features.4", target=target), want,
                               rtol=1e-5, atol=1e-6)
    # A layer whose GAP does not give the logits (conv2 is pre-ReLU) needs fitted weights.
    with pytest.raises(ValueError, match="fit_cam_regression"):
        attention_maps(model, x, "cam", layer="features.3")


def test_cam_vgg_like_needs_weights_and_regression_recovers_true_weights():
    x = _images(n=40, seed=7)
    with pytest.raises(ValueError, match=r"cam needs a global-average-pooling \+ linear classifier.*"
                                         r"for TinyVGG fit class weights first with fit_cam_regression"):
        attention_maps(TinyVGG(), x[:2], "cam")
    # TinyNet's logits ARE W GAP(relu2) + b, so least squares must return fc.weight.
    model = TinyNet()
    with ActivationRecorder(model, "features.4") as rec, torch.no_grad():
        model(x)
    gap = rec.activations["features.4"].mean(dim=(2, 3))
    assert torch.linalg.matrix_rank(torch.cat([gap, torch.ones(40, 1)], 1)) == 6  # identifiable
    weights = fit_cam_regression(model, x, batch_size=16)
    assert weights.shape == (6, 5) and weights.dtype == torch.float32
    torch.testing.assert_close(weights, model.head[2].weight.detach(), rtol=0, atol=1e-4)
    # Given weights are used as they are, on the VGG-like model too.
    vgg = TinyVGG()
    got = attention_maps(vgg, x[:2], "cam", layer="features.4", target=1, cam_weights=weights)
    with ActivationRecorder(vgg, "features.4") as rec, torch.no_grad():
        vgg(x[:2])
    want = _up(torch.einsum("k,nkhw->nhw", weights[1], rec.activations["features.4"]), x.shape[-2:])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="cam_weights must be a 6 x 5 tensor"):
        attention_maps(vgg, x[:2], "cam", layer="features.4", cam_weights=weights[:, :4])
    with pytest.raises(ValueError, match="more images than"):
        fit_cam_regression(model, x[:5])


# ------------------------------------------------------------------ batch, in-place, state, errors


@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_one_by_one_and_inplace_equals_plain(method):
    model, x = TinyNet(), _images()
    batch = attention_maps(model, x, method)
    single = torch.cat([attention_maps(model, x[i:i + 1], method) for i in range(len(x))])
    # Same maths per image; only float32 summation order may differ between batch sizes
    # (relative rounding ~1e-7; activation maps reach ~1e3, hence rtol as well as atol).
    torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-5)
    # In-place ReLUs must not change any map (the hooked conv keeps its pre-ReLU values).
    torch.testing.assert_close(batch, attention_maps(_plain(model), x, method), rtol=1e-6, atol=1e-6)
    assert batch.shape == (3, 16, 16) and batch.dtype == torch.float32
    # CAM is signed; dense's default layers here are the (pre-ReLU) convs: signed too.
    if method not in ("cam", "dense"):
        assert batch.min() >= 0


@pytest.mark.parametrize("method", METHODS)
def test_model_state_restored_after_success_and_errors(method):
    model, x = TinyNet(), _images(n=2)
    model.head.insert(2, Tripwire())
    model.train()
    model.features[2].eval()
    model.features[0].weight.requires_grad_(False)
    before = _state(model)
    attention_maps(model, x, method)
    assert _no_hooks(model) and _state(model) == before
    with pytest.raises(ValueError, match="has 6 classes"):
        attention_maps(model, x, method, target=6)
    assert _no_hooks(model) and _state(model) == before
    # An exception inside the forward (inside captum for gradient methods).
    model.head[2].mode = "grad" if method in ("gradcam", "guided_backprop", "guided_gradcam", "dense") else "always"
    with pytest.raises(RuntimeError, match="tripwire"):
        attention_maps(model, x, method)
    assert _no_hooks(model) and _state(model) == before


def test_input_not_modified_and_target_forms():
    model, x = TinyNet(), _images()
    x0 = x.clone()
    per_image = attention_maps(model, x, "gradcam", target=[2, 2, 2])
    torch.testing.assert_close(attention_maps(model, x, "gradcam", target=2), per_image)
    torch.testing.assert_close(x, x0, rtol=0, atol=0)
    assert not x.requires_grad
    with pytest.raises(ValueError, match="3 ints"):
        attention_maps(model, x, "gradcam", target=[1, 2])
    with pytest.raises(ValueError, match=r"target -1 is out of range"):
        attention_maps(model, x, "guided_backprop", target=[0, -1, 0])


def test_works_under_inference_mode():
    model, x = TinyNet(), _images(n=2)
    for method in METHODS:
        want = attention_maps(model, x, method)
        with torch.inference_mode():
            got = attention_maps(model, x.clone(), method)
        assert not got.is_inference()
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_errors():
    model, x = TinyNet(), _images(n=1)
    with pytest.raises(ValueError, match="activation, cam, gradcam, guided_backprop, guided_gradcam, dense"):
        attention_maps(model, x, "gradcam++")
    with pytest.raises(ValueError, match="unknown layer 'conv9'"):
        attention_maps(model, x, "gradcam", layer="conv9")
    with pytest.raises(ValueError, match="unknown option"):
        attention_maps(model, x, "gradcam", p=2)
    with pytest.raises(ValueError, match="takes no layer"):
        attention_maps(model, x, "guided_backprop", layer="features.4")
    with pytest.raises(ValueError, match="not N x C x h x w"):
        attention_maps(model, x, "gradcam", layer="head.2")
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        attention_maps(model, x[0], "activation")
    # captum cannot guide F.relu: refuse instead of returning a silently wrong map.
    with pytest.raises(ValueError, match="outside nn.ReLU modules"):
        attention_maps(FunctionalReluNet(), x, "guided_backprop")


# ------------------------------------------------------------------ torchvision models


@pytest.mark.parametrize("arch", ["vgg16", "vgg19", "resnet50", "alexnet"])
def test_supported_models_call_no_functional_relu(arch):
    import torchvision

    from dissect.attribution.methods import _forward

    with torch.device("meta"):  # shapes only: no weights, no arithmetic
        model = getattr(torchvision.models, arch)().eval()
        x = torch.empty(1, 3, 224, 224)
    assert _forward(model, x, check_functional_relu=True).shape == (1, 1000)
    with pytest.raises(ValueError, match="outside nn.ReLU modules"):
        with torch.device("meta"):
            _forward(FunctionalReluNet().to("meta"), torch.empty(1, 3, 16, 16), check_functional_relu=True)


@pytest.fixture(scope="module")
def resnet():
    from dissect.models import load_model

    return load_model("resnet50", "random", seed=0)


def test_resnet_cam_structure_and_defaults(resnet):
    x = _images(n=1, size=32, seed=4)
    with ActivationRecorder(resnet, "layer4") as rec, torch.no_grad():
        logits = resnet(x)
    f = rec.activations["layer4"]  # 1 x 1 at 32 px
    t = logits.argmax(1)
    want = _up(torch.einsum("nk,nkhw->nhw", resnet.fc.weight.detach()[t], f), x.shape[-2:])
    torch.testing.assert_close(attention_maps(resnet, x, "cam"), want, rtol=1e-4, atol=1e-4)
    # No functional relu in torchvision's ResNet: guided backprop runs (the check would refuse).
    assert attention_maps(resnet, x, "guided_backprop").shape == (1, 32, 32)
    dense = dense_attention_maps(resnet, x)
    assert list(dense)[::2] == ["conv1", "layer1", "layer2", "layer3", "layer4"]
    assert _no_hooks(resnet) and all(m.inplace for m in resnet.modules() if isinstance(m, nn.ReLU))


def test_cam_at_a_layer_that_does_not_feed_the_classifier_says_so():
    from torch import nn

    class GapNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
            self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(6, 5)

        def forward(self, x):
            return self.fc(self.pool(torch.relu(self.conv2(torch.relu(self.conv1(x))))).flatten(1))

    model = GapNet().eval()
    x = torch.randn(2, 3, 16, 16)
    assert attention_maps(model, x, "cam").shape == (2, 16, 16)
    with pytest.raises(ValueError, match="input of the global average pooling"):
        attention_maps(model, x, "cam", layer="conv1")
