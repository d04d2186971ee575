"""dissect.models.hooks: copies at the right module, hook lifetimes, modes, layer resolution."""
import pytest
import torch
from torch import nn

from dissect.models.hooks import ActivationRecorder, record_activations, resolve_layer
from dissect.models import load_model

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _tiny_cnn() -> nn.Sequential:
    """1 -> 2 channels (1x1 conv, w = [1, -1], b = [-1, 1]) -> in-place ReLU -> 2 -> 1 channel
    (1x1 conv, w = [2, 3], b = 0.5). Hand-set so every value below is computed by hand."""
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(inplace=True), nn.Conv2d(2, 1, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        model[0].bias.copy_(torch.tensor([-1.0, 1.0]))
        model[2].weight.copy_(torch.tensor([2.0, 3.0]).view(1, 2, 1, 1))
        model[2].bias.copy_(torch.tensor([0.5]))
    return model


X = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 2, 2)
# conv0: x - 1 and 1 - x
PRE_RELU = torch.tensor([[[-1.0, 0.0], [1.0, 2.0]], [[1.0, 0.0], [-1.0, -2.0]]]).unsqueeze(0)
POST_RELU = torch.tensor([[[0.0, 0.0], [1.0, 2.0]], [[1.0, 0.0], [0.0, 0.0]]]).unsqueeze(0)
# conv2: 2 * relu0 + 3 * relu1 + 0.5
OUTPUT = torch.tensor([[3.5, 0.5], [2.5, 4.5]]).view(1, 1, 2, 2)


def _no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks
               and not m._forward_hooks_always_called for m in model.modules())


@pytest.fixture(scope="module")
def vgg16():
    return load_model("vgg16", weights="random", seed=0)  # a few seconds: build once


@pytest.fixture(scope="module")
def resnet50():
    return load_model("resnet50", weights="random", seed=0)


@pytest.mark.parametrize("device", DEVICES)
def test_tiny_cnn_hand_computed_values_with_inplace_relu(device):
    model = _tiny_cnn().to(device)
    with ActivationRecorder(model, ["0", "1", "2"], device=None) as rec:
        out = model(X.to(device))
    acts = {k: v.cpu() for k, v in rec.activations.items()}
    assert rec.activations["0"].device.type == device
    # The conv's copy keeps the negative pre-ReLU values although the ReLU ran in place.
    assert torch.equal(acts["0"], PRE_RELU)
    assert torch.equal(acts["1"], POST_RELU)
    assert torch.equal(acts["2"], OUTPUT)
    assert torch.equal(out.cpu(), OUTPUT)


def test_naive_detach_hook_is_rewritten_by_inplace_relu():
    # The pitfall the copy guards against: without a copy, the stored conv output turns post-ReLU
    # on CPU. If this ever stops holding, the test above no longer proves anything about copying.
    model, stored = _tiny_cnn(), {}
    handle = model[0].register_forward_hook(lambda m, i, o: stored.setdefault("0", o.detach()))
    model(X)
    handle.remove()
    assert torch.equal(stored["0"], POST_RELU)


def test_default_device_is_cpu_and_copies_are_ordinary_tensors():
    model = _tiny_cnn()
    with ActivationRecorder(model, "1") as rec, torch.inference_mode():
        model(X)
    act = rec.activations["1"]
    assert act.device.type == "cpu" and not act.is_inference() and not act.requires_grad
    act += 1  # an inference tensor would refuse this outside inference mode


def test_copies_do_not_require_grad_in_a_grad_forward():
    model = _tiny_cnn()
    with ActivationRecorder(model, "2") as rec:
        out = model(X.requires_grad_(False))
    assert out.requires_grad and not rec.activations["2"].requires_grad


def test_vgg16_conv5_3_equals_truncated_features(vgg16):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with ActivationRecorder(vgg16, "conv5_3") as rec, torch.inference_mode():
        vgg16(x)
        expected = vgg16.features[:30](x)  # He et al.'s encoder: ReLU(conv5_3)
    assert rec.activations["conv5_3"].shape == (2, 512, 2, 2)
    assert torch.equal(rec.activations["conv5_3"], expected)
    assert (expected >= 0).all()


def test_keep_false_replaces_and_keep_true_accumulates():
    model = _tiny_cnn()
    with ActivationRecorder(model, "2") as rec:
        for n in (1, 3, 2):
            model(X.repeat(n, 1, 1, 1))
    assert isinstance(rec.activations["2"], torch.Tensor)
    assert rec.activations["2"].shape[0] == 2
    with ActivationRecorder(model, ["2"], keep=True) as rec:
        for n in (1, 3, 2):
            model(X.repeat(n, 1, 1, 1))
    assert [t.shape[0] for t in rec.activations["2"]] == [1, 3, 2]


def test_no_hooks_left_after_success_and_after_exception(vgg16):
    with ActivationRecorder(vgg16, ["conv1_1", "features.29", vgg16.features[30]]):
        assert not _no_hooks_left(vgg16)
    assert _no_hooks_left(vgg16)
    with pytest.raises(KeyError):
        with ActivationRecorder(vgg16, ["conv1_1", "pool5"]):
            raise KeyError("boom")
    assert _no_hooks_left(vgg16)


def test_exception_raised_by_a_hook_also_removes_hooks():
    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    model = nn.Sequential(nn.Identity(), Pair())
    with pytest.raises(TypeError, match="layer '1' returned tuple, not a tensor"):
        with ActivationRecorder(model, "1"):
            model(X)
    assert _no_hooks_left(model)


def test_remove_is_idempotent_and_recorder_reusable():
    model = _tiny_cnn()
    rec = ActivationRecorder(model, "1")
    with rec:
        rec.remove()
        rec.remove()
        assert _no_hooks_left(model)
    with rec:
        model(X)
    assert torch.equal(rec.activations["1"], POST_RELU) and _no_hooks_left(model)
    with rec, pytest.raises(RuntimeError, match="already active"):
        rec.__enter__()
    assert _no_hooks_left(model)


def test_train_eval_modes_are_restored_per_module():
    model = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1), nn.Dropout(0.5))
    model.train()
    model[2].eval()  # a mixed state must come back exactly
    before = [m.training for m in model.modules()]
    with ActivationRecorder(model, "1"):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before
    with pytest.raises(ZeroDivisionError):
        with ActivationRecorder(model, "1"):
            1 / 0
    assert [m.training for m in model.modules()] == before
    with ActivationRecorder(model, "1", eval_mode=False):
        assert [m.training for m in model.modules()] == before


def test_resnet_shared_relu_policy(resnet50):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    # Bottleneck.relu runs 3 times per block: ambiguous, so an error by default.
    with pytest.raises(ValueError, match="'layer1.0.relu' ran twice in one forward"):
        with ActivationRecorder(resnet50, "layer1.0.relu"), torch.no_grad():
            resnet50(x)
    assert _no_hooks_left(resnet50)
    with torch.no_grad():
        with ActivationRecorder(resnet50, ["layer1.0.relu", "layer1.0", "maxpool"],
                                on_repeat="last") as last:
            resnet50(x)
        with ActivationRecorder(resnet50, "layer1.0.relu", on_repeat="first") as first:
            resnet50(x)
        block = resnet50.layer1[0]
        expected_first = torch.relu(block.bn1(block.conv1(last.activations["maxpool"])))
    # The last call is the block's output ReLU(bn3(...) + identity); the first, ReLU(bn1(conv1)).
    assert torch.equal(last.activations["layer1.0.relu"], last.activations["layer1.0"])
    assert torch.allclose(first.activations["layer1.0.relu"], expected_first, atol=0, rtol=0)


def test_repeat_check_survives_a_failed_forward_and_direct_submodule_calls():
    class Flaky(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.fail = _tiny_cnn(), True

        def forward(self, x):
            y = self.net(x)
            if self.fail:
                raise RuntimeError("flaky")
            return y

    model = Flaky()
    with ActivationRecorder(model, "net.1") as rec:
        with pytest.raises(RuntimeError, match="flaky"):
            model(X)
        model.fail = False
        model(X)  # a new forward, not a second call of net.1 within the failed one
        model.net(X)  # direct submodule calls: each a forward of its own
        model.net(X)
    assert torch.equal(rec.activations["net.1"], POST_RELU)


def test_top_level_resnet_relu_runs_once(resnet50):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with ActivationRecorder(resnet50, ["conv1", "bn1"]) as rec, torch.no_grad():
        resnet50(x)
    assert torch.equal(rec.activations["conv1"], torch.relu(rec.activations["bn1"]))


def test_record_activations_returns_named_copies(vgg16):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    out = record_activations(vgg16, x, ["conv4_3", "features.29"])
    assert list(out) == ["conv4_3", "features.29"]
    assert out["conv4_3"].shape == (1, 512, 4, 4) and out["features.29"].shape == (1, 512, 2, 2)
    assert _no_hooks_left(vgg16)


# ------------------------------------------------------------------ resolve_layer


def test_resolve_alias_path_and_module(vgg16):
    assert resolve_layer(vgg16, "conv5_3") == ("conv5_3", vgg16.features[29])
    assert resolve_layer(vgg16, "features.28") == ("features.28", vgg16.features[28])
    assert resolve_layer(vgg16, vgg16.features[29]) == ("conv5_3", vgg16.features[29])
    assert resolve_layer(vgg16, vgg16.classifier[0]) == ("classifier.0", vgg16.classifier[0])
    assert resolve_layer(vgg16, vgg16) == ("model", vgg16)


def test_unknown_layer_lists_valid_names(vgg16):
    with pytest.raises(ValueError) as info:
        resolve_layer(vgg16, "conv6_1")
    msg = str(info.value)
    assert "unknown layer 'conv6_1' for vgg16" in msg
    assert "conv1_1, conv1_2, pool1" in msg and "conv5_3, pool5" in msg
    assert "features.0" in msg and "classifier.6" in msg and "\n" not in msg
    with pytest.raises(ValueError, match="unknown layer ''"):
        resolve_layer(vgg16, "")
    with pytest.raises(ValueError, match=r"unknown layer 'conv5_3' for Sequential: use a dotted"):
        ActivationRecorder(_tiny_cnn(), ["1", "conv5_3"])


def test_foreign_module_and_bad_types_are_rejected(vgg16):
    with pytest.raises(ValueError, match="not a submodule of the model"):
        resolve_layer(vgg16, nn.ReLU())
    with pytest.raises(TypeError, match="layer must be a str or an nn.Module"):
        resolve_layer(vgg16, 29)
    with pytest.raises(ValueError, match="layers is empty"):
        ActivationRecorder(vgg16, [])
    with pytest.raises(ValueError, match="on_repeat must be one of"):
        ActivationRecorder(vgg16, "conv5_3", on_repeat="mean")


def test_copies_are_c_ordered_whatever_layout_the_layer_outputs():
    """oneDNN convolutions on channels-last input output channels-last; the stored copy is C-ordered
    (each unit's map one contiguous block, what the scorer reads) with the same values."""
    import torch.nn as nn

    from dissect.models.hooks import ActivationRecorder

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 3)).eval()
    x = torch.randn(2, 3, 9, 11).contiguous(memory_format=torch.channels_last)
    seen = {}
    handle = model[1].register_forward_hook(lambda m, i, o: seen.setdefault("relu", o.detach().clone()))
    with ActivationRecorder(model, ["1"]) as rec, torch.inference_mode():
        model(x)
    handle.remove()
    stored = rec.activations["1"]
    assert seen["relu"].is_contiguous(memory_format=torch.channels_last)  # the layout the layer gave
    assert stored.is_contiguous() and stored[0].numpy().flags.c_contiguous
    assert torch.equal(stored, seen["relu"])


def test_copy_buffers_reuse_memory_given_back_and_never_memory_still_held():
    from dissect.models.hooks import CopyBuffers

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 3)).eval()
    batches = [torch.randn(n, 3, 9, 9).contiguous(memory_format=torch.channels_last) for n in (4, 4, 4, 3)]
    with ActivationRecorder(model, ["0", "2"]) as rec, torch.inference_mode():
        expected = []
        for x in batches:
            model(x)
            expected.append({k: v.clone() for k, v in rec.activations.items()})
    buffers = CopyBuffers(min_bytes=0)
    held, ptrs = [], []
    with ActivationRecorder(model, ["0", "2"], buffers=buffers) as rec, torch.inference_mode():
        for k, x in enumerate(batches):
            model(x)
            acts = dict(rec.activations)
            ptrs.append(acts["0"].data_ptr())
            held.append(acts)
            if k >= 1:  # the loop is done with batch k-1: its memory may be reused from batch k+1 on
                buffers.give_back(held[k - 1])
    for k in (0, 1):  # batches 2 and 3 (the smaller last one: a leading slice) reused 0 and 1's memory
        assert ptrs[k + 2] == ptrs[k]
    assert len(set(ptrs[:2])) == 2
    for got, want in zip(held[2:], expected[2:]):  # batches not overwritten since: the same bits
        for name in want:
            assert got[name].is_contiguous() and torch.equal(got[name], want[name])
    assert torch.equal(held[3]["0"], expected[3]["0"]) and held[3]["0"].shape[0] == 3


def test_copy_buffers_leave_small_tensors_to_malloc_and_refuse_keep():
    from dissect.models.hooks import CopyBuffers

    model = _tiny_cnn()
    buffers = CopyBuffers()  # default 32 MB floor: these tensors are never kept
    with ActivationRecorder(model, "0", buffers=buffers) as rec:
        model(X)
        first = rec.activations["0"]
        buffers.give_back({"0": first})
        model(X)
        assert rec.activations["0"].data_ptr() != first.data_ptr()
        assert torch.equal(rec.activations["0"], PRE_RELU)
    with pytest.raises(ValueError, match="keep=True"):
        ActivationRecorder(model, "0", keep=True, buffers=buffers)
