"""`cli.py stats`, `attention`, `robustness`, and the simulated-gaze dataset they can run on offline."""
import json

import numpy as np
import pandas as pd
import pytest

import cli
from datasets import load_dataset
from datasets.fixations import fixation_map
from datasets.simulated_gaze import SimulatedGazeDataset
from probes import stats

FAST = ["--weights", "random", "--image-size", "32", "--no-progress"]


def _ok(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def _error_line(argv, capsys):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def gaze_run(tmp_path_factory):
    """A region-NSS dissection on 16 simulated-gaze pop-out arrays (2 per dimension)."""
    out = tmp_path_factory.mktemp("gaze-run")
    assert cli.main(["dissect", "--dataset", "popout-gaze", "--layer", "conv5_3", "--layer", "conv4_3",
                     "--out", str(out), "--max-images", "16", *FAST]) == 0
    return out


def test_simulated_gaze_is_seeded_and_consistent():
    data = SimulatedGazeDataset(n_per_dimension=1, seed=3)
    a, b = data[2], SimulatedGazeDataset(n_per_dimension=1, seed=3)[2]
    pd.testing.assert_frame_equal(a.fixations, b.fixations)
    assert np.array_equal(a.fixation_map, fixation_map(a.fixations.x, a.fixations.y, a.shape))
    assert a.fixations.subject.nunique() == 15 and a.meta["simulated_gaze"]
    near = SimulatedGazeDataset(n_per_dimension=1, p_target=1.0, target_spread=1.0)[0]
    rows, cols = np.nonzero(near.masks[0])
    # every fixation within 6 sd of the target's pixels (x, y are 1-based)
    assert near.fixations.x.between(cols.min() + 1 - 6, cols.max() + 1 + 6).all()
    assert near.fixations.y.between(rows.min() + 1 - 6, rows.max() + 1 + 6).all()
    with pytest.raises(ValueError, match="p_target"):
        SimulatedGazeDataset(p_target=1.5)[0]
    with pytest.raises(ValueError, match="drop --data-root"):
        load_dataset("popout-gaze", ".")


def test_region_nss_run_on_simulated_gaze(gaze_run):
    info = json.loads((gaze_run / "run.json").read_text())
    assert info["metric"] == "region_nss" and info["n_images"] == 16
    # The target region is scored where at least one simulated fixation hits it.
    assert info["n_regions_scored"] + info["n_regions_unfixated"] == 16


def test_stats_writes_tables_and_figures(gaze_run, tmp_path, capsys):
    out = tmp_path / "stats"
    _ok(["stats", str(gaze_run), str(gaze_run), "--out", str(out)], capsys)
    units, _, _ = stats.load_run(gaze_run)
    anova = pd.read_csv(out / "anova.csv")
    direct = stats.anova_by_category(units, "conv5_3")
    assert anova.loc[anova.layer == "conv5_3", "F"].iloc[0] == pytest.approx(direct["F"].iloc[0], rel=1e-12)
    assert (out / "tukey.csv").exists() and (out / "summary_top_k_mean.png").exists()
    assert (out / "bars_conv4_3.png").exists()
    assert list(out.glob("overlays_*.png"))
    compare = pd.read_csv(out / "compare.csv")
    # a run compared with itself: no change (NaN for dimensions without regions in 16 images)
    changes = compare["top_k_mean_change"].dropna()
    assert len(changes) > 0 and (changes.abs() < 1e-12).all()


def test_stats_output_saliency_from_map_files(gaze_run, tmp_path, capsys):
    maps = tmp_path / "maps"
    maps.mkdir()
    from datasets.base import first

    for sample in first(SimulatedGazeDataset(), 16):  # the 16 images --max-images 16 took (interleaved)
        # A "model" whose output is the human density map itself: OD must be 0.
        from datasets.fixations import density_map

        np.save(maps / f"{sample.image_id}.npy", density_map(sample.fixation_map, 24.0))
    out = tmp_path / "stats"
    _ok(["stats", str(gaze_run), "--maps", str(maps), "--out", str(out), "--no-overlays"], capsys)
    os_table = pd.read_csv(out / "output_saliency.csv")
    assert np.allclose(os_table["OD"], 0.0, atol=1e-12)
    assert (os_table["OS"] > 0).all()
    assert set(pd.read_csv(out / "spearman.csv")["layer"]) == {"conv5_3", "conv4_3"}


def test_stats_bad_run_dir(tmp_path, capsys):
    assert "does not exist" in _error_line(["stats", str(tmp_path / "none")], capsys)


def test_attention_cli_writes_report(tmp_path, capsys):
    out = tmp_path / "att"
    stdout = _ok(["attention", "--method", "gradcam", "--method", "dense", "--max-images", "2",
                  "--out", str(out), *FAST], capsys)
    per_image = pd.read_csv(out / "per_image.csv", keep_default_na=False, na_values=[""])
    assert {"gradcam", "dense", "center_bias", "human_loso"} <= set(per_image["method"])
    assert {"image", "method", "layer", "mae", "nss", "cc", "kl", "sim", "auc_judd", "sauc", "ig"} <= set(
        per_image.columns)
    assert (out / "summary.csv").exists() and (out / "overlays.png").exists() and (out / "dense_mae.png").exists()
    assert "human_loso" in stdout


def test_attention_cli_bad_inputs(tmp_path, capsys):
    line = _error_line(["attention", "--method", "saliencynet", "--max-images", "1", "--out", str(tmp_path / "a"),
                        *FAST], capsys)
    assert "saliencynet" in line and "gradcam" in line
    line = _error_line(["attention", "--dataset", "popout", "--max-images", "1", "--out", str(tmp_path / "b"),
                        *FAST], capsys)
    assert "fixations" in line


def test_robustness_cli(tmp_path, capsys):
    line = _error_line(["robustness", "--epsilon", "2", "--out", str(tmp_path / "r"), *FAST], capsys)
    assert "epsilon" in line and "[0, 1]" in line
    _ok(["robustness", "--model", "alexnet", "--epsilon", "0", "--out", str(tmp_path / "r"), *FAST,
         "--image-size", "64"], capsys)
    table = pd.read_csv(tmp_path / "r" / "robustness.csv")
    assert table["fooling_rate"].tolist() == [0.0] and table["n_images"].tolist() == [80]
