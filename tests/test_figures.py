"""dissect.reports.figures: PNGs of the expected pixel size, something drawn, no open figures left."""
import matplotlib

matplotlib.use("Agg")  # the test process must not need a display

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from dissect.reports import figures  # noqa: E402


# every test here must close the figures it opens (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("no_figure_leak")


def _check_png(path, size):
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == size
        pixels = np.asarray(im.convert("RGB"), dtype=float)
    assert pixels.std() > 0  # not a blank canvas


@pytest.fixture
def summary():
    layers, cats = ["conv4_3", "conv5_3"], ["person head", "text", "other"]
    rows = [{"layer": l, "category": c, "top_k_mean": 0.5 + i + 0.3 * j, "count_above_threshold": 3 * i + j}
            for i, l in enumerate(layers) for j, c in enumerate(cats)]
    rows[-1]["top_k_mean"] = float("nan")
    return pd.DataFrame(rows)


@pytest.fixture
def units(rng):
    rows = [{"layer": "conv5_3", "unit": u, "category": c, "score": float(rng.normal(1 + j)),
             "n_regions": 4, "dead": u == 0}
            for j, c in enumerate(["a", "b", "c"]) for u in range(15)]
    return pd.DataFrame(rows)


def test_summary_heatmap(tmp_path, summary):
    out = figures.summary_heatmap(summary, tmp_path / "sub" / "heat.png", figsize=(4, 3), dpi=50)
    assert out == tmp_path / "sub" / "heat.png"
    _check_png(out, (200, 150))
    out2 = figures.summary_heatmap(summary, tmp_path / "count.png", value="count_above_threshold",
                                   categories=["other", "text", "person head"])
    assert out2.stat().st_size > 0


def test_summary_heatmap_errors(tmp_path, summary):
    with pytest.raises(ValueError, match="must end in .png"):
        figures.summary_heatmap(summary, tmp_path / "heat.pdf")
    with pytest.raises(ValueError, match="duplicate rows"):
        figures.summary_heatmap(pd.concat([summary, summary]), tmp_path / "h.png")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['nope'\]"):
        figures.summary_heatmap(summary, tmp_path / "h.png", value="nope")


def test_top_k_bars_values(units):
    bars = figures._top_k_bars(units, "conv5_3", top_k=3).set_index("category")
    for cat in "abc":
        live = units[(units.category == cat) & ~units.dead].score.to_numpy()
        best = np.sort(live)[-3:]
        assert bars.loc[cat, "mean"] == pytest.approx(best.mean())
        # sample std of the k best over sqrt(k): the standard error of their mean
        assert bars.loc[cat, "sem"] == pytest.approx(np.sqrt(np.sum((best - best.mean()) ** 2) / 2) / np.sqrt(3))
        assert bars.loc[cat, "k"] == 3
    one = figures._top_k_bars(units[units.unit <= 1], "conv5_3", top_k=3)
    assert one.k.tolist() == [1, 1, 1] and one["sem"].isna().all()


def test_category_bars(tmp_path, units):
    out = figures.category_bars(units, "conv5_3", tmp_path / "bars.png", top_k=5, threshold=1.5,
                                figsize=(5, 3), dpi=40)
    _check_png(out, (200, 120))
    with pytest.raises(ValueError, match="layer 'conv1_1' is not in the unit table"):
        figures.category_bars(units, "conv1_1", tmp_path / "bars.png")


def test_unit_overlays(tmp_path, rng):
    h, w = 24, 32
    images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for _ in range(3)]
    maps = [rng.random((h, w)) for _ in range(2)] + [np.zeros((h, w))]  # a constant map too
    masks = [np.zeros((h, w), bool) for _ in range(3)]
    masks[0][5:15, 8:20] = True
    masks[1][:, :10] = True                                              # masks[2] empty: no outline
    fix = [m.copy() for m in masks]
    out = figures.unit_overlays(images, maps, masks, ["u1", "u2", "u3"], tmp_path / "ov.png",
                                fixation_maps=fix, ncols=2, panel_size=1.0, dpi=40)
    _check_png(out, (80, 80))


def test_unit_overlays_errors(tmp_path, rng):
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="upsample the map"):
        figures.unit_overlays([img], [np.zeros((4, 4))], [np.zeros((8, 8), bool)], ["t"], tmp_path / "o.png")
    with pytest.raises(ValueError, match="1 images but"):
        figures.unit_overlays([img], [np.zeros((8, 8))], [], ["t"], tmp_path / "o.png")
    with pytest.raises(ValueError, match="at least one image"):
        figures.unit_overlays([], [], [], [], tmp_path / "o.png")
