"""Training of He et al.'s saliency models: tiny random VGG16s on 32 px inputs, no network."""
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import cli
from datasets.base import ListDataset, Sample
from dissect.models import heads
from dissect.models import load_model
from dissect.training import (
    FeatureCache,
    TrainConfig,
    TrainingError,
    build_saliency_model,
    freeze_units,
    split_dataset,
    train_saliency,
)

H, W = 24, 32


def toy_dataset(n=8, seed=0, name="toy"):
    """Random images whose fixations always sit in the top-left corner: a learnable toy."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        fix = np.zeros((H, W), bool)
        fix[rng.integers(0, 6, 5), rng.integers(0, 8, 5)] = True
        samples.append(Sample(f"im{i}", img, np.zeros((0, H, W), bool), [], fixation_map=fix))
    return ListDataset(samples, name)


def cfg(**kw):
    base = dict(encoder_weights="random", steps=6, batch_size=3, eval_every=3, image_size=32,
                progress=False, decay_every=2, lr=1e-2)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def split():
    return split_dataset(toy_dataset(), val_ids=["im6", "im7"])


def state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def runs(split, tmp_path_factory):
    """Runs shared by several tests (each training builds a VGG16: keep their number small)."""
    root = tmp_path_factory.mktemp("runs")
    done = {}

    def get(name, **kw):
        if name not in done:
            done[name] = train_saliency(*split, root / name, cfg(**kw))
        return done[name]

    return get


SETUP_II = dict(finetune=2, steps=4, eval_every=2)


def test_loss_falls_and_outputs_are_written(runs, no_figure_leak):
    paths = runs("learn", steps=12, eval_every=6, lr=5e-2)
    log = pd.read_csv(paths["train_log"])
    assert list(log.columns[:4]) == ["step", "loss", "lr", "seconds"]
    assert log["loss"].iloc[-3:].mean() < log["loss"].iloc[:3].mean() - 0.3
    assert log["lr"].iloc[0] == pytest.approx(5e-2) and log["lr"].iloc[-1] == pytest.approx(5e-2 * 0.8 ** 5)
    val = pd.read_csv(paths["val"])
    assert list(val["step"]) == [0, 6, 12]
    assert {"nss", "cc", "kl", "sim", "auc_judd", "floor_nss", "model", "weights"} <= set(val.columns)
    assert val["nss"].iloc[-1] > val["nss"].iloc[0]
    run = paths["run"].parent
    for p in ("best.pt", "last.pt", "run.json", "curves.png", "checkpoints/step-000006.pt",
              "checkpoints/step-000012.pt"):
        assert (run / p).is_file(), p
    best = val.loc[val["nss"].idxmax(), "step"]
    assert torch.load(paths["best"], weights_only=True)["extra"]["step"] == best


def test_random_start_is_load_models_and_frozen_parameters_do_not_move(runs):
    start = load_model("saliency_vgg16", weights="random", seed=0).state_dict()
    model = build_saliency_model(cfg())
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())
    for name, trained in (("learn", {"readout.weight"}),
                          ("cached", {"readout.weight", "features.26.weight", "features.26.bias",
                                      "features.28.weight", "features.28.bias"})):
        after = state(runs(name, **(SETUP_II if name == "cached" else dict(steps=12, eval_every=6, lr=5e-2)))["last"])
        for key, tensor in after.items():
            assert torch.equal(tensor, start[key]) != (key in trained), key


def test_freeze_units_matches_heads_freeze_encoder():
    with torch.device("meta"):  # the structure is all that matters: skip the random init
        a, b = heads.SaliencyVGG("random"), heads.SaliencyVGG("random")
    assert freeze_units(a, 3) == heads.freeze_encoder(b, 3)
    assert [p.requires_grad for p in a.parameters()] == [p.requires_grad for p in b.parameters()]


def test_cached_and_uncached_training_agree(runs):
    # The same function; only float32 rounding of the prefix's convolutions differs (the kernels
    # group a 16-image cache fill differently from a 3-image step), ~1e-7 relative per activation.
    # Adam divides by sqrt(v), so near-zero gradients turn tiny differences into steps of ~lr:
    # measured after 4 steps: losses 2e-5 apart (tolerance 1e-4), weights 3e-4 of their norm (1e-3).
    # float16 storage (relative rounding 2^-11 per activation): losses 8e-5 apart (tolerance
    # 5e-4), read-out 2e-4 and conv5_3 1.2e-2 of their norm (documented tolerance 3e-2).
    a = runs("cached", **SETUP_II)
    b = runs("uncached", cache="off", **SETUP_II)
    c = runs("fp16", cache_dtype="float16", **SETUP_II)
    la, lb, lc = (pd.read_csv(p["train_log"])["loss"].to_numpy() for p in (a, b, c))
    np.testing.assert_allclose(lb, la, atol=1e-4)
    np.testing.assert_allclose(lc, la, atol=5e-4)
    sa, sb, sc = (state(p["last"]) for p in (a, b, c))
    for name in ("readout.weight", "features.28.weight", "features.26.weight"):
        assert (sb[name] - sa[name]).norm() <= 1e-3 * sa[name].norm(), name
        assert (sc[name] - sa[name]).norm() <= 3e-2 * sa[name].norm(), name
    assert not (a["run"].parent / "cache").exists()


def test_feature_cache_disk_and_float16_round_trip(tmp_path):
    model = build_saliency_model(cfg())
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    mem = FeatureCache(list(model.features[:10]), images)
    disk = FeatureCache(list(model.features[:10]), images, where="auto", memory_mb=0, path=tmp_path / "c.npy")
    half = FeatureCache(list(model.features[:10]), images, dtype="float16")
    assert disk.on_disk and not mem.on_disk
    idx = np.array([4, 0, 2])
    assert torch.equal(mem.get(idx), disk.get(idx))  # a memmap holds the same numbers
    chunked = FeatureCache(list(model.features[:10]), images, chunk=2)  # other conv grouping: rounding only
    torch.testing.assert_close(chunked.get(idx), mem.get(idx), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(half.get(idx), mem.get(idx), rtol=2 ** -10, atol=1e-4)


def test_resume_after_a_kill_is_bitwise_equal(runs, split, tmp_path):
    whole = runs("cached", **SETUP_II)

    class Killed(Exception):
        pass

    def kill(step):
        if step == 3:  # after last.pt of step 2: step 3 is lost, as with kill -9
            raise Killed

    with pytest.raises(Killed):
        train_saliency(*split, tmp_path, cfg(**SETUP_II), on_step=kill)
    resumed = train_saliency(*split, tmp_path, cfg(**SETUP_II), resume=True)
    a, b = state(whole["last"]), state(resumed["last"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    la, lb = pd.read_csv(whole["train_log"]), pd.read_csv(resumed["train_log"])
    assert la["step"].tolist() == lb["step"].tolist() == [1, 2, 3, 4]
    assert la["loss"].tolist() == lb["loss"].tolist()
    assert pd.read_csv(whole["val"])["nss"].tolist() == pd.read_csv(resumed["val"])["nss"].tolist()


def test_resume_refuses_another_run_and_a_run_is_not_overwritten(runs, split):
    folder = runs("cached", **SETUP_II)["run"].parent
    with pytest.raises(TrainingError, match="already holds a training run: pass --resume"):
        train_saliency(*split, folder, cfg(**SETUP_II))
    with pytest.raises(TrainingError, match=r"holds another run \(lr: 0.01 there, 0.02 now\)"):
        train_saliency(*split, folder, cfg(**{**SETUP_II, "lr": 0.02}), resume=True)


def test_nan_loss_stops_naming_the_step(split, tmp_path, monkeypatch):
    from dissect.training import saliency

    def constant(c):
        model = build_saliency_model(c)
        with torch.no_grad():
            model.readout.weight.zero_()  # a constant map has no z-score: NSS is NaN
        return model

    monkeypatch.setattr(saliency, "build_saliency_model", constant)
    with pytest.raises(TrainingError, match=r"^the training loss is nan at step 1 .*last good checkpoint .*last.pt"):
        train_saliency(*split, tmp_path, cfg())
    assert (tmp_path / "last.pt").is_file()


def test_checkpoint_round_trips_through_load_model_and_dissection(runs, tmp_path):
    from datasets.popout import PopoutDataset
    from dissect.studies.dissection import run_dissection

    paths = runs("learn", steps=12, eval_every=6, lr=5e-2)
    for name in ("best", "last"):
        model = load_model("saliency_vgg16", weights=str(paths[name]))
        saved = state(paths[name])
        assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    step = paths["run"].parent / "checkpoints" / "step-000006.pt"
    result = run_dissection(load_model("saliency_vgg16", weights=str(step)), "conv5_3",
                            PopoutDataset(n_per_dimension=1), image_size=32, progress=False)
    assert result.info["metric"] == "nmm" and len(result.summary) == 8
    rc = cli.main(["dissect", "--model", "saliency_vgg16", "--weights", str(step), "--max-images", "2",
                   "--image-size", "32", "--out", str(tmp_path / "dissect"), "--no-progress"])
    assert rc == 0 and (tmp_path / "dissect" / "units.csv").is_file()


def test_resnet_readout_trains_and_reloads(split, tmp_path):
    paths = train_saliency(*split, tmp_path, cfg(backbone="resnet50", readout_layer="layer1", finetune=1,
                                                 steps=2, eval_every=2))
    model = load_model("saliency_resnet50", weights=str(paths["last"]))
    assert model.readout_layer == "layer1" and model.readout.in_channels == 256
    saved = state(paths["last"])
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    start = heads.SaliencyResNet("random", readout_layer="layer1").state_dict()
    assert torch.equal(saved["layer1.1.conv1.weight"], start["layer1.1.conv1.weight"])  # frozen block
    assert not torch.equal(saved["layer1.2.conv1.weight"], start["layer1.2.conv1.weight"])  # K=1: last block


def test_closed_form_nss_loss_equals_nss_loss_of_the_upsampled_maps():
    import torch.nn.functional as F

    from dissect.training.data import Split as _Split
    from dissect.training.losses import _fixation_projection, nss_loss_upsampled, upsample

    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 1, 7, 9, generator=g) * 5 + 3
    rng = np.random.default_rng(0)
    fix = np.zeros((3, 30, 40), bool)
    for n in range(3):
        fix[n, rng.integers(0, 30, 12), rng.integers(0, 40, 12)] = True
    split = _Split(["a", "b", "c"], None, [(30, 40)] * 3, [np.flatnonzero(f) for f in fix])
    proj = torch.stack([_fixation_projection(split, i, 7, 9) for i in range(3)])
    n_fix = torch.tensor([f.sum() for f in fix], dtype=torch.float64)
    full = F.interpolate(maps, size=(30, 40), mode="bilinear", align_corners=False)
    torch.testing.assert_close(upsample(maps, (30, 40)), full[:, 0], rtol=1e-5, atol=1e-5)
    # reference: the published definition on the materialised maps (heads.nss_loss)
    torch.testing.assert_close(nss_loss_upsampled(maps, proj, n_fix, (30, 40)),
                               heads.nss_loss(full[:, 0], torch.from_numpy(fix)), rtol=1e-5, atol=1e-6)
    maps.requires_grad_(True)
    nss_loss_upsampled(maps, proj, n_fix, (30, 40)).backward()
    grad = maps.grad.clone()
    maps.grad = None
    heads.nss_loss(F.interpolate(maps, size=(30, 40), mode="bilinear", align_corners=False)[:, 0],
                   torch.from_numpy(fix)).backward()
    torch.testing.assert_close(grad, maps.grad, rtol=1e-4, atol=1e-6)
    assert torch.isnan(nss_loss_upsampled(torch.full((3, 1, 7, 9), 2.0), proj, n_fix, (30, 40)))


def test_split_errors():
    ds = toy_dataset(4)
    with pytest.raises(ValueError, match="validation id 'nope' is not in toy"):
        split_dataset(ds, val_ids=["im1", "nope", "bad"])
    with pytest.raises(ValueError, match="validation split of toy is empty"):
        split_dataset(ds, val_ids=[])
    with pytest.raises(ValueError, match="'im1' is in both"):
        split_dataset(ds, train_ids=["im0", "im1"], val_ids=["im1"])
    train, val = split_dataset(ds, val_fraction=0.25, seed=1)
    assert len(train) == 3 and len(val) == 1


def _folder(tmp_path, fixations=True):
    (tmp_path / "images").mkdir(parents=True)
    rows = []
    for i, img in enumerate(s.image for s in toy_dataset(6)):
        Image.fromarray(img).save(tmp_path / "images" / f"a{i}.png")
        rows += [{"image": f"a{i}", "x": 3, "y": 2}, {"image": f"a{i}", "x": 5, "y": 4}]
    if fixations:
        pd.DataFrame(rows).to_csv(tmp_path / "fixations.csv", index=False)
    (tmp_path / "val.txt").write_text("a4\na5\n")
    return tmp_path


def _train(root, *extra):
    return cli.main(["train", "saliency", "--dataset", "folder", "--data-root", str(root), "--val-ids",
                     str(root / "val.txt"), "--encoder-weights", "random", "--image-size", "32",
                     "--batch-size", "2", "--no-progress", *extra])


def test_cli_train_saliency_and_bad_input(tmp_path, capsys, no_figure_leak):
    root = _folder(tmp_path / "data")
    assert _train(root, "--steps", "2", "--eval-every", "1", "--out", str(tmp_path / "run")) == 0
    assert (tmp_path / "run" / "best.pt").is_file()
    capsys.readouterr()
    cases = [
        (["--finetune", "14"], "--finetune must be an integer in 0..13 or 'all'"),
        (["--finetune", "-1"], "--finetune must be an integer in 0..13"),
        (["--steps", "2", "--lr", "0.5", "--out", str(tmp_path / "run"), "--resume"], "holds another run (lr"),
    ]
    for args, message in cases:
        assert _train(root, "--out", str(tmp_path / "bad"), *args) == 2 if "--out" not in args else \
            _train(root, *args) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    (root / "ids.txt").write_text("a0\nzzz\n")
    assert _train(root, "--train-ids", str(root / "ids.txt"), "--out", str(tmp_path / "bad")) == 2
    assert "training id 'zzz' is not in folder:data" in capsys.readouterr().err
    nofix = _folder(tmp_path / "nofix", fixations=False)
    assert _train(nofix, "--out", str(tmp_path / "bad2")) == 2
    assert "has no fixations (image 'a0')" in capsys.readouterr().err
    assert cli.main(["train", "saliency", "--dataset", "popout", "--no-progress"]) == 2
    assert "--dataset popout cannot train a model" in capsys.readouterr().err


def test_image_ids_of_a_subset_are_the_subsets_own():
    from datasets.base import Subset
    from dissect.training import image_ids

    class Listed:  # a file-backed loader's shape: ids in _items, no decoding needed
        _items = [("a", "a.jpg"), ("b", "b.jpg"), ("c", "c.jpg")]

        def __len__(self):
            return len(self._items)

        def __getitem__(self, i):
            raise AssertionError("image_ids must not load images")

    assert image_ids(Listed()) == ["a", "b", "c"]
    assert image_ids(Subset(Listed(), [2, 0])) == ["c", "a"]
