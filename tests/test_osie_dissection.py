"""Region-wise dissection on OSIE-SR files: per-category aggregation by hand, and bad data mid-run."""
import json

import numpy as np
import pandas as pd
import pytest
import scipy.io
import torch
import torch.nn.functional as F
from PIL import Image

import cli
from datasets import load_dataset
from dissect.models.inputs import preprocess
from dissect.studies.dissection import run_dissection
from dissect.models.hooks import ActivationRecorder
from tests.helpers import TinyNet

H, W = 48, 64
# class ids of OSIE-SR: 1 person head, 37 text, 51 vehicle
REGIONS = {  # image stem -> [(row slice, col slice, class id), ...]
    "1001": [(slice(5, 20), slice(5, 25), 1), (slice(25, 45), slice(30, 60), 37)],
    "1002": [(slice(10, 30), slice(10, 30), 1)],
    "1003": [(slice(0, 16), slice(40, 64), 51), (slice(30, 48), slice(0, 20), 1), (slice(20, 25), slice(30, 35), 37)],
}


def write_osie_sr(root, rng, regions=REGIONS, unclassed=None):
    """Flat OSIE layout + labelme2voc export, in the real formats. ``unclassed``: a stem whose
    last instance gets class 0 in SegmentationClass (an instance with no class)."""
    for sub in ("stimuli", "SegmentationObject", "SegmentationClass"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    entries = np.empty((len(regions), 1), dtype=object)
    for i, (stem, boxes) in enumerate(regions.items()):
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / "stimuli" / f"{stem}.png")
        obj = np.zeros((H, W), np.int32)
        cls = np.zeros((H, W), np.int32)
        for k, (rows, cols, c) in enumerate(boxes, start=1):
            obj[rows, cols] = k
            cls[rows, cols] = 0 if (stem == unclassed and k == len(boxes)) else c
        np.save(root / "SegmentationObject" / f"{stem}.npy", obj)
        np.save(root / "SegmentationClass" / f"{stem}.npy", cls)
        subjects = np.empty((3, 1), dtype=object)
        for s in range(3):
            n = 25
            subjects[s, 0] = {"fix_x": np.round(rng.uniform(1, W, n), 1)[None],
                              "fix_y": np.round(rng.uniform(1, H, n), 1)[None],
                              "fix_duration": rng.integers(80, 400, n).astype(np.uint16)[None]}
        entries[i, 0] = {"img": f"{stem}.png", "subjects": subjects}
    scipy.io.savemat(str(root / "fixations.mat"), {"fixations": entries})
    return root


def test_category_scores_equal_a_hand_computation(tmp_path, rng):
    root = write_osie_sr(tmp_path / "osie", rng)
    dataset = load_dataset("osie-sr", root)
    model = TinyNet().eval()
    # The hand computation leaves dead maps out (digest section 3): dead_units="skip", every
    # live unit ranked (the default became He et al.'s "zero" with issue 9).
    result = run_dissection(model, "relu2", dataset, image_size=32, batch_size=2, progress=False,
                            dead_units="skip", min_valid=0.0)
    # By hand: every region's NSS of every unit (upsample, z-score over the whole map, mean over
    # the unique fixated pixels inside the region), then the mean per unit over the regions of
    # each category (He et al. 2019, sec. 4).
    per_region = {}
    for sample in dataset:
        with ActivationRecorder(model, "relu2") as rec, torch.inference_mode():
            model(preprocess([sample.image], 32))
        up = F.interpolate(rec.activations["relu2"].double(), size=(H, W), mode="bilinear",
                           align_corners=False)[0].numpy()
        for mask, category in zip(sample.masks, sample.categories):
            pixels = mask & sample.fixation_map
            if not pixels.any():
                continue
            for unit, m in enumerate(up):
                if m.max() > m.min():
                    per_region.setdefault((unit, category), []).append(((m - m.mean()) / m.std())[pixels].mean())
    assert {c for _, c in per_region} == {"person head", "text", "vehicle"}
    units = result.units.set_index(["unit", "category"])
    for (unit, category), scores in per_region.items():
        assert units.loc[(unit, category), "score"] == pytest.approx(np.mean(scores), abs=1e-6)
        assert units.loc[(unit, category), "n_valid"] == len(scores)
    summary = result.summary.set_index("category")
    for category in ("person head", "text", "vehicle"):
        scores = sorted((np.mean(v) for (u, c), v in per_region.items() if c == category), reverse=True)
        assert summary.loc[category, "top_k_mean"] == pytest.approx(np.mean(scores[:10]), abs=1e-6)


def test_bad_image_mid_run_keeps_finished_batches(tmp_path, rng, capsys):
    regions = {str(1001 + i): REGIONS["1001"] for i in range(4)}
    root = write_osie_sr(tmp_path / "osie", rng, regions, unclassed="1004")
    out = tmp_path / "run"
    args = ["dissect", "--dataset", "osie-sr", "--data-root", str(root), "--model", "vgg16", "--weights",
            "random", "--image-size", "32", "--batch-size", "1", "--layer", "conv5_3", "--no-progress",
            "--out", str(out)]
    # With the permutation null (default) every image's regions are read before the run: the bad
    # image stops it at once, with nothing to resume, and the message says so.
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "instance 2 has no class" in err and "--null 0" in err
    assert not (out / "progress.json").exists()
    # Without the null the dataset is read as the run goes: finished batches are kept.
    args += ["--null", "0"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "instance 2 has no class" in err and "--resume" in err
    progress = json.loads((out / "progress.json").read_text())
    assert progress["next_index"] == 3  # the three good images are kept
    # Fix the export, then resume: the three finished images are not recomputed.
    cls = np.load(root / "SegmentationClass" / "1004.npy")
    cls[25:45, 30:60] = 37
    np.save(root / "SegmentationClass" / "1004.npy", cls)
    assert cli.main(args + ["--resume"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["resumed_from_image"] == 3 and run["n_images"] == 4
    units = pd.read_csv(out / "units.csv")
    assert len(set(units["category"])) == 12  # OSIE-SR tables always list He et al.'s 12 categories
    assert set(units.loc[units["n_regions"] > 0, "category"]) == {"person head", "text"}
