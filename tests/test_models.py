"""dissect.models: weights loading (offline), layer aliases and list_layers."""
import hashlib
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from dissect.models.heads import SaliencyVGG, SceneVGG
from dissect.models.hooks import resolve_layer
from dissect.models import (
    ALL_MODEL_NAMES,
    HEAD_NAMES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MODEL_NAMES,
    layer_aliases,
    list_layers,
    load_model,
    save_checkpoint,
)

# digest section 4: torchvision vgg16().features index of each post-ReLU alias (and pools).
VGG16_EXPECTED = {
    "conv1_1": 1, "conv1_2": 3, "pool1": 4, "conv2_1": 6, "conv2_2": 8, "pool2": 9,
    "conv3_1": 11, "conv3_2": 13, "conv3_3": 15, "pool3": 16, "conv4_1": 18, "conv4_2": 20,
    "conv4_3": 22, "pool4": 23, "conv5_1": 25, "conv5_2": 27, "conv5_3": 29, "pool5": 30,
}
# VGG19 (config E): blocks of 2, 2, 4, 4, 4 convs, each conv followed by its ReLU.
VGG19_EXPECTED = {
    "conv1_1": 1, "conv1_2": 3, "pool1": 4, "conv2_1": 6, "conv2_2": 8, "pool2": 9,
    "conv3_1": 11, "conv3_2": 13, "conv3_3": 15, "conv3_4": 17, "pool3": 18,
    "conv4_1": 20, "conv4_2": 22, "conv4_3": 24, "conv4_4": 26, "pool4": 27,
    "conv5_1": 29, "conv5_2": 31, "conv5_3": 33, "conv5_4": 35, "pool5": 36,
}
ALEXNET_EXPECTED = {
    "conv1": 1, "pool1": 2, "conv2": 4, "pool2": 5, "conv3": 7, "conv4": 9, "conv5": 11,
    "pool5": 12,
}


@pytest.fixture(scope="module")
def models():
    # Built once per module. VGGs only serve structure tests (aliases, list_layers shapes), so
    # they live on the meta device: no weights, built in milliseconds instead of seconds (their
    # 100M-weight classifiers' init). load_model("vgg16", "random") is exercised in test_hooks.
    built = {name: load_model(name, weights="random", seed=0) for name in ("resnet50", "alexnet")}
    with torch.device("meta"):
        built["vgg16"] = torchvision.models.vgg16()
        built["vgg19"] = torchvision.models.vgg19()
    return built


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache and a download that fails like a machine without network."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))

    def no_network(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "hub" / "checkpoints"


def _state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ building and weights


def test_models_are_built_in_eval_mode_with_dissect_info(models):
    for name in ("resnet50", "alexnet"):
        model = models[name]
        assert not any(m.training for m in model.modules()), name
        assert model.dissect_info == {"arch": name, "weights": "random", "weights_detail": "seed=0",
                                      "seed": 0, "requested": "random"}
    assert isinstance(models["resnet50"], torchvision.models.ResNet)
    assert isinstance(models["alexnet"], torchvision.models.AlexNet)


def test_imagenet_constants():
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert IMAGENET_STD == (0.229, 0.224, 0.225)


def test_unknown_model_lists_names():
    assert MODEL_NAMES == ("vgg16", "vgg19", "resnet50", "alexnet")
    assert HEAD_NAMES == ("saliency_vgg16", "scene_vgg16", "saliency_resnet50")
    assert ALL_MODEL_NAMES == MODEL_NAMES + HEAD_NAMES
    with pytest.raises(ValueError, match="unknown model 'vgg11': use one of vgg16, vgg19, resnet50, "
                                         "alexnet, saliency_vgg16, scene_vgg16, saliency_resnet50$"):
        load_model("vgg11", weights="random")


def test_imagenet_encoder_weights_are_for_task_models_only():
    with pytest.raises(ValueError, match="'imagenet-encoder' is for the task models "
                                         "saliency_vgg16, scene_vgg16, saliency_resnet50: use weights='imagenet'"):
        load_model("alexnet", weights="imagenet-encoder")


def test_bad_weights_type():
    with pytest.raises(ValueError, match="weights must be"):
        load_model("alexnet", weights=3)


def test_random_weights_are_reproducible_and_keep_global_rng(models):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = load_model("resnet50", weights="random", seed=7)
    b = load_model("resnet50", weights="random", seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    assert _state_equal(a.state_dict(), b.state_dict())
    assert not torch.equal(a.conv1.weight, models["resnet50"].conv1.weight)  # seed 0
    assert a.dissect_info["weights_detail"] == "seed=7" and a.dissect_info["seed"] == 7


def test_imagenet_offline_fails_with_clear_message(offline_hub):
    with pytest.raises(RuntimeError) as info:
        load_model("alexnet", weights="imagenet")
    msg = str(info.value)
    assert "could not download ImageNet weights for alexnet (no network?)" in msg
    assert "weights='random'" in msg
    assert str(offline_hub) in msg and "alexnet-owt-7be5be79.pth" in msg
    assert "\n" not in msg
    assert isinstance(info.value.__cause__, urllib.error.URLError)


def test_auto_offline_falls_back_to_random_with_warning(models, offline_hub):
    with pytest.warns(UserWarning, match="RANDOM weights.*meaningless for science"):
        model = load_model("resnet50", weights="auto", seed=0)
    assert model.dissect_info["weights"] == "random"
    assert model.dissect_info["requested"] == "auto"
    assert _state_equal(model.state_dict(), models["resnet50"].state_dict())


def test_imagenet_and_auto_use_the_cached_file_without_network(models, offline_hub):
    # A stand-in for the official file, in fp16 to halve the write; loading casts to fp32.
    donor = models["resnet50"].state_dict()
    state = {k: v.half() if v.is_floating_point() else v for k, v in donor.items()}
    offline_hub.mkdir(parents=True)
    torch.save(state, offline_hub / "resnet50-0676ba61.pth")
    for requested in ("imagenet", "auto"):
        model = load_model("resnet50", weights=requested)
        assert model.dissect_info["weights"] == "imagenet"
        assert model.dissect_info["weights_detail"] == "ResNet50_Weights.IMAGENET1K_V1"
        assert torch.equal(model.conv1.weight, state["conv1.weight"].float())
        assert model.conv1.weight.dtype == torch.float32 and not model.training


def test_corrupt_cached_file_is_named(offline_hub):
    offline_hub.mkdir(parents=True)
    (offline_hub / "alexnet-owt-7be5be79.pth").write_bytes(b"not a torch file")
    with pytest.raises(RuntimeError, match="could not read the cached ImageNet weights for alexnet"):
        load_model("alexnet", weights="imagenet")


def test_checkpoint_round_trip(models, tmp_path):
    model = models["resnet50"]
    path = save_checkpoint(model, tmp_path / "sub" / "ck.pt", step=4000, note="setup I")
    raw = torch.load(path, weights_only=True)
    assert raw["arch"] == "resnet50" and raw["extra"] == {"step": 4000, "note": "setup I"}
    loaded = load_model("resnet50", weights=str(path))
    assert _state_equal(loaded.state_dict(), model.state_dict())
    sha = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert loaded.dissect_info["weights"] == "file"
    assert loaded.dissect_info["weights_detail"] == f"{path} sha256:{sha}"
    assert not loaded.training


def test_plain_state_dict_file_loads(models, tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(models["resnet50"].state_dict(), path)
    loaded = load_model("resnet50", weights=path)
    assert torch.equal(loaded.fc.weight, models["resnet50"].fc.weight)


def test_checkpoint_of_other_architecture_is_rejected(tmp_path):
    small = nn.Linear(2, 2)
    small.dissect_info = {"arch": "alexnet"}  # the arch is all that matters here
    path = save_checkpoint(small, tmp_path / "alex.pt")
    with pytest.raises(ValueError, match="architecture 'alexnet', not 'resnet50'"):
        load_model("resnet50", weights=path)


def test_task_checkpoint_as_classifier_points_to_the_task_model(tmp_path):
    # A fine-tuned saliency model has no fc6-fc8: loading it as vgg16 is refused with the call
    # that works (the state dict is never read: the arch is checked first).
    small = nn.Linear(2, 2)
    small.dissect_info = {"arch": "saliency_vgg16"}
    path = save_checkpoint(small, tmp_path / "sal.pt")
    with pytest.raises(ValueError) as info:
        load_model("vgg16", weights=path)
    assert str(info.value) == (
        f"weights file {path} is a checkpoint of architecture 'saliency_vgg16', not 'vgg16': load "
        f"it with load_model('saliency_vgg16', weights='{path}') (its VGG16 encoder is the "
        "model's .features)")


def test_classifier_checkpoint_as_task_model_points_to_the_head_classes(tmp_path):
    small = nn.Linear(2, 2)
    small.dissect_info = {"arch": "vgg16"}
    path = save_checkpoint(small, tmp_path / "vgg.pt")
    with pytest.raises(ValueError, match=r"architecture 'vgg16', not 'scene_vgg16': load it with "
                                         r"load_model\('vgg16', .*dissect.models.heads.SceneVGG\(encoder_"):
        load_model("scene_vgg16", weights=path)
    small.dissect_info = {"arch": "mynet"}
    path = save_checkpoint(small, tmp_path / "mine.pt")
    with pytest.raises(ValueError, match="'mynet' is not one of vgg16, .*, scene_vgg16, saliency_resnet50$"):
        load_model("saliency_vgg16", weights=path)


def test_plain_task_state_dict_as_classifier_names_the_task_model(tmp_path):
    # Only the key names matter for the hint; tiny tensors keep the file small.
    path = tmp_path / "plain_sal.pt"
    torch.save({"features.0.weight": torch.zeros(1), "features.28.weight": torch.zeros(1),
                "readout.weight": torch.zeros(1, 512, 1, 1)}, path)
    with pytest.raises(ValueError, match=r"does not match architecture vgg16: .*unexpected keys "
                                         r"readout.weight.* \(it looks like a saliency_vgg16 state "
                                         r"dict: load it with load_model\('saliency_vgg16'"):
        load_model("vgg16", weights=path)
    scene = {"features.28.weight": torch.zeros(1), "classifier.0.weight": torch.zeros(4, 512)}
    torch.save(scene, path)
    with pytest.raises(ValueError, match="looks like a scene_vgg16 state dict"):
        load_model("saliency_vgg16", weights=path)


def test_state_dict_of_other_architecture_names_keys(tmp_path):
    path = tmp_path / "wrong.pt"
    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11)}, path)
    with pytest.raises(ValueError, match=r"does not match architecture resnet50: missing keys "
                                         r"conv1.weight, bn1.weight, bn1.bias \(\+\d+ more\); "
                                         r"unexpected keys features.0.weight"):
        load_model("resnet50", weights=path)


def test_shape_mismatch_is_named(models, tmp_path):
    state = dict(models["resnet50"].state_dict())
    state["fc.weight"] = torch.zeros(10, 2048)
    path = tmp_path / "shape.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"shape mismatches fc.weight \(10, 2048\) != \(1000, 2048\)"):
        load_model("resnet50", weights=path)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_model("alexnet", weights=str(missing))


def test_unreadable_file(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_text("hello")
    with pytest.raises(ValueError, match="could not read weights file"):
        load_model("alexnet", weights=path)


def test_save_checkpoint_rejects_non_plain_metadata(models, tmp_path):
    with pytest.raises(ValueError, match="'opt' has type object"):
        save_checkpoint(models["alexnet"], tmp_path / "x.pt", opt=object())


# ------------------------------------------------------------------ aliases


def test_vgg_aliases_match_the_digest(models):
    assert layer_aliases(models["vgg16"]) == {k: f"features.{v}" for k, v in VGG16_EXPECTED.items()}
    assert layer_aliases(models["vgg19"]) == {k: f"features.{v}" for k, v in VGG19_EXPECTED.items()}


def test_alexnet_and_resnet_aliases(models):
    assert layer_aliases(models["alexnet"]) == {k: f"features.{v}" for k, v in ALEXNET_EXPECTED.items()}
    assert layer_aliases(models["resnet50"]) == {
        "conv1": "relu", "layer1": "layer1", "layer2": "layer2", "layer3": "layer3", "layer4": "layer4"}


def test_every_alias_resolves_to_the_right_module_type(models):
    for name, model in models.items():
        aliases = layer_aliases(model)
        assert aliases, name
        for alias, path in aliases.items():
            resolved_name, module = resolve_layer(model, alias)
            assert resolved_name == alias
            assert module is model.get_submodule(path)
            if alias.startswith("conv") and name != "resnet50":
                assert isinstance(module, nn.ReLU), (name, alias)
                idx = int(path.split(".")[1])
                assert isinstance(model.features[idx - 1], nn.Conv2d), (name, alias)
            elif alias.startswith("pool"):
                assert isinstance(module, nn.MaxPool2d), (name, alias)


def test_task_model_aliases_and_layers():
    # Structure only: built on the meta device in milliseconds. SceneVGG's pool5 sits outside
    # its encoder (features[:30]) and keeps the vgg16 alias; SaliencyVGG has no pool5.
    expected = {k: f"features.{v}" for k, v in VGG16_EXPECTED.items() if k != "pool5"}
    with torch.device("meta"):
        saliency = SaliencyVGG(encoder_weights="random")
        scene = SceneVGG(n_classes=3, encoder_weights="random", hidden=8)
    assert layer_aliases(saliency) == expected
    assert layer_aliases(scene) == {**expected, "pool5": "pool5"}
    assert isinstance(resolve_layer(scene, "pool5")[1], nn.MaxPool2d)
    table = list_layers(scene, input_size=32).set_index("name")
    assert list(table.index) == list(VGG16_EXPECTED)
    assert tuple(table.loc["conv5_3", ["module", "channels", "stride", "height"]]) == (
        "features.29", 512, 16, 2)
    assert tuple(table.loc["pool5", ["module", "stride", "height"]]) == ("pool5", 32, 1)
    assert list(list_layers(saliency, input_size=32)["name"]) == list(expected)


def test_aliases_from_structure_without_dissect_info():
    with torch.device("meta"):
        bare = torchvision.models.alexnet()
    assert layer_aliases(bare) == {
        k: f"features.{v}" for k, v in ALEXNET_EXPECTED.items()}
    assert layer_aliases(nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU())) == {}


# ------------------------------------------------------------------ list_layers


def test_list_layers_vgg16_small_input(models):
    table = list_layers(models["vgg16"], input_size=32)
    assert list(table.columns) == ["name", "module", "channels", "stride", "height", "width"]
    assert list(table["name"]) == list(VGG16_EXPECTED)
    row = table.set_index("name").loc["conv5_3"]
    assert (row["module"], row["channels"], row["stride"], row["height"], row["width"]) == (
        "features.29", 512, 16, 2, 2)
    assert table.set_index("name").loc["pool5", "height"] == 1


def test_list_layers_alexnet_strides(models):
    # AlexNet at 224: conv1 (k11, s4, p2) -> 55, pools (k3, s2) -> 27, 13, 6; 224 is not a
    # multiple of the strides, so stride != input / height here (224 / 13 = 17.2 for conv3).
    table = list_layers(models["alexnet"], input_size=224)
    assert list(table["stride"]) == [4, 8, 8, 16, 16, 16, 16, 32]
    assert list(table["height"]) == [55, 27, 27, 13, 13, 13, 13, 6]
    assert list(table["channels"]) == [64, 64, 192, 192, 384, 256, 256, 256]


def test_list_layers_resnet_ignores_downsample_branch_and_restores_mode(models):
    model = models["resnet50"]
    model.train()
    try:
        table = list_layers(model, input_size=64)
        assert all(m.training for m in model.modules())
    finally:
        model.eval()
    assert list(table["stride"]) == [2, 4, 8, 16, 32]
    assert list(table["height"]) == [32, 16, 8, 4, 2]
    assert list(table["channels"]) == [64, 256, 512, 1024, 2048]
    assert all(not m._forward_hooks for m in model.modules())


def test_list_layers_unknown_model_lists_leaf_modules():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    table = list_layers(model, input_size=16)
    assert list(table["module"]) == ["0", "1", "2"]
    assert list(table["stride"]) == [2, 2, 4]
    assert list(table["height"]) == [8, 8, 4]


def test_list_layers_bad_size(models):
    with pytest.raises(ValueError, match="input_size must be a positive int"):
        list_layers(models["alexnet"], input_size=0)


def test_list_layers_input_too_small_is_a_clear_error():
    from torch import nn

    tiny = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(4))
    with pytest.raises(ValueError, match="does not fit this model"):
        list_layers(tiny, input_size=4)
