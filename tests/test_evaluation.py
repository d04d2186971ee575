"""dissect.studies.evaluation / cli.py evaluate: tables against a literal metric-by-metric computation,
pop-out NMM, --save-maps then --maps, and the bad-input lines."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import cli
from datasets.base import ListDataset, Sample
from datasets.fixations import center_bias_map, fixation_map
from dissect import classical
from datasets.base import Subset as _Subset
from dissect.studies.evaluation import run_evaluation
from dissect.studies.map_sources import classical_source, maps_source
from datasets.fixations import resize_map
from probes import gaze, metrics

pytestmark = pytest.mark.usefixtures("no_figure_leak")

SHAPES = [(48, 64), (56, 48), (48, 48)]


def _image(shape, rng):
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    base = np.stack([128 + 60 * np.sin(xx / 5.0), 128 + 60 * np.cos(yy / 7.0), 100 + 0 * xx], axis=2)
    return np.clip(base + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)


def _sample(i, shape, rng):
    h, w = shape
    n_sub, per = 3, 5
    table = pd.DataFrame({"x": np.round(rng.uniform(1, w, n_sub * per), 1),
                          "y": np.round(rng.uniform(1, h, n_sub * per), 1),
                          "subject": np.repeat(np.arange(1, n_sub + 1), per)})
    masks = np.zeros((2, h, w), bool)
    masks[0, : h // 2] = True
    masks[1, h // 2:, : w // 2] = True
    return Sample(f"img{i}", _image(shape, rng), masks, ["face", "text"],
                  fixation_map=fixation_map(table["x"], table["y"], shape), fixations=table)


@pytest.fixture
def data(rng):
    return ListDataset([_sample(i, s, rng) for i, s in enumerate(SHAPES)], name="tiny")


def _literal(m, fix, dens):
    """NSS, CC, KL, SIM, AUC-Judd written out from their definitions (MIT benchmark)."""
    z = (m - m.mean()) / m.std()
    p, q = m / m.sum(), dens / dens.sum()
    mm = (m - m.min()) / (m.max() - m.min())
    dm = (dens - dens.min()) / (dens.max() - dens.min())
    pos, neg = mm[fix], mm[~fix]
    tp = [0.0] + [float((pos >= t).mean()) for t in sorted(set(pos), reverse=True)] + [1.0]
    fp = [0.0] + [float((neg >= t).mean()) for t in sorted(set(pos), reverse=True)] + [1.0]
    return {"nss": z[fix].mean(), "cc": np.corrcoef(m.ravel(), dens.ravel())[0, 1],
            "kl": float((q * np.log(metrics.EPS + q / (p + metrics.EPS))).sum()),
            "sim": float(np.minimum(mm / mm.sum(), dm / dm.sum()).sum()),
            "auc_judd": float(np.trapezoid(tp, fp))}


def test_tables_match_a_literal_computation(data, rng):
    ext = {s.image_id: rng.random((12, 16)) + 0.1 for s in data}  # an external model at another size

    src_ext = classical_source("itti")
    src_ext.name, src_ext.kind, src_ext.weights = "ext", "maps", "external"
    src_ext.compute = lambda s: ext[s.image_id]
    sources = [classical_source("spectral_residual"), classical_source("centre_bias"), src_ext]
    res = run_evaluation(data, sources, sigma=6.0, n_other=2, seed=3, progress=False)
    per = res.per_image
    assert list(per.columns[:3]) == ["image", "model", "weights"]
    assert res.info["maps_resized"]["ext"]["n_images"] == 3
    assert res.info["maps_resized"]["ext"]["from_shapes"] == {"12x16": 3}
    pool = _Subset([s.fixation_map for s in data], range(3))
    for i, s in enumerate(data):
        fix, dens = s.fixation_map, gaze.human_density(s, 6.0)
        other = gaze.other_images_fixations(pool, i, s.shape, n_other=2, seed=3)
        bias = center_bias_map(s.shape)
        for name in ("spectral_residual", "centre_bias", "ext"):
            m = resize_map(ext[s.image_id], s.shape) if name == "ext" else classical.saliency_map(s.image, name)
            row = per[(per.image == s.image_id) & (per.model == name)].iloc[0]
            for key, want in _literal(m, fix, dens).items():
                assert row[key] == pytest.approx(want, rel=1e-9, abs=1e-12), (name, key)
            assert row["auc_borji"] == metrics.auc_borji(m, fix, seed=3)
            assert row["sauc"] == metrics.sauc(m, fix, other, seed=3)
            assert row["ig"] == pytest.approx(metrics.info_gain(m, fix, bias))
        floor = per[(per.image == s.image_id) & (per.model == gaze.FLOOR)].iloc[0]
        top = per[(per.image == s.image_id) & (per.model == gaze.CEILING)].iloc[0]
        want_top = gaze.leave_one_subject_out(s.fixations, s.shape, 6.0, other_fixation_map=other,
                                              baseline=bias, seed=3, borji=True)
        for key in gaze.EVALUATION_METRICS:
            assert top[key] == pytest.approx(want_top[key], nan_ok=True)
        assert floor["ig"] == 0.0 and floor["nss"] == pytest.approx(_literal(bias, fix, dens)["nss"])
    # summary: one row per model, mean and sem over images, reference rows last
    summ = res.summary
    assert list(summ.model) == ["spectral_residual", "centre_bias", "ext", gaze.FLOOR, gaze.CEILING]
    for name in summ.model:
        vals = per.loc[per.model == name, "nss"].to_numpy(float)
        row = summ[summ.model == name].iloc[0]
        assert row["n"] == 3 and row["nss_mean"] == pytest.approx(vals.mean())
        assert row["nss_sem"] == pytest.approx(vals.std(ddof=1) / math.sqrt(3))
    # OS_c per category: the mean over regions with fixations of NSS(map, fix & region)
    os_t = res.output_saliency
    for cat, k in (("face", 0), ("text", 1)):
        vals = []
        for s in data:
            region = s.fixation_map & s.masks[k]
            if region.any():
                m = classical.saliency_map(s.image, "spectral_residual")
                vals.append(((m - m.mean()) / m.std())[region].mean())
        got = os_t[(os_t.model == "spectral_residual") & (os_t.category == cat)].iloc[0]
        assert got["OS"] == pytest.approx(np.mean(vals)) and got["n_regions"] == len(vals)


def test_popout_nmm_ceiling_and_dimensions():
    from datasets.popout import PopoutDataset, PopoutParams

    ds = PopoutDataset(n_per_dimension=2, dimensions=("hue", "size"), params=PopoutParams(canvas=(96, 96), grid=(4, 4)))
    res = run_evaluation(ds, [classical_source("spectral_residual")], progress=False)
    per = res.per_image
    for s in ds:
        mask = s.masks[0]
        m = classical.saliency_map(s.image, "spectral_residual")
        row = per[(per.image == s.image_id) & (per.model == "spectral_residual")].iloc[0]
        assert row["nmm"] == pytest.approx(((m - m.mean()) / m.std())[mask].mean())
        top = per[(per.image == s.image_id) & (per.model == "nmm_ceiling")].iloc[0]
        p = mask.mean()
        assert top["nmm"] == pytest.approx(math.sqrt((1 - p) / p)) and row["dimension"] == s.meta["dimension"]
    dims = res.popout_dimensions
    got = dims[(dims.model == "spectral_residual") & (dims.dimension == "size")].iloc[0]
    assert got["nmm_mean"] == pytest.approx(per[(per.model == "spectral_residual") & (per.dimension == "size")].nmm.mean())
    assert {"nmm_mean", "nmm_sem", "model", "weights"} <= set(res.summary.columns)


def _folder(tmp_path, rng):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    Image.fromarray(_image((48, 64), rng)).save(root / "images" / "a.png")
    Image.fromarray(_image((40, 56), rng)[..., 0]).save(root / "images" / "b.png")  # a grey file
    rows = []
    for stem, (h, w) in (("a", (48, 64)), ("b", (40, 56))):
        for subject in (1, 2, 3):
            for _ in range(4):
                rows.append({"image": f"{stem}.png", "x": int(rng.integers(0, w)), "y": int(rng.integers(0, h)),
                             "subject": subject})
    pd.DataFrame(rows).to_csv(root / "fixations.csv", index=False)
    return root


def test_save_maps_then_maps_gives_the_same_table(tmp_path, rng, capsys):
    root = _folder(tmp_path, rng)
    base = ["evaluate", "--dataset", "folder", "--data-root", str(root), "--no-progress", "--sigma", "6"]
    with pytest.warns(UserWarning, match="1 grey image"):
        assert cli.main(base + ["--model", "itti", "--model", "spectral_residual", "--save-maps",
                                str(tmp_path / "m"), "--out", str(tmp_path / "o1")]) == 0
    assert sorted(p.name for p in (tmp_path / "m" / "itti").iterdir()) == ["a.npy", "b.npy"]
    with pytest.warns(UserWarning, match="1 grey image"):
        assert cli.main(base + ["--maps", str(tmp_path / "m" / "itti"), "--maps",
                                str(tmp_path / "m" / "spectral_residual"), "--out", str(tmp_path / "o2")]) == 0
    one = pd.read_csv(tmp_path / "o1" / "per_image.csv")
    two = pd.read_csv(tmp_path / "o2" / "per_image.csv")
    cols = ["image", "model", *gaze.EVALUATION_METRICS]
    pd.testing.assert_frame_equal(one[cols], two[cols])
    run = json.loads((tmp_path / "o1" / "run.json").read_text())
    assert run["grayscale_images"] == ["b"]
    summary = pd.read_csv(tmp_path / "o1" / "summary.csv")
    assert {"model", "weights", "nss_mean", "nss_sem", "auc_borji_mean"} <= set(summary.columns)
    assert (tmp_path / "o1" / "example_maps.png").exists() and (tmp_path / "o1" / "metrics.png").exists()
    # stats --maps reads the same files
    from dissect.studies.map_sources import load_output_map
    assert load_output_map(tmp_path / "m" / "itti", "a").shape == (48, 64)

    # bad input: one line, exit 2, the earlier results untouched
    before = (tmp_path / "o1" / "per_image.csv").read_bytes()
    (tmp_path / "m" / "itti" / "a.npy").unlink()
    bad = np.load(tmp_path / "m" / "spectral_residual" / "b.npy")
    bad[3, 4] = np.nan
    np.save(tmp_path / "m" / "spectral_residual" / "b.npy", bad)
    capsys.readouterr()
    cases = [
        (["--model", "gbvz"], "unknown model 'gbvz'; choose from gbvs, itti, bms, spectral_residual, centre_bias"),
        (["--maps", str(tmp_path / "m" / "itti")], "no output map for image 'a'"),
        (["--maps", str(tmp_path / "m" / "spectral_residual")], "NaN"),
        (["--model", "bms", "--weights", "ckpt.pt"], "--weights applies to a saliency network"),
    ]
    for extra, message in cases:
        # into the finished run's folder (refused: it holds a run) and into a new one (left out)
        assert cli.main(base + extra + ["--out", str(tmp_path / "o1")]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
        assert cli.main(base + extra + ["--out", str(tmp_path / "o3")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert (tmp_path / "o1" / "per_image.csv").read_bytes() == before
    assert not (tmp_path / "o3").exists()


def test_maps_source_names_and_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        maps_source(tmp_path / "none")
    (tmp_path / "deepgaze").mkdir()
    assert maps_source(tmp_path / "deepgaze").name == "deepgaze"
    assert maps_source(tmp_path / "deepgaze", "DG2").name == "DG2"


def test_network_model_and_rows_that_depend_only_on_the_image(data):
    import warnings

    from dissect.studies.map_sources import network_source

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights warn loudly
        net = network_source("saliency_vgg16", "random", image_size=32)
    assert net.weights and net.kind == "network"
    both = run_evaluation(data, [net, classical_source("centre_bias")], sigma=6.0, progress=False, ceiling=False)
    alone = run_evaluation(data, [classical_source("centre_bias")], sigma=6.0, progress=False, ceiling=False)
    cols = ["image", "model", *gaze.EVALUATION_METRICS]
    pick = both.per_image[both.per_image.model != "saliency_vgg16"][cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(pick, alone.per_image[cols].reset_index(drop=True))
    rows = both.per_image[both.per_image.model == "saliency_vgg16"]
    assert len(rows) == 3 and rows["nss"].notna().all()
    with pytest.raises(ValueError, match="not a saliency network"):
        network_source("vgg16")
    with pytest.raises(ValueError, match=r"\['itti'\] used twice"):
        run_evaluation(data, [classical_source("itti"), classical_source("itti", blurfrac=0.03)])
