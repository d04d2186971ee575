"""Closed-form per-unit region NSS / NMM against the naive upsample-everything reference."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from probes import upsampling
from probes.regions import (
    RegionScorer,
    interpolation_matrix,
    unit_nmm,
    unit_nmm_naive,
    unit_region_nss,
    unit_region_nss_naive,
)

# Both paths are float64 and differ only in summation order, so they agree to ~1e-14; 1e-9 is
# strict yet far above rounding (the project promises 1e-5).
ATOL = 1e-9

# (H, W) image vs (h, w) maps: square, non-integer ratios, non-square, OSIE size, downsampling
# along one or both axes (the QR path), a single-row map.
SHAPES = [
    ((224, 224), (28, 28)),
    ((224, 224), (14, 14)),
    ((37, 53), (14, 9)),
    ((600, 800), (14, 14)),
    ((20, 30), (28, 28)),
    ((9, 40), (12, 7)),
    ((10, 12), (28, 28)),
    ((16, 16), (1, 5)),
]


def _unit_maps(rng, n_units, h, w):
    maps = np.maximum(rng.normal(size=(n_units, h, w)), 0.0)  # post-ReLU-like, many zeros
    maps[1] *= 50.0
    return maps


def _regions(rng, height, width, n_regions=4):
    """Blobs with >= 1 fixation each, a mask in the unfixated top-left third, an empty mask."""
    yy, xx = np.mgrid[:height, :width]
    masks = np.zeros((n_regions, height, width), dtype=bool)
    fix = rng.random((height, width)) < 0.05
    fix[: height // 3, : width // 3] = False
    for r in range(n_regions - 2):
        cy, cx = int(rng.uniform(height / 3, height)), int(rng.uniform(width / 3, width))
        radius = rng.uniform(0.15, 0.4) * min(height, width)
        masks[r] = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
        masks[r, cy, cx] = fix[cy, cx] = True
    masks[n_regions - 2, : max(1, height // 3), : max(1, width // 3)] = True
    fix[: max(1, height // 3), : max(1, width // 3)] = False
    return masks, fix


@pytest.mark.parametrize("image_shape,map_shape", SHAPES)
def test_interpolation_matrices_reproduce_f_interpolate(rng, image_shape, map_shape):
    maps = rng.normal(size=(3,) + map_shape)
    uy = interpolation_matrix(image_shape[0], map_shape[0])
    ux = interpolation_matrix(image_shape[1], map_shape[1])
    ours = np.einsum("Hh,chw,Ww->cHW", uy, maps, ux)
    ref = F.interpolate(torch.from_numpy(maps)[:, None], size=image_shape, mode="bilinear",
                        align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(uy.sum(axis=1), 1.0, atol=1e-15)


def test_interpolation_matrix_by_hand():
    # 2 -> 4 with half-pixel centres: sources at -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped).
    expected = np.array([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])
    np.testing.assert_array_equal(interpolation_matrix(4, 2), expected)
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        interpolation_matrix(0, 2)


def test_tiny_case_by_hand():
    # [[0, 1], [2, 3]] upsampled to 4 x 4 (rows/columns as in the test above):
    # [[0, .25, .75, 1], [.5, .75, 1.25, 1.5], [1.5, 1.75, 2.25, 2.5], [2, 2.25, 2.75, 3]]
    # mean 24 / 16 = 1.5; sum of squared deviations 4.625 + 1.625 + 1.625 + 4.625 = 12.5.
    a = np.array([[0.0, 1.0], [2.0, 3.0]])
    maps = np.stack([a, 10.0 * a + 100.0, np.full((2, 2), 5.0)])  # affine copy; a dead unit
    std = np.sqrt(12.5 / 16)
    fix = np.zeros((4, 4), dtype=bool)
    fix[0, 0] = fix[3, 3] = fix[1, 2] = True  # values 0, 3, 1.25
    masks = np.zeros((3, 4, 4), dtype=bool)
    masks[0] = True  # whole image
    masks[1, 2:, 2:] = True  # bottom-right quadrant: only (3, 3) is fixated
    masks[2, 0, 3] = True  # top-right pixel: no fixation -> NaN
    nss = unit_region_nss(maps, fix, masks)
    expected = np.array([((0 + 3 + 1.25) / 3 - 1.5) / std, (3 - 1.5) / std, np.nan])
    np.testing.assert_allclose(nss[0], expected, atol=1e-12)
    np.testing.assert_allclose(nss[1], expected, atol=1e-12)  # NSS is affine-invariant
    assert np.isnan(nss[2]).all()
    nmm = unit_nmm(maps, masks)
    # bottom-right quadrant holds 2.25, 2.5, 2.75, 3 (mean 2.625); the top-right pixel is 1.
    np.testing.assert_allclose(nmm[0], [0.0, (2.625 - 1.5) / std, (1.0 - 1.5) / std], atol=1e-12)
    assert np.isnan(nmm[2]).all()


@pytest.mark.parametrize("image_shape,map_shape", SHAPES)
def test_fast_matches_naive(rng, image_shape, map_shape):
    maps = _unit_maps(rng, 5, *map_shape)
    maps[3] = 0.0  # dead unit
    masks, fix = _regions(rng, *image_shape)
    fast = unit_region_nss(maps, fix, masks)
    naive = unit_region_nss_naive(maps, fix, masks)
    np.testing.assert_allclose(fast, naive, rtol=0, atol=ATOL)  # NaNs must coincide too
    assert np.isnan(fast[3]).all()
    assert np.isnan(fast[:, -2:]).all() and np.isfinite(fast[[0, 1, 2, 4], :-2]).all()
    fast_nmm = unit_nmm(maps, masks)
    np.testing.assert_allclose(fast_nmm, unit_nmm_naive(maps, masks), rtol=0, atol=ATOL)
    assert np.isnan(fast_nmm[:, -1]).all() and np.isfinite(fast_nmm[[0, 1, 2, 4], :-1]).all()


def test_torch_and_numpy_inputs_agree(rng):
    maps32 = _unit_maps(rng, 4, 14, 9).astype(np.float32)
    masks, fix = _regions(rng, 37, 53)
    from_numpy = unit_region_nss(maps32, fix, masks)
    from_torch = unit_region_nss(torch.from_numpy(maps32), torch.from_numpy(fix), torch.from_numpy(masks))
    np.testing.assert_array_equal(from_numpy, from_torch)
    np.testing.assert_array_equal(unit_nmm(maps32, masks), unit_nmm(torch.from_numpy(maps32), masks))
    assert from_numpy.dtype == np.float64


def test_dead_units_are_nan(rng):
    maps = _unit_maps(rng, 4, 4, 6)
    maps[0] = 0.0
    maps[1] = 7.25
    # Rows alternating +1/-1: 4 -> 2 rows averages each pair, so the downsampled map is flat.
    maps[2] = np.array([1.0, -1.0, 1.0, -1.0])[:, None] * np.ones(6) + 3.0
    masks, fix = _regions(rng, 2, 12, n_regions=3)
    fix[:] = True
    fast = unit_region_nss(maps, fix, masks)
    naive = unit_region_nss_naive(maps, fix, masks)
    assert np.isnan(fast[:3]).all() and np.isnan(naive[:3]).all()
    assert np.isfinite(fast[3, 0])
    np.testing.assert_allclose(fast, naive, rtol=0, atol=ATOL)


def test_large_offset_does_not_cancel(rng):
    # Huge, nearly flat activations (He's fine-tuned conv5_3 reach 4e5): centring before squaring.
    maps = _unit_maps(rng, 3, 14, 14)
    masks, fix = _regions(rng, 60, 80)
    base = unit_region_nss(maps, fix, masks)
    shifted = unit_region_nss(maps + 4e5, fix, masks)
    np.testing.assert_allclose(shifted, base, rtol=0, atol=1e-7)


def test_duplicate_fixations_are_irrelevant(rng):
    maps = _unit_maps(rng, 3, 14, 14)
    masks, fix = _regions(rng, 50, 50)
    counts = fix.astype(np.int64) * rng.integers(1, 4, size=fix.shape)  # 1-3 fixations per pixel
    np.testing.assert_array_equal(unit_region_nss(maps, counts, masks), unit_region_nss(maps, fix, masks))


def test_scorer_reused_across_layers_and_images(rng):
    masks, fix = _regions(rng, 64, 48)
    scorer = RegionScorer(masks, fix)
    for shape in [(8, 8), (4, 4), (8, 8), (16, 12)]:
        maps = _unit_maps(rng, 3, *shape)
        np.testing.assert_allclose(scorer.score(maps), unit_region_nss_naive(maps, fix, masks), atol=ATOL)
    np.testing.assert_array_equal(scorer.n_pixels, (masks & fix).sum(axis=(1, 2)))
    assert scorer.kernels(8, 8).shape == (masks.shape[0], 8, 8)
    masks2, _ = _regions(rng, 30, 40, n_regions=3)
    scorer.set_regions(masks2)  # NMM now, other image size
    maps = _unit_maps(rng, 3, 8, 8)
    np.testing.assert_allclose(scorer.score(maps), unit_nmm_naive(maps, masks2), atol=ATOL)


def test_no_regions_or_units(rng):
    maps = _unit_maps(rng, 3, 4, 4)
    assert unit_region_nss(maps, np.ones((8, 8), bool), np.zeros((0, 8, 8), bool)).shape == (3, 0)
    assert unit_nmm(np.zeros((0, 4, 4)), np.ones((2, 8, 8), bool)).shape == (0, 2)


def test_bad_input_raises(rng):
    masks, fix = _regions(rng, 20, 20)
    maps = _unit_maps(rng, 2, 4, 4)
    with pytest.raises(ValueError, match="C x h x w"):
        unit_region_nss(maps[0], fix, masks)
    bad = maps.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        unit_region_nss(bad, fix, masks)
    with pytest.raises(ValueError, match="fixation_map is"):
        unit_region_nss(maps, fix[:10], masks)
    with pytest.raises(ValueError, match="boolean"):
        unit_nmm(maps, masks * 0.5)
    with pytest.raises(ValueError, match="set_regions"):
        RegionScorer().score(maps)


# --------------------------------------------------------------------------- fast paths, bit for bit


@pytest.mark.parametrize("image, maps", [((28, 28), (28, 28)), ((28, 40), (28, 14)), ((50, 9), (12, 9)),
                                          ((224, 224), (224, 224))])
def test_identity_axis_is_skipped_without_changing_a_bit(image, maps, rng):
    """A map as large as the image along an axis has R = I there; skipping its step must give the
    very same std as applying d = 1, e = 0 (what the general path does)."""
    import dataclasses

    from probes import regions

    arr = np.maximum(rng.standard_normal((5, *maps)), 0) * 3.7
    flat = arr.reshape(5, -1)
    mean, hi, lo = flat.mean(axis=1), flat.max(axis=1), flat.min(axis=1)
    ay, ax = upsampling.resized_axis(image[0], maps[0]), upsampling.resized_axis(image[1], maps[1])
    assert ay.identity == (image[0] == maps[0]) and ax.identity == (image[1] == maps[1])
    fast = upsampling.std_and_dead(arr, mean, hi, lo, ay, ax)
    general = upsampling.std_and_dead(arr, mean, hi, lo, dataclasses.replace(ay, identity=False),
                               dataclasses.replace(ax, identity=False))
    assert np.array_equal(fast[0], general[0]) and np.array_equal(fast[1], general[1])


def test_layout_and_float32_input_give_the_same_bits(rng):
    """Channels-last (non-contiguous) and float32 maps score exactly as the C-ordered float64 copy."""
    masks = np.zeros((2, 40, 50), dtype=bool)
    masks[0, 5:20, 5:30] = True
    masks[1, 22:38, 10:45] = True
    scorer = RegionScorer(masks)
    maps32 = np.maximum(rng.standard_normal((6, 14, 18)), 0).astype(np.float32)
    maps32[2] = 0.25  # a dead unit: max == min must be seen on the float32 values too
    ref = scorer.score(maps32.astype(np.float64))
    channels_last = np.ascontiguousarray(maps32.transpose(1, 2, 0)).transpose(2, 0, 1)
    assert not channels_last.flags.c_contiguous
    for maps in (maps32, channels_last, torch.from_numpy(maps32),
                 torch.from_numpy(maps32)[None].contiguous(memory_format=torch.channels_last)[0]):
        out = scorer.score(maps)
        assert np.array_equal(out, ref, equal_nan=True)
    assert np.isnan(ref[2]).all() and np.isfinite(ref[[0, 1, 3, 4, 5]]).all()


def test_extra_group_outside_the_image_names_the_group():
    masks = np.ones((1, 10, 12), dtype=bool)
    inside = (np.array([1, 2]), np.array([3, 4]))
    with pytest.raises(ValueError, match="extra group 2 has pixels outside the 10 x 12 image"):
        RegionScorer().set_regions(masks, extra_groups=[[inside], [inside, inside], [inside, (np.array([10]), np.array([0]))]])


def test_point_regions_equal_dense_masks_bit_for_bit(rng):
    """The engine hands the scorer the fixated pixels and which region holds each (no dense masks)."""
    masks = rng.random((4, 30, 41)) < 0.3
    fix = rng.random((30, 41)) < 0.05
    groups = [[(np.array([1, 2, 2]), np.array([3, 4, 4]))], [(np.array([29]), np.array([40]))]]
    maps = np.maximum(rng.standard_normal((7, 9, 11)), 0)
    dense = RegionScorer().set_regions(masks, fix, extra_groups=groups)
    ys, xs = np.nonzero(fix)
    points = RegionScorer().set_point_regions(fix.shape, ys, xs, masks[:, ys, xs], extra_groups=groups)
    assert np.array_equal(points.score(maps), dense.score(maps), equal_nan=True)
    assert np.array_equal(points.n_pixels, dense.n_pixels) and np.array_equal(points.extra_sizes, dense.extra_sizes)
    with pytest.raises(ValueError, match="member must be R x n"):
        RegionScorer().set_point_regions(fix.shape, ys, xs, masks[:, ys[:-1], xs[:-1]])
    with pytest.raises(ValueError, match="outside the 30 x 41 image"):
        RegionScorer().set_point_regions((30, 41), [30], [0], [[True]])


def test_extra_columns_on_the_used_cells_equal_the_dense_product(rng):
    """The null's extra columns are multiplied on the map cells they touch only; their scores
    equal the dense (R + E + 1)-row product up to summation order, and the real columns do not
    depend on whether extra columns are there."""
    from probes import regions

    masks = rng.random((3, 90, 120)) < 0.2
    fix = rng.random((90, 120)) < 0.02

    def pset():
        y, x = int(rng.integers(0, 80)), int(rng.integers(0, 110))
        return rng.integers(y, y + 10, 5), rng.integers(x, x + 10, 5)

    groups = [[pset() for _ in range(2)] for _ in range(40)]
    maps = np.maximum(rng.standard_normal((64, 45, 60)), 0)
    with_null = RegionScorer().set_regions(masks, fix, extra_groups=groups)
    assert isinstance(with_null._split_kernels(45, 60)[1], tuple)  # few cells used: the gathered form
    got = with_null.score(maps)
    flat = maps.reshape(64, -1)
    proj = flat @ with_null.kernel_matrix(45, 60).T  # the dense product
    ay, ax = upsampling.resized_axis(90, 45), upsampling.resized_axis(120, 60)
    std, dead = upsampling.std_and_dead(maps, proj[:, -1], flat.max(axis=1), flat.min(axis=1), ay, ax)
    dense = regions.scores_from_projection(proj, *with_null.column_weights(), std, dead)
    np.testing.assert_allclose(got, dense, rtol=1e-13, atol=1e-13)
    alone = RegionScorer().set_regions(masks, fix).score(maps)
    assert np.array_equal(got[:, :3], alone, equal_nan=True)
