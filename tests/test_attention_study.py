"""dissect.studies.attention_gaze and robustness: the gaze table end to end, FGSM fooling rate against a literal FGSM,
and the attention figures."""
import math
import types

import matplotlib

matplotlib.use("Agg")  # the test process must not need a display

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from datasets.base import ListDataset, Sample  # noqa: E402
from datasets.fixations import center_bias_map, fixation_map  # noqa: E402
from dissect.attribution import fgsm  # noqa: E402
from dissect.studies import attention_gaze as study  # noqa: E402
from dissect.studies import robustness  # noqa: E402
from dissect.models.inputs import preprocess  # noqa: E402
from dissect.models import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from dissect.reports import attention_figures
from probes import gaze  # noqa: E402

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


DEFAULT_NAME = "conv2_1"  # the last conv alias: the default layer, named in the tables (issue 12)


class TinyCNN(nn.Module):
    """VGG-like: aliases conv1_1, pool1, conv2_1; GAP + linear so CAM has its own weights."""

    dissect_alias_family = "vgg"

    def __init__(self, n_classes=5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, n_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def _sample(i, shape, rng, n_subjects=3, colour=None):
    h, w = shape
    img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) if colour is None else np.full((h, w, 3), colour, np.uint8)
    n = 4 * n_subjects
    table = pd.DataFrame({
        "x": np.round(rng.uniform(1, w, n), 1), "y": np.round(rng.uniform(1, h, n), 1),
        "subject": np.repeat(np.arange(1, n_subjects + 1), 4), "duration": rng.uniform(50, 300, n),
    })
    fix = fixation_map(table["x"], table["y"], shape)
    return Sample(f"img{i}", img, np.zeros((0, h, w), bool), [], fixation_map=fix, fixations=table)


@pytest.fixture
def dataset(rng):
    shapes = [(32, 40), (36, 32), (32, 48), (40, 40)]
    return ListDataset([_sample(i, s, rng) for i, s in enumerate(shapes)], name="tiny")


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TinyCNN().eval()


# every test here must close the figures it opens (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("no_figure_leak")


def _literal_bilinear(m, shape):
    """Bilinear upsampling with half-pixel centres written out (align_corners=False): source
    coordinate ``(i + 0.5) * in / out - 0.5``, clamped at 0, neighbours clamped at the edge."""
    def axis(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    r0, r1, wr = axis(m.shape[0], shape[0])
    c0, c1, wc = axis(m.shape[1], shape[1])
    top = m[r0][:, c0] * (1 - wc) + m[r0][:, c1] * wc
    bottom = m[r1][:, c0] * (1 - wc) + m[r1][:, c1] * wc
    return top * (1 - wr)[:, None] + bottom * wr[:, None]


def _fake_attention(monkeypatch):
    """dissect.attribution replaced by known maps: 'activation' = the input's first channel,
    'dense' = two layers and their cumulative maps."""
    calls = []

    def attention_maps(model, images, method, layer=None, target=None, **options):
        calls.append((method, layer, options))
        base = images[:, 0].detach().cpu().float()
        return base if layer != "shift" else base + 10.0

    def dense_attention_maps(model, images, layers=None, target=None):
        a = images[:, 1].detach().cpu().float().exp()
        b = images[:, 2].detach().cpu().float().exp()
        return {"a": a, "a+": a + b, "b": b, "b+": b}

    fake = types.SimpleNamespace(METHODS=("activation", "gradcam", "guided_backprop", "dense"),
                                 attention_maps=attention_maps, dense_attention_maps=dense_attention_maps)
    monkeypatch.setattr(study, "attention", fake)
    return calls


def test_study_rows_match_direct_scores(monkeypatch, dataset, model):
    _fake_attention(monkeypatch)
    per_image, summary, info = study.run_attention_study(
        model, dataset, ["activation", "dense"], image_size=16, batch_size=3, sigma=4.0, n_other=2,
        seed=7, progress=False)
    assert list(per_image.columns) == list(study.PER_IMAGE_COLUMNS)
    rows_per_image = 1 + 4 + 2  # activation, dense (a, a+, b, b+), floor, ceiling
    assert len(per_image) == rows_per_image * len(dataset) == info["n_rows"]
    assert set(per_image.loc[per_image.method == "dense", "layer"]) == {"a", "a+", "b", "b+"}
    assert info["n_images"] == 4 and info["n_images_without_ceiling"] == 0
    assert set(info["seconds_per_image"]) == {"activation", "dense"}
    pool = [s.fixation_map for s in dataset]
    for i, sample in enumerate(dataset):
        shape = sample.shape
        small = preprocess([sample.image], 16)[0, 0].double().numpy()  # what the fake returns
        density = gaze.human_density(sample, 4.0)
        other = gaze.other_images_fixations(pool, i, shape, n_other=2, seed=7)
        bias = center_bias_map(shape)
        want = gaze.gaze_scores(_literal_bilinear(small, shape), sample.fixation_map, density,
                                other_fixation_map=other, baseline=bias, seed=7)
        got = per_image[(per_image.image == sample.image_id) & (per_image.method == "activation")].iloc[0]
        for key in gaze.GAZE_METRICS:
            if math.isnan(want[key]):
                assert math.isnan(got[key]), key
            else:
                # float64 both ways; only the summation order differs
                assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
        floor = per_image[(per_image.image == sample.image_id) & (per_image.method == "center_bias")].iloc[0]
        assert floor["layer"] == ""
        expected_floor = gaze.center_bias_scores(sample.fixation_map, density, other_fixation_map=other, seed=7)
        assert [floor[k] for k in gaze.GAZE_METRICS] == pytest.approx([expected_floor[k] for k in gaze.GAZE_METRICS], nan_ok=True)
        ceiling = per_image[(per_image.image == sample.image_id) & (per_image.method == "human_loso")].iloc[0]
        loso = gaze.leave_one_subject_out(sample.fixations, shape, 4.0, other_fixation_map=other, baseline=bias, seed=7)
        assert [ceiling[k] for k in gaze.GAZE_METRICS] == pytest.approx([loso[k] for k in gaze.GAZE_METRICS], nan_ok=True)
    pd.testing.assert_frame_equal(summary, gaze.summarize_gaze(per_image))
    assert list(summary["method"][-2:]) == ["center_bias", "human_loso"]


def test_study_known_answer(monkeypatch, rng, model):
    # Same-size images (image_size=None: no resizing anywhere); image k is a flat grey level the
    # fake method decodes to return image k's own human density: CC 1, MAE 0, KL 0, SIM 1.
    shape = (32, 40)
    samples = [_sample(k, shape, rng, colour=40 * (k + 1)) for k in range(3)]
    densities = {40 * (k + 1): gaze.human_density(s, 4.0) for k, s in enumerate(samples)}

    def attention_maps(model, images, method, layer=None, target=None, **options):
        grey = torch.round((images[:, 0, 0, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255).long()
        return torch.stack([torch.from_numpy(densities[int(g)]) for g in grey])

    monkeypatch.setattr(study, "attention", types.SimpleNamespace(METHODS=("gradcam",), attention_maps=attention_maps))
    per_image, summary, _ = study.run_attention_study(model, ListDataset(samples), "gradcam", image_size=None,
                                                      sigma=4.0, progress=False)
    rows = per_image[per_image.method == "gradcam"]
    assert rows["cc"].to_numpy() == pytest.approx(1.0, abs=1e-6)  # densities pass through float32
    assert rows["mae"].to_numpy() == pytest.approx(0.0, abs=1e-6)
    assert rows["kl"].to_numpy() == pytest.approx(0.0, abs=1e-6)
    assert rows["sim"].to_numpy() == pytest.approx(1.0, abs=1e-6)
    top = summary.set_index("method")
    assert top.loc["gradcam", "cc_mean"] > top.loc["center_bias", "cc_mean"]


def test_study_layers_options_and_degenerate_maps(monkeypatch, dataset, model):
    calls = _fake_attention(monkeypatch)
    per_image, _, info = study.run_attention_study(
        model, dataset, ["activation", "gradcam", "guided_backprop"], layers=["conv1_1", "conv2_1"],
        batch_size=4, image_size=16, progress=False, ceiling=False, options={"gradcam": {"foo": 1}})
    assert info["layers"] == {"activation": ["conv1_1", "conv2_1"], "gradcam": ["conv1_1", "conv2_1"],
                              "guided_backprop": [""]}
    assert ("guided_backprop", None, {}) in calls and ("gradcam", "conv2_1", {"foo": 1}) in calls
    assert "human_loso" not in set(per_image.method)
    per_image, _, _ = study.run_attention_study(model, dataset, "activation", layers={"activation": None},
                                                image_size=16, progress=False)
    assert set(per_image.loc[per_image.method == "activation", "layer"]) == {DEFAULT_NAME}

    def constant(model, images, method, layer=None, target=None, **options):
        out = torch.ones(images.shape[0], *images.shape[-2:])
        if method == "gradcam":
            out[:, 0, 0] = float("nan")
        return out

    monkeypatch.setattr(study.attention, "attention_maps", constant)
    per_image, _, info = study.run_attention_study(model, dataset, ["activation", "gradcam"], image_size=16,
                                                   progress=False, ceiling=False)
    assert info["n_constant_maps"]["activation"] == 4 and info["n_nonfinite_maps"]["gradcam"] == 4
    act = per_image[per_image.method == "activation"]
    assert act["nss"].isna().all() and act["cc"].isna().all() and (act["auc_judd"] == 0.5).all()
    assert per_image.loc[per_image.method == "gradcam", list(gaze.GAZE_METRICS)].isna().all().all()


def test_study_errors(monkeypatch, dataset, model, rng):
    _fake_attention(monkeypatch)
    no_gaze = ListDataset([Sample("x", np.zeros((32, 32, 3), np.uint8), np.zeros((0, 32, 32), bool), [])])
    with pytest.raises(ValueError, match=r"needs a dataset with fixations \(osie, salicon, folder with fixations.csv\)"):
        study.run_attention_study(model, no_gaze, ["activation"], progress=False)
    with pytest.raises(ValueError, match="unknown attention method"):
        study.run_attention_study(model, dataset, ["saliency"], progress=False)
    with pytest.raises(ValueError, match="has no images"):
        study.run_attention_study(model, ListDataset([]), ["activation"], progress=False)
    with pytest.raises(ValueError, match="unknown layer|conv9_9"):
        study.run_attention_study(model, dataset, ["activation"], layers="conv9_9", progress=False)
    with pytest.raises(ValueError, match="dense_layers"):
        study.run_attention_study(model, dataset, ["dense"], layers={"dense": "conv1_1"}, progress=False)


def test_study_with_real_attention(dataset, model):
    # The real dissect.attribution on every method: a complete, finite-where-defined table.
    from dissect.attribution import methods as attention

    before = [(m.training, [p.requires_grad for p in m.parameters(recurse=False)]) for m in model.modules()]
    per_image, summary, info = study.run_attention_study(
        model, dataset, list(attention.METHODS), image_size=32, batch_size=2, sigma=4.0, n_other=3,
        progress=False)
    assert before == [(m.training, [p.requires_grad for p in m.parameters(recurse=False)]) for m in model.modules()]
    n_dense = 2 * 2  # conv1_1, conv2_1 and their cumulative maps
    assert len(per_image) == len(dataset) * (5 + n_dense + 2)
    ok = per_image[per_image.method != "human_loso"]
    assert ok[["auc_judd", "sauc", "sim", "ig"]].notna().all().all()
    assert set(summary["method"]) == set(attention.METHODS) | {"center_bias", "human_loso"}
    assert set(per_image.loc[per_image.method == "dense", "layer"]) == {"conv1_1", "conv1_1+", "conv2_1", "conv2_1+"}
    assert info["dense_layers"] == ["conv1_1", "conv2_1"]
    assert info["layers"]["guided_backprop"] == [""] and info["layers"]["gradcam"] == [DEFAULT_NAME]


# --------------------------------------------------------------------------- FGSM


def _literal_fgsm(model, x, eps, labels):
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model((x - MEAN) / STD), labels, reduction="sum")
    (g,) = torch.autograd.grad(loss, x)
    return (x + eps * g.sign()).clamp(0, 1).detach(), g


def _pixel_dataset(rng, n=6, size=16):
    return ListDataset([Sample(f"p{i}", rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                               np.zeros((0, size, size), bool), []) for i in range(n)])


def test_fooling_rate_epsilon_range(model, rng):
    ds = _pixel_dataset(rng, n=2)
    for eps in (-0.01, 1.5, float("nan"), "big"):
        with pytest.raises(ValueError, match="epsilon must be"):
            robustness.fooling_rate(model, ds, eps, progress=False)
    out = robustness.fooling_rate(model, ds, 0.0, image_size=None, progress=False)
    assert out == {"epsilon": 0.0, "n_images": 2, "n_changed": 0, "fooling_rate": 0.0}


def test_fooling_rate_linear_model_flips(rng):
    # logits = (sum of normalised pixels + b, 0): at grey 0.5 class 0 wins by a margin of 0.1;
    # d CE / dx = -(1 - p0) / std < 0 everywhere, so FGSM subtracts eps from every pixel and the
    # margin drops by eps * 16 * sum(1 / std) = 0.1 * 16 * 13.3 ~ 21 >> 0.1: every label flips.
    lin = nn.Linear(3 * 4 * 4, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0] = 1.0
        grey = torch.full((1, 3, 4, 4), 0.5)
        lin.bias.copy_(torch.tensor([0.1 - ((grey - MEAN) / STD).sum().item(), 0.0]))
    model = nn.Sequential(nn.Flatten(), lin)
    ds = ListDataset([Sample(f"g{i}", np.full((4, 4, 3), 128 - i, np.uint8), np.zeros((0, 4, 4), bool), [])
                      for i in range(3)])
    out = robustness.fooling_rate(model, ds, 0.1, image_size=None, batch_size=2, progress=False)
    assert out["n_images"] == 3 and out["n_changed"] == 3 and out["fooling_rate"] == 1.0


def test_fgsm_matches_literal_step(model, rng):
    x = torch.from_numpy(rng.random((3, 3, 16, 16))).float()
    labels = torch.tensor([0, 3, 1])
    eps = 0.03
    adv, lab = fgsm.fgsm_perturb(model, x, eps, labels)
    want, g = _literal_fgsm(model, x, eps, labels)
    assert torch.equal(lab, labels)
    big = g.abs() > 1e-6  # captum leaves elements with |gradient| <= 1e-6 unchanged
    torch.testing.assert_close(adv[big], want[big], rtol=0, atol=1e-6)
    torch.testing.assert_close(adv[~big], x[~big], rtol=0, atol=0)
    assert big.float().mean() > 0.9  # the comparison covers most elements
    assert adv.min() >= 0 and adv.max() <= 1
    # default labels: the model's own top-1
    _, own = fgsm.fgsm_perturb(model, x, eps)
    assert torch.equal(own, model((x - MEAN) / STD).argmax(1))


def test_fooling_rate_matches_literal_and_restores_state(model, rng):
    ds = _pixel_dataset(rng, n=6)
    model.train()
    model.features[0].eval()
    model.fc.weight.requires_grad_(False)
    before = ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()])
    eps = 0.2
    out = robustness.fooling_rate(model, ds, eps, image_size=None, batch_size=4, progress=False)
    assert before == ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()])
    model.eval()
    x = torch.from_numpy(np.stack([s.image for s in ds])).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        clean = model((x - MEAN) / STD).argmax(1)
    adv, _ = _literal_fgsm(model, x, eps, clean)
    with torch.no_grad():
        after = model((adv - MEAN) / STD).argmax(1)
    assert out["n_changed"] == int((after != clean).sum())
    assert out["fooling_rate"] == pytest.approx(out["n_changed"] / 6)


def test_fooling_rate_restores_state_after_error(rng):
    conv = nn.Conv2d(3, 2, 3)
    conv.train()
    ds = _pixel_dataset(rng, n=2, size=8)
    with pytest.raises(ValueError, match="N x K logits"):
        robustness.fooling_rate(conv, ds, 0.1, image_size=None, progress=False)
    assert conv.training and all(p.requires_grad for p in conv.parameters())


# --------------------------------------------------------------------------- figures


def _check_png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        pixels = np.asarray(im.convert("RGB"), dtype=float)
    assert pixels.std() > 0


def test_attention_overlays(tmp_path, dataset):
    images = [s.image for s in dataset][:2]
    human = [gaze.human_density(s, 4.0) for s in list(dataset)[:2]]
    maps = {"gradcam": [np.random.default_rng(0).random((8, 8)) for _ in images],
            "cam": [np.zeros(img.shape[:2]) for img in images]}  # constant map: drawn as zeros
    out = attention_figures.attention_overlays(images, human, maps, tmp_path / "sub" / "over.png", titles=["a", "b"])
    assert out == tmp_path / "sub" / "over.png"
    _check_png(out)
    with pytest.raises(ValueError, match="must end in .png"):
        attention_figures.attention_overlays(images, human, maps, tmp_path / "over.pdf")
    with pytest.raises(ValueError, match="maps for method 'cam'"):
        attention_figures.attention_overlays(images, human, {"cam": maps["cam"][:1]}, tmp_path / "x.png")


def test_dense_layer_mae(tmp_path, rng, monkeypatch):
    rows = [{"image": f"i{k}", "method": "dense", "layer": layer, "mae": float(rng.random())}
            for k in range(5) for layer in ("conv1_1", "conv1_1+", "conv2_1", "conv2_1+")]
    rows += [{"image": f"i{k}", "method": m, "layer": "", "mae": float(rng.random())}
             for k in range(5) for m in ("center_bias", "human_loso")]
    rows[4]["mae"] = float("nan")  # conv1_1 of image i1: skipped, k = 4 for that point
    df = pd.DataFrame(rows)
    drawn = []
    real_new_figure = attention_figures.new_figure

    def keep_figure(*args):  # the same figure, kept so the test can read what was plotted
        drawn.append(real_new_figure(*args))
        return drawn[-1]

    monkeypatch.setattr(attention_figures, "new_figure", keep_figure)
    out = attention_figures.dense_layer_mae(df, tmp_path / "mae.png", dpi=50)
    _check_png(out)
    # The numbers drawn, against a literal mean and standard error std(ddof=1) / sqrt(k).
    ax = drawn[0].axes[0]
    bars = ax.containers  # one ErrorbarContainer per curve: single layer, cumulative
    assert len(bars) == 2
    for container, suffix in zip(bars, ("", "+")):
        data_line, _, (segments,) = container.lines
        for i, name in enumerate(("conv1_1", "conv2_1")):
            v = df.loc[(df.method == "dense") & (df.layer == name + suffix), "mae"].dropna().to_numpy()
            mean = sum(v) / len(v)
            se = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) / math.sqrt(len(v))
            assert data_line.get_ydata()[i] == pytest.approx(mean, rel=1e-12)
            (_, lo), (_, hi) = segments.get_segments()[i]
            assert (hi - lo) / 2 == pytest.approx(se, rel=1e-9)  # not the std (sqrt(k) larger)
    levels = sorted(line.get_ydata()[0] for line in ax.lines if line.get_linestyle() in (":", "--"))
    assert levels == pytest.approx(sorted(df.loc[df.method.isin(["center_bias", "human_loso"])]
                                          .groupby("method").mae.mean()), rel=1e-12)
    # the helper behind the figure, table form
    points = attention_figures._layer_points(df, "dense", "mae")
    assert list(points.index) == ["conv1_1", "conv2_1"]
    assert points.loc["conv1_1", "single_n"] == 4 and points.loc["conv2_1", "cumulative_n"] == 5
    v = df.loc[(df.method == "dense") & (df.layer == "conv2_1+"), "mae"].to_numpy()
    assert points.loc["conv2_1", "cumulative_se"] == pytest.approx(v.std(ddof=1) / math.sqrt(5), rel=1e-12)
    with pytest.raises(ValueError, match="no rows of method 'dense'"):
        attention_figures.dense_layer_mae(pd.DataFrame(rows[-10:]), tmp_path / "m.png")
