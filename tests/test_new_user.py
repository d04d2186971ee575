"""Issue 12, "what a new user hits": labels, quick looks, out-of-image fixations, run folders,
messages, resume checks, argument checks. One test (or more) per item; bad inputs are one line
on stderr, exit 2, no traceback, and nothing computed is lost."""
import json
import sys
import types
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import cli
from datasets.base import ListDataset, Sample, first, interleaved_order
from datasets.fixations import dropped_fixations_message, fixation_map, fixations_in_image
from datasets.popout import PopoutDataset
from dissect.reports import tables as reports
from dissect.runner import folders, orchestrate

FAST = ["--weights", "random", "--image-size", "32", "--batch-size", "2", "--no-progress"]


def _cache_random_models(monkeypatch):
    """Build each random-weight zoo model once for this module (VGG16's random init alone takes
    seconds); the CLI commands only read the weights."""
    from dissect import models

    real = models.load_model

    def cached(name, weights="auto", *, seed=0, progress=False, classifier=True):
        if weights != "random":
            return real(name, weights=weights, seed=seed, progress=progress, classifier=classifier)
        key = (name, seed, classifier)
        if key not in _MODELS:
            _MODELS[key] = real(name, weights="random", seed=seed, classifier=classifier)
        return _MODELS[key]

    monkeypatch.setattr(models, "load_model", cached)


_MODELS: dict = {}


@pytest.fixture(autouse=True)
def _one_random_model_each(monkeypatch):
    _cache_random_models(monkeypatch)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One small run of each command, shared by the tests that only read what they wrote."""
    import contextlib
    import io

    from dissect.reports import attention_figures

    root = tmp_path_factory.mktemp("made")
    drawn = {}
    real = attention_figures.attention_overlays

    def spy(images, human, maps, path, **kw):
        drawn.update(kw)
        return real(images, human, maps, path, **kw)

    printed = {}
    with pytest.MonkeyPatch.context() as mp:
        _cache_random_models(mp)
        mp.setattr("dissect.reports.attention.attention_overlays", spy)
        for name, argv in (("d", ["dissect", "--max-images", "3"]),
                           ("a", ["attention", "--max-images", "3", "--no-ceiling"]),
                           ("r", ["robustness", "--epsilon", "0", "--max-images", "2"])):
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                assert cli.main([*argv, "--out", str(root / name), *FAST]) == 0
            printed[name] = buffer.getvalue()
    return types.SimpleNamespace(root=root, out=printed, drawn=drawn)


def _run(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _error(argv, capsys, *needles):
    code, out, err = _run(argv, capsys)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and lines and lines[-1].startswith("error: "), (code, err)
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    return lines[-1]


def _ok(argv, capsys):
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    return out, err


class Tiny(torch.nn.Module):
    """Two convs, aliases conv1_1 / conv1_2: a dissection in milliseconds."""

    dissect_alias_family = "vgg"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(4, 5, 3, padding=1), torch.nn.ReLU())

    def forward(self, x):
        return self.features(x)


def _samples(n=4, size=12, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        mask = np.zeros((size, size), bool)
        mask[2:6, 2:6] = True
        out.append(Sample(f"im{i}", rng.integers(0, 256, (size, size, 3), dtype=np.uint8), mask[None], ["a"]))
    return out


# ----------------------------------------------------------------------------- 1. random weights labelled
def test_item1_tables_console_and_run_json_say_random_weights(made):
    out, stdout = made.root / "d", made.out["d"]
    assert "RANDOM WEIGHTS" in stdout.splitlines()[0] and "--weights imagenet" in stdout
    for name in ("units.csv", "summary.csv"):
        table = pd.read_csv(out / name)
        assert set(table["model"]) == {"vgg16"} and set(table["weights"]) == {"random"}
        assert set(table["weights_detail"]) == {"seed=0"}
    # tidy: two runs concatenate and stay apart by their labels
    both = pd.concat([pd.read_csv(out / "summary.csv")] * 2)
    assert both.groupby(["model", "weights"]).size().tolist() == [len(both)]


def test_item1_fallback_warning_names_the_cli_flag():
    line = cli.cli_words("could not download ImageNet weights for vgg16 (no network?): use weights='random' or a "
                         "local file -> using RANDOM weights (seed=0) for vgg16: results will be meaningless "
                         "(pass weights='random' (CLI: --weights random) to silence this warning)")
    assert "--weights random" in line and "weights='random'" not in line


def test_item1_figure_subtitles_name_model_weights_dataset_metric_k(made, tmp_path, capsys, monkeypatch):
    info = {"arch": "vgg16", "weights": "random", "weights_detail": "seed=0"}
    assert reports.figure_subtitle(info, "popout", "nmm", 10) == "vgg16, RANDOM weights (seed=0), popout, NMM, k=10"
    from dissect.reports import figures

    titles = []
    real = figures.summary_heatmap
    monkeypatch.setattr(figures, "summary_heatmap", lambda *a, **k: titles.append(k.get("title")) or real(*a, **k))
    _ok(["stats", str(made.root / "d"), "--no-overlays", "--out", str(tmp_path / "stats")], capsys)
    assert titles and all("vgg16, RANDOM weights (seed=0), popout, NMM, k=10" in t for t in titles)


def test_item1_comparing_two_runs_with_the_same_random_encoder_says_so():
    from dissect.studies.run_statistics import _check_comparable

    run = {"metric": "nmm", "top_k": 10, "threshold": 1.5, "dataset": "popout", "layers_resolved": ["conv5_3"]}
    a = {**run, "model": {"arch": "vgg16", "weights": "random", "weights_detail": "seed=0"}}
    b = {**run, "model": {"arch": "saliency_vgg16", "weights": "random", "weights_detail": "seed=0"}}
    with pytest.warns(UserWarning, match="share the same random encoder"):
        _check_comparable(a, b)


# ----------------------------------------------------------------------------- 2. quick looks see every category
def test_item2_first_n_interleaves_the_categories():
    data = PopoutDataset()
    ids = [s.image_id for s in first(data, 8)]
    assert [i.rsplit("_", 1)[0] for i in ids] == list(data.dimensions)
    assert sorted(interleaved_order(data)) == list(range(len(data)))
    assert [s.image_id for s in first(ListDataset(_samples(3)), 2)] == ["im0", "im1"]  # no groups: own order


def test_item2_max_images_gives_no_unexplained_nan_row(made):
    from dissect.studies.dissection import run_dissection

    result = run_dissection(Tiny(), "conv1_2", PopoutDataset(), image_size=32, max_images=8, progress=False)
    assert (result.summary["n_regions"] > 0).all()  # every dimension seen in 8 images
    assert result.info["n_images"] == 8
    # 3 images see 3 dimensions; the 5 NaN rows are explained on the console
    assert "no regions of size, shape, curvature, closure, density in the 3 images seen" in made.out["d"]


# ----------------------------------------------------------------------------- 3. fixations outside the image
def test_item3_points_far_outside_are_dropped_and_counted():
    rows, cols, keep, n_clamped = fixations_in_image([5000, 800.6, 400, -5], [9000, 300, 300, -5], (600, 800))
    assert keep.tolist() == [False, True, True, False] and n_clamped == 1
    assert cols.tolist() == [799, 399] and rows.tolist() == [299, 299]
    with pytest.warns(UserWarning, match="2 of 3 fixation points"):
        fmap = fixation_map([5000, -5, 10], [9000, -5, 10], (600, 800))
    assert fmap.sum() == 1 and fmap[9, 9]
    assert len(dropped_fixations_message(3, 100)) == 1
    assert "more than 5%" in dropped_fixations_message(6, 100)[1]
    assert dropped_fixations_message(0, 100) == []


def test_item3_cli_says_when_more_than_5_percent_are_dropped(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem in ("a", "b"):
        Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(root / "images" / f"{stem}.png")
        mask = np.zeros((40, 40), np.uint8)
        mask[5:20, 5:20] = 1
        np.save(root / "masks" / f"{stem}.npy", mask)
    pd.DataFrame({"image": ["a", "a", "a", "b", "b"], "x": [10, 12, 5000, 11, -5], "y": [10, 12, 9000, 9, -5]}).to_csv(
        root / "fixations.csv", index=False)
    stdout, _ = _ok(["dissect", "--dataset", "folder", "--data-root", str(root), "--out", str(tmp_path / "r"),
                     *FAST], capsys)
    assert "2 of 5 fixations (40.0%)" in stdout and "more than 5%" in stdout
    assert json.loads((tmp_path / "r" / "run.json").read_text())["n_fixations_dropped"] == 2


# ----------------------------------------------------------------------------- 4. tiny images, top-k, layer twice
def test_item4_one_pixel_image_is_an_error_not_all_dead():
    from dissect.studies.dissection import run_dissection

    tiny = Sample("dot", np.zeros((1, 1, 3), np.uint8), np.ones((1, 1, 1), bool), ["a"])
    with pytest.raises(ValueError, match="'dot' is 1 x 1 pixels"):
        run_dissection(Tiny(), "conv1_1", ListDataset([tiny]), image_size=8, progress=False)


def test_item4_top_k_above_the_number_of_units_is_said():
    from dissect.studies.dissection import run_dissection

    result = run_dissection(Tiny(), ["conv1_1"], ListDataset(_samples()), image_size=12, top_k=10, progress=False)
    lines = reports.explain_summary(result.summary, 10, 4)
    assert any("--top-k 10 exceeds the 4 units of conv1_1" in line for line in lines)


def test_item4_same_layer_by_alias_and_path_is_scored_once(tmp_path, capsys):
    from dissect.studies.dissection import run_dissection

    with pytest.warns(UserWarning, match="features.3 is conv1_2"):
        result = run_dissection(Tiny(), ["conv1_2", "features.3"], ListDataset(_samples()), image_size=12,
                                progress=False)
    assert set(result.units["layer"]) == {"conv1_2"}
    with pytest.warns(UserWarning, match="--layer features.29 is the same layer as conv5_3: scored once"):
        _ok(["dissect", "--layer", "conv5_3", "--layer", "features.29", "--out", str(tmp_path / "r"),
             "--max-images", "2", *FAST], capsys)
    assert set(pd.read_csv(tmp_path / "r" / "units.csv")["layer"]) == {"conv5_3"}


# ----------------------------------------------------------------------------- 5. default folders, no overwrite
def test_item5_default_folders_name_what_differs(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    a = cli.DissectConfig(layers=["conv5_3"]).out_dir()
    b = cli.DissectConfig(layers=["conv4_1:conv5_3"]).out_dir()
    c = cli.DissectConfig(layers=["conv5_3"], weights="random", max_images=8).out_dir()
    assert len({a, b, c}) == 3 and str(a) == "runs/dissect-vgg16-popout-conv5_3"
    assert "conv4_1..conv5_3" in str(b) and "weights=random" in str(c) and "first=8" in str(c)
    # README's first two commands (quick look sizes) no longer collide
    _ok(["dissect", "--max-images", "2", *FAST], capsys)
    _ok(["dissect", "--layers", "conv5_2:conv5_3", "--max-images", "2", *FAST], capsys)
    assert len(list((tmp_path / "runs").iterdir())) == 2


def test_item5_robustness_and_attention_never_overwrite_silently(made, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    rob = ["robustness", "--epsilon", "0.01", "--max-images", "2", *FAST]
    _ok(rob, capsys)
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name == "robustness-vgg16-popout-eps=0.01-weights=random-first=2-size=32"
    before = (folder / "robustness.csv").read_text()
    _error(rob, capsys, "finished", "--overwrite")
    assert (folder / "robustness.csv").read_text() == before  # nothing lost
    assert folders.default_run_dir("robustness", ["alexnet"], "popout") != folders.default_run_dir(
        "robustness", ["vgg16"], "popout")  # another model: another folder
    _ok([*rob, "--overwrite"], capsys)
    for name, command in (("a", "attention"), ("r", "robustness"), ("d", "dissect")):
        flags = ["--epsilon", "0"] if command == "robustness" else []
        _error([command, *flags, "--out", str(made.root / name), *FAST], capsys, "finished", "--overwrite")


# ----------------------------------------------------------------------------- 6. clean run folders
def test_item6_finished_run_drops_its_state_and_failures_leave_no_folder(made, monkeypatch, tmp_path, capsys):
    out = made.root / "d"
    assert not (out / "progress.json").exists() and not list(out.glob("state-*.npz"))
    assert {p.name for p in out.iterdir()} == {"units.csv", "summary.csv", "labels.csv", "run.json"}
    _error(["dissect", "--layer", "conv9_9", "--out", str(tmp_path / "bad"), *FAST], capsys, "conv9_9")
    _error(["attention", "--method", "nope", "--out", str(tmp_path / "bad2"), *FAST], capsys, "nope")
    _error(["robustness", "--epsilon", "0.1", "--model", "vgg99", "--out", str(tmp_path / "bad3"), *FAST], capsys)
    assert not any((tmp_path / name).exists() for name in ("bad", "bad2", "bad3"))
    monkeypatch.chdir(tmp_path)
    stdout, _ = _ok(["popout", "generate", "--n-per-dimension", "1"], capsys)
    (folder,) = (tmp_path / "runs").iterdir()  # under runs/, which .gitignore ignores
    assert (folder / "metadata.csv").exists() and "next: python cli.py dissect" in stdout
    _error(["popout", "generate", "--n-per-dimension", "1"], capsys, "--overwrite")


# ----------------------------------------------------------------------------- 7. data errors name the file
def test_item7_truncated_image_and_bad_fixations_csv_name_the_file(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.full((40, 40, 3), 9, np.uint8)).save(root / "images" / "good.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "images" / "cut.png")
    data = (root / "images" / "cut.png").read_bytes()
    (root / "images" / "cut.png").write_bytes(data[: len(data) // 2])
    _error(["dissect", "--dataset", "folder", "--data-root", str(root), "--out", str(tmp_path / "r"), *FAST],
           capsys, "cut.png")
    (root / "images" / "cut.png").unlink()
    (root / "fixations.csv").write_text("")
    _error(["dissect", "--dataset", "folder", "--data-root", str(root), "--out", str(tmp_path / "r"), *FAST],
           capsys, "fixations.csv", "empty")
    (root / "fixations.csv").write_bytes(b"image,x,y\n\"good,1\n\xff\xfe\x00")
    _error(["dissect", "--dataset", "folder", "--data-root", str(root), "--out", str(tmp_path / "r"), *FAST],
           capsys, "fixations.csv")


def _interrupted_run(tmp_path, capsys, monkeypatch):
    """A CLI run whose resumable state is kept, then made to look interrupted (no run.json)."""
    out = tmp_path / "run"
    monkeypatch.setattr(orchestrate, "remove_checkpoint", lambda out: None)
    args = ["dissect", "--out", str(out), "--max-images", "4", *FAST]
    _ok(args, capsys)
    for name in ("run.json", "units.csv", "summary.csv", "labels.csv"):
        (out / name).unlink()
    return out, args


def test_item7_garbage_progress_and_truncated_state_name_the_file(tmp_path, capsys, monkeypatch):
    out, args = _interrupted_run(tmp_path, capsys, monkeypatch)
    (state,) = out.glob("state-*.npz")
    good = (out / "progress.json").read_text()
    (out / "progress.json").write_text("{not json")
    _error([*args, "--resume"], capsys, "progress.json", "--overwrite")
    (out / "progress.json").write_text(good)
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 3])
    _error([*args, "--resume"], capsys, state.name, "truncated")
    assert state.exists() and (out / "progress.json").exists()  # nothing deleted by the failed resume


# ----------------------------------------------------------------------------- 8. CLI words, flags named
def test_item8_library_words_become_cli_words():
    assert cli.cli_words("list them with model.named_modules())") == "list the aliases with `python cli.py layers`)"
    assert cli.cli_words("pass its unpacked folder to OSIEDataset(root)") == "pass its unpacked folder to --data-root"
    assert (cli.cli_words("fit class weights first with fit_cam_regression(model, images, layer) and pass "
                          "cam_weights=... (CLI: --cam-fit-images N)") == "fit class weights first with --cam-fit-images N")
    assert cli.cli_words("use regions='clusters' (CLI: --regions clusters)") == "use --regions clusters"
    assert cli.cli_words("Weights only load failed.\nline 2\nline 3") == "Weights only load failed."


@pytest.mark.parametrize("flags, needles", [
    (["--image-size", "0"], ["--image-size 0", "at least"]),
    (["--image-size", "8"], ["--image-size 8", "at least"]),
    (["--image-size", "20", "--model", "alexnet", "--layer", "conv5"], ["--image-size 20", "too small for alexnet"]),
    (["--seed", str(2**40)], ["--seed", "0 to 4294967295"]),
    (["--layer", "classifier.6"], ["--layer classifier.6", "no spatial maps", "cli.py layers"]),
    (["--top-k", "0"], ["--top-k 0"]),
])
def test_item8_flag_errors_name_the_flag(tmp_path, capsys, flags, needles):
    _error(["dissect", "--out", str(tmp_path / "r"), *FAST, *flags], capsys, *needles)


def test_item8_garbage_weights_file_is_one_line_with_the_fix(tmp_path, capsys):
    bad = tmp_path / "w.pt"
    bad.write_bytes(b"this is not a torch file")
    line = _error(["dissect", "--out", str(tmp_path / "r"), *FAST, "--weights", str(bad)], capsys, "w.pt", "--weights")
    assert "weights_only" not in line


# ----------------------------------------------------------------------------- 9. resume checks
def test_item9_resume_flags_and_edited_progress(tmp_path, capsys, monkeypatch):
    _error(["dissect", "--out", str(tmp_path / "empty"), "--resume", *FAST], capsys, "--resume", "no interrupted")
    _error(["dissect", "--out", str(tmp_path / "x"), "--resume", "--overwrite", *FAST], capsys,
           "--resume and --overwrite")
    out, args = _interrupted_run(tmp_path, capsys, monkeypatch)
    progress = json.loads((out / "progress.json").read_text())
    (out / "progress.json").write_text(json.dumps({**progress, "next_index": 2}))
    _error([*args, "--resume"], capsys, "next_index=2", "state-0000004.npz")
    (out / "progress.json").write_text(json.dumps(progress))
    _ok([*args, "--resume"], capsys)  # the intact record resumes (and finishes) fine
    assert (out / "units.csv").exists()


# ----------------------------------------------------------------------------- 10. library argument checks
def test_item10_library_arguments_are_named():
    from dissect.studies.attention_gaze import run_attention_study
    from dissect.studies.dissection import run_dissection
    from dissect.models.hooks import ActivationRecorder

    model, data = Tiny(), ListDataset(_samples())
    with pytest.raises(TypeError, match="layers must be a layer name"):
        ActivationRecorder(model, 5)
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        run_dissection(model, "conv1_1", data, batch_size=2.5, progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            run_dissection(model, "conv1_1", data, device="cuda", progress=False)
    with pytest.raises(ValueError, match="seed must be an integer in 0"):
        run_attention_study(model, data, "activation", seed=-1, progress=False)


def test_item10_preprocess_converts_grey_rgba_and_float_and_says_so():
    from dissect.models.inputs import preprocess

    rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, np.full((8, 8), 7, np.uint8)])
    grey = rgb[:, :, 0]
    with pytest.warns(UserWarning, match="converted 3 image"):
        batch = preprocess([rgba, grey, rgb / 255.0, rgb], 8)
    ref = preprocess([rgb, np.dstack([grey] * 3)], 8)
    assert torch.equal(batch[0], ref[0]) and torch.equal(batch[1], ref[1]) and torch.allclose(batch[2], ref[0])
    with pytest.raises(ValueError, match="image 0: a float image must hold values in"):
        preprocess([rgb * 2.0], 8)


# ----------------------------------------------------------------------------- 12. the quick start leads on
def test_item12_dissect_prints_the_next_command(made):
    assert f"next: python cli.py stats {made.root / 'd'}" in made.out["d"]


# ----------------------------------------------------------------------------- 13. attention report
def test_item13_attention_names_layer_shows_kl_sim_and_scores_overlays(made):
    out, stdout, drawn = made.root / "a", made.out["a"], made.drawn
    header = stdout.splitlines()[1]
    assert "kl_mean" in header and "sim_mean" in header and "RANDOM WEIGHTS" in stdout
    per_image = pd.read_csv(out / "per_image.csv", keep_default_na=False)
    assert set(per_image.loc[per_image.method == "gradcam", "layer"]) == {"conv5_3"}
    assert json.loads((out / "run.json").read_text())["layers"] == {"gradcam": ["conv5_3"]}
    assert {"model", "weights", "weights_detail"} <= set(per_image.columns)
    assert {"model", "weights"} <= set(pd.read_csv(out / "summary.csv").columns)
    rows = [t.rsplit("_", 1)[0] for t in drawn["titles"]]
    assert len(set(rows)) == len(rows) == 3  # three different categories
    assert all(text.startswith("NSS ") for text in drawn["labels"]["gradcam"])
    assert "RANDOM weights" in drawn["subtitle"]


def test_item13_best_unit_tiles_say_which_score(tmp_path, monkeypatch):
    from dissect.studies import run_statistics as stats_report
    from dissect.reports import figures

    seen = {}
    monkeypatch.setattr(figures, "unit_overlays", lambda *a, **k: seen.update(titles=a[3], **k))
    sample = _samples(1)[0]
    units = pd.DataFrame({"layer": "conv1_1", "unit": [0, 1], "category": "a", "score": [2.0, 1.0],
                          "n_regions": 1, "dead": False, "n_valid": 1})
    stats_report.best_unit_overlays(Tiny(), sample, 0, units, "conv1_1", tmp_path / "o.png", image_size=12)
    assert seen["titles"][0] == "conv1_1 #0: a mean 2.00" and "not this image" in seen["subtitle"]


# ----------------------------------------------------------------------------- 14. stats warning, help, run.json
def test_item14_every_option_has_help():
    parser = cli.build_parser()
    missing = []

    def walk(p, where):
        for action in p._actions:
            if isinstance(action, type(parser._subparsers._group_actions[0])):
                for name, sub in action.choices.items():
                    walk(sub, f"{where} {name}")
            elif action.dest != "help" and not action.help:
                missing.append(f"{where} {action.option_strings or action.dest}")

    walk(parser, "cli.py")
    assert missing == []


def test_item14_scipy_integration_warning_is_explained():
    import scipy.integrate

    from dissect.studies.run_statistics import _explained_scipy_warnings

    with pytest.warns(UserWarning, match="conv5_3: scipy could not fully converge 1 p-value"):
        with _explained_scipy_warnings("conv5_3"):
            warnings.warn("The integral is probably divergent, or slowly convergent.",
                          scipy.integrate.IntegrationWarning)
    assert "approximate" in cli._one_line_warning("The integral is probably divergent", UserWarning, "", 0)


def test_item14_one_run_json_schema(made):
    for name, command in (("d", "dissect"), ("r", "robustness"), ("a", "attention")):
        record = json.loads((made.root / name / "run.json").read_text())
        assert record["command"] == command
        assert {"config", "model", "versions", "started", "dataset"} <= set(record) and "args" not in record
        assert record["config"]["image_size"] == 32
    assert pd.read_csv(made.root / "r" / "robustness.csv")["weights"].tolist() == ["random"]


# ----------------------------------------------------------------------------- 15. Hugging Face datasets
def test_item15_hugging_face_datasets_clash_is_detected(monkeypatch, capsys):
    from importlib import metadata

    import datasets

    assert datasets.huggingface_clash() is None  # not installed here
    monkeypatch.setattr(metadata, "distribution", lambda name: types.SimpleNamespace(version="3.0.0", metadata={}))
    line = datasets.huggingface_clash()
    assert "Hugging Face datasets 3.0.0" in line and "virtual environment" in line
    fake = types.ModuleType("datasets")
    fake.__file__ = "/site-packages/datasets/__init__.py"
    monkeypatch.setitem(sys.modules, "datasets", fake)
    _error(["layers"], capsys, "Hugging Face", "virtual environment")
