"""load_model(classifier=False): VGG without its classifier, every other tensor exactly the full model's."""
import pytest
import torch

from dissect.models import backbones as models
from dissect.models import load_model


@pytest.fixture(scope="module")
def full_vgg16():
    return load_model("vgg16", "random", seed=5)


def test_lean_random_vgg16_equals_the_full_model(full_vgg16):
    lean = load_model("vgg16", "random", seed=5, classifier=False)
    full_state, lean_state = full_vgg16.state_dict(), lean.state_dict()
    assert set(lean_state) == {k for k in full_state if not k.startswith("classifier.")}
    assert all(torch.equal(full_state[k], lean_state[k]) for k in lean_state)  # same random stream
    assert lean.dissect_info == full_vgg16.dissect_info
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(lean.features(x), full_vgg16.features(x))
        with pytest.raises(RuntimeError, match="without its classifier"):
            lean(x)


def test_lean_from_a_state_dict_keeps_only_the_features(full_vgg16):
    lean = models._build_with_state("vgg16", full_vgg16.state_dict(), None, lean=True)
    assert not any(k.startswith("classifier.") for k in lean.state_dict())
    assert torch.equal(lean.features[28].weight, full_vgg16.features[28].weight)


def test_advance_rng_skips_exactly_n_draws():
    torch.manual_seed(1)
    torch.empty(1000).uniform_()
    expected = torch.rand(5)
    torch.manual_seed(1)
    models._advance_cpu_rng(1000)
    assert torch.equal(torch.rand(5), expected)


def test_other_models_stay_complete():
    model = load_model("alexnet", "random", classifier=False)
    assert any(k.startswith("classifier.") for k in model.state_dict())
