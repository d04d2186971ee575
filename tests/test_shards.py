"""Shards and their merge: byte for byte a single run (dissect, attention), and every refusal."""
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import cli
from datasets.base import ListDataset, Sample
from datasets.fixations import fixation_map
from dissect import shards
from dissect.runner.passes import SHARD_FILE
from dissect.runner import merge_folders, run_pass
from dissect.studies.attention_gaze import AttentionStudy, write_attention_report
from dissect.studies.dissection import run_dissection
from tests.helpers import TinyNet



def _if_supported(*flags):
    """``flags`` if ``dissect`` takes them (the permutation null and bootstrap of issue 9), else nothing."""
    import contextlib
    import io

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            cli.build_parser().parse_args(["dissect", *flags])
    except SystemExit:
        return []
    return list(flags)


# Shards must merge exactly with every accumulator state on, the null and the bootstrap included.
STATS = [*_if_supported("--null", "4"), *_if_supported("--bootstrap", "4")]
FAST = ["--model", "vgg16", "--weights", "random", "--image-size", "32", "--max-images", "7", "--batch-size", "2",
        "--layer", "conv1_2", "--layer", "conv2_1", "--no-progress", *STATS]
# Keys of run.json that describe how a run was executed, not what it computed.
EXECUTION_KEYS = {"timings_s", "started", "resumed_from_image", "shards", "ray", "seconds_per_image"}


def _one_line_error(code, err, *needles):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])


def _same_csv_files(single: Path, merged: Path) -> list[str]:
    """Every CSV of the single run is byte-identical in the merged folder; returns their names."""
    names = sorted(p.name for p in single.glob("*.csv"))
    assert names, single
    for name in names:
        assert (merged / name).read_bytes() == (single / name).read_bytes(), name
    return names


def _same_run_json(single: Path, merged: Path) -> None:
    a, b = (json.loads((p / "run.json").read_text()) for p in (single, merged))
    for record in (a, b):
        for key in ("config", "args"):
            if key in record:
                for k in ("out", "checkpoint_every", "shard", "ray", "shards"):
                    record[key].pop(k, None)
    assert "shards" in b
    assert {k: v for k, v in a.items() if k not in EXECUTION_KEYS} == \
        {k: v for k, v in b.items() if k not in EXECUTION_KEYS}


# --------------------------------------------------------------------------- the split


@pytest.mark.parametrize("n_images, batch_size, n_shards", [(7, 2, 3), (80, 8, 3), (5, 2, 4), (3, 4, 2), (64, 8, 8)])
def test_split_is_disjoint_covering_whole_batches_and_balanced(n_images, batch_size, n_shards):
    parts = [shards.shard_images(n_images, batch_size, (i, n_shards)) for i in range(n_shards)]
    assert [k for part in parts for k in part] == list(range(n_images))  # disjoint, in order, covering
    n_batches = [len(range(p.start, p.stop, batch_size)) for p in parts]
    assert max(n_batches) - min(n_batches) <= 1
    for part in parts:  # whole batches of the single run: each starts where a batch starts
        assert part.start % batch_size == 0 and (part.stop % batch_size == 0 or part.stop == n_images)
    assert parts == [shards.shard_images(n_images, batch_size, (i, n_shards)) for i in range(n_shards)]


def test_parse_shard():
    assert shards.parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "1", "a/3", "-1/3", "1/0"):
        with pytest.raises(ValueError, match="I/N|does not exist"):
            shards.parse_shard(bad)


# --------------------------------------------------------------------------- library


def _toy(n=12, seed=7):
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        h, w = (30, 40) if i % 3 else (36, 32)
        masks = np.zeros((3, h, w), bool)
        for r in range(3):
            y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
            masks[r, y:y + h // 3, x:x + w // 3] = True
        # the categories of the first images are not the first categories seen overall
        cats = ["face", "text", "car"] if i >= 4 else ["car", "car", "text"]
        samples.append(Sample(f"img{i}", rng.integers(0, 256, (h, w, 3), dtype=np.uint8), masks, cats,
                              fixation_map=rng.random((h, w)) < 0.1))
    return ListDataset(samples, name="toy")


def _dissect(dataset, **kw):
    import inspect

    for key in ("null", "bootstrap"):  # issue 9's accumulator state, where it exists
        if key in inspect.signature(run_dissection).parameters:
            kw.setdefault(key, 4)
    torch.manual_seed(0)
    return run_dissection(TinyNet().eval(), ["relu1", "relu2"], dataset, image_size=32, batch_size=2,
                          progress=False, **kw)


def _csv(result):
    return result.units.to_csv(index=False), result.summary.to_csv(index=False)


def test_run_dissection_shards_merge_to_the_single_run(tmp_path):
    dataset = _toy()
    single = _dissect(dataset)
    parts = [_dissect(dataset, shard=(i, 3), checkpoint_dir=tmp_path / f"s{i}") for i in range(3)]
    assert [p.info["shard"]["images"] for p in parts] == [[0, 4], [4, 8], [8, 12]]
    before = [_csv(p) for p in parts]
    merged = shards.merge_dissections([parts[2], parts[0], parts[1]])  # any order
    assert _csv(merged) == _csv(single)
    assert [_csv(p) for p in parts] == before  # the merge left its inputs alone
    assert merged.info["n_images"] == 12 and merged.info["n_regions_scored"] == single.info["n_regions_scored"]
    # the same from the checkpoint folders
    from_folders = shards.merge_dissections([tmp_path / "s1", tmp_path / "s2", tmp_path / "s0"])
    assert _csv(from_folders) == _csv(single)


def test_more_shards_than_batches_leaves_empty_shards_that_merge(tmp_path):
    dataset = _toy(7)  # 4 batches of 2 images, 6 shards: two of them empty
    parts = [_dissect(dataset, shard=(i, 6), checkpoint_dir=tmp_path / f"s{i}") for i in range(6)]
    assert sorted(p.info.get("n_images", 0) for p in parts) == [0, 0, 1, 2, 2, 2]
    assert _csv(shards.merge_dissections([tmp_path / f"s{i}" for i in range(6)])) == _csv(_dissect(dataset))


def test_merge_refuses_missing_overlapping_mismatched_and_unfinished(tmp_path):
    dataset = _toy()
    parts = [_dissect(dataset, shard=(i, 3), checkpoint_dir=tmp_path / f"s{i}") for i in range(3)]
    with pytest.raises(ValueError, match="missing shard.*1/3"):
        shards.merge_dissections([parts[0], parts[2]])
    with pytest.raises(ValueError, match="overlapping shards.*s1.*s1|overlapping shards.*both shard 1/3"):
        shards.merge_dissections([tmp_path / "s0", tmp_path / "s1", tmp_path / "s1", tmp_path / "s2"])
    other = _dissect(dataset, shard=(1, 3), dead_units="skip")
    with pytest.raises(ValueError, match="different runs: dead_units"):
        shards.merge_dissections([parts[0], other, parts[2]])
    with pytest.raises(ValueError, match="different runs: top_k"):
        shards.merge_dissections([parts[0], _dissect(dataset, shard=(1, 3), top_k=3), parts[2]])
    with pytest.raises(ValueError, match="shard of 3 but .* shard of 2"):
        shards.merge_dissections([parts[0], _dissect(dataset, shard=(1, 2))])
    with pytest.raises(ValueError, match="not a dissection shard"):
        shards.merge_dissections([_dissect(dataset)])
    (tmp_path / "s2" / SHARD_FILE).unlink()  # as if the shard had been interrupted
    with pytest.raises(ValueError, match="s2 is an unfinished shard.*--resume"):
        shards.merge_dissections([tmp_path / "s0", tmp_path / "s1", tmp_path / "s2"])


def test_an_interrupted_shard_resumes_and_still_merges_exactly(tmp_path, monkeypatch):
    dataset = _toy()
    # Ctrl-C during the shard's third forward pass (the null's region pass reads the images before
    # the run, so the interrupt comes from the model, not the dataset)
    calls, forward = [], TinyNet.forward

    def interrupted(self, x):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return forward(self, x)

    monkeypatch.setattr(TinyNet, "forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _dissect(dataset, shard=(1, 2), checkpoint_dir=tmp_path / "s1")
    monkeypatch.setattr(TinyNet, "forward", forward)
    resumed = _dissect(dataset, shard=(1, 2), checkpoint_dir=tmp_path / "s1", resume=True)
    assert 6 < resumed.info["resumed_from_image"] < 12
    merged = shards.merge_dissections([_dissect(dataset, shard=(0, 2)), resumed])
    assert _csv(merged) == _csv(_dissect(dataset))


# --------------------------------------------------------------------------- attention


class TinyCNN(nn.Module):
    dissect_alias_family = "vgg"

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                      nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def _gaze_toy(n=9):
    rng = np.random.default_rng(3)
    samples = []
    for i in range(n):
        h, w = (32, 40) if i % 2 else (36, 32)
        k = 0 if i == 4 else 12  # image 4 has no fixations: left out of the batches, as in a single run
        table = pd.DataFrame({"x": rng.uniform(1, w, k).round(1), "y": rng.uniform(1, h, k).round(1),
                              "subject": np.repeat([1, 2, 3], k // 3)})
        samples.append(Sample(f"{i:04d}", rng.integers(0, 256, (h, w, 3), dtype=np.uint8), np.zeros((0, h, w), bool),
                              [], fixation_map=fixation_map(table["x"], table["y"], (h, w)), fixations=table))
    return ListDataset(samples, name="gaze-toy")


@pytest.mark.usefixtures("no_figure_leak")
def test_attention_shards_merge_to_the_single_run(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model, dataset = TinyCNN().eval(), _gaze_toy()
    options = dict(image_size=32, batch_size=2, sigma=4.0, seed=1)
    methods = ["activation", "gradcam"]
    params = {"note": "x", "model": None, "dataset": "gaze-toy"}
    write_attention_report(model, dataset, methods, tmp_path / "single", params=params, progress=False, **options)
    folders = [tmp_path / f"a{i}" for i in range(3)]
    for i, folder in enumerate(folders[:2]):
        run_pass(AttentionStudy(model, dataset, methods, **options), checkpoint_dir=folder, shard=(i, 3),
                 checkpoint_every=1, progress=False)
    # shard 2 (batches 2 and 3 of the 8 images with fixations) is interrupted in batch 3: batch 2 is kept
    calls, forward = [], TinyCNN.forward

    def interrupted(self, x):
        calls.append(1)
        if len(calls) == 3:  # one forward per method and batch: the 3rd is batch 3's first
            raise KeyboardInterrupt
        return forward(self, x)

    monkeypatch.setattr(TinyCNN, "forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_pass(AttentionStudy(model, dataset, methods, **options), checkpoint_dir=folders[2], shard=(2, 3),
                 checkpoint_every=1, progress=False)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="unfinished shard"):
        merge_folders(folders)
    resumed = run_pass(AttentionStudy(model, dataset, methods, **options), checkpoint_dir=folders[2], shard=(2, 3),
                       resume=True, progress=False)
    assert resumed.info["resumed_from_image"] == 6
    cls, merged = merge_folders(folders[::-1])
    cls.write(cls.finish(merged.state, merged.info), tmp_path / "merged", params)
    _same_csv_files(tmp_path / "single", tmp_path / "merged")
    assert (tmp_path / "merged" / "overlays.png").read_bytes() == (tmp_path / "single" / "overlays.png").read_bytes()
    _same_run_json(tmp_path / "single", tmp_path / "merged")
    # shards of another run (another sigma) are refused, naming the option
    run_pass(AttentionStudy(model, dataset, methods, **{**options, "sigma": 5.0}), checkpoint_dir=tmp_path / "other",
             shard=(1, 3), progress=False)
    with pytest.raises(ValueError, match="different runs: .*sigma"):
        merge_folders([folders[0], tmp_path / "other", folders[2]])


# --------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def dissect_runs(tmp_path_factory):
    """A single CLI dissection and its three shards (VGG16, random weights, 32 px, 7 pop-out arrays)."""
    root = tmp_path_factory.mktemp("cli-shards")
    assert cli.main(["dissect", *FAST, "--out", str(root / "single")]) == 0
    for i in range(3):
        assert cli.main(["dissect", *FAST, "--shard", f"{i}/3", "--out", str(root / f"s{i}")]) == 0
    return root


def test_cli_dissect_shards_merge_byte_for_byte(dissect_runs, capsys):
    root = dissect_runs
    assert not (root / "s1" / "units.csv").exists()  # a shard folder holds state, not partial tables
    code = cli.main(["merge", str(root / "merged"), str(root / "s2"), str(root / "s0"), str(root / "s1")])
    assert code == 0, capsys.readouterr().err
    assert {"summary.csv", "units.csv"} <= set(_same_csv_files(root / "single", root / "merged"))
    _same_run_json(root / "single", root / "merged")
    run = json.loads((root / "merged" / "run.json").read_text())
    assert [s["images"] for s in run["shards"]] == [[0, 2], [2, 4], [4, 7]]


def test_cli_merge_refusals_are_one_line(dissect_runs, tmp_path, capsys):
    root = dissect_runs
    s0, s1, s2 = (str(root / f"s{i}") for i in range(3))
    code = cli.main(["merge", str(tmp_path / "m"), s0, s2])
    _one_line_error(code, capsys.readouterr().err, "missing shard(s) 1/3")
    code = cli.main(["merge", str(tmp_path / "m"), s0, s1, s1, s2])
    _one_line_error(code, capsys.readouterr().err, "overlapping shards", "s1")
    other = tmp_path / "other"
    assert cli.main(["dissect", *FAST, "--seed", "1", "--shard", "1/3", "--out", str(other)]) == 0
    code = cli.main(["merge", str(tmp_path / "m"), s0, str(other), s2])
    _one_line_error(code, capsys.readouterr().err, "different runs", "seed")
    code = cli.main(["merge", str(tmp_path / "m"), s0, str(root / "single"), s2])
    _one_line_error(code, capsys.readouterr().err, "not a shard folder")
    code = cli.main(["dissect", *FAST, "--shard", "3/3", "--out", str(tmp_path / "x")])
    _one_line_error(code, capsys.readouterr().err, "shards are numbered 0 .. n-1")


@pytest.mark.usefixtures("no_figure_leak")
def test_cli_attention_shard_and_merge(tmp_path, capsys):
    fast = ["attention", "--model", "vgg16", "--weights", "random", "--image-size", "32", "--max-images", "4",
            "--batch-size", "2", "--method", "activation", "--no-ceiling", "--no-progress"]
    assert cli.main([*fast, "--out", str(tmp_path / "single")]) == 0
    for i in range(2):
        assert cli.main([*fast, "--shard", f"{i}/2", "--out", str(tmp_path / f"a{i}")]) == 0
    assert cli.main(["merge", str(tmp_path / "merged"), str(tmp_path / "a1"), str(tmp_path / "a0")]) == 0
    _same_csv_files(tmp_path / "single", tmp_path / "merged")
    _same_run_json(tmp_path / "single", tmp_path / "merged")
    code = cli.main([*fast, "--shard", "0/2", "--out", str(tmp_path / "a0")])
    _one_line_error(code, capsys.readouterr().err, "--overwrite")  # a finished shard is kept like any finished run


# --------------------------------------------------------------------------- Ray


def test_missing_ray_names_the_extra(monkeypatch, tmp_path, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code = cli.main(["dissect", *FAST, "--ray", "--out", str(tmp_path / "r")])
    _one_line_error(code, capsys.readouterr().err, "pip install -e '.[ray]'")


@pytest.fixture(scope="module")
def ray_cluster():
    """One local 2-CPU Ray cluster for every Ray test of this module."""
    ray = pytest.importorskip("ray")
    from dissect.runner.ray_backend import _runtime_env

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=_runtime_env())
    yield ray
    ray.shutdown()


def test_ray_dissect_gives_the_single_run_bytes(ray_cluster, dissect_runs, tmp_path, capsys):
    out = tmp_path / "ray"
    code = cli.main(["dissect", *FAST, "--ray", "--shards", "2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    _same_csv_files(dissect_runs / "single", out)
    run = json.loads((out / "run.json").read_text())
    assert run["ray"]["cluster_resources"]["CPU"] == 2.0
    assert [t["shard"] for t in run["ray"]["tasks"]] == [0, 1]
    assert all(t["wall_s"] > 0 and t["attempt"] == 1 for t in run["ray"]["tasks"])
    assert run["config"]["ray"] == "local" and run["config"]["shards"] == 2


def _dies_once(model, kill_at, marker):
    """``model`` killing its process (as an out-of-memory killer would) in its ``kill_at``-th
    forward pass, the first time only (the null's region pass reads every image before the run,
    so the kill comes from the model)."""
    forward, calls, marker = model.forward, [], Path(marker)

    def dying(x):
        calls.append(1)
        if len(calls) == kill_at and not marker.exists():
            marker.write_text("died once")
            os._exit(1)
        return forward(x)

    model.forward = dying  # an instance attribute: the class, and so the run's fingerprint, stay
    return model


def _shard_that_dies_once(folder, shard, marker):
    import inspect

    torch.set_num_threads(1)
    kw = {key: 4 for key in ("null", "bootstrap") if key in inspect.signature(run_dissection).parameters}
    if "checkpoint_seconds" in inspect.signature(run_dissection).parameters:
        kw["checkpoint_seconds"] = 0  # a save after every batch: the kill then lands mid-shard
    torch.manual_seed(0)  # the same weights as _dissect's TinyNet
    model = TinyNet().eval()
    if shard[0] == 1:
        _dies_once(model, 3, marker)
    result = run_dissection(model, ["relu1", "relu2"], _toy(16), image_size=32, batch_size=2, progress=False,
                            shard=shard, checkpoint_dir=folder, resume=True, **kw)
    return result.info["resumed_from_image"]


def test_ray_retries_a_killed_shard_from_its_checkpoint(ray_cluster, tmp_path):
    from dissect.runner.ray_backend import run_tasks

    calls = [(_shard_that_dies_once, (str(tmp_path / f"s{i}"), (i, 2), str(tmp_path / "marker")),
              str(tmp_path / f"s{i}" / "attempts.log")) for i in range(2)]
    record = run_tasks(calls, progress=False)
    assert (tmp_path / "marker").exists()  # the kill did happen
    killed = record["tasks"][1]
    # retried, and resumed mid-shard (the kill comes with the shard's 3rd batch: 1 or 2 have landed)
    assert killed["attempt"] == 2 and 8 < killed["value"] < 16
    assert record["tasks"][0]["attempt"] == 1
    merged = shards.merge_dissections([tmp_path / "s0", tmp_path / "s1"])
    assert _csv(merged) == _csv(_dissect(_toy(16)))
