"""`train scene` (He et al. sec. 8) on a tiny folder dataset: outputs, Table 8 by hand, bad labels."""
import pandas as pd
import pytest
import torch

import cli
from dissect.models.inputs import preprocess
from dissect.models import load_model
from datasets.fixations import resize_map
from probes.metrics import nss
from tests.test_training import _folder


def _labels(root, rows):
    path = root / "labels.csv"
    pd.DataFrame(rows, columns=["image", "scene"]).to_csv(path, index=False)
    return path


def _scene(root, labels, out, *extra):
    return cli.main(["train", "scene", "--labels", str(labels), "--dataset", "folder", "--data-root", str(root),
                     "--val-ids", str(root / "val.txt"), "--encoder-weights", "random", "--image-size", "32",
                     "--batch-size", "2", "--steps", "2", "--eval-every", "2", "--out", str(out),
                     "--no-progress", *extra])


def test_train_scene_writes_table8_and_checkpoints(tmp_path, no_figure_leak):
    root = _folder(tmp_path / "data")  # a0..a5, validation a4, a5
    labels = _labels(root, [(f"a{i}", "beach" if i % 2 else "street") for i in range(6)])
    assert _scene(root, labels, tmp_path / "run") == 0
    run = tmp_path / "run"
    val = pd.read_csv(run / "val.csv")
    assert list(val["step"]) == [0, 2] and {"accuracy", "val_loss", "model", "weights"} <= set(val.columns)
    confusion = pd.read_csv(run / "confusion.csv", index_col=0)
    assert confusion.to_numpy().sum() == 2 and list(confusion.index) == ["beach", "street"]
    per_image = pd.read_csv(run / "scene_attention_images.csv")
    model = load_model("scene_vgg16", weights=str(run / "best.pt"))
    assert model.classifier[-1].out_features == 2
    from datasets import load_dataset

    data = {s.image_id: s for s in load_dataset("folder", root)}
    for row in per_image.itertuples():
        sample = data[row.image_id]
        with torch.no_grad():
            conv = model.features(preprocess([sample.image], 32))[0].mean(0)
            predicted = ["beach", "street"][int(model(preprocess([sample.image], 32)).argmax())]
        assert row.predicted == predicted
        assert row.nss_mean_conv5_3 == pytest.approx(nss(resize_map(conv, sample.shape), sample.fixation_map),
                                                     rel=1e-4, abs=1e-5)
    table8 = pd.read_csv(run / "scene_attention.csv")
    assert list(table8["classified"]) == ["correct", "wrong"]
    assert table8["n_images"].sum() == 2
    for row in table8.itertuples():
        part = per_image[per_image["correct"] == (row.classified == "correct")]["nss_mean_conv5_3"]
        assert row.nss_mean == pytest.approx(part.mean(), nan_ok=True)
    params = dict(load_model("scene_vgg16", weights=str(run / "last.pt")).named_parameters())
    start = load_model("vgg16", weights="random").features.state_dict()
    assert torch.equal(params["features.26.weight"], start["26.weight"])  # conv5_2 frozen
    assert not torch.equal(params["features.28.weight"], start["28.weight"])  # conv5_3 fine-tuned


def test_train_scene_bad_labels(tmp_path, capsys):
    root = _folder(tmp_path / "data")
    cases = [
        ([(f"a{i}", "x" if i < 3 else "y") for i in range(6)] + [("zzz", "x")], "names image 'zzz', which is not in"),
        ([(f"a{i}", "x") for i in range(5)] + [("a5", "lonely")], "scene 'lonely' has only one image"),
        ([(f"a{i}", "x") for i in range(5)], "validation image 'a5' has no scene"),
    ]
    for rows, message in cases:
        assert _scene(root, _labels(root, rows), tmp_path / "bad") == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
