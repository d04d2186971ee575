"""`study finetune` on a two-setup toy, against hand computations; `stats RUN --head CKPT`."""
import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from PIL import Image

import cli
from datasets.popout import PopoutDataset
from dissect.models.inputs import preprocess
from dissect.models import load_model

CATS = ("a", "b", "c")


def folder_with_regions(root, n=6, seed=0):
    """Images with three rectangular regions (a, b, c) and fixations inside them."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    fix_rows, cat_rows = [], []
    for i in range(n):
        img = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / "images" / f"s{i}.png")
        label = np.zeros((24, 32), np.uint8)
        label[2:10, 2:12], label[12:22, 4:14], label[4:20, 18:30] = 1, 2, 3
        Image.fromarray(label).save(root / "masks" / f"s{i}.png")
        for region, (y0, y1, x0, x1) in enumerate(((2, 10, 2, 12), (12, 22, 4, 14), (4, 20, 18, 30)), start=1):
            for _ in range(1 + region + i % 2):
                fix_rows.append({"image": f"s{i}", "x": int(rng.integers(x0, x1)), "y": int(rng.integers(y0, y1))})
            cat_rows.append({"image": f"s{i}", "region": region, "category": CATS[region - 1]})
    pd.DataFrame(fix_rows).to_csv(root / "fixations.csv", index=False)
    pd.DataFrame(cat_rows).to_csv(root / "categories.csv", index=False)
    (root / "val.txt").write_text("s4\ns5\n")
    return root


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = folder_with_regions(tmp_path_factory.mktemp("data"))
    out = tmp_path_factory.mktemp("study")
    rc = cli.main(["study", "finetune", "--finetune", "0,1", "--train-dataset", "folder", "--train-root", str(root),
                   "--val-ids", str(root / "val.txt"), "--dissect-dataset", "folder", "--dissect-root", str(root),
                   "--encoder-weights", "random", "--steps", "2", "--eval-every", "2", "--batch-size", "2",
                   "--image-size", "32", "--popout-n", "1", "--out", str(out), "--no-progress"])
    assert rc == 0
    return root, out


def _top_k_by_hand(units, k=10, threshold=1.5):
    rows = {}
    for category, g in units[~units["dead"].astype(bool)].groupby("category"):
        scores = np.sort(g["score"].dropna().to_numpy())[::-1]
        rows[category] = (scores[:k].mean(), int((scores > threshold).sum()))
    return rows


def test_table3_and_improvement_by_hand(study, no_figure_leak):
    _, out = study
    table3 = pd.read_csv(out / "table3.csv")
    assert list(dict.fromkeys(table3["setup"])) == ["pretrained", "K0", "K1"]
    assert {"model", "weights"} <= set(table3.columns) and (out / "improvement.png").is_file()
    by_hand = {}
    for setup in ("pretrained", "K0", "K1"):
        units = pd.read_csv(out / setup / "dissect" / "units.csv")
        by_hand[setup] = _top_k_by_hand(units)
    for row in table3.itertuples():
        mean, count = by_hand[row.setup][row.category]
        assert row.top_k_mean == pytest.approx(mean, abs=1e-9)
        assert row.count_above_threshold == count
        assert row.change_top_k_mean == pytest.approx(mean - by_hand["pretrained"][row.category][0], abs=1e-9)


def test_output_nmm_and_popout_tables_by_hand(study):
    _, out = study
    table4 = pd.read_csv(out / "output_nmm.csv")
    model = load_model("saliency_vgg16", weights=str(out / "K1" / "train" / "best.pt"))
    popout = PopoutDataset(n_per_dimension=1)
    for sample in popout:
        with torch.no_grad():
            m = model(preprocess([sample.image], 32), out_size=sample.shape)[0].double().numpy()
        z = (m - m.mean()) / m.std()  # He et al. eq. 4, population std
        row = table4[(table4["setup"] == "K1") & (table4["dimension"] == sample.categories[0])]
        assert row["nmm_mean"].item() == pytest.approx(z[sample.masks[0]].mean(), rel=1e-4, abs=1e-5)
    table6 = pd.read_csv(out / "popout_nmm.csv")
    assert set(table6["setup"]) == {"pretrained", "K0", "K1"} and set(table6["layer"]) == {"conv5_3"}
    assert len(table6) == 3 * len(popout)


def test_spearman_by_hand_and_stats_head_reproduces_the_output_saliency(study, tmp_path):
    _, out = study
    rho = pd.read_csv(out / "spearman.csv")
    summary = pd.read_csv(out / "K0" / "dissect" / "summary.csv")
    os_table = pd.read_csv(out / "K0" / "output_saliency.csv")
    joined = summary.merge(os_table, on="category").sort_values("category")
    expected = scipy.stats.spearmanr(joined["top_k_mean"], joined["OS"]).statistic
    got = rho[(rho["setup"] == "K0") & (rho["layer"] == "conv5_3")]["rho"].item()
    assert got == pytest.approx(expected, nan_ok=True)
    rc = cli.main(["stats", str(out / "K0" / "dissect"), "--head", str(out / "K0" / "train" / "best.pt"),
                   "--no-overlays", "--out", str(tmp_path)])
    assert rc == 0
    head = pd.read_csv(tmp_path / "output_saliency.csv")
    np.testing.assert_allclose(head["OS"], os_table["OS"], rtol=1e-4, atol=1e-6)
    assert json.loads((out / "study.json").read_text())["checkpoint"] == "best"


def test_study_bad_input(tmp_path, capsys):
    assert cli.main(["study", "finetune", "--finetune", "0,x", "--out", str(tmp_path)]) == 2
    assert "--finetune takes a comma list" in capsys.readouterr().err
    assert cli.main(["stats", str(tmp_path), "--head", str(tmp_path / "none.pt")]) == 2
    assert "lacks units.csv" in capsys.readouterr().err
