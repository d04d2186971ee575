"""Sample validation, ListDataset / Subset / first, and LazyDataset indexing."""
import numpy as np
import pytest

from datasets.base import LazyDataset, ListDataset, Sample, Subset, first
from datasets.folder import instance_masks

H, W = 6, 8


def _img(dtype=np.uint8):
    return np.zeros((H, W, 3), dtype)


def test_sample_normalises_masks_and_categories():
    one = np.zeros((H, W), np.uint8)
    one[1:3, 2:5] = 255  # a single 0/255 mask is binary
    s = Sample("a", _img(), one, [7])
    assert s.masks.shape == (1, H, W) and s.masks.dtype == bool and s.masks.sum() == 6
    assert s.categories == ["7"] and s.shape == (H, W)
    empty = Sample("b", _img(), [], [])
    assert empty.masks.shape == (0, H, W)
    fix = Sample("c", _img(), np.zeros((0, H, W), bool), [], fixation_map=np.eye(H, W, dtype=np.uint8))
    assert fix.fixation_map.dtype == bool and fix.fixation_map.sum() == H


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16, np.int64])
def test_image_must_be_uint8(dtype):
    with pytest.raises(ValueError, match=r"image 'x': expected a uint8 RGB array .* \(img \* 255\)\.round\(\)"):
        Sample("x", _img(dtype), np.zeros((0, H, W), bool), [])


def test_a_label_map_passed_as_masks_is_refused():
    labels = np.zeros((H, W), np.int32)
    labels[0:2, 0:2], labels[3:5, 3:6] = 1, 2
    with pytest.raises(ValueError, match="2 different non-zero values, i.e. a label map.*instance_masks"):
        Sample("x", _img(), labels, ["a"])
    # What the message suggests works: one mask per region.
    _, masks = instance_masks(labels)
    s = Sample("x", _img(), masks, ["a", "b"])
    assert s.masks.shape == (2, H, W) and [int(m.sum()) for m in s.masks] == [4, 6]
    with pytest.raises(ValueError, match="label map"):  # a soft mask is not binary either
        Sample("x", _img(), np.linspace(0, 1, H * W).reshape(H, W), ["a"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(image=np.zeros((H, W), np.uint8)), "H x W x 3"),
        (dict(masks=np.zeros((1, H, W + 1), bool)), "expected R x 6 x 8"),
        (dict(categories=[]), "1 masks but 0 categories"),
        (dict(fixation_map=np.zeros((H + 1, W), bool)), "fixation map is 7 x 8"),
    ],
)
def test_sample_shape_errors(kwargs, match):
    args = dict(image_id="x", image=_img(), masks=np.zeros((1, H, W), bool), categories=["a"])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Sample(**args)


def _samples(n):
    return [Sample(f"s{i}", np.full((H, W, 3), i, np.uint8), np.zeros((0, H, W), bool), []) for i in range(n)]


def test_list_subset_and_first():
    data = ListDataset(_samples(5), name="five")
    assert len(data) == 5 and data[-1].image_id == "s4" and [s.image_id for s in data][:2] == ["s0", "s1"]
    sub = Subset(data, [3, 1])
    assert sub.name == "five" and len(sub) == 2
    assert [s.image_id for s in sub] == ["s3", "s1"] and sub[-1].image_id == "s1"
    with pytest.raises(IndexError):
        sub[2]
    assert first(data, None) is data and first(data, 5) is data and first(data, 9) is data
    head = first(data, 2)
    assert isinstance(head, Subset) and [s.image_id for s in head] == ["s0", "s1"]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            first(data, bad)


class _Lazy(LazyDataset):
    name = "lazy"

    def __init__(self, n):
        self._items = list(range(n))
        self.loaded = []

    def _load(self, i):
        self.loaded.append(i)
        return _samples(i + 1)[i]


def test_lazy_dataset_indexing():
    data = _Lazy(3)
    assert len(data) == 3 and data[-1].image_id == "s2" and data[np.int64(1)].image_id == "s1"
    assert [s.image_id for s in data] == ["s0", "s1", "s2"]
    assert data.loaded == [2, 1, 0, 1, 2]  # only what was asked for, when it was asked for
    for bad in (3, -4):
        with pytest.raises(IndexError, match=f"index {bad} out of range for lazy with 3 images"):
            data[bad]
    with pytest.raises(TypeError):
        data["s0"]
    with pytest.raises(TypeError):
        data[1.0]
