"""FolderDataset: a user's images (any sizes), fixations.csv, masks and categories.csv."""
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from datasets.folder import FolderDataset, instance_masks, read_label_map

SIZES = {"a": (30, 40), "b": (24, 18), "c": (16, 16)}  # (H, W), deliberately different

FIX = pd.DataFrame(
    {
        "image": ["a.png", "a.png", "a.png", "b", "b", "b", "c.png"],
        "x": [0.0, 2.5, 39.4, 17.0, 1.5, 20.0, 7.5],
        "y": [0.0, 3.5, 29.0, 23.0, 1.49, -1.0, 7.5],
        "subject": [1, 2, 2, 1, 1, 3, 4],
        "duration": [100, 200, 300, 50, 60, 70, 80],
    }
)


def make_folder(root, rng, fixations=FIX, masks="png", categories=True):
    (root / "images").mkdir(parents=True)
    for stem, (h, w) in SIZES.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{stem}.png")
    if fixations is not None:
        fixations.to_csv(root / "fixations.csv", index=False)
    if masks:
        (root / "masks").mkdir()
        ma = np.zeros(SIZES["a"], np.uint8)
        ma[0:10, 0:10] = 1
        ma[20:30, 30:40] = 4
        mb = np.zeros(SIZES["b"], np.int32)
        mb[5:15, 5:10] = 2
        if masks == "png":
            Image.fromarray(ma, mode="L").save(root / "masks" / "a.png")
        else:
            np.save(root / "masks" / "a.npy", ma.astype(np.int32))
        np.save(root / "masks" / "b.npy", mb)  # c has no mask: no regions
    if categories:
        cats = pd.DataFrame(
            {"image": ["a.png", "a.png", "b"], "region": [1, 4, 2], "category": ["face", "text", "car"]}
        )
        cats.to_csv(root / "categories.csv", index=False)
    return root


def reference_map(xs, ys, shape, one_based):
    """Literal MATLAB rounding: 0-based input is shifted to 1-based first, then round half away
    from zero; a pixel more than one beyond [1, W] / [1, H] is dropped, one beyond is clamped;
    subtract 1."""
    h, w = shape
    fmap = np.zeros(shape, bool)
    clamped = dropped = 0
    for x, y in zip(xs, ys):
        if not one_based:
            x, y = x + 1, y + 1
        c, r = math.floor(x + 0.5), math.floor(y + 0.5)
        if not (0 <= c <= w + 1 and 0 <= r <= h + 1):
            dropped += 1
            continue
        clamped += not (1 <= c <= w and 1 <= r <= h)
        fmap[min(max(r, 1), h) - 1, min(max(c, 1), w) - 1] = True
    return fmap, clamped, dropped


@pytest.mark.parametrize("masks", ["png", "npy"])
def test_images_fixations_masks_categories(tmp_path, rng, masks):
    root = make_folder(tmp_path, rng, masks=masks)
    ds = FolderDataset(root)
    assert ds.name == f"folder:{tmp_path.name}" and len(ds) == 3
    samples = {s.image_id: s for s in ds}
    for stem, shape in SIZES.items():
        s = samples[stem]
        assert s.image.shape == shape + (3,) and s.image.dtype == np.uint8
        np.testing.assert_array_equal(s.image, np.asarray(Image.open(root / "images" / f"{stem}.png")))
        rows = FIX[FIX.image.str.replace(".png", "", regex=False) == stem]
        ref, clamped, dropped = reference_map(rows.x, rows.y, shape, one_based=False)
        np.testing.assert_array_equal(s.fixation_map, ref)
        assert s.meta["n_clamped"] == clamped and s.meta["n_dropped"] == dropped
        kept = rows[(rows.x < shape[1] + 0.5) & (rows.y < shape[0] + 0.5) & (rows.x >= -1.5) & (rows.y >= -1.5)]
        np.testing.assert_array_equal(s.fixations.x, kept.x + 1)  # stored 1-based, far-outside points dropped
        np.testing.assert_array_equal(s.fixations.subject, kept.subject)
    # b's (20, -1) is 3 columns right of the 18-px-wide image: dropped, not clamped into a corner
    assert samples["a"].meta["n_clamped"] == 0 and samples["b"].meta["n_clamped"] == 0
    assert samples["b"].meta["n_dropped"] == 1 and samples["a"].meta["n_dropped"] == 0
    a = samples["a"]
    assert a.categories == ["face", "text"] and a.masks.shape == (2, 30, 40)
    assert a.masks[0, :10, :10].all() and a.masks[0].sum() == 100 and a.masks[1, 20:, 30:].all()
    assert samples["b"].categories == ["car"] and samples["b"].masks[0].sum() == 50
    assert samples["c"].masks.shape == (0, 16, 16) and samples["c"].categories == []
    # 0-based (2.5, 3.5) is 1-based (3.5, 4.5) -> MATLAB pixel (col 4, row 5) -> index [4, 3]
    assert a.fixation_map[4, 3] and not a.fixation_map[3, 2]


def test_one_based_option_and_default_category(tmp_path, rng):
    root = make_folder(tmp_path, rng, categories=False)
    ds = FolderDataset(root, one_based=True, name="mine")
    assert ds.name == "mine"
    a = ds[0]
    rows = FIX[FIX.image == "a.png"]
    np.testing.assert_array_equal(a.fixation_map, reference_map(rows.x, rows.y, (30, 40), one_based=True)[0])
    np.testing.assert_array_equal(a.fixations.x, rows.x)
    assert a.categories == ["region", "region"]


def test_masks_only_dataset(tmp_path, rng):
    root = make_folder(tmp_path, rng, fixations=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = FolderDataset(root)
        samples = list(ds)
    assert len(samples) == 3 and all(s.fixation_map is None and s.fixations is None for s in samples)
    assert ds.skipped == [] and samples[0].categories == ["face", "text"]


def test_image_without_fixations_skipped(tmp_path, rng):
    fix = FIX[FIX.image != "c.png"]
    root = make_folder(tmp_path, rng, fixations=fix)
    with pytest.warns(UserWarning, match="skipping 1 of 3 images without a row in fixations.csv"):
        ds = FolderDataset(root)
    assert ds.skipped == ["c"] and [s.image_id for s in ds] == ["a", "b"]
    assert ds[-1].image_id == "b"
    with pytest.raises(IndexError):
        ds[2]


def test_optional_columns(tmp_path, rng):
    root = make_folder(tmp_path, rng, fixations=FIX[["image", "x", "y"]])
    s = FolderDataset(root)[1]
    assert s.fixations.subject.tolist() == [1, 1] and s.fixations.duration.isna().all()  # the third lies far outside: dropped


def test_bad_csvs(tmp_path, rng):
    root = make_folder(tmp_path / "r1", rng, fixations=FIX.drop(columns="y"))
    with pytest.raises(ValueError, match="lacks column\\(s\\) y"):
        FolderDataset(root)
    bad = FIX.copy()
    bad.loc[3, "x"] = np.nan
    root = make_folder(tmp_path / "r2", rng, fixations=bad)
    with pytest.raises(ValueError, match="line 5: column 'x' must be a number, got an empty cell"):
        FolderDataset(root)
    extra = pd.DataFrame({"image": ["zz.jpg", "yy"], "x": [1, 1], "y": [1, 1], "subject": [1, 1], "duration": [1, 1]})
    bad = pd.concat([FIX, extra])
    root = make_folder(tmp_path / "r3", rng, fixations=bad)
    with pytest.raises(FileNotFoundError, match="2 of 5 images named in fixations.csv are missing .*first: yy, zz"):
        FolderDataset(root)
    root = make_folder(tmp_path / "r4", rng)
    pd.DataFrame({"image": ["a"], "region": [1], "category": ["face"]}).to_csv(root / "categories.csv", index=False)
    with pytest.raises(ValueError, match="not region\\(s\\) 4"):
        FolderDataset(root)[0]
    pd.DataFrame({"image": ["b", "b"], "region": [2, 9], "category": ["car", "x"]}).to_csv(
        root / "categories.csv", index=False
    )
    with pytest.raises(ValueError, match="names region\\(s\\) 9 of image 'b'"):
        FolderDataset(root)[1]


def test_bad_masks_and_layout(tmp_path, rng):
    root = make_folder(tmp_path, rng)
    np.save(root / "masks" / "b.npy", np.zeros((10, 10), np.int32))
    ds = FolderDataset(root)
    with pytest.raises(ValueError, match="is 10 x 10 but image 'b' is 24 x 18"):
        ds[1]
    with pytest.raises(FileNotFoundError, match="expects root/images"):
        FolderDataset(tmp_path / "nowhere")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "images" / "a.jpg")
    with pytest.raises(ValueError, match="share the stem 'a'"):
        FolderDataset(root)


def test_label_helpers(tmp_path):
    np.save(tmp_path / "f.npy", np.array([[0.0, 1.5]]))
    with pytest.raises(ValueError, match="integer ids"):
        read_label_map(tmp_path / "f.npy")
    np.save(tmp_path / "g.npy", np.zeros((2, 2, 2), np.int32))
    with pytest.raises(ValueError, match="2-D"):
        read_label_map(tmp_path / "g.npy")
    Image.fromarray(np.array([[0, 300], [5, 0]], np.uint16)).save(tmp_path / "h.png")  # 16-bit ids
    assert read_label_map(tmp_path / "h.png").tolist() == [[0, 300], [5, 0]]
    ids, masks = instance_masks(np.array([[0, 3], [3, 8]]))
    assert ids.tolist() == [3, 8]
    assert masks.tolist() == [[[False, True], [True, False]], [[False, False], [False, True]]]
    with pytest.raises(ValueError, match="negative instance id -1"):
        instance_masks(np.array([[-1, 0]]))


def test_non_integer_subject_is_refused(tmp_path, rng):
    bad = FIX.copy()
    bad["subject"] = bad["subject"].astype(float)
    bad.loc[2, "subject"] = 1.7  # would have been truncated to 1, merging two observers
    root = make_folder(tmp_path, rng, fixations=bad)
    with pytest.raises(ValueError, match="line 4: column 'subject' must hold integer subject ids, got '1.7'"):
        FolderDataset(root)
    bad.loc[2, "subject"] = 2.0  # a float column of whole numbers is fine
    bad.to_csv(root / "fixations.csv", index=False)
    assert FolderDataset(root)[0].fixations.subject.tolist() == [1, 2, 2]


@pytest.mark.parametrize("masks", ["png", False])
def test_categories_for_an_image_without_mask_file(tmp_path, rng, masks):
    root = make_folder(tmp_path, rng, masks=masks)
    cats = pd.DataFrame({"image": ["a.png", "a.png", "b", "c.png"], "region": [1, 4, 2, 1],
                         "category": ["face", "text", "car", "cup"]})
    cats.to_csv(root / "categories.csv", index=False)
    n = "1 of 3" if masks else "3 of 3"
    first = "c" if masks else "a, b, c"
    with pytest.raises(FileNotFoundError, match=f"{n} mask files .* categories.csv .*first: {first}\\)"):
        FolderDataset(root)


def test_load_dataset_passes_and_checks_options(tmp_path, rng):
    from datasets import load_dataset

    root = make_folder(tmp_path, rng)
    assert load_dataset("folder", root, one_based=True).one_based
    with pytest.raises(ValueError, match=r"'folder' does not take option\(s\) seed; it takes one_based, name"):
        load_dataset("folder", root, seed=0)


def test_instance_masks_box_path_equals_whole_map_comparison():
    """Compact regions are compared inside their bounding boxes only; the masks must be those of
    comparing the whole label map with every id (also when the boxes are large: that path)."""
    from datasets.folder import instance_masks

    rng = np.random.default_rng(3)
    compact = np.zeros((60, 80), dtype=np.int32)
    for i in range(1, 12):
        y, x = rng.integers(0, 50), rng.integers(0, 70)
        compact[y:y + rng.integers(2, 10), x:x + rng.integers(2, 10)] = i
    compact[compact == 5] = 0  # a missing id
    scattered = rng.integers(0, 9, (60, 80)).astype(np.uint16)
    for lab in (compact, scattered):
        ids, masks = instance_masks(lab)
        assert np.array_equal(ids, np.unique(lab[lab != 0]))
        assert masks.dtype == bool and np.array_equal(masks, lab[None] == ids[:, None, None])
