"""The pass core (dissect.runner) through a toy study that writes no checkpoint, shard or merge code.

The toy: the mean activation of every unit of one layer over a dataset, ~30 lines. It must resume
after a real ``kill -9`` and merge shards byte-identically with only what ``dissect.runner`` gives.
"""
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from dissect.models.hooks import ActivationRecorder
from dissect.runner import RecordState, Study, merge_folders, merge_passes, register, run_pass
from dissect.runner.npz import read_arrays, write_arrays

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the toy study (~30 lines)


@register
class MeanActivation(Study):
    """Mean activation of each unit of ``layer`` over ``images`` (N x 3 x S x S)."""

    kind, desc = "toy-mean-activation", "mean activation"

    def __init__(self, model, layer, images, batch_size=3, delay=0.0):
        self.model, self.layer, self.images, self.batch_size, self.delay = model, layer, images, batch_size, delay
        self.n_items = len(images)

    def fingerprint(self):
        return {"layer": self.layer, "images": float(self.images.sum())}

    def info(self):
        return {"layer": self.layer, "n_images": self.n_items}

    def load(self, items, first=False):
        return list(items), self.images[items.start:items.stop]

    def forward(self, batch):
        time.sleep(self.delay)
        with ActivationRecorder(self.model, [self.layer]) as rec, torch.inference_mode():
            self.model(batch[1])
        return rec.activations[self.layer].mean(dim=(2, 3)).double().numpy()

    def score(self, state, batch, means):
        state.add_rows("units", [{"image": i, **{f"unit{j}": v for j, v in enumerate(row)}}
                                 for i, row in zip(batch[0], means)])

    @classmethod
    def finish(cls, state, info):
        return state.table("units").drop(columns="image").mean().rename("mean_activation")


# --------------------------------------------------------------------------- fixtures


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 5, 3), nn.ReLU(inplace=True)).eval()


def _images(n=11) -> torch.Tensor:
    return torch.rand(n, 3, 12, 12, generator=torch.Generator().manual_seed(1))


def _toy(**kwargs) -> MeanActivation:
    return MeanActivation(_net(), "3", _images(), **kwargs)


def _bytes(series: pd.Series) -> bytes:
    return series.to_csv().encode()


# --------------------------------------------------------------------------- tests


def test_toy_study_is_the_naive_mean():
    done = run_pass(_toy(), progress=False)
    got = MeanActivation.finish(done.state, done.info)
    with torch.inference_mode():
        acts = _net()[:4](_images())
    want = acts.mean(dim=(2, 3)).double().numpy().mean(axis=0)  # every image at once, no batches
    np.testing.assert_allclose(got.to_numpy(), want, rtol=1e-6)  # float32 convolutions in other batches
    assert done.info["n_images"] == 11 and done.info["resumed_from_image"] == 0


def test_toy_shards_merge_byte_identically_in_any_order(tmp_path):
    single = _bytes(MeanActivation.finish(*_pair(run_pass(_toy(), progress=False))))
    for i in range(4):  # 11 images in batches of 3: 4 batches, one per shard
        run_pass(_toy(), checkpoint_dir=tmp_path / f"s{i}", shard=(i, 4), progress=False)
    cls, merged = merge_folders([tmp_path / f"s{i}" for i in (2, 0, 3, 1)])
    assert cls is MeanActivation
    assert _bytes(cls.finish(merged.state, merged.info)) == single
    assert [p["images"] for p in merged.info["shards"]] == [[0, 3], [3, 6], [6, 9], [9, 11]]
    # in-memory passes merge too, and an empty shard (more shards than batches) is a part like any other
    parts = [run_pass(_toy(), shard=(i, 6), progress=False) for i in range(6)]
    assert _bytes(MeanActivation.finish(*_pair(merge_passes(parts[::-1])))) == single
    with pytest.raises(ValueError, match="missing shard"):
        merge_passes([run_pass(_toy(), shard=(0, 2), progress=False)])
    with pytest.raises(ValueError, match="different runs.*layer"):
        merge_passes([run_pass(_toy(), shard=(0, 2), progress=False),
                      run_pass(MeanActivation(_net(), "1", _images()), shard=(1, 2), progress=False)])


def _pair(done):
    return done.state, done.info


_CHILD = textwrap.dedent("""
    import sys
    from tests.test_runner_core import _toy
    from dissect.runner import run_pass
    run_pass(_toy(delay=0.3), checkpoint_dir=sys.argv[1], checkpoint_seconds=0, progress=False)
""")


def test_toy_resumes_after_kill_9(tmp_path):
    single = _bytes(MeanActivation.finish(*_pair(run_pass(_toy(), progress=False))))
    folder = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(folder)], cwd=ROOT)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and child.poll() is None:
            progress = folder / "progress.json"
            if progress.exists() and json.loads(progress.read_text())["next_index"] >= 6:
                child.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL, "the child finished before it could be killed"
    saved = json.loads((folder / "progress.json").read_text())["next_index"]
    assert 6 <= saved < 11
    resumed = run_pass(_toy(), checkpoint_dir=folder, resume=True, progress=False)
    assert resumed.info["resumed_from_image"] == saved
    assert _bytes(MeanActivation.finish(resumed.state, resumed.info)) == single


def test_interrupt_saves_finished_batches_and_resume_refuses_another_run(tmp_path):
    study = _toy()
    calls = []
    real = study.forward

    def stop_at_third(batch):
        calls.append(batch[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(batch)

    study.forward = stop_at_third
    with pytest.raises(KeyboardInterrupt):
        run_pass(study, checkpoint_dir=tmp_path, progress=False)
    assert json.loads((tmp_path / "progress.json").read_text())["next_index"] == 6  # batches 0 and 1
    with pytest.raises(ValueError, match="holds a different run"):
        run_pass(MeanActivation(_net(), "1", _images()), checkpoint_dir=tmp_path, resume=True, progress=False)
    done = run_pass(_toy(), checkpoint_dir=tmp_path, resume=True, progress=False)
    assert done.info["resumed_from_image"] == 6
    assert _bytes(MeanActivation.finish(done.state, done.info)) == \
        _bytes(MeanActivation.finish(*_pair(run_pass(_toy(), progress=False))))


def test_damaged_checkpoints_are_one_line_errors(tmp_path):
    run_pass(_toy(), checkpoint_dir=tmp_path, checkpoint_every=1, progress=False)
    record = json.loads((tmp_path / "progress.json").read_text())
    state = tmp_path / record["state_file"]
    state.write_bytes(state.read_bytes()[:40])  # truncated
    with pytest.raises(ValueError, match="truncated or damaged"):
        run_pass(_toy(), checkpoint_dir=tmp_path, resume=True, progress=False)
    (tmp_path / "progress.json").write_text(json.dumps({**record, "next_index": 3}))
    with pytest.raises(ValueError, match="edited or mixed up"):
        run_pass(_toy(), checkpoint_dir=tmp_path, resume=True, progress=False)


def test_a_run_folder_never_unpickles(tmp_path):
    # A pickled object planted as a state file is refused, never executed.
    class Boom:
        def __reduce__(self):
            return (Path.write_text, (tmp_path / "owned", "x"))

    np.savez(tmp_path / "evil.npz", a=np.array([Boom()], dtype=object))  # savez pickles objects
    with pytest.raises(ValueError, match="cannot read"):
        read_arrays(tmp_path / "evil.npz")
    with pytest.raises(ValueError, match="Python objects"):
        write_arrays(tmp_path / "x.npz", {"a": np.array([object()], dtype=object)})
    assert not (tmp_path / "owned").exists()


def test_record_state_merges_counts_notes_tables_and_arrays(tmp_path):
    a, b = RecordState(), RecordState()
    a.add_counts({"n": 2, "per": {"x": 1}})
    b.add_counts({"n": 3, "per": {"x": 2, "y": 1}})
    a.note("layers", [])
    b.note("layers", ["conv1"])
    a.add_rows("t", [{"image": "a", "v": 0.1}])
    b.add_rows("t", [{"image": "b", "v": np.nan}, {"image": "c", "v": 1 / 3}])
    b.arrays["example-1"] = np.arange(4.0)
    b.save(tmp_path / "state-0000003.npz")
    b2 = RecordState.load(tmp_path / "state-0000003.npz", b.meta())
    a.merge(b2)
    assert a.counts == {"n": 5, "per": {"x": 3, "y": 1}} and a.notes == {"layers": ["conv1"]}
    assert a.table("t")["image"].tolist() == ["a", "b", "c"]
    assert a.table("t")["v"].to_numpy()[2] == 1 / 3  # bit for bit through the file
    np.testing.assert_array_equal(a.arrays["example-1"], np.arange(4.0))
