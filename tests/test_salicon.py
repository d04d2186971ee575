"""SALICON 2017 loader on tiny files written in the distributed format (no network)."""
import math
import warnings

import numpy as np
import pytest
import scipy.io
from PIL import Image

from datasets.regions_from_fixations import fixation_clusters
from datasets.salicon import SaliconDataset, read_salicon_mat

H, W = 30, 40

# Per image: one (fixations, location) pair of [x y] arrays per observer, 1-based. Observer 2 of
# the first image has a single fixation (1 x 2, a (2,) vector after squeeze_me); observer 3 of the
# second has none (0 x 2); the second image has points outside the image (clamped).
GAZE = {
    "COCO_train2014_000000000009": [
        ([[2.5, 3.5], [10.0, 12.0], [10.4, 12.2]], [[1, 1], [2, 2], [3, 3]]),
        ([[20.5, 15.5]], [[5, 5]]),
        ([[39.6, 29.5], [6.5, 24.5]], [[7, 7], [8, 8]]),
    ],
    "COCO_train2014_000000000025": [
        ([[30.0, 5.0], [45.0, 10.0]], [[-3, 4], [9, 9]]),
        ([[0.2, 31.0], [4.5, 20.5], [4.5, 20.5]], [[10, 10]]),
        (np.zeros((0, 2)), np.zeros((0, 2))),
    ],
}


def write_salicon_mat(path, name, observers, resolution=(H, W), drop=None, skip_var=None):
    """SALICON 2017: image, resolution [H W], gaze = (N, 1) struct array of location, timestamp,
    fixations."""
    fields = [f for f in ("location", "timestamp", "fixations") if f != drop]
    gaze = np.zeros((len(observers), 1), dtype=[(f, "O") for f in fields])
    for k, (fix, loc) in enumerate(observers):
        rec = {
            "fixations": np.asarray(fix, dtype=np.float64).reshape(-1, 2),
            "location": np.asarray(loc, dtype=np.float64).reshape(-1, 2),
            "timestamp": np.arange(len(loc), dtype=np.float64)[:, None] * 10,
        }
        for f in fields:
            gaze[k, 0][f] = rec[f]
    data = {"image": name, "resolution": np.array([list(resolution)], dtype=np.uint16), "gaze": gaze}
    if skip_var:
        data.pop(skip_var)
    scipy.io.savemat(str(path), data)


def make_salicon(root, rng, split="train", flat_images=False, gaze=GAZE):
    img_dir = root / "images" if flat_images else root / "images" / split
    fix_dir = root / "fixations" / split
    img_dir.mkdir(parents=True)
    fix_dir.mkdir(parents=True)
    for name, observers in gaze.items():
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(img_dir / f"{name}.jpg")
        write_salicon_mat(fix_dir / f"{name}.mat", name, observers)
    return root


def reference_map(points):
    """Literal MATLAB rounding of 1-based [x y] points, clamped within a pixel of the border,
    dropped further out (issue 12); also the number clamped."""
    fmap = np.zeros((H, W), bool)
    clamped = 0
    for x, y in points:
        c, r = math.floor(x + 0.5), math.floor(y + 0.5)
        if not (0 <= c <= W + 1 and 0 <= r <= H + 1):
            continue
        clamped += not (1 <= c <= W and 1 <= r <= H)
        fmap[min(max(r, 1), H) - 1, min(max(c, 1), W) - 1] = True
    return fmap, clamped


@pytest.mark.parametrize("flat_images", [False, True])
def test_samples_match_matlab_rounding(tmp_path, rng, flat_images):
    root = make_salicon(tmp_path, rng, flat_images=flat_images)
    ds = SaliconDataset(root, "train")
    assert ds.name == "SALICON-train" and len(ds) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the observer without points is no warning; only an empty image is
        samples = list(ds)
    for s, (name, observers) in zip(samples, GAZE.items()):
        assert s.image_id == name
        assert s.image.shape == (H, W, 3) and s.image.dtype == np.uint8
        pts = [p for fix, _ in observers for p in np.asarray(fix).reshape(-1, 2)]
        ref, clamped = reference_map(pts)
        np.testing.assert_array_equal(s.fixation_map, ref)
        assert s.meta["n_clamped"] == clamped and s.meta["n_fixations"] == len(pts)
        assert s.meta["n_subjects"] == 3
        assert s.masks.shape == (0, H, W) and s.categories == []
        kept = [p for p in pts if p[0] < W + 1.5]  # (45, 10) lies 5 px right of the image: dropped
        assert s.meta["n_dropped"] == len(pts) - len(kept)
        np.testing.assert_array_equal(s.fixations[["x", "y"]].to_numpy(), np.asarray(kept).reshape(-1, 2))
        assert s.fixations.duration.isna().all()
    assert ds[0].fixations.subject.tolist() == [1, 1, 1, 2, 3, 3]
    assert ds[1].meta["n_clamped"] == 1 and ds[1].meta["n_dropped"] == 1
    assert ds[-1].image_id == "COCO_train2014_000000000025"
    with pytest.raises(IndexError):
        ds[2]


def test_mouse_points_and_reader(tmp_path, rng):
    root = make_salicon(tmp_path, rng)
    ds = SaliconDataset(root, "train", gaze="mouse")
    s = ds[0]
    pts = [p for _, loc in GAZE["COCO_train2014_000000000009"] for p in np.asarray(loc, float)]
    np.testing.assert_array_equal(s.fixation_map, reference_map(pts)[0])
    name, res, points = read_salicon_mat(root / "fixations" / "train" / "COCO_train2014_000000000025.mat")
    assert name == "COCO_train2014_000000000025" and res == (H, W)
    assert [p.shape for p in points] == [(2, 2), (3, 2), (0, 2)]


def test_val_split_and_clusters(tmp_path, rng):
    gaze = {
        "COCO_val2014_000000000042": [
            ([[5, 5], [6, 6], [5, 6]], [[1, 1]]),
            ([[35, 25], [34, 24], [35, 24]], [[1, 1]]),
        ]
    }
    root = make_salicon(tmp_path, rng, split="val", gaze=gaze)
    params = {"sigma": 2.0, "threshold": 0.2}
    ds = SaliconDataset(root, "val", regions="clusters", cluster_params=params)
    assert ds.name == "SALICON-val"
    s = ds[0]
    expected, _ = fixation_clusters(s.fixation_map, **params)
    assert s.masks.shape[0] == 2 and s.categories == ["unlabelled"] * 2
    np.testing.assert_array_equal(s.masks, expected)
    with pytest.raises(FileNotFoundError, match="no SALICON fixation files"):
        SaliconDataset(root, "train")


def test_empty_image_warns(tmp_path, rng):
    gaze = {"COCO_train2014_000000000001": [(np.zeros((0, 2)), np.zeros((0, 2)))]}
    ds = SaliconDataset(make_salicon(tmp_path, rng, gaze=gaze), "train")
    with pytest.warns(UserWarning, match="holds no fixations point"):
        s = ds[0]
    assert not s.fixation_map.any() and s.meta["n_fixations"] == 0


def test_bad_inputs(tmp_path, rng):
    root = make_salicon(tmp_path, rng)
    with pytest.raises(ValueError, match="split must be 'train' or 'val'"):
        SaliconDataset(root, "test")
    with pytest.raises(ValueError, match="gaze must be"):
        SaliconDataset(root, gaze="eyes")
    with pytest.raises(ValueError, match="regions must be 'none' or 'clusters'"):
        SaliconDataset(root, regions="sr")
    fix_dir = root / "fixations" / "train"
    name = "COCO_train2014_000000000009"
    observers = GAZE[name]

    write_salicon_mat(fix_dir / f"{name}.mat", name, observers, drop="fixations")
    with pytest.raises(ValueError, match="gaze\\(1\\) has no field 'fixations'"):
        SaliconDataset(root)[0]
    write_salicon_mat(fix_dir / f"{name}.mat", name, observers, skip_var="gaze")
    with pytest.raises(ValueError, match="no variable 'gaze' \\(found: image, resolution\\)"):
        SaliconDataset(root)[0]
    write_salicon_mat(fix_dir / f"{name}.mat", name, observers, resolution=(480, 640))
    with pytest.raises(ValueError, match="resolution 480 x 640 but .* is 30 x 40"):
        SaliconDataset(root)[0]
    write_salicon_mat(fix_dir / f"{name}.mat", "COCO_train2014_000000000777", observers)
    with pytest.raises(ValueError, match="describes image 'COCO_train2014_000000000777'"):
        SaliconDataset(root)[0]
    scipy.io.savemat(
        str(fix_dir / f"{name}.mat"),
        {"image": name, "gaze": np.array([[{"fixations": np.ones((4, 3))}]], dtype=object)},
    )
    with pytest.raises(ValueError, match="has shape \\(4, 3\\); SALICON stores K x 2"):
        SaliconDataset(root)[0]
    SaliconDataset(root)[1]  # the intact file still loads

    (root / "images" / "train" / f"{name}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=f"1 of 2 images with a fixation file are missing .*first: {name}"):
        SaliconDataset(root)
    with pytest.raises(FileNotFoundError, match="no SALICON fixation files"):
        SaliconDataset(tmp_path / "nowhere")
