"""The training loop shared by the saliency and scene trainers (:func:`fit`): optimiser and
schedule, exact resume from ``last.pt``, checkpoints, ``train_log.csv`` / ``val.csv`` / ``run.json`` /
``curves.png``; the run folder and the model's freezing for ``cfg.finetune``."""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from dissect.models.inputs import preprocess
from dissect.models.zoo import save_checkpoint
from dissect.reports.figures import training_curves
from dissect.runner.folders import atomic_write_csv, atomic_write_json, check_writable, run_record
from dissect.training.config import TrainConfig, TrainingError
from dissect.training.data import Split, batch_indices
from dissect.training.prefix import (
    FeatureCache,
    encoder_stages,
    freeze_units,
    parse_finetune,
    run_stages,
    split_point,
    train_mode,
)

__all__ = ["fit", "setup_model", "prepare_run_folder", "run_fingerprint"]


_STATE_KEY = "training"
# Settings that may change between an interrupted run and its resumption.
_RESUMABLE = ("steps", "device", "progress", "cache", "cache_memory_mb")


def run_fingerprint(cfg: TrainConfig, dataset_info: dict, train: Split, val: Split) -> dict:
    """What must match for ``resume``: the settings outside ``_RESUMABLE``, the data, the split ids."""
    settings = {k: v for k, v in asdict(cfg).items() if k not in _RESUMABLE}
    settings["loss_weights"] = list(settings["loss_weights"])
    return {"settings": settings, "dataset": dataset_info, "train_ids": train.ids, "val_ids": val.ids}


def _save(model: nn.Module, path: Path, extra: dict, training: dict | None = None) -> None:
    """A :func:`save_checkpoint` file (plus the training state), written atomically."""
    tmp = path.with_name(path.name + ".tmp")
    save_checkpoint(model, tmp, payload={_STATE_KEY: training} if training is not None else None, **extra)
    os.replace(tmp, path)


def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes a copy of ``src`` (a hard link where the file system allows), atomically."""
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _existing_run(out: Path) -> bool:
    return (out / "run.json").exists() or (out / "last.pt").exists()


def prepare_run_folder(out_dir: str | os.PathLike, resume: bool, overwrite: bool) -> Path:
    """The run folder, refusing to mix runs: an existing run needs ``resume`` or ``overwrite``."""
    out = check_writable(out_dir)
    if _existing_run(out) and not (resume or overwrite):
        raise TrainingError(f"{out} already holds a training run: pass --resume to continue it, --overwrite to "
                            "discard it, or choose another --out")
    if resume and _existing_run(out) and not (out / "last.pt").exists():
        raise TrainingError(f"{out} has no last.pt to resume from: use --overwrite to start again")
    if overwrite and not resume:
        for name in ("last.pt", "best.pt", "run.json", "train_log.csv", "val.csv", "curves.png"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        shutil.rmtree(out / "cache", ignore_errors=True)
    return out


def setup_model(model: nn.Module, cfg: TrainConfig, device) -> tuple[int, list[str], list[nn.Parameter], int]:
    """Freeze ``model`` for ``cfg.finetune``: ``(K, trainable unit names, parameters, cut)``."""
    k = parse_finetune(cfg.finetune, model)
    units = freeze_units(model, k)
    model.to(device)
    return k, units, [p for p in model.parameters() if p.requires_grad], split_point(model, k)


def fit(out: Path, cfg: TrainConfig, model: nn.Module, k: int, cut: int, train: "Split", val: "Split", *,
        metric: str, top: Callable, loss_of: Callable, evaluate: Callable, fingerprint: dict, run_info: dict,
        resume: bool, on_step: Callable[[int], None] | None = None) -> tuple[dict[str, Path], list[dict]]:
    """The training loop shared by the saliency and scene trainers.

    ``top(feats)`` runs the trainable part on the frozen prefix's output, ``loss_of(output,
    index)`` gives the batch loss, ``evaluate(features) -> dict`` scores the validation split
    (``features(index)`` gives its prefix outputs) and must hold ``metric`` (higher = better:
    ``best.pt``). Writes checkpoints, ``train_log.csv``, ``val.csv``, ``run.json``, ``curves.png``.
    """
    device = torch.device(cfg.device)
    params = [p for p in model.parameters() if p.requires_grad]
    stages = encoder_stages(model)
    init_info = dict(model.dissect_info)
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.decay_every, gamma=cfg.lr_decay)
    step, best_score, seconds = 0, -math.inf, 0.0
    log_rows: list[dict] = []
    val_rows: list[dict] = []
    paths = {"best": out / "best.pt", "last": out / "last.pt", "train_log": out / "train_log.csv",
             "val": out / "val.csv", "run": out / "run.json", "curves": out / "curves.png"}
    if resume and paths["last"].exists():
        state = torch.load(paths["last"], map_location="cpu", weights_only=True)
        saved = state.get(_STATE_KEY)
        if saved is None:
            raise TrainingError(f"{paths['last']} holds no training state: it was not written by cli.py train")
        if saved["fingerprint"] != fingerprint:
            diff = _first_difference(saved["fingerprint"], fingerprint)
            raise TrainingError(f"{out} holds another run ({diff}): use the same settings to resume, or another --out")
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        torch.set_rng_state(saved["torch_rng"])
        step, best_score, seconds = int(saved["step"]), float(saved["best"]), float(saved["seconds"])
        if paths["train_log"].exists():
            log_rows = [r for r in pd.read_csv(paths["train_log"]).to_dict("records") if r["step"] <= step]
        if paths["val"].exists():
            val_rows = [r for r in pd.read_csv(paths["val"]).to_dict("records") if r["step"] <= step]

    model_cols = {"model": init_info.get("arch"), "weights": init_info.get("weights_detail"), "finetune": k}
    extra = {key: value for key, value in run_info.items() if key != "command"}
    run_info = run_record(run_info["command"], asdict(cfg), **extra, finetune_k=k, initial_weights=init_info,
                          trainable_parameters=[n for n, p in model.named_parameters() if p.requires_grad],
                          n_trainable=int(sum(p.numel() for p in params)), n_train=len(train.ids),
                          n_val=len(val.ids), train_ids=train.ids, val_ids=val.ids, notes=_notes(init_info))

    # The frozen prefix, cached or recomputed every step.
    use_cache = cfg.cache != "off" and step < cfg.steps  # a finished run being reopened needs no cache
    caches: dict[str, FeatureCache] = {}
    t_cache = time.perf_counter()
    if use_cache:
        model.eval()
        for name, split in (("train", train), ("val", val)):
            caches[name] = FeatureCache(stages[:cut], split.images, dtype=cfg.cache_dtype,
                                        where="auto" if cfg.cache == "auto" else cfg.cache,
                                        memory_mb=cfg.cache_memory_mb, path=out / "cache" / f"{name}.npy",
                                        device=device, progress=cfg.progress)
    run_info["cache"] = {"enabled": use_cache, "dtype": cfg.cache_dtype if use_cache else None,
                         "on_disk": any(c.on_disk for c in caches.values()),
                         "bytes": int(sum(c.nbytes for c in caches.values())),
                         "seconds": round(time.perf_counter() - t_cache, 3)}
    atomic_write_json(paths["run"], run_info)

    def features(split_name: str, split: Split, index: np.ndarray) -> torch.Tensor:
        if use_cache:
            return caches[split_name].get(index, device)
        with torch.no_grad():
            return run_stages(stages[:cut], preprocess(list(split.images[index]), None).to(device))

    def validate(at: int) -> dict:
        model.eval()
        with torch.inference_mode():
            return {"step": at, **model_cols, **evaluate(lambda index: features("val", val, index))}

    def write_tables(final: bool = False) -> None:
        log = pd.DataFrame(log_rows, columns=["step", "loss", "lr", "seconds", "model", "weights", "finetune"])
        vals = pd.DataFrame(val_rows)
        atomic_write_csv(log, paths["train_log"])
        atomic_write_csv(vals, paths["val"])
        if final:
            training_curves(log, vals, paths["curves"], metric,
                            f"{init_info.get('arch')} K={k} ({init_info.get('weights_detail')})")

    def checkpoint(at: int, row: dict) -> None:
        nonlocal best_score
        # One file per evaluation: last.pt (with the training state); the step checkpoint and
        # best.pt are hard links to it (copies where links fail), so the weights are written once.
        extra = {"step": at, "finetune": k, f"val_{metric}": row[metric], "run": str(out)}
        improved = row[metric] > best_score  # False for NaN
        if improved:
            best_score = row[metric]
        training = {"fingerprint": fingerprint, "step": at, "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(), "torch_rng": torch.get_rng_state(),
                    "best": best_score, "seconds": seconds}
        _save(model, paths["last"], extra, training)
        (out / "checkpoints").mkdir(exist_ok=True)
        if at > 0:
            _link_or_copy(paths["last"], out / "checkpoints" / f"step-{at:06d}.pt")
        if improved:
            _link_or_copy(paths["last"], paths["best"])
        write_tables()

    if step == 0 and not val_rows:
        val_rows.append(validate(0))
        checkpoint(0, val_rows[-1])
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train K={k}", unit="step", disable=not cfg.progress,
               dynamic_ncols=True)
    running = None
    try:
        while step < cfg.steps:
            t0 = time.perf_counter()
            step += 1
            index = batch_indices(cfg.seed, step, len(train.ids), cfg.batch_size)
            train_mode(model)
            lr = optimizer.param_groups[0]["lr"]
            loss = loss_of(top(features("train", train, index)), index)
            if not torch.isfinite(loss):
                last = val_rows[-1]["step"] if val_rows else 0
                raise TrainingError(f"the training loss is {float(loss.detach())} at step {step} (constant predictions? a "
                                    f"too large --lr?); stopped, the last good checkpoint is {paths['last']} "
                                    f"(step {last})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            seconds += time.perf_counter() - t0
            value = float(loss.detach())
            log_rows.append({"step": step, "loss": value, "lr": lr, "seconds": round(seconds, 4), **model_cols})
            running = value if running is None else 0.9 * running + 0.1 * value
            bar.update(1)
            bar.set_postfix(loss=f"{running:.3f}")
            if step % cfg.eval_every == 0 or step == cfg.steps:
                val_rows.append(validate(step))
                bar.set_postfix(loss=f"{running:.3f}", **{f"val_{metric}": f"{val_rows[-1][metric]:.3f}"})
                checkpoint(step, val_rows[-1])
            if on_step is not None:
                on_step(step)
    finally:
        bar.close()
        caches.clear()  # a disk cache is rebuilt on resume: never left behind
        shutil.rmtree(out / "cache", ignore_errors=True)
    write_tables(final=True)
    model.cpu().eval()
    best = max((r for r in val_rows if np.isfinite(r[metric])), key=lambda r: r[metric], default=None)
    atomic_write_json(paths["run"], {**run_info, "finished_step": step,
                                     "best_step": best["step"] if best else None,
                                     f"best_val_{metric}": best[metric] if best else None})
    return paths, val_rows


def _first_difference(saved: dict, now: dict) -> str:
    for key in now:
        if saved.get(key) != now.get(key):
            if isinstance(now[key], dict) and isinstance(saved.get(key), dict):
                for sub in now[key]:
                    if saved[key].get(sub) != now[key][sub]:
                        return f"{sub}: {saved[key].get(sub)!r} there, {now[key][sub]!r} now"
            if isinstance(now[key], list) and isinstance(saved.get(key), list):
                return f"{key}: {len(saved[key])} ids there, {len(now[key])} now, or other ids"
            return f"{key} differs"
    return "settings differ"


def _notes(info: dict) -> list[str]:
    if str(info.get("weights", "")).startswith("random"):
        return ["RANDOM encoder weights (no ImageNet pretraining): not He et al.'s models; numbers "
                "from this run are not comparable with the paper's"]
    return []
