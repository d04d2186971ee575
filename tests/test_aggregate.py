"""UnitScoreAccumulator: hand-computed tables, exact shard merging, persistence, errors."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from probes.aggregate import UnitScoreAccumulator

NAN = np.nan
UNIT_COLUMNS = ["layer", "unit", "category", "score", "n_regions", "dead", "n_valid", "ranked", "p_value", "q_value"]
HE_COLUMNS = ["layer", "category", "top_k_mean", "count_above_threshold", "n_units", "n_dead", "n_regions"]
# Issue 9 appended the ranking, null, bootstrap and ceiling columns after He et al.'s ones.
SUMMARY_COLUMNS = HE_COLUMNS + ["n_ranked", "null_top_k_mean", "null_top_k_p95", "p_top_k", "count_significant",
                                "top_k_mean_lo", "top_k_mean_hi", "count_lo", "count_hi", "human_region_nss"]


def _hand_accumulator():
    acc = UnitScoreAccumulator(categories=["a", "b", "c"])
    # image 1: regions of categories a, b; unit 1 dead on the a-region, unit 2 dead throughout
    acc.add("L", np.array([[1.0, 2.0], [NAN, 4.0], [NAN, NAN]]), ["a", "b"])
    # image 2: one a-region
    acc.add("L", np.array([[3.0], [5.0], [NAN]]), ["a"])
    # a second layer: ties at the top, one unit exactly at the threshold
    acc.add("M", torch.tensor([[1.5], [1.5], [1.5], [0.5]], dtype=torch.float64), ["a"])
    return acc


def test_unit_table_by_hand():
    table = _hand_accumulator().unit_table()
    assert list(table.columns) == UNIT_COLUMNS
    layer_l = table[table.layer == "L"]
    assert list(layer_l.unit) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert list(layer_l.category) == ["a", "b", "c"] * 3
    # unit 0: a = (1 + 3) / 2, b = 2; unit 1: a = 5 (dead on image 1), b = 4; unit 2 never live.
    np.testing.assert_array_equal(layer_l.score, [2.0, 2.0, NAN, 5.0, 4.0, NAN, NAN, NAN, NAN])
    assert list(layer_l.n_valid) == [2, 1, 0, 1, 1, 0, 0, 0, 0]
    assert list(layer_l.n_regions) == [2, 1, 0] * 3
    assert list(layer_l.dead) == [False, False, True, False, False, True, True, True, True]
    assert list(table.layer.unique()) == ["L", "M"]


def test_summary_by_hand():
    summary = _hand_accumulator().summary(top_k=1, threshold=2.0)
    assert list(summary.columns) == SUMMARY_COLUMNS
    rows = summary[HE_COLUMNS].set_index(["layer", "category"])
    # L/a: live scores 2, 5 -> top-1 5; "> 2" is strict so only 5 counts; unit 2 is dead.
    assert rows.loc[("L", "a")].tolist() == [5.0, 1, 3, 1, 2]
    assert rows.loc[("L", "b")].tolist() == [4.0, 1, 3, 1, 1]
    c = rows.loc[("L", "c")]
    assert np.isnan(c.top_k_mean) and c.tolist()[1:] == [0, 3, 3, 0]
    # fewer live units than k: the mean of those that are live
    assert _hand_accumulator().summary(top_k=10).set_index(["layer", "category"]).loc[("L", "a"), "top_k_mean"] == 3.5
    # ties: the two best of 1.5, 1.5, 1.5, 0.5; threshold 1.5 is strict
    tied = _hand_accumulator().summary(top_k=2, threshold=1.5).set_index(["layer", "category"]).loc[("M", "a")]
    assert tied.top_k_mean == 1.5 and tied.count_above_threshold == 0 and tied.n_units == 4
    top3 = _hand_accumulator().summary(top_k=4, threshold=0.5).set_index(["layer", "category"]).loc[("M", "a")]
    assert top3.top_k_mean == (1.5 * 3 + 0.5) / 4 and top3.count_above_threshold == 3
    with pytest.raises(ValueError, match="top_k"):
        _hand_accumulator().summary(top_k=0)


def test_first_seen_order_and_empty():
    acc = UnitScoreAccumulator()
    assert acc.unit_table().empty and list(acc.unit_table().columns) == UNIT_COLUMNS
    assert acc.summary().empty
    acc.add("z", np.ones((2, 2)), ["text", "face"])
    acc.add("y", np.ones((1, 1)), ["dog"])
    acc.add("z", np.ones((2, 1)), ["dog"])
    assert acc.layers == ["z", "y"] and acc.categories == ["text", "face", "dog"]
    table = acc.unit_table()
    assert list(table.category[:3]) == ["text", "face", "dog"]
    assert list(table[table.layer == "y"].n_regions) == [0, 0, 1]
    acc.add("z", np.zeros((2, 0)), [])  # an image without regions changes nothing
    pd.testing.assert_frame_equal(acc.unit_table(), table)


def test_quantisation_is_below_tolerance():
    acc = UnitScoreAccumulator()
    values = [0.1, -1 / 3, np.pi, 1234.56789]
    for v in values:
        acc.add("L", np.array([[v]]), ["a"])
    assert abs(acc.unit_table().score[0] - np.mean(values)) <= 2.0 ** -33 + 1e-15


def _stream(rng, n_images=40):
    """Scores over many magnitudes (float sums would depend on order), with dead units."""
    layers = {"conv4_3": 6, "conv5_3": 5}
    cats = ["person head", "text", "object", "animal head"]
    records = []
    for _ in range(n_images):
        n_regions = int(rng.integers(0, 4))
        regions = list(rng.choice(cats, size=n_regions))
        for layer, n_units in layers.items():
            scores = rng.normal(size=(n_units, n_regions)) * 10.0 ** rng.uniform(-3, 2, size=(n_units, n_regions))
            scores[rng.random((n_units, n_regions)) < 0.2] = NAN
            scores[0] = NAN  # unit 0 always dead
            records.append((layer, scores, regions))
    return records, cats


def _accumulate(records, categories=None):
    acc = UnitScoreAccumulator(categories=categories)
    for layer, scores, regions in records:
        acc.add(layer, scores, regions)
    return acc


def _assert_same(t1, t2):
    assert np.array_equal(t1.score.to_numpy(), t2.score.to_numpy(), equal_nan=True)
    pd.testing.assert_frame_equal(t1, t2, check_exact=True)


def test_shard_merge_is_bit_identical(rng):
    records, cats = _stream(rng)
    single = _accumulate(records, cats)
    a, b, c = records[:30], records[30:50], records[50:]
    ab = _accumulate(a, cats).merge(_accumulate(b, cats)).merge(_accumulate(c, cats))
    cba = _accumulate(c, cats).merge(_accumulate(b, cats)).merge(_accumulate(a, cats))
    _assert_same(single.unit_table(), ab.unit_table())
    _assert_same(single.unit_table(), cba.unit_table())
    pd.testing.assert_frame_equal(single.summary(), cba.summary(), check_exact=True)
    # the table mean equals the float mean of the valid scores, to the fixed-point quantum
    layer, unit, cat = "conv5_3", 3, "text"
    values = [s[unit, i] for lay, s, regs in records if lay == layer for i, r in enumerate(regs) if r == cat]
    row = single.unit_table().query("layer == @layer and unit == @unit and category == @cat")
    assert abs(row.score.item() - np.nanmean(values)) < 1e-9
    assert row.n_valid.item() == np.count_nonzero(~np.isnan(values)) and row.n_regions.item() == len(values)


def test_merge_with_first_seen_categories(rng):
    records, _ = _stream(rng, n_images=20)
    single = _accumulate(records).unit_table()
    merged = _accumulate(records[20:]).merge(_accumulate(records[:20])).unit_table()
    key = ["layer", "unit", "category"]
    _assert_same(single.sort_values(key, ignore_index=True), merged.sort_values(key, ignore_index=True))
    acc = _accumulate(records[:4])
    doubled = _accumulate(records[:4] * 2).unit_table()
    _assert_same(acc.merge(acc).unit_table(), doubled)  # merging with itself doubles


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def test_save_load_round_trip(rng, tmp_path):
    records, cats = _stream(rng, n_images=10)
    acc = _accumulate(records, cats)
    path = tmp_path / "state.npz"
    assert acc.save(path) == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.npz"]  # no temporary left behind
    loaded = UnitScoreAccumulator.load(path)
    _assert_same(acc.unit_table(), loaded.unit_table())
    for x, y in zip(acc.state_dict()["sums"], loaded.state_dict()["sums"]):
        assert x.dtype == y.dtype == np.int64 and np.array_equal(x, y)
    with pytest.raises(ValueError, match="not among"):
        loaded.add("conv5_3", np.ones((5, 1)), ["plant"])  # fixed categories survive the trip
    state = json.loads(json.dumps({k: _jsonable(v) for k, v in acc.state_dict().items()}))
    _assert_same(acc.unit_table(), UnitScoreAccumulator.from_state_dict(state).unit_table())
    # resume: loaded state + the rest == a single pass
    more, _ = _stream(np.random.default_rng(7), n_images=5)
    _assert_same(_accumulate(records + more, cats).unit_table(),
                 UnitScoreAccumulator.load(path).merge(_accumulate(more, cats)).unit_table())


def test_save_is_atomic(rng, tmp_path, monkeypatch):
    path = tmp_path / "state.npz"
    acc = _accumulate(_stream(rng, n_images=3)[0])
    acc.save(path)
    before = path.read_bytes()

    def broken_savez(handle, **arrays):
        handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(KeyboardInterrupt):
        _accumulate(_stream(rng, n_images=5)[0]).save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.npz"]


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no accumulator state"):
        UnitScoreAccumulator.load(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        UnitScoreAccumulator.load(junk)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(2))
    with pytest.raises(ValueError, match="not an accumulator state"):
        UnitScoreAccumulator.load(other)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        UnitScoreAccumulator().save(tmp_path / "nowhere" / "state.npz")


def test_add_errors():
    acc = UnitScoreAccumulator(categories=["a"])
    acc.add("L", np.zeros((3, 1)), ["a"])
    with pytest.raises(ValueError, match="had 3 units"):
        acc.add("L", np.zeros((4, 1)), ["a"])
    with pytest.raises(ValueError, match="2 categories"):
        acc.add("L", np.zeros((3, 1)), ["a", "a"])
    with pytest.raises(ValueError, match="not among"):
        acc.add("L", np.zeros((3, 1)), ["b"])
    with pytest.raises(ValueError, match="C x R"):
        acc.add("L", np.zeros(3), ["a"])
    with pytest.raises(ValueError, match="inf"):
        acc.add("L", np.full((3, 1), np.inf), ["a"])
    with pytest.raises(ValueError, match="fixed-point range"):
        acc.add("L", np.full((3, 1), 2.0 ** 21), ["a"])
    with pytest.raises(ValueError, match="twice"):
        UnitScoreAccumulator(categories=["a", "a"])
    other = UnitScoreAccumulator()
    other.add("L", np.zeros((2, 1)), ["a"])
    with pytest.raises(ValueError, match="cannot merge layer"):
        acc.merge(other)
    stranger = UnitScoreAccumulator()
    stranger.add("L", np.zeros((3, 1)), ["zebra"])
    with pytest.raises(ValueError, match="cannot merge: categories"):
        acc.merge(stranger)
    # failed operations left the state untouched
    assert acc.unit_table().n_regions.tolist() == [1, 1, 1]


def _same_state(a, b):
    """state_dict equality, arrays compared exactly."""
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key])
        elif isinstance(a[key], list) and a[key] and isinstance(a[key][0], np.ndarray):
            assert len(a[key]) == len(b[key])
            for x, y in zip(a[key], b[key]):
                np.testing.assert_array_equal(x, y)
                assert x.dtype == y.dtype
        else:
            assert a[key] == b[key], key


def test_sum_overflow_through_add_raises_and_leaves_state():
    # 2**20 (the largest allowed score) is 2**52 in fixed point; 1023 adds make 2**62 - 2**52,
    # the 1024th would reach 2**62 = 2**30 score units: refused, not wrapped.
    acc = UnitScoreAccumulator()
    for _ in range(1023):
        acc.add("L", np.array([[2.0 ** 20]]), ["a"])
    assert acc.unit_table().score.tolist() == [2.0 ** 20]  # the mean is still exact
    before = acc.state_dict()
    with pytest.raises(ValueError, match="fixed-point range"):
        acc.add("L", np.array([[2.0 ** 20]]), ["a"])
    # a failing add that also brings a new category and a new column registers neither
    with pytest.raises(ValueError, match="fixed-point range"):
        acc.add("L", np.array([[2.0 ** 20, 1.0]]), ["a", "new"])
    _same_state(acc.state_dict(), before)
    # negative scores are bounded the same way (|sum|)
    neg = UnitScoreAccumulator()
    for _ in range(1023):
        neg.add("L", np.array([[-(2.0 ** 20)]]), ["a"])
    with pytest.raises(ValueError, match="fixed-point range"):
        neg.add("L", np.array([[-(2.0 ** 20)]]), ["a"])
    # one add with 1024 maximal columns of one category is refused as a whole
    with pytest.raises(ValueError, match="fixed-point range"):
        UnitScoreAccumulator().add("L", np.full((1, 1024), 2.0 ** 20), ["a"] * 1024)


def test_sum_overflow_through_merge_raises_and_leaves_state():
    big = UnitScoreAccumulator()
    for _ in range(600):
        big.add("L", np.array([[2.0 ** 20, 1.0]]), ["a", "b"])
    acc = UnitScoreAccumulator()
    acc.add("L", np.array([[1.0]]), ["b"])
    for _ in range(600):
        acc.add("L", np.array([[2.0 ** 20]]), ["a"])
    # other brings a new category "c" (and a new layer) before the overflowing "a" column
    other = UnitScoreAccumulator()
    other.add("K", np.array([[1.0]]), ["c"])
    other.add("L", np.array([[1.0]]), ["c"])
    other.merge(big)
    before = acc.state_dict()
    with pytest.raises(ValueError, match="fixed-point range"):
        acc.merge(other)  # 1200 * 2**20 > 2**30 in the "a" column
    _same_state(acc.state_dict(), before)
    assert acc.categories == ["b", "a"] and acc.layers == ["L"]
    # self-merge doubles 600 * 2**20 -> 1200 * 2**20: refused too, state kept
    with pytest.raises(ValueError, match="fixed-point range"):
        acc.merge(acc)
    _same_state(acc.state_dict(), before)
    # a merge that fits still works after the failures
    small = UnitScoreAccumulator()
    small.add("L", np.array([[3.0]]), ["c"])
    acc.merge(small)
    assert acc.categories == ["b", "a", "c"]
    assert acc.unit_table().set_index("category").score.to_dict() == {"b": 1.0, "a": 2.0 ** 20, "c": 3.0}


def test_in_place_adds_equal_fancy_indexed_adds(rng):
    """_add_into turns gap-free index runs into slices and the null's two index arrays into one flat
    index; the sums must be those of plain ``a[at] += inc``."""
    from probes.unit_scores import add_into as _add_into

    for _ in range(50):
        a = rng.integers(-50, 50, (4, 6, 5))
        ref = a.copy()
        p = np.sort(rng.choice(6, int(rng.integers(1, 7)), replace=False))
        k = np.sort(rng.choice(5, int(rng.integers(1, 6)), replace=False))
        rows = np.repeat(p, k.size)
        cols = np.tile(k, p.size)
        flat_order = np.argsort(rows * 5 + cols)  # strictly ascending flat index, as _group_sums gives
        rows, cols = rows[flat_order], cols[flat_order]
        inc = rng.integers(-9, 9, (4, rows.size))
        ref[:, rows, cols] += inc
        _add_into(a, (slice(None), rows, cols), inc)
        assert np.array_equal(a, ref)
        b = rng.integers(-50, 50, (4, 3, 5))
        ref_b = b.copy()
        inc_b = rng.integers(-9, 9, (4, 3, k.size))
        ref_b[:, :, k] += inc_b
        _add_into(b, (slice(None), slice(None), k), inc_b)
        assert np.array_equal(b, ref_b)


def test_merge_reads_the_other_accumulator_without_changing_it(rng):
    from probes.aggregate import UnitScoreAccumulator

    def filled(offset):
        acc = UnitScoreAccumulator(categories=["a", "b", "c"], n_null=3, n_bootstrap=4, seed=1)
        for i in range(3):
            acc.add("l", rng.standard_normal((5, 2)), ["c", "a"], image=offset + i,
                    null_scores=rng.standard_normal((5, 3)), null_categories=["b", "a", "b"],
                    null_replicates=[0, 2, 1])
        return acc

    one, two = filled(0), filled(3)
    keys = ("sums", "counts", "n_regions", "null_sums", "null_counts", "boot_sums", "boot_counts")
    before, summed = two.state_dict(), one.state_dict()  # copies
    one.merge(two)
    after_two, merged = two.state_dict(), one.state_dict()
    for key in keys:
        assert all(np.array_equal(x, y) for x, y in zip(before[key], after_two[key]))
        assert all(np.array_equal(m, s + t) for m, s, t in zip(merged[key], summed[key], before[key]))
    doubled = filled(6)
    ref = doubled.state_dict()
    doubled.merge(doubled)
    assert all(np.array_equal(m, 2 * r) for m, r in zip(doubled.state_dict()["boot_sums"], ref["boot_sums"]))


def test_group_sums_and_add_into_equal_a_literal_loop():
    # The accumulator's two index helpers against per-element loops: _group_sums with repeated
    # and with unique groups (the null's columns; then no sum is taken, only a reorder), and
    # _add_into for slices, one index array (np.take path) and the null's (replicate, category).
    from probes.unit_scores import add_into as _add_into, group_sums as _group_sums

    rng = np.random.default_rng(4)
    values = rng.integers(-10**9, 10**9, (5, 12))
    for groups in (rng.integers(0, 6, 12), rng.permutation(40)[:12], np.arange(3, 15)):
        present, sums = _group_sums(values, groups, 40)
        assert list(present) == sorted(set(groups.tolist()))
        for j, g in enumerate(present):
            np.testing.assert_array_equal(sums[:, j], values[:, groups == g].sum(axis=1))
    for at, shape in [((slice(None), np.array([1, 2, 3])), (5, 7)), ((slice(None), np.array([0, 4, 6])), (5, 7)),
                      ((np.array([1, 5]),), (7,)), ((slice(None), slice(None), np.array([0, 3])), (5, 4, 6)),
                      ((slice(None), np.array([0, 2, 3]), np.array([1, 0, 5])), (5, 4, 6))]:
        for dtype in (np.int64, np.int32):
            a = rng.integers(-1000, 1000, shape).astype(dtype)
            want = a.copy()
            inc = rng.integers(-1000, 1000, a[at].shape).astype(dtype)
            np.add.at(want, at, inc)
            _add_into(a, at, inc)
            np.testing.assert_array_equal(a, want)


def test_bootstrap_state_survives_save_load_and_new_categories(tmp_path):
    # The bootstrap arrays live in C x K x B memory behind their C x B x K view; a save, a load
    # and a category first seen after the load must give the same state as one pass, and the
    # arrays must keep that memory layout (else every add touches one cache line per entry).
    rng = np.random.default_rng(8)
    adds = [(rng.standard_normal((6, 2)), [["a", "b"], ["b", "c"], ["c", "a"], ["d", "a"]][i]) for i in range(4)]
    one = UnitScoreAccumulator(n_null=0, n_bootstrap=5, seed=2)
    for i, (scores, cats) in enumerate(adds):
        one.add("L", scores, cats, image=i)
    two = UnitScoreAccumulator(n_null=0, n_bootstrap=5, seed=2)
    for i, (scores, cats) in enumerate(adds[:2]):
        two.add("L", scores, cats, image=i)
    two = UnitScoreAccumulator.load(two.save(tmp_path / "state.npz"))
    for i, (scores, cats) in enumerate(adds[2:], start=2):  # "d" is new after the load: the arrays grow
        two.add("L", scores, cats, image=i)
    a, b = one.state_dict(), two.state_dict()
    assert a["categories"] == b["categories"] == ["a", "b", "c", "d"]
    for key in ("sums", "counts", "boot_sums", "boot_counts", "boot_n_regions"):
        np.testing.assert_array_equal(a[key][0], b[key][0], err_msg=key)
        assert a[key][0].shape == b[key][0].shape
    boot = two._layers["L"].boot_sums
    assert boot.shape == (6, 5, 4) and boot.strides[1] == boot.itemsize  # replicates innermost in memory
    reference = np.zeros((6, 5, 4), np.int64)
    from probes.aggregate import SCALE_BITS, bootstrap_weights
    for i, (scores, cats) in enumerate(adds):
        w = bootstrap_weights(2, i, 5)
        for j, cat in enumerate(cats):
            reference[:, :, "abcd".index(cat)] += np.rint(scores[:, j] * 2.0 ** SCALE_BITS).astype(np.int64)[:, None] * w
    np.testing.assert_array_equal(b["boot_sums"][0], reference)
