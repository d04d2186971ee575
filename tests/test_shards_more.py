"""Shards, merge and Ray for `evaluate` and `study finetune`: the single run's bytes, and refusals."""
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

import cli
from dissect import classical
# the one-line error check, and the module-scoped local 2-CPU Ray cluster (one instance per module)
from tests.test_shards import _one_line_error, ray_cluster  # noqa: F401

# popout-gaze: generated arrays with simulated fixations and regions -> every evaluate table
EVAL = ["evaluate", "--dataset", "popout-gaze", "--model", "itti", "--model", "spectral_residual",
        "--model", "centre_bias", "--max-images", "7", "--no-progress"]
# Columns that time the run (two single runs differ there too); everything else must match byte for byte.
TIMING_COLUMNS = {"seconds", "seconds_mean"}
EXECUTION_KEYS = {"started", "seconds_per_image", "seconds_total", "shards", "ray"}


def _same_csv_text(single: Path, merged: Path) -> list[str]:
    """Every CSV of ``single`` equals ``merged``'s field by field as text (timing columns aside)."""
    names = sorted(p.name for p in single.glob("*.csv"))
    assert names
    for name in names:
        a, b = (pd.read_csv(d / name, dtype=str, keep_default_na=False) for d in (single, merged))
        assert list(a.columns) == list(b.columns), name
        keep = [c for c in a.columns if c not in TIMING_COLUMNS]
        assert a[keep].equals(b[keep]), name
    return names


def _same_run_json(single: Path, merged: Path) -> None:
    a, b = (json.loads((p / "run.json").read_text()) for p in (single, merged))
    for record in (a, b):
        for k in ("out", "checkpoint_every", "shard", "ray", "shards", "resume"):
            record["config"].pop(k, None)
    assert "shards" in b
    assert {k: v for k, v in a.items() if k not in EXECUTION_KEYS} == \
        {k: v for k, v in b.items() if k not in EXECUTION_KEYS}


@pytest.fixture(scope="module")
def evaluate_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    assert cli.main([*EVAL, "--out", str(root / "single")]) == 0
    for i in range(3):  # shard 1 in pieces of one image
        every = ["--checkpoint-every", "1"] if i == 1 else []
        assert cli.main([*EVAL, "--shard", f"{i}/3", *every, "--out", str(root / f"s{i}")]) == 0
    return root


@pytest.mark.usefixtures("no_figure_leak")
def test_evaluate_shards_merge_to_the_single_run(evaluate_runs, capsys):
    root = evaluate_runs
    assert cli.main(["merge", str(root / "merged"), *(str(root / f"s{i}") for i in (2, 0, 1))]) == 0
    names = _same_csv_text(root / "single", root / "merged")
    assert names == ["output_saliency.csv", "per_image.csv", "popout_dimensions.csv", "summary.csv"]
    # and the tables without timings are byte-identical files
    for name in ("output_saliency.csv", "popout_dimensions.csv"):
        assert (root / "merged" / name).read_bytes() == (root / "single" / name).read_bytes()
    assert (root / "merged" / "example_maps.png").read_bytes() == (root / "single" / "example_maps.png").read_bytes()
    _same_run_json(root / "single", root / "merged")
    per_image = pd.read_csv(root / "merged" / "per_image.csv")
    assert per_image["image"].nunique() == 7


def test_evaluate_shard_resumes_and_merge_refuses(evaluate_runs, tmp_path, capsys, monkeypatch):
    root = evaluate_runs
    shard = tmp_path / "s1"
    calls, real = [], classical.saliency_map

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # Ctrl-C at the shard's 2nd image (images 2 and 3, three models each)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(classical, "saliency_map", interrupted)
    assert cli.main([*EVAL, "--shard", "1/3", "--checkpoint-every", "1", "--out", str(shard)]) == 130
    monkeypatch.undo()
    assert json.loads((shard / "progress.json").read_text())["next_index"] == 3  # image 2 is kept
    code = cli.main(["merge", str(tmp_path / "m0"), str(root / "s0"), str(shard), str(root / "s2")])
    _one_line_error(code, capsys.readouterr().err, "--resume")
    assert cli.main([*EVAL, "--shard", "1/3", "--checkpoint-every", "1", "--resume", "--out", str(shard)]) == 0
    assert cli.main(["merge", str(tmp_path / "m"), str(root / "s0"), str(shard), str(root / "s2")]) == 0
    _same_csv_text(root / "single", tmp_path / "m")
    code = cli.main(["merge", str(tmp_path / "m2"), str(root / "s0"), str(root / "s2")])
    _one_line_error(code, capsys.readouterr().err, "missing shard(s) 1/3")
    assert cli.main([*EVAL, "--seed", "1", "--shard", "1/3", "--out", str(tmp_path / "other")]) == 0
    code = cli.main(["merge", str(tmp_path / "m3"), str(root / "s0"), str(tmp_path / "other"), str(root / "s2")])
    _one_line_error(code, capsys.readouterr().err, "different runs", "seed")


# --------------------------------------------------------------------------- Ray


@pytest.mark.usefixtures("no_figure_leak")
def test_ray_evaluate_gives_the_single_run(ray_cluster, evaluate_runs, tmp_path, capsys):
    out = tmp_path / "ray"
    code = cli.main([*EVAL, "--ray", "--shards", "2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    _same_csv_text(evaluate_runs / "single", out)
    _same_run_json(evaluate_runs / "single", out)
    run = json.loads((out / "run.json").read_text())
    assert [t["shard"] for t in run["ray"]["tasks"]] == [0, 1]
    assert run["ray"]["cluster_resources"]["CPU"] == 2.0
    code = cli.main([*EVAL, "--ray", "--shards", "2", "--out", str(out)])
    _one_line_error(code, capsys.readouterr().err, "--overwrite")  # a finished merged run is kept


def test_evaluate_resume_needs_a_shard(tmp_path, capsys):
    code = cli.main([*EVAL, "--resume", "--out", str(tmp_path / "r")])
    _one_line_error(code, capsys.readouterr().err, "--resume", "--shard")


def _study_args(root, out):
    return ["study", "finetune", "--finetune", "0,1", "--train-dataset", "folder", "--train-root", str(root),
            "--val-ids", str(root / "val.txt"), "--dissect-dataset", "folder", "--dissect-root", str(root),
            "--encoder-weights", "random", "--steps", "2", "--eval-every", "2", "--batch-size", "2",
            "--image-size", "32", "--popout-n", "1", "--out", str(out), "--no-progress"]


@pytest.mark.usefixtures("no_figure_leak")
def test_ray_study_gives_the_sequential_tables(ray_cluster, tmp_path, capsys):
    import torch

    from tests.test_training_study import folder_with_regions

    root = folder_with_regions(tmp_path / "data")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a one-CPU Ray worker runs (training rounds by thread count)
    try:
        assert cli.main(_study_args(root, tmp_path / "seq")) == 0
    finally:
        torch.set_num_threads(threads)
    code = cli.main([*_study_args(root, tmp_path / "ray"), "--ray"])
    assert code == 0, capsys.readouterr().err
    seq, ray = tmp_path / "seq", tmp_path / "ray"
    names = sorted(p.name for p in seq.glob("*.csv"))
    assert {"table3.csv", "popout_nmm.csv", "output_nmm.csv", "spearman.csv"} <= set(names)

    def same(path):
        """Byte for byte, but for the weights column's checkpoint file (``<out>/K1/train/best.pt sha256:...``):
        its path, and its digest (the file records its folder and training time; the weights are equal below)."""
        digest = re.compile(rb"sha256:[0-9a-f]+")
        a = digest.sub(b"sha256:", (seq / path).read_bytes().replace(bytes(seq), bytes(ray)))
        assert digest.sub(b"sha256:", (ray / path).read_bytes()) == a, path

    for name in names:
        same(name)
    for setup in ("pretrained", "K0", "K1"):
        same(Path(setup) / "dissect" / "units.csv")
    for setup in ("K0", "K1"):
        a, b = (torch.load(d / setup / "train" / "best.pt", weights_only=False)["state_dict"] for d in (seq, ray))
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    a, b = (json.loads((d / "study.json").read_text()) for d in (seq, ray))
    assert list(a["setups"]) == list(b["setups"]) == ["pretrained", "K0", "K1"]
    assert a["train_config"] == b["train_config"]
    run = json.loads((ray / "run.json").read_text())
    assert [t["setup"] for t in run["ray"]["tasks"]] == ["pretrained", "K0", "K1"]
    assert all(t["wall_s"] > 0 and t["attempt"] == 1 for t in run["ray"]["tasks"])
    assert run["ray"]["cluster_resources"]["CPU"] == 2.0


class _Planted:
    """A pickle that writes a file when it is loaded (what a crafted file in a shard folder could do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_files_planted_in_shard_folders_never_run_code(evaluate_runs, tmp_path, capsys):
    import pickle

    import numpy as np

    marker = tmp_path / "owned"
    folders = [tmp_path / f"s{i}" for i in range(3)]
    for i, folder in enumerate(folders):
        shutil.copytree(evaluate_runs / f"s{i}", folder)
        # what earlier versions unpickled from shard folders
        (folder / "examples-0000000-0000002.pkl").write_bytes(pickle.dumps(_Planted(marker)))
        (folder / "overlay_examples.pkl").write_bytes(pickle.dumps(_Planted(marker)))
    assert cli.main(["merge", str(tmp_path / "m"), *map(str, folders)]) == 0
    _same_csv_text(evaluate_runs / "single", tmp_path / "m")
    # a state file replaced by one holding a pickled object is refused, in one line, unread
    state = folders[1] / json.loads((folders[1] / "progress.json").read_text())["state_file"]
    np.savez(state, c0=np.array([_Planted(marker)], dtype=object))
    code = cli.main(["merge", str(tmp_path / "m2"), *map(str, folders)])
    _one_line_error(code, capsys.readouterr().err, "cannot read", state.name)
    assert not marker.exists()
