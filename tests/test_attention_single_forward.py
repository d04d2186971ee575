"""Gradient attention methods run one forward per batch and read the top-1 class from it."""
import pytest
import torch
from torch import nn

from dissect.attribution.methods import attention_maps


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()


@pytest.mark.filterwarnings("ignore:Setting backward hooks")
@pytest.mark.parametrize("method", ["gradcam", "guided_backprop", "guided_gradcam"])
def test_one_forward_and_the_top1_target(method):
    from captum.attr import GuidedBackprop, GuidedGradCam, LayerGradCam

    model = _net()
    x = torch.randn(3, 3, 16, 16)
    calls = []
    handle = model[0].register_forward_hook(lambda *a: calls.append(1))
    layer = None if method == "guided_backprop" else "3"
    maps = attention_maps(model, x, method, layer=layer)
    handle.remove()
    assert len(calls) == 1
    with torch.no_grad():
        top1 = model(x).argmax(1)
    given = attention_maps(model, x, method, layer=layer, target=top1)
    assert torch.equal(maps, given)
    # And the given-target map is captum's own (the same gradients of logits[n, t_n]).
    xg = x.clone().requires_grad_(True)
    if method == "gradcam":
        ref = LayerGradCam(model, model[3]).attribute(xg, target=top1, relu_attributions=True)
        ref = nn.functional.interpolate(ref, size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    elif method == "guided_backprop":
        ref = GuidedBackprop(model).attribute(xg, target=top1).abs().amax(dim=1)
    else:
        ref = GuidedGradCam(model, model[3]).attribute(xg, target=top1, interpolate_mode="bilinear").abs().amax(dim=1)
    assert torch.allclose(maps, ref, atol=1e-6, rtol=1e-5)


def test_bad_target_is_still_a_clear_error():
    with pytest.raises(ValueError, match="out of range: the model has 5 classes"):
        attention_maps(_net(), torch.randn(2, 3, 16, 16), "gradcam", layer="3", target=7)
