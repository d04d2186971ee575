"""The dissection engine against a literal, upsample-everything computation; shards; resume."""
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from datasets.base import ListDataset, Sample
from dissect.models.inputs import preprocess
from dissect.studies.dissection import run_dissection
from dissect.models.hooks import ActivationRecorder
from tests.helpers import TinyNet


def _sample(rng, idx, h, w, n_regions, with_fix=True, empty_region=False):
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    masks = np.zeros((n_regions, h, w), dtype=bool)
    for r in range(n_regions):
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        masks[r, y0:y0 + h // 3, x0:x0 + w // 3] = True
    if empty_region:
        masks[-1] = False
    cats = [["face", "text", "car"][r % 3] for r in range(n_regions)]
    fix = None
    if with_fix:
        fix = rng.random((h, w)) < 0.08
    return Sample(image_id=f"img{idx}", image=image, masks=masks, categories=cats, fixation_map=fix)


@pytest.fixture
def dataset(rng):
    # Different image sizes in one dataset must simply work.
    sizes = [(30, 40), (36, 36), (30, 40), (24, 50), (40, 30), (30, 40), (33, 41)]
    return ListDataset([_sample(rng, i, h, w, 3, empty_region=(i == 2)) for i, (h, w) in enumerate(sizes)],
                       name="toy")


def _naive_units(model, layers, dataset, image_size, use_fix=True):
    """Literal He et al. eq. 1 / eq. 4: upsample every map, z-score, average, then per category."""
    rows = {}
    for sample in dataset:
        x = preprocess([sample.image], image_size)
        with ActivationRecorder(model, layers) as rec:
            with torch.inference_mode():
                model(x)
        h, w = sample.shape
        for name in layers:
            acts = rec.activations[name][0].double()
            up = F.interpolate(acts[None], size=(h, w), mode="bilinear", align_corners=False)[0].numpy()
            for r, cat in enumerate(sample.categories):
                region = sample.masks[r] & (sample.fixation_map if use_fix else True)
                if not region.any():
                    continue
                for j in range(up.shape[0]):
                    m = up[j]
                    if m.max() == m.min():
                        continue
                    z = (m - m.mean()) / m.std()
                    rows.setdefault((name, j, cat), []).append(z[region].mean())
    return {k: float(np.mean(v)) for k, v in rows.items()}


def test_engine_equals_naive_region_nss(dataset):
    model = TinyNet().eval()
    layers = ["relu1", "relu2"]
    result = run_dissection(model, layers, dataset, image_size=32, batch_size=3, progress=False)
    naive = _naive_units(model, layers, dataset, 32)
    units = result.units
    assert set(units.columns) >= {"layer", "unit", "category", "score", "n_regions", "dead"}
    assert len(units) == (6 + 5) * 3
    live = units[~units["dead"]]
    assert len(live) == len(naive)
    worst = 0.0
    for row in live.itertuples():
        worst = max(worst, abs(row.score - naive[(row.layer, row.unit, row.category)]))
    # Both paths are float64 on the same float32 activations; 1e-5 is the promise, the
    # observed gap is rounding (~1e-12).
    assert worst < 1e-5
    dead = units[units["dead"]]
    assert set(dead["layer"]) == {"relu2"} and set(dead["unit"]) == {0}
    assert result.info["metric"] == "region_nss"
    assert result.info["n_regions_empty"] == 1
    assert result.info["n_images"] == len(dataset)


def test_engine_nmm_without_fixations(rng):
    data = ListDataset([_sample(rng, i, 32, 32, 2, with_fix=False) for i in range(4)], name="nofix")
    model = TinyNet().eval()
    result = run_dissection(model, "relu1", data, image_size=32, batch_size=2, progress=False)
    naive = _naive_units(model, ["relu1"], data, 32, use_fix=False)
    live = result.units[~result.units["dead"]]
    got = {(r.layer, r.unit, r.category): r.score for r in live.itertuples()}
    assert got.keys() == naive.keys()
    assert max(abs(got[k] - naive[k]) for k in got) < 1e-5
    assert result.info["metric"] == "nmm"


def test_summary_matches_units(dataset):
    model = TinyNet().eval()
    result = run_dissection(model, ["relu1", "relu2"], dataset, image_size=32, top_k=2, threshold=0.1,
                            progress=False)
    for row in result.summary.itertuples():
        sel = result.units[(result.units.layer == row.layer) & (result.units.category == row.category)]
        live = sel.loc[~sel.dead, "score"].sort_values(ascending=False)
        assert row.top_k_mean == pytest.approx(live.iloc[:2].mean(), abs=1e-12)
        assert row.count_above_threshold == int((live > 0.1).sum())
        assert row.n_units == len(sel) and row.n_dead == int(sel.dead.sum())


def test_shards_merge_exactly(dataset):
    model = TinyNet().eval()
    layers = ["relu1", "relu2"]
    # batch_size=1 everywhere: float32 convolutions may round differently with the batch's
    # composition, and this test is about the merge, which must then be bit-exact.
    # Two separate datasets are not shards of one (their null permutations and bootstrap image
    # indices differ): null and bootstrap off here; test_statistics.py merges real shards.
    off = {"null": 0, "bootstrap": 0}
    full = run_dissection(model, layers, dataset, image_size=32, batch_size=1, progress=False, **off)
    a = run_dissection(model, layers, ListDataset(dataset.samples[:3]), image_size=32, batch_size=1,
                       progress=False, **off)
    b = run_dissection(model, layers, ListDataset(dataset.samples[3:]), image_size=32, batch_size=1,
                       progress=False, **off)
    for first, second in ((a, b), (b, a)):
        merged = type(first.accumulator).from_state_dict(first.accumulator.state_dict())
        merged.merge(second.accumulator)
        got = merged.unit_table(dead_units="zero", min_valid=0.5).sort_values(["layer", "unit", "category"]).reset_index(drop=True)
        want = full.units.sort_values(["layer", "unit", "category"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want, check_exact=True)


class _InterruptOnForward:
    """A forward hook that raises KeyboardInterrupt (a Ctrl-C) on forward pass number ``at`` (1-based).

    With the permutation null on, the dataset is read once before the run, so the interrupt
    is placed on the model instead of on an image read.
    """

    def __init__(self, model, at):
        self.calls, self.at = 0, at
        self.handle = model.conv1.register_forward_hook(self)

    def __call__(self, *args):
        self.calls += 1
        if self.calls == self.at:
            self.handle.remove()
            raise KeyboardInterrupt


def test_resume_gives_identical_results(dataset, tmp_path):
    model = TinyNet().eval()
    layers = ["relu1", "relu2"]
    full = run_dissection(model, layers, dataset, image_size=32, batch_size=2, progress=False)
    assert full.info["null"] == 100 and full.info["bootstrap"] == 200  # the defaults: kill-and-resume with both
    _InterruptOnForward(model, 3)  # Ctrl-C during the forward of images 4-5
    with pytest.raises(KeyboardInterrupt):
        run_dissection(model, layers, dataset, image_size=32, batch_size=2, checkpoint_dir=tmp_path,
                       progress=False)
    resumed = run_dissection(model, layers, dataset, image_size=32, batch_size=2, checkpoint_dir=tmp_path,
                             resume=True, progress=False)
    assert resumed.info["resumed_from_image"] == 4  # the last complete batch boundary before image 5
    pd.testing.assert_frame_equal(resumed.labels, full.labels, check_exact=True)
    pd.testing.assert_frame_equal(resumed.units, full.units, check_exact=True)
    pd.testing.assert_frame_equal(resumed.summary, full.summary, check_exact=True)
    assert resumed.info["n_images"] == full.info["n_images"]
    assert resumed.info["n_regions_scored"] == full.info["n_regions_scored"]
    assert len(list(tmp_path.glob("state-*.npz"))) == 1  # older states are cleaned up


def test_resume_refuses_a_different_run(dataset, tmp_path):
    model = TinyNet().eval()
    run_dissection(model, "relu1", dataset, image_size=32, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="different run"):
        run_dissection(model, "relu2", dataset, image_size=32, checkpoint_dir=tmp_path, resume=True,
                       progress=False)


def test_bad_inputs(dataset, rng):
    model = TinyNet().eval()
    with pytest.raises(ValueError, match="no images"):
        run_dissection(model, "relu1", ListDataset([]), progress=False)
    with pytest.raises(ValueError, match="relu1"):  # the message lists the valid names
        run_dissection(model, "conv9_9", dataset, progress=False)
    mixed = ListDataset([_sample(rng, 0, 32, 32, 1), _sample(rng, 1, 32, 32, 1, with_fix=False)])
    with pytest.raises(ValueError, match="fixations"):
        run_dissection(model, "relu1", mixed, image_size=32, progress=False)


def test_model_state_is_restored(dataset):
    model = TinyNet().train()
    run_dissection(model, "relu1", dataset, image_size=32, progress=False)
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())


def test_forward_stops_after_the_deepest_recorded_layer(dataset):
    model = TinyNet().eval()
    calls = []
    model.conv2.register_forward_hook(lambda *args: calls.append("conv2"))
    run_dissection(model, "relu1", dataset, image_size=32, batch_size=4, progress=False)
    assert calls == []  # nothing after relu1 ran
    run_dissection(model, ["relu1", "relu2"], dataset, image_size=32, batch_size=4, progress=False)
    assert calls == ["conv2", "conv2"]  # two batches of 4 and 3 images


def test_interrupt_while_checkpointing_never_counts_a_batch_twice(dataset, tmp_path, monkeypatch):
    import dissect.runner.passes as engine

    model = TinyNet().eval()
    full = run_dissection(model, "relu2", dataset, image_size=32, batch_size=2, progress=False)
    real_save, calls = engine._save_progress, []

    def save_then_interrupt(*args):
        calls.append(1)
        if len(calls) == 2:  # Ctrl-C after the 2nd batch was merged, before it was saved
            raise KeyboardInterrupt
        real_save(*args)

    monkeypatch.setattr(engine, "_save_progress", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_dissection(model, "relu2", dataset, image_size=32, batch_size=2, checkpoint_dir=tmp_path,
                       progress=False, checkpoint_seconds=0)
    assert len(calls) == 3  # on the way out the interrupted save was done again (the 2nd batch counted once)
    monkeypatch.setattr(engine, "_save_progress", real_save)
    resumed = run_dissection(model, "relu2", dataset, image_size=32, batch_size=2, checkpoint_dir=tmp_path,
                             resume=True, progress=False)
    assert resumed.info["resumed_from_image"] == 4
    assert resumed.info["n_images"] == len(dataset)
    pd.testing.assert_frame_equal(resumed.units, full.units, check_exact=True)


def test_summary_settings_are_checked_before_the_run(dataset):
    model = TinyNet().eval()
    for kwargs, match in (({"top_k": 0}, "top_k"), ({"threshold": float("nan")}, "threshold"),
                          ({"max_images": 0}, "max_images"), ({"dead_units": "drop"}, "dead_units")):
        with pytest.raises(ValueError, match=match):
            run_dissection(model, "relu1", dataset, progress=False, **kwargs)


def test_resume_fingerprint_identifies_models_outside_the_zoo(dataset, tmp_path):
    run_dissection(TinyNet().eval(), "relu1", dataset, image_size=32, checkpoint_dir=tmp_path, progress=False)
    other = TinyNet().eval()
    with torch.no_grad():
        other.conv1.bias.add_(1.0)  # same architecture, other weights
    with pytest.raises(ValueError, match="different run"):
        run_dissection(other, "relu1", dataset, image_size=32, checkpoint_dir=tmp_path, resume=True,
                       progress=False)


@pytest.mark.parametrize("seconds, fail_at, resumed_from", [(0, 4, 2), (3600, 6, 0)])
def test_a_batch_failing_half_way_leaves_the_checkpoint_at_the_last_save(dataset, tmp_path, monkeypatch, seconds,
                                                                         fail_at, resumed_from):
    """The scoring thread adds into the run's accumulator directly (no per-batch copy to merge):
    a batch that fails after some of its images were added must never reach the checkpoint.
    Saving after every batch (0 s), the state stays at the last whole batch; with a long
    interval nothing was saved, although two batches had been counted in."""
    import dissect.studies.dissection as engine

    model = TinyNet().eval()
    full = run_dissection(model, "relu2", dataset, image_size=32, batch_size=2, progress=False)
    calls = []

    class FailingScorer(engine.RegionScorer):
        def score(self, unit_maps):
            calls.append(1)
            if len(calls) == fail_at:  # the 2nd image of batch 2 (or 3), one layer: its 1st image is in
                raise RuntimeError("scoring failed")
            return super().score(unit_maps)

    monkeypatch.setattr(engine, "RegionScorer", FailingScorer)
    saved = _count_saves(monkeypatch)
    with pytest.raises(RuntimeError, match="scoring failed"):
        run_dissection(model, "relu2", dataset, image_size=32, batch_size=2, checkpoint_dir=tmp_path,
                       progress=False, checkpoint_seconds=seconds)
    assert saved == ([2] if seconds == 0 else [])
    monkeypatch.undo()
    resumed = run_dissection(model, "relu2", dataset, image_size=32, batch_size=2, checkpoint_dir=tmp_path,
                             resume=True, progress=False)
    assert resumed.info["resumed_from_image"] == resumed_from
    pd.testing.assert_frame_equal(resumed.units, full.units, check_exact=True)
    pd.testing.assert_frame_equal(resumed.summary, full.summary, check_exact=True)


def test_reused_activation_memory_gives_the_same_bits(dataset, monkeypatch):
    # The engine hands each scored batch's copies back for a later forward to copy into. Forced
    # on for these small maps (the default keeps only tensors of >= 32 MB), the tables must be
    # the same bits as with fresh copies: memory is reused only once its batch is scored.
    import dissect.studies.dissection as engine
    from dissect.models.hooks import CopyBuffers

    model = TinyNet().eval()
    layers = ["relu1", "relu2"]
    fresh = run_dissection(model, layers, dataset, image_size=32, batch_size=2, progress=False)
    lent = []

    class Eager(CopyBuffers):
        def __init__(self):
            super().__init__(min_bytes=0)
            lent.append(self)

        def take(self, name, like, device):
            out = super().take(name, like, device)
            self.n_reused = getattr(self, "n_reused", 0) + (out._base is not None)
            return out

    monkeypatch.setattr(engine, "CopyBuffers", Eager)
    reused = run_dissection(model, layers, dataset, image_size=32, batch_size=2, progress=False)
    assert lent and lent[0].n_reused >= 4  # 4 batches (2, 2, 2, 1 images): batches 3 and 4 reused memory
    pd.testing.assert_frame_equal(reused.units, fresh.units, check_exact=True)
    pd.testing.assert_frame_equal(reused.summary, fresh.summary, check_exact=True)


def test_first_batch_read_with_threads_is_the_serial_read(dataset):
    # The first batch is read with several threads (the model waits for it): the same records,
    # in image order, and the same network input as one thread reading it.
    from dissect.studies.image_regions import load_batch as _load_batch

    serial = _load_batch(dataset, 1, 7, 32, None, 24.0, threads=1)
    threaded = _load_batch(dataset, 1, 7, 32, None, 24.0, threads=3)
    assert [r.image_id for r in threaded[0]] == [f"img{i}" for i in range(1, 7)]
    assert [r.image_id for r in serial[0]] == [r.image_id for r in threaded[0]]
    for a, b in zip(serial[0], threaded[0]):
        assert a.categories == b.categories and np.array_equal(a.member, b.member)
        assert a.sets and all(np.array_equal(x, y) for sa, sb in zip(a.sets, b.sets) for x, y in zip(sa, sb))
    assert torch.equal(serial[1], threaded[1])

    class Broken(ListDataset):
        def __getitem__(self, index):
            if index == 3:
                raise ValueError("image 3 is damaged")
            return super().__getitem__(index)

    with pytest.raises(ValueError, match="image 3 is damaged"):
        _load_batch(Broken(list(dataset)), 0, 6, 32, None, None, threads=3)


def _count_saves(monkeypatch):
    import dissect.runner.passes as engine

    real, saved = engine._save_progress, []

    def counting(ckpt, acc, progress):
        saved.append(progress["next_index"])
        real(ckpt, acc, progress)

    monkeypatch.setattr(engine, "_save_progress", counting)
    return saved


def test_checkpoints_wait_for_the_interval_but_come_after_the_last_batch(dataset, tmp_path, monkeypatch):
    model = TinyNet().eval()
    full = run_dissection(model, "relu2", dataset, image_size=32, batch_size=2, progress=False)
    saved = _count_saves(monkeypatch)
    every = run_dissection(model, "relu2", dataset, image_size=32, batch_size=2, checkpoint_dir=tmp_path / "a",
                           progress=False, checkpoint_seconds=0)
    assert saved == [2, 4, 6, 7]  # after every batch
    saved.clear()
    rare = run_dissection(model, "relu2", dataset, image_size=32, batch_size=2, checkpoint_dir=tmp_path / "b",
                          progress=False, checkpoint_seconds=3600)
    assert saved == [7]  # only after the last batch
    for result in (every, rare):
        pd.testing.assert_frame_equal(result.units, full.units, check_exact=True)
    again = run_dissection(model, "relu2", dataset, image_size=32, batch_size=2, checkpoint_dir=tmp_path / "b",
                           resume=True, progress=False)
    assert again.info["resumed_from_image"] == 7
    for bad in (-1, float("nan"), "30", True):
        with pytest.raises(ValueError, match="checkpoint_seconds"):
            run_dissection(model, "relu2", dataset, checkpoint_seconds=bad, progress=False)


def test_ctrl_c_saves_every_batch_counted_in_although_the_interval_is_not_up(dataset, tmp_path, monkeypatch):
    model = TinyNet().eval()
    full = run_dissection(model, "relu2", dataset, image_size=32, batch_size=2, progress=False)
    forwards = []

    def interrupt_third(module, args):
        forwards.append(1)
        if len(forwards) == 3:  # Ctrl-C during the 3rd forward: batch 2 is being scored, 1 is counted in
            raise KeyboardInterrupt

    handle = model.conv1.register_forward_pre_hook(interrupt_third)
    saved = _count_saves(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_dissection(model, "relu2", dataset, image_size=32, batch_size=2, checkpoint_dir=tmp_path,
                       progress=False, checkpoint_seconds=3600)
    handle.remove()
    assert saved == [4]  # one save, on the way out: batch 1 and the batch that was being scored
    resumed = run_dissection(model, "relu2", dataset, image_size=32, batch_size=2, checkpoint_dir=tmp_path,
                             resume=True, progress=False)
    assert resumed.info["resumed_from_image"] == 4
    pd.testing.assert_frame_equal(resumed.units, full.units, check_exact=True)


def test_valid_regions_equal_their_definition(rng):
    # A region is scored when its mask covers something and (with fixations) a fixation falls in it.
    from dissect.studies.image_regions import valid_regions

    for with_fix in (True, False):
        s = _sample(rng, 0, 30, 40, 6, with_fix=with_fix, empty_region=True)
        s.masks[1] = False
        s.masks[2] = False
        s.masks[2, 0, 0] = True  # one pixel, unfixated
        if with_fix:
            s.fixation_map[0, 0] = False
        nonempty = s.masks.reshape(6, -1).any(axis=1)
        fixated = (s.masks & s.fixation_map).reshape(6, -1).any(axis=1) if with_fix else np.ones(6, bool)
        keep, n_empty, n_unfixated = valid_regions(s)
        assert list(keep) == list(np.flatnonzero(nonempty & fixated))
        assert (n_empty, n_unfixated) == (int((~nonempty).sum()), int((nonempty & ~fixated).sum()))
        assert n_empty >= 2 and (n_unfixated >= 1 or not with_fix)
    empty = _sample(rng, 1, 30, 40, 0)
    assert [len(x) if hasattr(x, "__len__") else x for x in valid_regions(empty)] == [0, 0, 0]
