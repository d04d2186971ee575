"""dissect.heads: He et al.'s saliency and scene heads, the -NSS loss, freezing."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from dissect.heads import SaliencyVGG, SceneVGG, freeze_encoder, nss_loss
from dissect.hooks import ActivationRecorder, resolve_layer
from dissect.models import layer_aliases


@pytest.fixture(scope="module")
def saliency():
    return SaliencyVGG(encoder_weights="random", seed=0)  # builds a VGG16: a few seconds


@pytest.fixture(scope="module")
def scene():
    return SceneVGG(n_classes=5, encoder_weights="random", hidden=16, seed=0)


def _literal_nss(sal: list, fix: list) -> float:
    """Formula by formula: z-score with the population std, mean over fixated pixels."""
    values = [v for row in sal for v in row]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    fixated = [(sal[i][j] - mean) / std
               for i in range(len(sal)) for j in range(len(sal[0])) if fix[i][j]]
    return sum(fixated) / len(fixated)


def _literal_bilinear(a: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Half-pixel-centre bilinear resize (PIL / align_corners=False), edges clamped."""
    h, w = a.shape
    out = np.zeros((out_h, out_w))
    for i in range(out_h):
        y = min(max((i + 0.5) * h / out_h - 0.5, 0.0), h - 1)
        y0 = int(math.floor(y)); y1 = min(y0 + 1, h - 1); fy = y - y0
        for j in range(out_w):
            x = min(max((j + 0.5) * w / out_w - 0.5, 0.0), w - 1)
            x0 = int(math.floor(x)); x1 = min(x0 + 1, w - 1); fx = x - x0
            out[i, j] = ((1 - fy) * ((1 - fx) * a[y0, x0] + fx * a[y0, x1])
                         + fy * ((1 - fx) * a[y1, x0] + fx * a[y1, x1]))
    return out


# ------------------------------------------------------------------ SaliencyVGG


def test_saliency_structure(saliency):
    assert len(saliency.features) == 30 and isinstance(saliency.features[29], nn.ReLU)
    assert isinstance(saliency.features[28], nn.Conv2d)  # conv5_3, pool5 dropped
    r = saliency.readout
    assert (r.in_channels, r.out_channels, r.kernel_size, r.bias) == (512, 1, (1, 1), None)
    assert saliency.dissect_info["arch"] == "saliency_vgg16"
    assert saliency.dissect_info["encoder"]["weights"] == "random"
    aliases = layer_aliases(saliency)
    assert aliases["conv5_3"] == "features.29" and aliases["pool4"] == "features.23"
    assert "pool5" not in aliases and len(aliases) == 17


def test_saliency_forward_shapes_and_conv5_3_recording(saliency):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with ActivationRecorder(saliency, "conv5_3") as rec, torch.no_grad():
        out = saliency(x, out_size=(48, 64))
        default = saliency(x)
        encoded = saliency.features(x)
    assert out.shape == (2, 48, 64) and default.shape == (2, 32, 32)
    assert torch.equal(rec.activations["conv5_3"], encoded)
    assert resolve_layer(saliency, "conv5_3")[1] is saliency.features[29]


def test_saliency_upsampling_is_half_pixel_bilinear(saliency):
    grid = torch.tensor([[0.0, 1.0, 5.0], [2.0, -3.0, 4.0]])
    feats = torch.zeros(1, 512, 2, 3)
    feats[0, 7] = grid
    encoder, weight = saliency.features, saliency.readout.weight.detach().clone()
    try:
        saliency.features = nn.Identity()  # feed the read-out a known map
        with torch.no_grad():
            saliency.readout.weight.zero_()
            saliency.readout.weight[0, 7] = 1.0
            out = saliency(feats, out_size=(5, 7))[0].numpy()
    finally:
        saliency.features = encoder
        with torch.no_grad():
            saliency.readout.weight.copy_(weight)
    np.testing.assert_allclose(out, _literal_bilinear(grid.numpy(), 5, 7), rtol=0, atol=1e-6)


# ------------------------------------------------------------------ nss_loss


def test_nss_loss_equals_minus_literal_nss_averaged():
    s1 = [[0.0, 1.0, 2.0], [3.0, 9.0, 1.0], [0.5, 0.0, 4.0]]
    f1 = [[0, 0, 0], [0, 1, 0], [0, 0, 1]]
    s2 = [[1.0, 1.0, 2.0], [0.0, 0.0, 0.0], [7.0, 1.0, 1.0]]
    f2 = [[1, 0, 0], [0, 0, 0], [0, 0, 0]]
    pred = torch.tensor([s1, s2], dtype=torch.float64, requires_grad=True)
    fix = torch.tensor([f1, f2], dtype=torch.bool)
    expected = -(_literal_nss(s1, f1) + _literal_nss(s2, f2)) / 2
    loss = nss_loss(pred, fix)
    # float64 throughout: only rounding differs from the literal version.
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    # N x 1 x H x W and 0/1 float maps give the same value.
    again = nss_loss(pred.detach().unsqueeze(1), fix.double().unsqueeze(1))
    assert again.item() == pytest.approx(expected, rel=1e-12)


def test_nss_loss_degenerate_and_bad_input():
    fix = torch.zeros(1, 2, 2, dtype=torch.bool)
    fix[0, 0, 0] = True
    assert math.isnan(nss_loss(torch.ones(1, 2, 2), fix).item())  # constant map: undefined
    with pytest.raises(ValueError, match=r"images \[1\] have no fixated pixel"):
        nss_loss(torch.rand(2, 2, 2), torch.cat([fix, torch.zeros_like(fix)]))
    with pytest.raises(ValueError, match="must both be N x H x W"):
        nss_loss(torch.rand(1, 4, 4), fix)


# ------------------------------------------------------------------ SceneVGG and freezing


def test_scene_forward_and_structure(scene):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = scene(x)
    assert logits.shape == (2, 5)
    linears = [m for m in scene.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 16), (16, 16), (16, 5)]
    assert isinstance(scene.pool5, nn.MaxPool2d)
    assert resolve_layer(scene, "conv5_3")[1] is scene.features[29]
    assert not scene.training


def test_scene_bad_arguments():
    with pytest.raises(ValueError, match="n_classes must be a positive int"):
        SceneVGG(n_classes=0, encoder_weights="random")
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        SceneVGG(dropout=1.0, encoder_weights="random")


def test_freeze_encoder_setups(saliency, scene):
    try:
        assert freeze_encoder(saliency, 0) == []  # setup I: only the read-out trains
        assert not any(p.requires_grad for p in saliency.features.parameters())
        assert saliency.readout.weight.requires_grad
        assert freeze_encoder(scene, 1) == ["features.28"]  # conv5_3
        trainable = {n for n, p in scene.features.named_parameters() if p.requires_grad}
        assert trainable == {"28.weight", "28.bias"}
        assert all(p.requires_grad for p in scene.classifier.parameters())
        assert len(freeze_encoder(saliency, 13)) == 13
        with pytest.raises(ValueError, match=r"train_last_convs must be an int in 0..13"):
            freeze_encoder(saliency, 14)
    finally:
        for p in [*saliency.parameters(), *scene.parameters()]:
            p.requires_grad_(True)
