"""Synthetic pop-out arrays: determinism, exact masks, one-feature differences, round trip, loader errors.

The references here are independent of the generator's internals: items are found from the image
pixels (everything that differs from the background, grouped by grid cell), coverage is estimated
back from the composite ``pixel = bg + alpha (fill - bg)``, and the item colours are recomputed with
skimage from the documented CIELAB specs.
"""
import csv
import functools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import measure
from skimage.color import lab2rgb, rgb2lab

from datasets.popout import (
    CONTROL_DIMENSIONS,
    DIMENSIONS,
    PopoutDataset,
    PopoutFolder,
    PopoutParams,
    array_seed,
    generate_array,
    render_array,
    write_popout_set,
)

P = PopoutParams()
ALL = DIMENSIONS + CONTROL_DIMENSIONS
SMALL = PopoutParams(canvas=(64, 64), grid=(3, 3), item_size=12.0)
SEED = 3
# Uint8 rounding moves each channel by <= 0.5, so alpha estimated from a summed |pixel - bg| over
# 3 channels is off by <= 1.5 / sum|fill - bg|.
ROUND = 1.5


@functools.lru_cache(maxsize=None)
def _sample(dimension, seed=SEED, params=P):
    """Generated once per (dimension, seed, params); tests must not mutate it."""
    return generate_array(dimension, seed, params)


def _lch_rgb(lightness, chroma=0.0, hue_deg=0.0):
    h = math.radians(hue_deg)
    return lab2rgb(np.array([[[lightness, chroma * math.cos(h), chroma * math.sin(h)]]]))[0, 0] * 255.0


def _target_fill(dimension, params=P):
    """The target's colour, recomputed from the documented spec (module docstring table)."""
    c = params.contrast
    if dimension in ("hue", "conjunction"):
        return _lch_rgb(params.item_lightness, params.chroma, 200.0 - 180.0 * c)
    if dimension == "luminance":
        return _lch_rgb(params.item_lightness + 25.0 * c)
    return _lch_rgb(params.item_lightness)


def _items(sample, params=P):
    """{(row, col): bool pixels of the item in that cell}: non-background pixels grouped by cell."""
    h, w = params.canvas
    rows, cols = params.grid
    nonbg = (sample.image != params.background).any(-1)
    yy, xx = np.mgrid[:h, :w]
    r, c = (yy * rows) // h, (xx * cols) // w
    return {(i, j): nonbg & (r == i) & (c == j) for i in range(rows) for j in range(cols)}


def _alpha(sample, fill, params=P):
    """Coverage estimated from the pixels: sum |pixel - bg| / sum |fill - bg| (exact up to rounding)."""
    dev = np.abs(sample.image.astype(float) - params.background).sum(-1)
    return dev / np.abs(np.asarray(fill) - params.background).sum()


def _describe(sample, fill_of, params=P):
    """Per item: target flag, ink (sum of alpha), interior Lab, ink spread, axis angle, alpha>=0.5 props."""
    lab = rgb2lab(sample.image)
    target = (sample.meta["target_row"], sample.meta["target_col"])
    out = []
    for key, pix in _items(sample, params).items():
        fill = fill_of(sample.image[pix])
        a = np.where(pix, _alpha(sample, fill, params), 0.0)
        yy, xx = np.nonzero(pix)
        wts = a[pix]
        cy, cx = np.average(yy, weights=wts), np.average(xx, weights=wts)
        cov = np.cov(np.stack([xx, yy]), aweights=wts)
        evals, evecs = np.linalg.eigh(cov)
        # Major axis angle, degrees clockwise from vertical (y down), folded to [0, 180).
        angle = math.degrees(math.atan2(evecs[0, 1], -evecs[1, 1])) % 180.0
        half = a >= 0.5
        props = measure.regionprops(measure.label(half, connectivity=2))
        interior = a > 0.99
        out.append(
            dict(
                target=key == target,
                ink=a.sum(),
                lab=lab[interior].mean(0) if interior.any() else None,
                lab_half=lab[half].mean(0),
                spread=math.sqrt(np.average((yy - cy) ** 2 + (xx - cx) ** 2, weights=wts)),
                angle=angle,
                elongation=evals[1] / evals[0],
                parts=len(props),
                solidity=props[0].solidity,
                extent=props[0].extent,
                euler=props[0].euler_number,
            )
        )
    tgt = [o for o in out if o["target"]]
    assert len(tgt) == 1
    return tgt[0], [o for o in out if not o["target"]]


def _max_fill(pixels):
    """Fill = the item's most extreme pixel (items with fully covered interior pixels)."""
    return pixels[np.abs(pixels.astype(float) - P.background).sum(-1).argmax()].astype(float)


def _grey_fill(_pixels):
    return _lch_rgb(P.item_lightness)


def _hue_angle(lab):
    return math.degrees(math.atan2(lab[2], lab[1])) % 360.0


# ------------------------------------------------------------------------------------------ basics


def test_same_seed_same_pixels_and_layout_shared_across_dimensions():
    a, b = _sample("hue"), generate_array("hue", SEED)  # a fresh render
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    assert a.meta == b.meta and a.image_id == "hue_seed3" and a.categories == ["hue"]
    c = generate_array("hue", SEED + 1)
    assert not np.array_equal(a.image, c.image)
    # The layout depends on the seed only (documented): same target cell in every dimension.
    o = _sample("orientation")
    assert (o.meta["target_row"], o.meta["target_col"]) == (a.meta["target_row"], a.meta["target_col"])
    assert a.image.dtype == np.uint8 and a.image.shape == (224, 224, 3)
    assert a.masks.dtype == bool and a.masks.shape == (1, 224, 224)
    assert a.fixation_map is None


def test_target_position_varies_with_seed():
    samples = (generate_array("size", k, SMALL) for k in range(12))
    cells = {(s.meta["target_row"], s.meta["target_col"]) for s in samples}
    assert len(cells) >= 4


@pytest.mark.parametrize("dimension", ALL)
def test_mask_is_the_target_coverage_at_one_half(dimension):
    s = _sample(dimension)
    mask = s.masks[0]
    fill = _target_fill(dimension)
    items = _items(s)
    target_pix = items[(s.meta["target_row"], s.meta["target_col"])]
    # The mask lies on the target's own item, and every mask pixel differs from the background.
    assert mask.any() and not (mask & ~target_pix).any()
    assert (s.image[mask] != P.background).any(-1).all()
    # Mask == (coverage >= 0.5), coverage recovered from the pixels; ties within rounding excused.
    alpha = np.where(target_pix, _alpha(s, fill), 0.0)
    tol = ROUND / np.abs(fill - P.background).sum()
    decided = np.abs(alpha - 0.5) > tol
    assert np.array_equal(mask[decided], (alpha >= 0.5)[decided])
    # Metadata: p, the NMM ceiling sqrt((1 - p) / p), and the target centre (1-based pixels).
    p = mask.sum() / mask.size
    assert s.meta["mask_fraction"] == pytest.approx(p, rel=1e-12)
    assert s.meta["nmm_ceiling"] == pytest.approx(math.sqrt((1 - p) / p), rel=1e-12)
    rows, cols = np.nonzero(mask)
    # bbox centre of the mask, 0-based pixel centres + 1 -> 1-based; within a pixel of the meta.
    assert (cols.min() + cols.max()) / 2 + 1 == pytest.approx(s.meta["target_x"], abs=1.0)
    assert (rows.min() + rows.max()) / 2 + 1 == pytest.approx(s.meta["target_y"], abs=1.0)


# Analytic target areas for item_size s = 20 at contrast 1 (module docstring table).
_S = 20.0
_AREAS = {
    "hue": math.pi * (_S / 2) ** 2,
    "luminance": math.pi * (_S / 2) ** 2,
    "orientation": _S * _S / 4,
    "size": math.pi * (_S / 2) ** 2,
    "shape": math.pi * (0.8 * _S / 2) ** 2,
    "curvature": _S * 0.2 * _S,
    "closure": 2 * math.pi * ((_S - 0.15 * _S * 4 / 3) / 2) * 0.15 * _S,  # 2 pi r w, w_C = w * 360 / 270
    "density": 9 * math.pi * (0.15 * _S / 2) ** 2,
    "conjunction": _S * _S / 4,
}


@pytest.mark.parametrize("dimension", ALL)
def test_target_ink_and_mask_match_the_geometric_area(dimension):
    s = _sample(dimension)
    r = render_array(dimension, SEED)
    # Coverage sums to the exact area to within the 8 x 8 supersampling error (module docstring,
    # "Sampling tolerance"): < 1.5 % for items of 80+ px; the 3 px density dots (~450 samples
    # each) can be off by ~3 %.
    rel = 0.04 if dimension == "density" else 0.015
    assert r.target_coverage.sum() == pytest.approx(_AREAS[dimension], rel=rel)
    # The >= 0.5 mask trades boundary pixels in and out: its count is near the area.
    assert s.masks[0].sum() == pytest.approx(_AREAS[dimension], rel=0.10)
    assert 0.0005 < s.meta["mask_fraction"] < 0.01
    assert np.array_equal(r.target_mask, s.masks[0]) and np.array_equal(r.image, s.image)
    assert not ((r.target_coverage > 0) & (r.distractor_coverage > 0)).any()


# ------------------------------------------------------------------ one feature differs, per dimension


def _same_lightness(t, ds, tol=1.0):
    """Interior (fully covered) pixels: same L* (items without interior pixels are skipped)."""
    for d in ds:
        if t["lab"] is not None and d["lab"] is not None:
            assert abs(t["lab"][0] - d["lab"][0]) < tol


def _same_ink(t, ds, rel=0.02):
    # Documented tolerance at supersample 8: <= 1.1 % (shape), 3.1 % (density; callers pass 0.04).
    for d in ds:
        assert d["ink"] == pytest.approx(t["ink"], rel=rel)


def test_hue_is_isoluminant_and_differs_in_hue():
    t, ds = _describe(_sample("hue"), _max_fill)
    _same_lightness(t, ds, tol=0.5)
    _same_ink(t, ds)
    for d in ds:
        # Mean L* over each item's >= 0.5-coverage pixels, edges included (equal disc shapes).
        assert abs(t["lab_half"][0] - d["lab_half"][0]) < 1.0
        dh = abs(_hue_angle(t["lab"]) - _hue_angle(d["lab"]))
        assert min(dh, 360 - dh) > 150  # 180 deg apart by spec
        assert np.hypot(*t["lab"][1:]) == pytest.approx(np.hypot(*d["lab"][1:]), abs=1.5)  # same chroma


def test_hue_luma601_matches_bt601_luma_instead():
    params = PopoutParams(isoluminance="luma601")
    s = _sample("hue", SEED, params)
    def luma_of(rgb):
        return float(np.asarray(rgb) @ np.array([0.299, 0.587, 0.114]))

    t, ds = _describe(s, _max_fill, params)
    items = _items(s, params)
    d_pix = items[next(k for k in items if k != (s.meta["target_row"], s.meta["target_col"]))]
    t_fill, d_fill = _max_fill(s.image[s.masks[0]]), _max_fill(s.image[d_pix])
    assert luma_of(t_fill) == pytest.approx(luma_of(d_fill), abs=1.0)  # uint8 rounding
    # ... and in CIELAB the two are no longer isoluminant (the documented trade-off).
    assert abs(t["lab"][0] - ds[0]["lab"][0]) > 3


def test_luminance_differs_only_in_lightness():
    s = _sample("luminance")
    t, ds = _describe(s, _max_fill)
    _same_ink(t, ds)
    for d in ds:
        assert t["lab"][0] - d["lab"][0] == pytest.approx(25.0, abs=1.0)
        assert np.hypot(*t["lab"][1:]) < 1 and np.hypot(*d["lab"][1:]) < 1


def test_orientation_same_area_and_lightness_rotated_90():
    t, ds = _describe(_sample("orientation"), _grey_fill)
    _same_ink(t, ds)
    _same_lightness(t, ds)
    assert abs(t["angle"] - 90.0) < 3
    assert all(min(d["angle"], 180 - d["angle"]) < 3 for d in ds)


def test_size_target_twice_the_diameter_same_lightness():
    t, ds = _describe(_sample("size"), _grey_fill)
    _same_lightness(t, ds)
    for d in ds:
        assert t["ink"] / d["ink"] == pytest.approx(4.0, rel=0.05)  # linear ratio 2


def test_shape_square_among_discs_of_equal_area():
    t, ds = _describe(_sample("shape"), _grey_fill)
    _same_ink(t, ds)
    _same_lightness(t, ds)
    assert t["extent"] > 0.95  # a square fills its bounding box
    assert all(d["extent"] < 0.85 for d in ds)  # a disc fills pi / 4


def test_curvature_arc_among_straight_strokes_of_equal_area():
    t, ds = _describe(_sample("curvature"), _grey_fill)
    _same_ink(t, ds)
    _same_lightness(t, ds)
    assert t["solidity"] < 0.85 and t["elongation"] < 12
    assert all(d["solidity"] > 0.95 and d["elongation"] > 20 for d in ds)


def test_closure_closed_ring_among_cs_of_equal_ink():
    t, ds = _describe(_sample("closure"), _grey_fill)
    _same_ink(t, ds)
    _same_lightness(t, ds)
    assert t["euler"] == 0 and t["parts"] == 1  # one component with one hole
    assert all(d["euler"] == 1 and d["parts"] == 1 for d in ds)


def test_density_same_dots_packed_twice_as_tight():
    t, ds = _describe(_sample("density"), _grey_fill)
    _same_ink(t, ds, rel=0.04)  # 3 px dots, 64 samples/px: sub-pixel phase moves the ink by <~3.1 %
    for d in ds:
        assert t["spread"] / d["spread"] == pytest.approx(0.5, abs=0.06)
        assert d["parts"] == 9


def test_conjunction_target_shares_each_feature_with_some_distractors():
    s = _sample("conjunction")
    t, ds = _describe(s, _max_fill)
    _same_ink(t, ds)
    _same_lightness(t, ds)

    def same_colour(d):
        return np.linalg.norm(t["lab"] - d["lab"]) < 1.5

    def same_angle(d):
        return abs(((t["angle"] - d["angle"]) + 90) % 180 - 90) < 3

    assert any(same_colour(d) for d in ds) and any(same_angle(d) for d in ds)
    assert not any(same_colour(d) and same_angle(d) for d in ds)
    n_colour = sum(same_colour(d) for d in ds)
    assert abs(2 * n_colour - len(ds)) <= 1  # half of each kind


@pytest.mark.parametrize("dimension", ALL)
def test_contrast_zero_makes_the_target_a_distractor(dimension):
    params = PopoutParams(contrast=0.0)
    fill_of = _max_fill if dimension in ("hue", "conjunction") else _grey_fill
    t, ds = _describe(_sample(dimension, SEED, params), fill_of, params)
    _same_ink(t, ds, rel=0.04)  # the density dots: see test_density_same_dots_packed_twice_as_tight
    _same_lightness(t, ds)
    assert abs(t["spread"] - ds[0]["spread"]) < 0.3
    assert abs(((t["angle"] - ds[0]["angle"]) + 90) % 180 - 90) < 3 or t["elongation"] < 1.5


# ------------------------------------------------------------------------ classical pop-out check


def _feature_contrast(sample):
    """|Lab(pixel) - mean Lab(image)|: a trivial global colour/luminance conspicuity map."""
    lab = rgb2lab(sample.image)
    return np.linalg.norm(lab - lab.reshape(-1, 3).mean(0), axis=-1)


def _distractor_scores(sample, fmap):
    target = (sample.meta["target_row"], sample.meta["target_col"])
    if sample.categories[0] == "luminance":
        fill = _grey_fill(None)
    else:
        fill = _lch_rgb(P.item_lightness, P.chroma, 200.0)
    half = _alpha(sample, fill) >= 0.5
    return [fmap[pix & half].mean() for key, pix in _items(sample).items() if key != target]


@pytest.mark.parametrize("dimension", ["hue", "luminance"])
def test_colour_and_luminance_targets_pop_out_on_feature_contrast(dimension):
    s = _sample(dimension)
    fmap = _feature_contrast(s)
    at_target = fmap[s.masks[0]].mean()
    others = _distractor_scores(s, fmap)
    assert at_target > max(others) + 10.0  # Lab units; ~43 vs ~30 for hue, ~36 vs ~12 for luminance
    assert at_target > fmap[~s.masks[0]].mean()


def test_conjunction_target_has_no_colour_contrast_advantage():
    s = _sample("conjunction")
    fmap = _feature_contrast(s)
    target = (s.meta["target_row"], s.meta["target_col"])
    per_item = [fmap[pix & (fmap > 0)].max() for key, pix in _items(s).items() if key != target]
    # Same-colour distractors reach the target's colour contrast (1 Lab unit: uint8 rounding).
    assert fmap[s.masks[0]].max() <= max(per_item) + 1.0


# ------------------------------------------------------------------------------------ input errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(canvas=(224,)), "canvas"),
        (dict(grid=(1, 1)), "grid"),
        (dict(jitter=0.5), "jitter"),
        (dict(contrast=1.5), "contrast"),
        (dict(item_size=0), "item_size"),
        (dict(background=300), "background"),
        (dict(supersample=0), "supersample"),
        (dict(isoluminance="luma"), "isoluminance"),
    ],
)
def test_bad_params_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PopoutParams(**kwargs)


def test_generation_errors():
    with pytest.raises(ValueError, match="unknown pop-out dimension 'colour'"):
        generate_array("colour", 0)
    with pytest.raises(ValueError, match="seed"):
        generate_array("hue", -1)
    with pytest.raises(ValueError, match="do not fit"):
        generate_array("size", 0, PopoutParams(item_size=60.0))
    # The fit check is for every jitter draw: it does not depend on the seed.
    for seed in (0, 1):
        with pytest.raises(ValueError, match="do not fit"):
            generate_array("hue", seed, PopoutParams(jitter=0.3))
    with pytest.raises(ValueError, match="luminance target would need L"):
        generate_array("luminance", 0, PopoutParams(item_lightness=90.0))
    with pytest.raises(ValueError, match="gamut"):
        generate_array("hue", 0, PopoutParams(chroma=80.0))
    # Grey items at the background's own L* would be invisible.
    bg_lightness = float(rgb2lab(np.full((1, 1, 3), 128, np.uint8))[0, 0, 0])
    with pytest.raises(ValueError, match="invisible"):
        generate_array("orientation", 0, PopoutParams(item_lightness=bg_lightness))
    with pytest.raises(ValueError, match="conjunction control needs at least 3 cells"):
        generate_array("conjunction", 0, PopoutParams(canvas=(32, 64), grid=(1, 2), item_size=10.0))


# ---------------------------------------------------------------------------------------- datasets


def test_default_dataset_is_80_arrays_in_dimension_order():
    ds = PopoutDataset()
    assert len(ds) == 80 and ds.name == "popout"
    first, last = ds[0], ds[-1]
    assert first.image_id == "hue_000" and last.image_id == "density_009"
    assert np.array_equal(ds[13].image, generate_array("luminance", array_seed(0, 3)).image)
    assert ds[13].image_id == "luminance_003" and ds[13].meta["seed"] == array_seed(0, 3)
    with_control = PopoutDataset(1, seed=5, dimensions=DIMENSIONS + CONTROL_DIMENSIONS, params=SMALL)
    assert [s.image_id for s in with_control] == [f"{d}_s5_000" for d in ALL]
    with pytest.raises(IndexError):
        ds[80]
    with pytest.raises(TypeError):
        ds["hue_000"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_per_dimension=0), "n_per_dimension"),
        (dict(dimensions="hue"), "not a string"),
        (dict(dimensions=("hue", "hue")), "duplicates"),
        (dict(dimensions=("hue", "motion")), "unknown pop-out dimension 'motion'"),
        (dict(dimensions=()), "empty"),
        (dict(seed=-2), "seed"),
    ],
)
def test_dataset_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PopoutDataset(**kwargs)


def _assert_same(a, b):
    assert a.image_id == b.image_id and a.categories == b.categories
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    assert a.meta == b.meta


def test_write_read_round_trip(tmp_path):
    ds = PopoutDataset(n_per_dimension=1, seed=2, dimensions=ALL, params=SMALL)
    out = write_popout_set(ds, tmp_path / "set")
    assert out == tmp_path / "set"
    with open(out / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image_id"] for r in rows] == [f"{d}_s2_000" for d in ALL]
    wanted = {"image_id", "dimension", "seed", "target_x", "target_y", "mask_fraction", "item_size", "jitter"}
    assert wanted <= set(rows[0])
    mask_png = np.asarray(Image.open(out / "masks" / "hue_s2_000.png"))
    assert mask_png.dtype == np.uint8 and set(np.unique(mask_png)) == {0, 255}
    folder = PopoutFolder(out)
    assert len(folder) == len(ds) and folder.name == "popout"
    assert folder.category_order == list(ALL) == ds.category_order
    for a, b in zip(ds, folder):
        _assert_same(a, b)
    # A folder's samples can be written again, unchanged.
    again = PopoutFolder(write_popout_set(folder, tmp_path / "again"))
    _assert_same(again[3], ds[3])


def test_writer_rejects_non_popout_samples(tmp_path):
    s = generate_array("hue", 0, SMALL)
    s.meta = {}
    with pytest.raises(ValueError, match="lacks pop-out metadata"):
        write_popout_set([s], tmp_path)
    t = generate_array("hue", 0, SMALL)
    with pytest.raises(ValueError, match="duplicate image id 'hue_seed0'"):
        write_popout_set([t, t], tmp_path)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PopoutFolder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        PopoutFolder(tmp_path)
    ds = PopoutDataset(n_per_dimension=1, dimensions=("hue", "size"), params=SMALL)
    root = write_popout_set(ds, tmp_path / "s")
    (root / "masks" / "size_000.png").unlink()
    with pytest.raises(FileNotFoundError, match="'size_000' has no mask"):
        PopoutFolder(root)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / "masks" / "size_000.png")
    with pytest.raises(ValueError, match="stale"):
        PopoutFolder(root)[1]
    (root / "images" / "hue_000.png").unlink()
    with pytest.raises(FileNotFoundError, match="hue_000.png"):
        PopoutFolder(root)
    (root / "metadata.csv").write_text("image_id,dimension\nhue_000,hue\n")
    with pytest.raises(ValueError, match="lacks columns"):
        PopoutFolder(root)


def test_module_does_not_import_torch():
    code = "import sys, datasets.popout; sys.exit('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0


# ------------------------------------------------------------------------------- seeds and defaults


def test_array_seeds_are_independent_across_dataset_seeds():
    a = PopoutDataset(10, seed=0, dimensions=("size",), params=SMALL)
    b = PopoutDataset(10, seed=1, dimensions=("size",), params=SMALL)
    # seed + k made seeds 0 and 1 share 9 of 10 arrays; SeedSequence([seed, k]) shares none.
    seeds_a = [s.meta["seed"] for s in a]
    seeds_b = [s.meta["seed"] for s in b]
    assert seeds_a == [int(np.random.SeedSequence([0, k]).generate_state(1)[0]) for k in range(10)]
    assert not set(seeds_a) & set(seeds_b) and len(set(seeds_a)) == 10
    assert not any(np.array_equal(x.image, y.image) for x in a for y in b)
    assert not {s.image_id for s in a} & {s.image_id for s in b}  # "size_003" vs "size_s1_003"
    # Array k does not depend on n_per_dimension, and generate_array reproduces it from meta["seed"].
    short = PopoutDataset(2, seed=1, dimensions=("hue", "size"), params=SMALL)
    assert short[3].image_id == b[1].image_id and np.array_equal(short[3].image, b[1].image)
    assert np.array_equal(generate_array("size", b[4].meta["seed"], SMALL).image, b[4].image)
    with pytest.raises(ValueError, match="array index"):
        array_seed(0, -1)


def test_item_size_follows_canvas_and_grid():
    assert P.item_size == 20.0 and PopoutParams(item_size=20.0) == P  # the default array is unchanged
    small = PopoutParams(canvas=(64, 64))
    assert small.item_size == pytest.approx(64 / 6 * 15 / 28)
    assert PopoutParams(canvas=(64, 128), grid=(2, 8)).item_size == pytest.approx(min(32, 16) * 15 / 28)
    # Every dimension renders at 64 px with the default grid (density's dots are floored at 1.1 px).
    for dim in ALL:
        s = generate_array(dim, 7, small)
        assert s.image.shape == (64, 64, 3) and s.masks[0].any()
    t, ds = _describe(generate_array("density", 7, small), _grey_fill, small)
    assert all(d["ink"] == pytest.approx(t["ink"], rel=0.15) for d in ds)  # 1.1 px dots: coarse sampling
    with pytest.raises(ValueError, match="too small for the density dimension"):
        generate_array("density", 0, PopoutParams(canvas=(48, 48)))


def test_folder_category_order_and_unknown_dimension(tmp_path):
    ds = PopoutDataset(1, dimensions=("conjunction", "size", "hue"), params=SMALL)
    root = write_popout_set(ds, tmp_path / "s")
    assert PopoutFolder(root).category_order == ["hue", "size", "conjunction"]
    text = (root / "metadata.csv").read_text().replace("conjunction_000,conjunction", "conjunction_000,motion")
    (root / "metadata.csv").write_text(text)
    with pytest.raises(ValueError, match="line 2: unknown dimension 'motion'"):
        PopoutFolder(root)


def test_load_dataset_refuses_options_a_reader_does_not_take(tmp_path):
    from datasets import load_dataset

    root = write_popout_set(PopoutDataset(1, dimensions=("hue",), params=SMALL), tmp_path / "s")
    assert len(load_dataset("popout", root)) == 1
    with pytest.raises(ValueError, match=r"dataset 'popout' read from .* does not take option\(s\) seed; it takes none"):
        load_dataset("popout", root, seed=3)
    with pytest.raises(ValueError, match=r"'popout' does not take option\(s\) split; it takes n_per_dimension, seed"):
        load_dataset("popout", split="val")
    assert load_dataset("popout", n_per_dimension=1, seed=2)[0].image_id == "hue_s2_000"
