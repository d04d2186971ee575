"""OSIE / OSIE-SR loader on tiny files written in the real formats (no /work/shared, no network)."""
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.io
from PIL import Image

from datasets.base import Sample
from datasets.osie import (
    OSIE_SR_CATEGORIES,
    OSIE_SR_CLASS_IDS,
    OSIEDataset,
    read_osie_fixations,
    sr_regions,
)
from datasets.regions_from_fixations import fixation_clusters

H, W = 30, 40

# Three images, three subjects each. Subject 2 of 1002 has a single fixation (a scalar after
# squeeze_me). Coordinates include .5 values (MATLAB rounds them up, np.round to even), a
# duplicate pixel, and two points outside the 40 x 30 image (clamped).
TRIALS = {
    "1001.jpg": [
        ([2.5, 10.0, 10.4, 39.6], [3.5, 12.0, 12.2, 29.5], [100, 200, 150, 80]),
        ([20.0, 21.0, 22.5], [15.0, 15.0, 16.5], [300, 250, 90]),
        ([5.0, 6.5], [25.0, 24.5], [120, 130]),
    ],
    "1002.jpg": [
        ([30.2, 31.0, 4.5], [5.0, 5.5, 20.5], [50, 60, 70]),
        ([12.5], [7.5], [400]),
        ([45.0, 0.2], [10.0, 31.0], [10, 20]),  # both outside the image
    ],
    "1003.jpg": [
        ([1.0, 40.0], [1.0, 30.0], [10, 10]),
        ([8.5, 8.5, 8.4], [8.5, 8.6, 8.5], [1, 2, 3]),
        ([33.3], [22.2], [7]),
    ],
}


# --------------------------------------------------------------------------- builders
def _subject_dict(x, y, d):
    return {
        "fix_x": np.asarray(x, dtype=np.float64)[None],
        "fix_y": np.asarray(y, dtype=np.float64)[None],
        "fix_duration": np.asarray(d, dtype=np.uint16)[None],
    }


def write_fixations_mat(path, trials, struct_array=False, drop=None):
    """OSIE's fixations.mat: a (N, 1) cell of 1x1 structs {img, subjects (S, 1) cell of structs}
    (the real file), or the same as MATLAB struct arrays. ``drop`` removes one field name."""
    if struct_array:
        sub_fields = [f for f in ("fix_x", "fix_y", "fix_duration") if f != drop]
        top_fields = [f for f in ("img", "subjects") if f != drop]
        top = np.zeros((len(trials), 1), dtype=[(f, "O") for f in top_fields])
        for i, (img, subjects) in enumerate(trials.items()):
            subs = np.zeros((len(subjects), 1), dtype=[(f, "O") for f in sub_fields])
            for s, trial in enumerate(subjects):
                sd = _subject_dict(*trial)
                for f in sub_fields:
                    subs[s, 0][f] = sd[f]
            if "img" in top_fields:
                top[i, 0]["img"] = img
            if "subjects" in top_fields:
                top[i, 0]["subjects"] = subs
    else:
        top = np.empty((len(trials), 1), dtype=object)
        for i, (img, subjects) in enumerate(trials.items()):
            subs = np.empty((len(subjects), 1), dtype=object)
            for s, trial in enumerate(subjects):
                sd = _subject_dict(*trial)
                subs[s, 0] = {k: v for k, v in sd.items() if k != drop}
            top[i, 0] = {k: v for k, v in {"img": img, "subjects": subs}.items() if k != drop}
    scipy.io.savemat(str(path), {"fixations": top})


def write_images(folder, names, rng):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(folder / n)


def make_flat(root, rng, trials=TRIALS, **kw):
    write_images(root / "stimuli", list(trials), rng)
    write_fixations_mat(root / "fixations.mat", trials, **kw)
    return root


def make_repo(root, rng, trials=TRIALS):
    write_images(root / "data" / "stimuli", list(trials), rng)
    (root / "data" / "eye").mkdir(parents=True)
    write_fixations_mat(root / "data" / "eye" / "fixations.mat", trials)
    scipy.io.savemat(str(root / "data" / "attrs.mat"), {"attrs": np.zeros((1, 1))})
    return root


def sr_maps():
    """Per image: (instance map, class map). 1001 has 2 instances (person head, text); 1002 one
    instance whose pixels are mostly 'vehicle' with a few 'object' (majority wins) and one with
    non-contiguous id 7 (food); 1003 none."""
    obj1 = np.zeros((H, W), np.int32)
    cls1 = np.zeros((H, W), np.int32)
    obj1[2:8, 2:10], cls1[2:8, 2:10] = 1, 1
    obj1[10:20, 15:30], cls1[10:20, 15:30] = 2, 37
    obj2 = np.zeros((H, W), np.int32)
    cls2 = np.zeros((H, W), np.int32)
    obj2[0:10, 0:10], cls2[0:10, 0:10] = 1, 51
    cls2[0:2, 0:3] = 27  # minority class inside instance 1
    obj2[20:25, 30:38], cls2[20:25, 30:38] = 7, 57
    z = np.zeros((H, W), np.int32)
    return {"1001": (obj1, cls1), "1002": (obj2, cls2), "1003": (z, z.copy())}


def _save_palette_png(path, arr):
    """labelme's lblsave: a palette ('P') PNG whose pixel values are the label ids."""
    im = Image.fromarray(arr.astype(np.uint8), mode="P")
    im.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)])
    im.save(path)


def write_sr(folder, maps, fmt="npy"):
    for sub in ("SegmentationObject", "SegmentationClass"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for stem, (obj, cls) in maps.items():
        for sub, arr in (("SegmentationObject", obj), ("SegmentationClass", cls)):
            if fmt == "npy":
                np.save(folder / sub / f"{stem}.npy", arr)
            else:
                _save_palette_png(folder / sub / f"{stem}.png", arr)


# --------------------------------------------------------------------------- references
def matlab_fixation_map(trials, h=H, w=W):
    """OSIE computeFixationMaps.m: round half away from zero, clamp to [1, w] / [1, h], subtract 1
    to index; but a point rounded more than one pixel beyond the border is dropped (issue 12)
    instead of clamped. Also returns how many points had to be clamped."""
    fmap = np.zeros((h, w), bool)
    clamped = 0
    for xs, ys, _ in trials:
        for x, y in zip(xs, ys):
            c, r = math.floor(x + 0.5), math.floor(y + 0.5)
            if not (0 <= c <= w + 1 and 0 <= r <= h + 1):
                continue
            clamped += not (1 <= c <= w and 1 <= r <= h)
            fmap[min(max(r, 1), h) - 1, min(max(c, 1), w) - 1] = True
    return fmap, clamped


# --------------------------------------------------------------------------- reader
@pytest.mark.parametrize("struct_array", [False, True])
def test_read_osie_fixations_both_mat_encodings(tmp_path, struct_array):
    write_fixations_mat(tmp_path / "f.mat", TRIALS, struct_array=struct_array)
    images, table = read_osie_fixations(tmp_path / "f.mat")
    assert images == ["1001.jpg", "1002.jpg", "1003.jpg"]
    assert len(table) == sum(len(t[0]) for trials in TRIALS.values() for t in trials)
    single = table[(table.image == "1002.jpg") & (table.subject == 2)]
    assert single[["x", "y", "duration"]].to_numpy().tolist() == [[12.5, 7.5, 400.0]]
    for img, trials in TRIALS.items():
        for s, (x, y, d) in enumerate(trials, start=1):
            rows = table[(table.image == img) & (table.subject == s)]
            np.testing.assert_array_equal(rows.x, x)
            np.testing.assert_array_equal(rows.y, y)
            np.testing.assert_array_equal(rows.duration, d)


def test_read_without_durations_gives_nan(tmp_path):
    write_fixations_mat(tmp_path / "f.mat", TRIALS, drop="fix_duration")
    _, table = read_osie_fixations(tmp_path / "f.mat")
    assert table.duration.isna().all() and len(table) == 21


@pytest.mark.parametrize(
    "drop, field", [("img", "img"), ("subjects", "subjects"), ("fix_x", "fix_x"), ("fix_y", "fix_y")]
)
@pytest.mark.parametrize("struct_array", [False, True])
def test_malformed_mat_names_missing_field(tmp_path, drop, field, struct_array):
    write_fixations_mat(tmp_path / "f.mat", TRIALS, struct_array=struct_array, drop=drop)
    with pytest.raises(ValueError, match=f"no field '{field}'"):
        read_osie_fixations(tmp_path / "f.mat")


def test_malformed_mat_other_cases(tmp_path):
    scipy.io.savemat(str(tmp_path / "a.mat"), {"eyedata": np.zeros(3)})
    with pytest.raises(ValueError, match="no variable 'fixations' \\(found: eyedata\\)"):
        read_osie_fixations(tmp_path / "a.mat")
    (tmp_path / "b.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(ValueError, match="not a readable MATLAB file"):
        read_osie_fixations(tmp_path / "b.mat")
    bad = {"1001.jpg": [([1.0, 2.0], [1.0], [5, 5])]}
    write_fixations_mat(tmp_path / "c.mat", bad)
    with pytest.raises(ValueError, match="2 fix_x, 1 fix_y"):
        read_osie_fixations(tmp_path / "c.mat")
    with pytest.raises(FileNotFoundError, match="not found"):
        read_osie_fixations(tmp_path / "nope.mat")


# --------------------------------------------------------------------------- dataset
def test_flat_layout_samples(tmp_path, rng):
    root = make_flat(tmp_path, rng)
    ds = OSIEDataset(root, regions="none")
    assert ds.name == "OSIE" and len(ds) == 3 and ds.regions == "none"
    samples = list(ds)
    assert [s.image_id for s in samples] == ["1001", "1002", "1003"]
    assert ds[-1].image_id == "1003"
    with pytest.raises(IndexError):
        ds[3]
    for s, (img, trials) in zip(samples, TRIALS.items()):
        assert isinstance(s, Sample)
        assert s.image.shape == (H, W, 3) and s.image.dtype == np.uint8
        np.testing.assert_array_equal(s.image, np.asarray(Image.open(root / "stimuli" / img).convert("RGB")))
        ref, n_clamped = matlab_fixation_map(trials)
        np.testing.assert_array_equal(s.fixation_map, ref)
        assert s.meta["n_clamped"] == n_clamped
        assert s.meta["n_fixations"] == sum(len(t[0]) for t in trials)
        assert s.meta["n_subjects"] == 3
        assert s.masks.shape == (0, H, W) and s.categories == []
        assert list(s.fixations.columns) == ["x", "y", "subject", "duration"]
        xs = np.concatenate([t[0] for t in trials])
        np.testing.assert_array_equal(s.fixations.x, xs[xs < W + 1.5])  # far-outside points dropped
    # (0.2, 31) rounds one pixel below the 40 x 30 image: clamped; (45, 10) is 5 px right: dropped
    assert samples[1].meta["n_clamped"] == 1 and samples[1].meta["n_dropped"] == 1
    # MATLAB rounding, not np.round: 2.5 -> column 3 (index 2), 3.5 -> row 4 (index 3).
    assert samples[0].fixation_map[3, 2] and not samples[0].fixation_map[4, 2]


def test_repo_layout_with_attrs(tmp_path, rng):
    root = make_repo(tmp_path, rng)
    ds = OSIEDataset(root, regions="none")
    assert ds.attrs_path == root / "data" / "attrs.mat"
    assert ds.fixations_path == root / "data" / "eye" / "fixations.mat"
    np.testing.assert_array_equal(ds[0].fixation_map, matlab_fixation_map(TRIALS["1001.jpg"])[0])


def _check_sr(ds, maps):
    assert ds.regions == "sr" and ds.name == "OSIE-SR"
    s1, s2, s3 = list(ds)
    obj1, _ = maps["1001"]
    assert s1.categories == ["person head", "text"]
    np.testing.assert_array_equal(s1.masks, np.stack([obj1 == 1, obj1 == 2]))
    assert s1.meta["region_ids"] == [1, 2]
    obj2, _ = maps["1002"]
    assert s2.categories == ["vehicle", "food"]  # 97 vehicle px vs 3 object px: majority wins
    np.testing.assert_array_equal(s2.masks, np.stack([obj2 == 1, obj2 == 7]))
    assert s3.masks.shape == (0, H, W) and s3.categories == []


def test_sr_beside_flat_layout_npy_and_auto(tmp_path, rng):
    root = make_flat(tmp_path, rng)
    maps = sr_maps()
    write_sr(root, maps, "npy")
    _check_sr(OSIEDataset(root), maps)  # regions="auto" finds the export


@pytest.mark.parametrize("where", ["root", "data"])
def test_sr_beside_repo_layout_png(tmp_path, rng, where):
    root = make_repo(tmp_path / "osie", rng)
    maps = sr_maps()
    write_sr(root if where == "root" else root / "data", maps, "png")
    _check_sr(OSIEDataset(root, regions="sr"), maps)


def test_sr_explicit_sr_root(tmp_path, rng):
    root = make_repo(tmp_path / "osie", rng)
    maps = sr_maps()
    write_sr(tmp_path / "elsewhere", maps, "npy")
    assert OSIEDataset(root).regions == "clusters"  # nothing beside the data
    _check_sr(OSIEDataset(root, regions="sr", sr_root=tmp_path / "elsewhere"), maps)
    with pytest.raises(FileNotFoundError, match="no SegmentationObject"):
        OSIEDataset(root, sr_root=tmp_path / "missing")


def test_sr_categories_table():
    assert OSIE_SR_CATEGORIES == (
        "person head", "person part", "animal head", "animal part", "object", "text",
        "symbol", "vehicle", "food", "plant", "drink", "other",
    )
    assert sorted(OSIE_SR_CLASS_IDS) == [1, 10, 16, 22, 27, 37, 46, 51, 57, 63, 68, 73]
    obj = np.array([[1, 1, 2], [1, 2, 2]])
    cls = np.array([[73, 27, 68], [27, 68, 68]])  # instance 1: 27 twice, 73 once
    masks, cats, ids = sr_regions(obj, cls)
    assert cats == ["object", "drink"] and ids.tolist() == [1, 2]
    _, cats, _ = sr_regions(np.array([[1, 1]]), np.array([[73, 10]]))
    assert cats == ["person part"]  # tie 10 vs 73: the smaller id


def test_labelme_ignore_class_on_background_is_accepted(tmp_path, rng):
    # labelme2voc writes class -1 for `__ignore__` shapes and instance 0 there (ins[cls == -1] = 0).
    obj = np.array([[0, 0, 1, 1], [0, 2, 2, 0]])
    cls = np.array([[-1, -1, 37, 37], [-1, 1, 1, 0]])
    masks, cats, ids = sr_regions(obj, cls)
    assert cats == ["text", "person head"] and ids.tolist() == [1, 2]
    np.testing.assert_array_equal(masks, np.stack([obj == 1, obj == 2]))
    # ... read from an export too, next to a normal image
    root = make_flat(tmp_path, rng)
    maps = sr_maps()
    _, cls1 = maps["1001"]
    cls1[25:30, 0:10] = -1  # an ignored shape on background
    write_sr(root, maps, "npy")
    _check_sr(OSIEDataset(root), sr_maps())
    # -1 inside an instance is still an error, naming the instance
    with pytest.raises(ValueError, match="instance 2 has negative class id -1"):
        sr_regions(obj, np.where(obj == 2, -1, cls))


def test_messages_name_library_and_cli_options(tmp_path, rng):
    root = make_flat(tmp_path, rng)
    with pytest.raises(FileNotFoundError, match=r"sr_root .*\(CLI: --sr-root DIR\).*\(CLI: --regions clusters"):
        OSIEDataset(root, regions="sr")
    with pytest.raises(ValueError, match=r"\(CLI: --regions auto\|sr\|clusters\|none\)"):
        OSIEDataset(root, regions="objects")
    (root / "stimuli" / "1002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"on_missing='skip' \(CLI: --on-missing skip\)") as info:
        OSIEDataset(root, regions="none")
    assert "python cli.py download osie" in str(info.value) and "\n" not in str(info.value)
    other = make_flat(tmp_path / "b", rng)
    write_sr(other, {k: v for k, v in sr_maps().items() if k != "1003"}, "npy")
    with pytest.raises(FileNotFoundError, match=r"regions='clusters' \(CLI: --regions clusters\).*--on-missing skip"):
        OSIEDataset(other)


def test_clusters_regions(tmp_path, rng):
    trials = {
        "1001.jpg": [
            ([5.0, 6.0, 7.0, 5.5], [5.0, 6.0, 5.0, 7.0], [1, 1, 1, 1]),
            ([34.0, 35.0, 36.0], [24.0, 25.0, 24.5], [1, 1, 1]),
            ([20.0], [28.0], [1]),
        ]
    }
    root = make_flat(tmp_path, rng, trials)
    params = {"sigma": 2.0, "threshold": 0.2, "min_fixations": 3}
    ds = OSIEDataset(root, regions="clusters", cluster_params=params)
    s = ds[0]
    assert s.categories == ["unlabelled", "unlabelled"]
    expected, _ = fixation_clusters(s.fixation_map, **params)
    np.testing.assert_array_equal(s.masks, expected)
    # largest cluster first; the lone fixation at (20, 28) makes no region
    assert s.masks[0][4, 4] and s.masks[1][23, 34] and not s.masks.any(axis=0)[27, 19]
    with pytest.raises(TypeError):
        OSIEDataset(root, regions="clusters", cluster_params={"sigmaa": 2.0})


# --------------------------------------------------------------------------- bad input
def test_unknown_options(tmp_path, rng):
    root = make_flat(tmp_path, rng)
    with pytest.raises(ValueError, match="regions must be one of"):
        OSIEDataset(root, regions="objects")
    with pytest.raises(ValueError, match="on_missing must be"):
        OSIEDataset(root, on_missing="ignore")
    with pytest.raises(FileNotFoundError, match="regions='sr' but no OSIE-SR export"):
        OSIEDataset(root, regions="sr")
    with pytest.raises(FileNotFoundError, match="expected data/stimuli/"):
        OSIEDataset(tmp_path / "stimuli")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        OSIEDataset(tmp_path / "nowhere")


def test_missing_stimuli(tmp_path, rng):
    root = make_flat(tmp_path, rng)
    (root / "stimuli" / "1002.jpg").unlink()
    (root / "stimuli" / "1003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"2 of 3 stimuli .* \(first: 1002.jpg, 1003.jpg\)"):
        OSIEDataset(root, regions="none")
    with pytest.warns(UserWarning, match="2 of 3 stimuli"):
        ds = OSIEDataset(root, regions="none", on_missing="skip")
    assert len(ds) == 1 and ds.missing == ["1002.jpg", "1003.jpg"]


def test_image_without_fixations_is_skipped(tmp_path, rng):
    trials = dict(TRIALS)
    trials["1004.jpg"] = [([], [], []), ([], [], [])]
    root = make_flat(tmp_path, rng, trials)
    with pytest.warns(UserWarning, match="skipping 1 of 4 images without fixations"):
        ds = OSIEDataset(root, regions="none")
    assert ds.skipped == ["1004.jpg"] and len(ds) == 3
    # with warnings as errors nothing else is emitted for the valid images
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OSIEDataset(make_flat(tmp_path / "ok", rng), regions="none")


def test_missing_sr_file(tmp_path, rng):
    root = make_flat(tmp_path, rng)
    maps = sr_maps()
    write_sr(root, maps, "npy")
    (root / "SegmentationClass" / "1003.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 OSIE-SR mask files .* \(first: 1003\)"):
        OSIEDataset(root)
    with pytest.warns(UserWarning):
        assert len(OSIEDataset(root, on_missing="skip")) == 2
    import shutil

    shutil.rmtree(root / "SegmentationClass")
    with pytest.raises(FileNotFoundError, match="no SegmentationClass"):
        OSIEDataset(root)


@pytest.mark.parametrize(
    "edit, match",
    [
        ("no_class", "instance 2 has no class"),
        ("unknown", "instance 1 has unknown class id 5"),
        ("size", r"is 15 x 20 but 1001.jpg is 30 x 40"),
        ("cls_size", "SegmentationObject is \\(30, 40\\) but SegmentationClass is \\(30, 41\\)"),
    ],
)
def test_bad_sr_masks(tmp_path, rng, edit, match):
    root = make_flat(tmp_path, rng)
    maps = sr_maps()
    obj, cls = maps["1001"]
    if edit == "no_class":
        cls[obj == 2] = 0
    elif edit == "unknown":
        cls[obj == 1] = 5
    elif edit == "size":
        maps["1001"] = (obj[:15, :20], cls[:15, :20])
    elif edit == "cls_size":
        maps["1001"] = (obj, np.pad(cls, ((0, 0), (0, 1))))
    write_sr(root, maps, "npy")
    ds = OSIEDataset(root)
    with pytest.raises(ValueError, match=match):
        ds[0]
    ds[1]  # the other images still load


def test_colour_png_label_refused(tmp_path, rng):
    root = make_flat(tmp_path, rng)
    write_sr(root, sr_maps(), "png")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "SegmentationObject" / "1001.png")
    with pytest.raises(ValueError, match="label PNG has mode 'RGB'"):
        OSIEDataset(root)[0]


def test_fixations_table_is_independent_of_dataset(tmp_path, rng):
    root = make_flat(tmp_path, rng)
    ds = OSIEDataset(root, regions="none")
    s = ds[2]
    assert isinstance(s.fixations, pd.DataFrame)
    assert s.fixations.subject.tolist() == [1, 1, 2, 2, 2, 3]
    s.fixations.loc[0, "x"] = -99.0  # a caller editing its table does not change the dataset
    assert ds[2].fixations.x.iloc[0] == 1.0


# --------------------------------------------------------------------------- fixation clusters
def _naive_clusters(fmap, sigma, threshold, min_fixations):
    """Literal definition: sum of untruncated Gaussians on the fixated pixels, min-max, threshold,
    4-connected flood fill, keep components with >= min_fixations fixated pixels, largest first."""
    h, w = fmap.shape
    rr, cc = np.mgrid[0:h, 0:w]
    dens = np.zeros((h, w))
    for r, c in zip(*np.nonzero(fmap)):
        dens += np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * sigma**2))
    dens = (dens - dens.min()) / (dens.max() - dens.min())
    above = dens >= threshold
    seen = np.zeros((h, w), bool)
    comps = []
    for r0 in range(h):
        for c0 in range(w):
            if above[r0, c0] and not seen[r0, c0]:
                comp, stack = np.zeros((h, w), bool), [(r0, c0)]
                seen[r0, c0] = True
                while stack:
                    r, c = stack.pop()
                    comp[r, c] = True
                    for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                        q = (r + dr, c + dc)
                        if 0 <= q[0] < h and 0 <= q[1] < w and above[q] and not seen[q]:
                            seen[q] = True
                            stack.append(q)
                comps.append(comp)
    comps = [m for m in comps if (m & fmap).sum() >= min_fixations]
    comps.sort(key=lambda m: -(m & fmap).sum())
    return comps, dens


def test_fixation_clusters_against_literal_definition(rng):
    fmap = np.zeros((24, 32), bool)
    fmap[3:6, 3:6] = rng.random((3, 3)) < 0.8  # a dense cluster (>= 3 pixels, seeded)
    fmap[3, 3] = fmap[5, 5] = fmap[4, 4] = True
    fmap[[18, 19, 20, 18], [25, 26, 25, 27]] = True  # a second cluster of 4
    fmap[20, 5] = True  # a lone fixation: below min_fixations
    masks, cats = fixation_clusters(fmap, sigma=1.5, threshold=0.2, min_fixations=3)
    ref, dens = _naive_clusters(fmap, 1.5, 0.2, 3)
    assert len(masks) == len(ref) == 2 and cats == ["unlabelled", "unlabelled"]
    # gaussian_filter truncates the kernel at 3.5 sigma; ignore pixels within 1% of the threshold
    settled = np.abs(dens - 0.2) > 0.01
    for m, r in zip(masks, ref):
        np.testing.assert_array_equal(m[settled], r[settled])
    assert masks[0][4, 4] and masks[1][18, 25] and not masks.any(axis=0)[20, 5]
    # at a lower threshold the lone fixation's blob appears; min_fixations decides whether it counts
    assert len(fixation_clusters(fmap, sigma=1.5, threshold=0.05, min_fixations=1)[0]) == 3
    assert len(fixation_clusters(fmap, sigma=1.5, threshold=0.05, min_fixations=3)[0]) == 2


def test_fixation_clusters_edge_cases():
    masks, cats = fixation_clusters(np.zeros((5, 6), bool))
    assert masks.shape == (0, 5, 6) and cats == []
    diag = np.zeros((9, 9), bool)
    diag[[2, 3, 4], [2, 3, 4]] = True
    # a tiny sigma keeps only the fixated pixels above threshold: diagonal neighbours join
    # with 8-connectivity only
    assert len(fixation_clusters(diag, sigma=0.3, threshold=0.5, min_fixations=1)[0]) == 3
    assert len(fixation_clusters(diag, sigma=0.3, threshold=0.5, min_fixations=1, connectivity=2)[0]) == 1
    for kw, match in [
        ({"threshold": 0.0}, "threshold must be in"),
        ({"threshold": 1.5}, "threshold must be in"),
        ({"min_fixations": 0}, "min_fixations must be"),
        ({"connectivity": 3}, "connectivity must be"),
        ({"sigma": -1.0}, "sigma must be positive"),
    ]:
        with pytest.raises(ValueError, match=match):
            fixation_clusters(diag, **kw)
    with pytest.raises(ValueError, match="H x W"):
        fixation_clusters(np.zeros(5, bool))
