"""He et al.'s fine-tuning study: train setups K = 0, 1, 2, ..., dissect each, tabulate.

For every ``K`` :func:`train_and_dissect_setup` trains a saliency model from scratch (as He et
al. did; resumable), then with its checkpoint (``best.pt`` by default):

* dissects ``layers`` on the dissection dataset (region NSS on OSIE-SR; NMM on pop-out) ->
  ``K<k>/dissect/{units,summary,run}.*``;
* dissects conv5_3 on the pop-out arrays -> ``K<k>/popout/`` (He et al.'s Table 6);
* scores the model's own saliency map on every pop-out array with :func:`probes.metrics.nmm`
  under the target mask -> ``K<k>/output_nmm.csv`` (our models' row of Table 4);
* computes the output saliency ``OS_c`` / ``OD_c`` of the model's maps on the dissection
  dataset (needs fixations) and Spearman's rho between each layer's inner saliency (top-k mean)
  and ``OS_c`` -> ``K<k>/output_saliency.csv``, ``K<k>/spearman.csv`` (Fig. 7).

The untrained starting model (the pretrained encoder with a fresh read-out) is dissected the
same way as the ``pretrained`` row. :func:`write_study_tables` then writes ``table3.csv`` (one
row per setup x layer x category: top-k mean, count above T, and the change of the top-k mean
against ``pretrained``, He et al.'s Table 3), ``improvement.png`` (Fig. 4),
``popout_nmm.csv`` (Table 6), ``output_nmm.csv`` (Table 4 row) and ``spearman.csv``; every table
carries ``model`` and ``weights`` columns. Each setup is a separate function call returning its
paths, so setups can run in parallel (e.g. as Ray tasks).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from datasets.fixations import density_map
from dissect.reports.dissection import write_dissection_reports
from dissect.reports.figures import improvement_figure
from dissect.runner import ray_backend
from dissect.runner.folders import atomic_write_json, check_writable, environment_versions, run_record
from dissect.studies.dissection import run_dissection
from dissect.training import TrainConfig, build_saliency_model, load_trained, saliency_maps, train_saliency
from probes import stats
from probes.metrics import nmm

__all__ = ["dissect_setup", "train_and_dissect_setup", "write_study_tables", "run_finetune_study",
           "output_nmm_table", "output_saliency_table", "setup_label", "finish_study", "setup_calls", "setup_task",
           "run_setups_on_ray"]


def setup_label(k) -> str:
    """``"K0"`` .. or ``"pretrained"`` for ``k = None``."""
    return "pretrained" if k is None else f"K{k}"


def output_nmm_table(model, popout, *, image_size: int = 224, batch_size: int = 8) -> pd.DataFrame:
    """NMM (He et al. eq. 4) of the model's own saliency map under each pop-out target mask."""
    samples = list(popout)
    maps = saliency_maps(model, samples, image_size=image_size, batch_size=batch_size)
    rows = [{"image_id": s.image_id, "dimension": s.categories[0], "nmm": nmm(m, s.masks[0])}
            for s, m in zip(samples, maps)]
    return pd.DataFrame(rows, columns=["image_id", "dimension", "nmm"])


def output_saliency_table(model, dataset, *, image_size: int = 224, sigma: float = 24.0,
                          batch_size: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-region NSS of the model's maps and of the human density, and ``OS_c`` / ``OD_c``
    (:func:`probes.stats.region_output_scores`, :func:`probes.stats.output_saliency`).

    Raises:
        ValueError: no image of ``dataset`` has fixations and regions.
    """
    rows, chunk = [], []

    def flush():
        for sample, pred in zip(chunk, saliency_maps(model, chunk, image_size=image_size, batch_size=batch_size)):
            rows.append(stats.region_output_scores(pred, density_map(sample.fixation_map, sigma),
                                                   sample.fixation_map, sample.masks, sample.categories,
                                                   image_id=sample.image_id))
        chunk.clear()

    for sample in dataset:
        if sample.fixation_map is None or not sample.fixation_map.any() or not len(sample.masks):
            continue
        chunk.append(sample)
        if len(chunk) == batch_size:
            flush()
    flush()
    if not rows:
        raise ValueError("no image with fixations and regions: OS/OD need human fixations and regions")
    regions = pd.concat(rows, ignore_index=True)
    return regions, stats.output_saliency(regions)


def _dissect(model, layers, dataset, out: Path, params: dict, *, image_size, batch_size, top_k, threshold,
             progress) -> dict[str, Path]:
    result = run_dissection(model, layers, dataset, image_size=image_size, batch_size=batch_size,
                            top_k=top_k, threshold=threshold, checkpoint_dir=out, resume=True,
                            progress=progress)
    info = model.dissect_info
    params = {**params, "model": info, "layers_resolved": result.info["layers"],
              "config": {**params.get("config", {}), "image_size": image_size, "top_k": top_k,
                         "threshold": threshold}}
    return write_dissection_reports(result, out, params)


def dissect_setup(model, label: str, out_dir: Path, *, dissect_set, popout_set, layers: Sequence[str],
                  dissect_info: dict, image_size: int = 224, batch_size: int = 8, top_k: int = 10,
                  threshold: float = 1.5, sigma: float = 24.0, progress: bool = True) -> dict[str, Path]:
    """Every measurement of one model (see the module docstring); returns ``{name: path}``."""
    out = check_writable(out_dir)
    common = dict(image_size=image_size, batch_size=batch_size, top_k=top_k, threshold=threshold, progress=progress)
    cols = {"setup": label, "model": model.dissect_info.get("arch"),
            "weights": model.dissect_info.get("weights_detail")}
    base = {"command": "study finetune", "setup": label, "versions": environment_versions()}
    paths = {}
    d = _dissect(model, list(layers), dissect_set, out / "dissect",
                 {**base, "dataset": dissect_info.get("name"), "dataset_options": dissect_info.get("options", {}),
                  "config": {"dataset": dissect_info.get("name"), "data_root": dissect_info.get("root")}}, **common)
    paths["dissect"] = d["summary"].parent
    p = _dissect(model, ["conv5_3"], popout_set, out / "popout",
                 {**base, "dataset": getattr(popout_set, "name", "popout"), "dataset_options": {},
                  "config": {"dataset": "popout", "data_root": None}}, **common)
    paths["popout"] = p["summary"].parent
    nmm_table = output_nmm_table(model, popout_set, image_size=image_size, batch_size=batch_size)
    paths["output_nmm"] = out / "output_nmm.csv"
    nmm_table.assign(**cols).to_csv(paths["output_nmm"], index=False)
    try:
        regions, os_table = output_saliency_table(model, dissect_set, image_size=image_size, sigma=sigma,
                                                  batch_size=batch_size)
    except ValueError:
        return paths  # a dissection dataset without fixations (pop-out): no OS_c
    paths["output_saliency"] = out / "output_saliency.csv"
    os_table.assign(**cols).to_csv(paths["output_saliency"], index=False)
    summary = pd.read_csv(d["summary"])
    rho = []
    for layer in dict.fromkeys(summary["layer"].astype(str)):
        try:
            r = stats.spearman_inner_vs_output(summary, os_table, layer)
            rho.append({"layer": layer, "rho": r["rho"], "p_value": r["p_value"], "n": r["n"], "note": ""})
        except ValueError as exc:
            rho.append({"layer": layer, "rho": np.nan, "p_value": np.nan, "n": 0, "note": str(exc)})
    paths["spearman"] = out / "spearman.csv"
    pd.DataFrame(rho).assign(**cols).to_csv(paths["spearman"], index=False)
    return paths


def train_and_dissect_setup(k, train_set, val_set, out_dir: str | os.PathLike, cfg: TrainConfig, *,
                            dissect_set, popout_set, layers: Sequence[str] = ("conv5_3",),
                            dataset_info: dict | None = None, dissect_info: dict | None = None,
                            checkpoint: str = "best", image_size: int = 224, batch_size: int = 8,
                            top_k: int = 10, threshold: float = 1.5, progress: bool = True) -> dict[str, Path]:
    """Train setup ``K = k`` from scratch (resuming a run already in ``out_dir/K<k>/train``), then
    :func:`dissect_setup` its ``checkpoint`` (``best`` or ``last``); ``{name: path}``.

    ``k = None`` dissects the untrained starting model (``pretrained``) without training.
    """
    out = Path(out_dir) / setup_label(k)
    paths: dict[str, Path] = {}
    if k is None:
        model = build_saliency_model(cfg)
    else:
        train_dir = out / "train"
        resume = (train_dir / "last.pt").exists()
        trained = train_saliency(train_set, val_set, train_dir, replace(cfg, finetune=k, progress=progress),
                                 resume=resume, dataset_info=dataset_info)
        paths.update({f"train_{name}": p for name, p in trained.items()})
        model = load_trained(trained[checkpoint])
    paths.update(dissect_setup(model, setup_label(k), out, dissect_set=dissect_set, popout_set=popout_set,
                               layers=layers, dissect_info=dissect_info or {}, image_size=image_size,
                               batch_size=batch_size, top_k=top_k, threshold=threshold, sigma=cfg.sigma,
                               progress=progress))
    return paths


def _setup_order(label: str) -> int:
    """pretrained, K0, K1, ..., Kall."""
    if label == "pretrained":
        return -1
    return int(label[1:]) if label[1:].isdigit() else 10 ** 6


def write_study_tables(setups: dict[str, dict[str, Path]], out_dir: str | os.PathLike) -> dict[str, Path]:
    """The study's tables and figure from each setup's paths (keys ``setup_label(k)``)."""
    out = check_writable(out_dir)
    labels = sorted(setups, key=_setup_order)
    written: dict[str, Path] = {}

    def gather(kind: str, reader) -> pd.DataFrame:
        frames = [reader(setups[lb]).assign(setup=lb) for lb in labels if kind in setups[lb]]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def summary_of(folder_key: str):
        def read(paths):
            run = paths[folder_key]
            summary = pd.read_csv(run / "summary.csv", keep_default_na=False, na_values=["", "nan", "NaN"])
            info = json.loads((run / "run.json").read_text()).get("model", {})
            return summary.assign(model=info.get("arch"), weights=info.get("weights_detail"))
        return read

    cols = ["setup", "model", "weights", "layer", "category", "top_k_mean", "count_above_threshold", "n_units",
            "n_regions"]
    table3 = gather("dissect", summary_of("dissect"))[cols]
    if "pretrained" in setups:
        base = table3[table3["setup"] == "pretrained"].set_index(["layer", "category"])["top_k_mean"]
        keys = list(zip(table3["layer"], table3["category"]))
        table3["change_top_k_mean"] = table3["top_k_mean"].to_numpy() - base.reindex(keys).to_numpy()
    written["table3"] = out / "table3.csv"
    table3.to_csv(written["table3"], index=False)
    written["improvement"] = improvement_figure(table3, out / "improvement.png")

    table6 = gather("popout", summary_of("popout"))[cols].rename(columns={"category": "dimension"})
    written["popout_nmm"] = out / "popout_nmm.csv"
    table6.to_csv(written["popout_nmm"], index=False)

    nmm = gather("output_nmm", lambda p: pd.read_csv(p["output_nmm"]))
    table4 = (nmm.groupby(["setup", "model", "weights", "dimension"], sort=False)["nmm"]
              .agg(nmm_mean="mean", nmm_std="std", n="count").reset_index())
    written["output_nmm"] = out / "output_nmm.csv"
    table4.to_csv(written["output_nmm"], index=False)

    rho = gather("spearman", lambda p: pd.read_csv(p["spearman"], keep_default_na=False, na_values=["", "nan"]))
    if len(rho):
        written["spearman"] = out / "spearman.csv"
        rho.to_csv(written["spearman"], index=False)
    return written


def run_finetune_study(ks: Sequence, train_set, val_set, out_dir: str | os.PathLike, cfg: TrainConfig, *,
                       dissect_set, popout_set, layers: Sequence[str] = ("conv5_3",), dataset_info=None,
                       dissect_info=None, checkpoint: str = "best", image_size: int = 224,
                       batch_size: int = 8, top_k: int = 10, threshold: float = 1.5,
                       progress: bool = True) -> dict[str, Path]:
    """The whole study, setup after setup (each resumable); the tables' paths."""
    out = check_writable(out_dir)
    setups = {}
    for k in tqdm([None, *ks], desc="setups", disable=not progress):
        setups[setup_label(k)] = train_and_dissect_setup(
            k, train_set, val_set, out, cfg, dissect_set=dissect_set, popout_set=popout_set, layers=layers,
            dataset_info=dataset_info, dissect_info=dissect_info, checkpoint=checkpoint, image_size=image_size,
            batch_size=batch_size, top_k=top_k, threshold=threshold, progress=progress)
    return finish_study(setups, out, cfg, layers=layers, checkpoint=checkpoint)


def finish_study(setups: dict[str, dict[str, Path]], out_dir: str | os.PathLike, cfg: TrainConfig, *,
                 layers: Sequence[str] = ("conv5_3",), checkpoint: str = "best") -> dict[str, Path]:
    """``study.json`` and the study tables (:func:`write_study_tables`) from each setup's paths,
    however the setups were run (one after the other, or as Ray tasks: :func:`setup_calls`)."""
    out = check_writable(out_dir)
    setups = {label: {n: Path(p) for n, p in paths.items()} for label, paths in setups.items()}
    atomic_write_json(out / "study.json", {"setups": {k: {n: str(p) for n, p in v.items()} for k, v in setups.items()},
                                           "train_config": asdict(cfg), "layers": list(layers),
                                           "checkpoint": checkpoint})
    return write_study_tables(setups, out)


def setup_calls(fn, ks: Sequence, out_dir: str | os.PathLike, *args) -> list[tuple]:
    """One :func:`dissect.runner.ray_backend.run_tasks` call per setup (``pretrained`` first):
    ``(fn, (k, *args), attempts_file)``. ``fn(k, *args)`` must be a module-level function that
    runs :func:`train_and_dissect_setup` for ``k`` into ``out_dir`` and returns its paths: a retried
    task resumes that setup's training (``K<k>/train/last.pt``) and dissection checkpoints."""
    return [(fn, (k, *args), str(Path(out_dir) / setup_label(k) / "attempts.log")) for k in [None, *ks]]


def setup_task(k, inputs_of: Callable[[dict], tuple], namespace: dict) -> dict:
    """One Ray task of :func:`run_setups_on_ray`: train and dissect setup ``k`` (resuming its checkpoints).

    ``inputs_of(namespace)`` rebuilds ``(ks, (train, val), options)`` in the worker (a module-level
    function, e.g. the command line's)."""
    _, (train, val), options = inputs_of(namespace)
    cfg = options.pop("cfg")
    paths = train_and_dissect_setup(k, train, val, namespace["out"], cfg, **options, progress=False)
    return {name: str(path) for name, path in paths.items()}


def run_setups_on_ray(ks: Sequence, inputs_of: Callable[[dict], tuple], namespace: dict, out_dir: Path,
                      options: dict, *, address: str | None, cpus: float = 1.0, gpus: float = 0,
                      progress: bool = True, config: dict | None = None) -> dict[str, Path]:
    """Each setup (``pretrained`` first) as one Ray task (:func:`setup_task`), then the study's tables
    and ``run.json`` (with ``ray``: cluster resources, each setup's host, attempt and time)."""
    out = Path(out_dir)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    record = ray_backend.run_tasks(setup_calls(setup_task, ks, out, inputs_of, namespace), address=address,
                                   num_cpus=cpus, num_gpus=gpus, progress=progress, desc="setups")
    setups = {setup_label(k): task["value"] for k, task in zip([None, *ks], record["tasks"])}
    record["tasks"] = [{"setup": setup_label(k), **{n: v for n, v in task.items() if n != "value"}}
                       for k, task in zip([None, *ks], record["tasks"])]
    written = finish_study(setups, out, options["cfg"], layers=options["layers"], checkpoint=options["checkpoint"])
    written["run"] = out / "run.json"
    atomic_write_json(written["run"], {**run_record("study finetune", config or namespace), "started": started,
                                       "setups": list(setups), "ray": record})
    return written
