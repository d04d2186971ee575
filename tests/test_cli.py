"""The command line: the main job writes its three files; every bad input is one line, no traceback."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import cli
from dissect.commands import layers as layers_command
from dissect.commands.common import dataset_options, expand_layers

ROOT = Path(__file__).resolve().parents[1]
# Small and fast: random weights, 32 px network input, 3 pop-out arrays.
FAST = ["--weights", "random", "--image-size", "32", "--max-images", "3", "--batch-size", "2", "--no-progress"]


def _run(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(code, err, *needles):
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])


def test_dissect_writes_three_files(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = _run(["dissect", "--model", "vgg16", "--layer", "conv5_3", "--layer", "conv4_3",
                              "--out", str(out), *FAST], capsys)
    assert code == 0, err
    units = pd.read_csv(out / "units.csv")
    summary = pd.read_csv(out / "summary.csv")
    run = json.loads((out / "run.json").read_text())
    assert list(units.columns[:5]) == ["layer", "unit", "category", "score", "n_regions"]
    assert set(units["layer"]) == {"conv5_3", "conv4_3"}
    assert len(units) == 2 * 512 * units["category"].nunique()
    assert list(summary.columns[:7]) == ["layer", "category", "top_k_mean", "count_above_threshold", "n_units",
                                         "n_dead", "n_regions"]
    # issue 9: the null, the bootstrap intervals and the ceiling (NaN on pop-out: no subjects)
    scored = summary[summary["n_regions"] > 0]
    assert scored["null_top_k_mean"].notna().all() and scored["top_k_mean_lo"].notna().all()
    assert summary["human_region_nss"].isna().all()
    assert {"p_value", "q_value", "ranked"} <= set(units.columns)
    labels = pd.read_csv(out / "labels.csv")
    assert len(labels) == 2 * 512 and list(labels.columns[:3]) == ["layer", "unit", "best_category"]
    assert "(" in stdout and "permutation null" in stdout  # the null beside each top-k mean
    assert list(summary.columns[-3:]) == ["model", "weights", "weights_detail"]
    assert set(units["weights"]) == {"random"} and set(summary["model"]) == {"vgg16"}
    assert run["model"]["weights"] == "random"
    assert run["config"]["image_size"] == 32 and run["n_images"] == 3
    assert run["metric"] == "nmm"
    assert "torch" in run["versions"]
    assert "conv5_3" in stdout


def test_layer_range_and_resume_flag(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _run(["dissect", "--layers", "conv5_1:conv5_3", "--out", str(out), *FAST], capsys)
    assert code == 0, err
    first = pd.read_csv(out / "units.csv")
    assert list(dict.fromkeys(first["layer"])) == ["conv5_1", "conv5_2", "conv5_3"]
    code, _, err = _run(["dissect", "--layers", "conv5_1:conv5_3", "--out", str(out), *FAST], capsys)
    _assert_one_line_error(code, err, "finished", "--overwrite")
    code, _, err = _run(["dissect", "--layers", "conv5_1:conv5_3", "--out", str(out), "--resume", *FAST], capsys)
    assert code == 0, err
    pd.testing.assert_frame_equal(pd.read_csv(out / "units.csv"), first)


def test_unknown_layer_lists_valid_names(tmp_path, capsys):
    code, _, err = _run(["dissect", "--layer", "conv9_9", "--out", str(tmp_path / "r"), *FAST], capsys)
    _assert_one_line_error(code, err, "conv9_9", "conv5_3")


def test_unknown_model_lists_models(tmp_path, capsys):
    code, _, err = _run(["dissect", "--model", "vgg17", "--out", str(tmp_path / "r"), *FAST], capsys)
    _assert_one_line_error(code, err, "vgg17", "vgg16", "resnet50")


def test_missing_data_root(tmp_path, capsys):
    code, _, err = _run(["dissect", "--dataset", "folder", "--data-root", str(tmp_path / "nope"),
                         "--out", str(tmp_path / "r"), *FAST], capsys)
    _assert_one_line_error(code, err, "nope")


def test_missing_weights_file(tmp_path, capsys):
    args = ["dissect", "--out", str(tmp_path / "r"), *FAST, "--weights", str(tmp_path / "missing.pt")]
    code, _, err = _run(args, capsys)
    _assert_one_line_error(code, err, "missing.pt")


def test_weights_of_another_architecture(tmp_path, capsys):
    bad = tmp_path / "tiny.pt"
    torch.save(torch.nn.Conv2d(3, 4, 3).state_dict(), bad)
    args = ["dissect", "--out", str(tmp_path / "r"), *FAST, "--weights", str(bad)]
    code, _, err = _run(args, capsys)
    _assert_one_line_error(code, err, "vgg16")


def test_empty_dataset(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    code, _, err = _run(["dissect", "--dataset", "folder", "--data-root", str(root),
                         "--out", str(tmp_path / "r"), *FAST], capsys)
    _assert_one_line_error(code, err)


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = _run(["dissect", "--out", str(blocker / "run"), *FAST], capsys)
    _assert_one_line_error(code, err, "--out")


def test_popout_generate_and_read_back(tmp_path, capsys):
    out = tmp_path / "arrays"
    code, _, err = _run(["popout", "generate", "--out", str(out), "--n-per-dimension", "1"], capsys)
    assert code == 0, err
    assert (out / "metadata.csv").exists()
    code, _, err = _run(["dissect", "--dataset", "popout", "--data-root", str(out),
                         "--out", str(tmp_path / "r"), *FAST], capsys)
    assert code == 0, err


def test_script_entry_point_exit_status(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "dissect", "--model", "nope",
                           "--out", str(tmp_path / "r")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and "Traceback" not in proc.stderr


def test_dataset_flags_reach_the_loader_or_are_refused(tmp_path, capsys):
    assert dataset_options("salicon", "x", 0, split="val", regions=None) == {"split": "val"}
    assert dataset_options("popout", None, 7) == {"seed": 7}
    code, _, err = _run(["dissect", "--split", "val", "--out", str(tmp_path / "r"), *FAST], capsys)
    _assert_one_line_error(code, err, "--split", "salicon")


def test_download_salicon_says_where_to_get_it(tmp_path, capsys):
    code, _, err = _run(["download", "salicon", "--data-dir", str(tmp_path)], capsys)
    _assert_one_line_error(code, err, "SALICON")


def test_dead_units_zero_scores_constant_maps_as_zero(tmp_path, capsys):
    # Issue 9 made "zero" (He et al.'s code) the default; "skip" is the explicit choice now.
    out = tmp_path / "zero"
    code, _, err = _run(["dissect", "--layer", "conv5_3", "--out", str(out), "--null", "0", "--bootstrap", "0",
                         *FAST], capsys)
    assert code == 0, err
    skip_out = tmp_path / "skip"
    assert _run(["dissect", "--dead-units", "skip", "--layer", "conv5_3", "--out", str(skip_out), "--null", "0",
                 "--bootstrap", "0", *FAST], capsys)[0] == 0
    zero, skip = pd.read_csv(out / "units.csv"), pd.read_csv(skip_out / "units.csv")
    # only the dimensions that have regions among the first 3 arrays
    zero, skip = zero[zero["n_regions"] > 0], skip[skip["n_regions"] > 0]
    # n_valid (live regions) and dead (never live) do not depend on the policy, only the score does.
    pd.testing.assert_series_equal(zero["n_valid"], skip["n_valid"])
    pd.testing.assert_series_equal(zero["dead"], skip["dead"])
    full = skip["n_valid"] == skip["n_regions"]
    assert full.any() and (~full).any()
    pd.testing.assert_series_equal(zero.loc[full, "score"], skip.loc[full, "score"])
    partial = ~full & ~skip["dead"]
    expected = skip.loc[partial, "score"] * skip.loc[partial, "n_valid"] / skip.loc[partial, "n_regions"]
    assert np.allclose(zero.loc[partial, "score"], expected, atol=1e-9)
    # a unit dead on every region scores 0 under "zero" and nothing under "skip"
    assert (zero.loc[skip["dead"], "score"] == 0).all() and skip.loc[skip["dead"], "score"].isna().all()
    # "skip" ranks a unit only when live on at least half of the category's regions (--min-valid 0.5)
    assert (skip["ranked"] == (skip["n_valid"] >= 0.5 * skip["n_regions"]) & (skip["n_valid"] > 0)).all()
    assert zero["ranked"].all()
    assert json.loads((out / "run.json").read_text())["dead_units"] == "zero"


def test_layer_range_across_kinds_keeps_both_ends(tmp_path, capsys):
    from dissect.models import load_model

    model = load_model("vgg16", weights="random")
    assert expand_layers(model, ["conv5_2:pool5"]) == ["conv5_2", "conv5_3", "pool5"]
    assert expand_layers(model, ["conv4_3:conv5_1"]) == ["conv4_3", "conv5_1"]


def test_ctrl_c_outside_a_dissection_exits_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(layers_command, "run", interrupted)
    code, _, err = _run(["layers"], capsys)
    assert code == 130 and "Traceback" not in err


def test_dissect_a_fine_tuned_saliency_model(tmp_path, capsys):
    from dissect.models.heads import SaliencyVGG
    from dissect.models import save_checkpoint

    ckpt = save_checkpoint(SaliencyVGG(encoder_weights="random", seed=3), tmp_path / "finetuned.pt")
    out = tmp_path / "ft"
    code, _, err = _run(["dissect", "--model", "saliency_vgg16", "--layer", "conv5_3", "--out", str(out), *FAST,
                         "--weights", str(ckpt)], capsys)
    assert code == 0, err
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["arch"] == "saliency_vgg16" and run["model"]["weights"] == "file"


def test_malloc_arenas_are_limited_unless_the_user_chose(monkeypatch):
    import sys as _sys

    from dissect.commands.process import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False  # the user's setting stands
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert limit_malloc_arenas() is _sys.platform.startswith("linux")


def test_checkpoint_seconds_flag(tmp_path, capsys):
    code, _, err = _run(["dissect", "--layer", "conv5_3", "--out", str(tmp_path / "r"), "--checkpoint-seconds", "-1",
                         *FAST], capsys)
    _assert_one_line_error(code, err, "checkpoint_seconds", ">= 0")
    out = tmp_path / "ok"
    code, _, err = _run(["dissect", "--layer", "conv5_3", "--out", str(out), "--checkpoint-seconds", "0", *FAST],
                        capsys)
    assert code == 0, err
    assert json.loads((out / "run.json").read_text())["config"]["checkpoint_seconds"] == 0
