"""dissect.models.heads: He et al.'s saliency and scene heads, the -NSS loss, freezing, reloading."""
import hashlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dissect.models.backbones
from dissect.models.heads import SaliencyVGG, SceneVGG, freeze_encoder, nss_loss
from dissect.models.hooks import ActivationRecorder, resolve_layer
from dissect.models import layer_aliases, load_model, save_checkpoint


@pytest.fixture(scope="module")
def saliency():
    return SaliencyVGG(encoder_weights="random", seed=0)  # builds a VGG16: a few seconds


@pytest.fixture(scope="module")
def scene():
    return SceneVGG(n_classes=5, encoder_weights="random", hidden=16, seed=0)


@pytest.fixture(scope="module")
def saliency_file(saliency, tmp_path_factory):
    return save_checkpoint(saliency, tmp_path_factory.mktemp("ck") / "saliency.pt", step=4000)


def _state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _sha(path) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()[:12]


X32 = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


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
    assert saliency.dissect_info == {
        "arch": "saliency_vgg16", "weights": "random", "weights_detail": "seed=0", "seed": 0,
        "requested": "random",
        "encoder": {"arch": "vgg16", "weights": "random", "weights_detail": "seed=0", "seed": 0,
                    "requested": "random"}}
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


# ------------------------------------------------------------------ load_model for the task models


def test_saliency_checkpoint_reloads_with_load_model(saliency, saliency_file):
    loaded = load_model("saliency_vgg16", weights=saliency_file)
    assert type(loaded) is SaliencyVGG and not loaded.training
    assert _state_equal(loaded.state_dict(), saliency.state_dict())
    assert loaded.dissect_info == {
        "arch": "saliency_vgg16", "weights": "file",
        "weights_detail": f"{saliency_file} sha256:{_sha(saliency_file)}", "seed": 0,
        "requested": str(saliency_file)}
    assert saliency_file.is_absolute()
    with ActivationRecorder(loaded, "conv5_3") as rec, torch.no_grad():
        out = loaded(X32)
        encoded = saliency.features(X32)  # the original model's encoder
        expected = saliency(X32)
    assert rec.activations["conv5_3"].shape == (2, 512, 2, 2)
    assert torch.equal(rec.activations["conv5_3"], encoded)
    assert torch.equal(out, expected)


def test_saliency_plain_state_dict_loads(saliency, tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(saliency.state_dict(), path)
    loaded = load_model("saliency_vgg16", weights=str(path))
    assert torch.equal(loaded.readout.weight, saliency.readout.weight)
    assert torch.equal(loaded.features[28].weight, saliency.features[28].weight)
    assert loaded.dissect_info["weights"] == "file"


def test_saliency_checkpoint_as_vgg16_points_to_saliency_vgg16(saliency_file):
    with pytest.raises(ValueError, match=r"checkpoint of architecture 'saliency_vgg16', not 'vgg16': "
                                         r"load it with load_model\('saliency_vgg16', weights="):
        load_model("vgg16", weights=saliency_file)
    with pytest.raises(ValueError, match=r"not 'scene_vgg16': load it with load_model\('saliency_vgg16'"):
        load_model("scene_vgg16", weights=saliency_file)


def test_saliency_random_matches_the_class(saliency):
    torch.manual_seed(11)
    before = torch.get_rng_state()
    built = load_model("saliency_vgg16", weights="random", seed=0)  # one more VGG16 build
    assert torch.equal(torch.get_rng_state(), before)
    assert _state_equal(built.state_dict(), saliency.state_dict())
    assert built.dissect_info == saliency.dissect_info and not built.training


def test_scene_checkpoint_reloads_with_its_sizes(scene, tmp_path):
    path = save_checkpoint(scene, tmp_path / "scene.pt")
    loaded = load_model("scene_vgg16", weights=path, seed=3)
    assert type(loaded) is SceneVGG and not loaded.training
    assert _state_equal(loaded.state_dict(), scene.state_dict())
    assert loaded.dissect_info == {
        "arch": "scene_vgg16", "weights": "file", "weights_detail": f"{path} sha256:{_sha(path)}",
        "seed": 3, "requested": str(path), "n_classes": 5, "hidden": 16, "dropout": 0.5}
    assert layer_aliases(loaded)["pool5"] == "pool5"
    with ActivationRecorder(loaded, ["conv5_3", "pool5"]) as rec, torch.no_grad():
        logits = loaded(X32)
        encoded = scene.features(X32)
        expected = scene(X32)
    assert torch.equal(rec.activations["conv5_3"], encoded)
    assert torch.equal(rec.activations["pool5"], F.max_pool2d(encoded, 2))
    assert logits.shape == (2, 5) and torch.equal(logits, expected)


def test_task_models_with_imagenet_encoder(saliency, monkeypatch):
    # Stand-in for the ImageNet VGG16 (no network, no 500 MB file): a meta-device vgg16, so only
    # the head holds real numbers. The head is seeded like the random model's: same read-out.
    def fake_imagenet(name, progress):
        with torch.device("meta"):
            return dissect.models.backbones._constructor(name)(weights=None), "VGG16_Weights.IMAGENET1K_V1"

    monkeypatch.setattr(dissect.models.backbones, "_build_imagenet", fake_imagenet)
    for requested in ("imagenet", "auto", "imagenet-encoder"):
        model = load_model("saliency_vgg16", weights=requested, seed=0)
        info = model.dissect_info
        assert info["weights"] == "imagenet-encoder" and info["requested"] == requested
        assert info["weights_detail"] == "encoder VGG16_Weights.IMAGENET1K_V1, head seed=0"
        assert info["encoder"]["weights"] == "imagenet"
        assert torch.equal(model.readout.weight, saliency.readout.weight)
        assert model.features[28].weight.is_meta
    scene = load_model("scene_vgg16", weights="imagenet", seed=2)
    assert scene.dissect_info["weights_detail"] == "encoder VGG16_Weights.IMAGENET1K_V1, head seed=2"
    assert (scene.dissect_info["n_classes"], scene.dissect_info["hidden"]) == (26, 1024)
