"""He et al. 2019 section 8: fine-tune VGG16 + 3 FC layers for scene recognition, and Table 8.

``train_scene(train, val, out, cfg, labels=CSV)`` trains :class:`dissect.models.heads.SceneVGG` (one
class per scene of the labels CSV, columns ``image,scene``) with class-weighted cross entropy
(``class_weights="balanced"``: ``n / (n_classes * count_c)`` over the training labels) and
conv5_3 fine-tuned (``cfg.finetune = 1``), through the same loop as the saliency trainer
(:func:`dissect.training.fit`: frozen-prefix cache, exact resume, checkpoints loadable by
``load_model("scene_vgg16", weights=PATH)``). ``val.csv`` holds the validation accuracy and
cross entropy; with ``best.pt`` it also writes ``confusion.csv`` (true x predicted counts) and
``scene_attention.csv``, He et al.'s Table 8: the NSS of the mean conv5_3 map (mean over the 512
channels, upsampled bilinearly to the image) against the fixations, for correctly vs wrongly
classified validation images (datasets with fixations only), plus ``scene_attention_images.csv``
per image.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from dissect.training.config import TrainConfig
from dissect.training.data import image_ids, read_split
from dissect.training.loop import fit, prepare_run_folder, run_fingerprint, setup_model
from dissect.training.prefix import encoder_stages, run_stages

__all__ = ["read_scene_labels", "class_weights_of", "train_scene"]


def read_scene_labels(path: str | os.PathLike, known_ids: list[str] | None = None) -> dict[str, str]:
    """``{image id: scene}`` from a CSV with columns ``image, scene``.

    Raises:
        ValueError: missing columns, an image listed twice with different scenes, an image not
            in ``known_ids`` (the first is named), a scene with a single image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file {path} does not exist")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("image", "scene") if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks column(s) {', '.join(missing)}; expected image,scene")
    table["image"] = table["image"].str.strip().map(lambda v: Path(v).stem if Path(v).suffix else v)
    table["scene"] = table["scene"].str.strip()
    labels: dict[str, str] = {}
    for image, scene in zip(table["image"], table["scene"]):
        if labels.get(image, scene) != scene:
            raise ValueError(f"{path}: image {image!r} is labelled both {labels[image]!r} and {scene!r}")
        labels[image] = scene
    if known_ids is not None:
        known = set(known_ids)
        unknown = [i for i in labels if i not in known]
        if unknown:
            raise ValueError(f"{path} names image {unknown[0]!r}, which is not in the dataset "
                             f"({len(unknown)} unknown; ids are Sample.image_id, e.g. {known_ids[0]!r})")
    counts = pd.Series(list(labels.values())).value_counts()
    single = counts[counts < 2]
    if len(single):
        raise ValueError(f"{path}: scene {single.index[0]!r} has only one image: a class needs at least two "
                         "(one to train, one to validate); merge or drop it")
    return labels


def class_weights_of(labels: np.ndarray, n_classes: int, mode: str) -> torch.Tensor | None:
    """``balanced``: ``n / (n_classes * count_c)`` (scikit-learn's rule); ``none``: None."""
    if mode == "none":
        return None
    if mode != "balanced":
        raise ValueError(f"--class-weights must be balanced or none, got {mode!r}")
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    return torch.tensor(len(labels) / (n_classes * counts), dtype=torch.float32)


def train_scene(train_set, val_set, out_dir: str | os.PathLike, cfg: TrainConfig, *, labels: str | os.PathLike,
                class_weights: str = "balanced", resume: bool = False, overwrite: bool = False,
                dataset_info: dict | None = None, on_step: Callable[[int], None] | None = None) -> dict[str, Path]:
    """Train the scene model (module docstring); ``{name: path}`` of what was written.

    Raises:
        ValueError: bad labels (see :func:`read_scene_labels`), a training or validation image
            without a label, a scene without training images.
    """
    from dissect.models import heads

    cfg.check()
    out = prepare_run_folder(out_dir, resume, overwrite)
    device = torch.device(cfg.device)
    parent = getattr(train_set, "dataset", None)
    known = image_ids(parent) if parent is not None else image_ids(train_set) + image_ids(val_set)
    scene_of = read_scene_labels(labels, known)
    train = read_split(train_set, cfg.image_size, "train", cfg.progress, need_fixations=False)
    val = read_split(val_set, cfg.image_size, "val", cfg.progress, need_fixations=False)
    for split, what in ((train, "training"), (val, "validation")):
        unlabelled = [i for i in split.ids if i not in scene_of]
        if unlabelled:
            raise ValueError(f"{what} image {unlabelled[0]!r} has no scene in {labels} ({len(unlabelled)} "
                             "unlabelled): label it or leave it out with --train-ids/--val-ids")
    classes = sorted({scene_of[i] for i in train.ids + val.ids})
    y_train = np.array([classes.index(scene_of[i]) for i in train.ids])
    y_val = np.array([classes.index(scene_of[i]) for i in val.ids])
    absent = [c for j, c in enumerate(classes) if not (y_train == j).any()]
    if absent:
        raise ValueError(f"scene {absent[0]!r} has no training image: move one of its images out of the "
                         "validation ids")
    if len(train.ids) < cfg.batch_size:
        raise ValueError(f"the training split has {len(train.ids)} images, fewer than --batch-size "
                         f"{cfg.batch_size}: lower --batch-size")
    model = heads.SceneVGG(n_classes=len(classes), encoder_weights=cfg.encoder_weights, seed=cfg.seed)
    k, units, _, cut = setup_model(model, cfg, device)
    stages = encoder_stages(model)
    weight = class_weights_of(y_train, len(classes), class_weights)
    weight = weight.to(device) if weight is not None else None
    targets = torch.from_numpy(y_train).to(device)

    def encode(feats):  # ReLU(conv5_3)
        return run_stages(stages[cut:], feats)

    def head(conv5_3):
        return model.classifier(torch.flatten(F.adaptive_avg_pool2d(model.pool5(conv5_3), 1), 1))

    def loss_of(logits, index):
        return F.cross_entropy(logits, targets[torch.from_numpy(index).to(device)], weight=weight)

    def predict(features):
        preds, nss, losses = [], [], []
        for start in range(0, len(val.ids), cfg.batch_size):
            index = np.arange(start, min(start + cfg.batch_size, len(val.ids)))
            conv = encode(features(index))
            logits = head(conv)
            losses.append(F.cross_entropy(logits, torch.from_numpy(y_val[index]).to(device), weight=weight,
                                          reduction="sum").item())
            preds += logits.argmax(1).cpu().tolist()
            nss += [_mean_map_nss(conv[j].mean(0), val, int(i)) for j, i in enumerate(index)]
        return np.array(preds), np.array(nss, dtype=np.float64), sum(losses) / len(val.ids)

    def evaluate(features) -> dict:
        preds, nss, loss = predict(features)
        correct = preds == y_val
        return {"accuracy": float(correct.mean()), "val_loss": loss,
                "nss_correct": _nanmean(nss[correct]), "nss_wrong": _nanmean(nss[~correct])}

    info = {"name": getattr(train_set, "name", "")} if dataset_info is None else dict(dataset_info)
    fingerprint = run_fingerprint(cfg, {**info, "labels": str(Path(labels).resolve()),
                                        "class_weights": class_weights, "classes": classes}, train, val)
    paths, _ = fit(out, cfg, model, k, cut, train, val, metric="accuracy", top=lambda f: head(encode(f)),
                   loss_of=loss_of, evaluate=evaluate, fingerprint=fingerprint,
                   run_info={"command": "train scene", "trainable_units": units, "dataset": info,
                             "labels": str(Path(labels).resolve()), "classes": classes,
                             "class_weights": class_weights,
                             "class_weight_values": weight.cpu().tolist() if weight is not None else None},
                   resume=resume, on_step=on_step)

    # Tables of the best checkpoint (uncached forward: the same function as training's).
    best = torch.load(paths["best"], map_location="cpu", weights_only=True)
    model.load_state_dict(best["state_dict"])
    model.to(device).eval()
    from dissect.models.inputs import preprocess

    with torch.inference_mode():
        preds, nss, _ = predict(lambda index: run_stages(stages[:cut],
                                                         preprocess(list(val.images[index]), None).to(device)))
    model.cpu()
    cols = {"model": "scene_vgg16", "weights": model.dissect_info.get("weights_detail"), "finetune": k,
            "step": best["extra"].get("step")}
    confusion = pd.crosstab(pd.Categorical([classes[i] for i in y_val], categories=classes),
                            pd.Categorical([classes[i] for i in preds], categories=classes),
                            rownames=["true"], colnames=["predicted"], dropna=False)
    paths["confusion"] = out / "confusion.csv"
    confusion.to_csv(paths["confusion"])
    per_image = pd.DataFrame({"image_id": val.ids, "scene": [classes[i] for i in y_val],
                              "predicted": [classes[i] for i in preds], "correct": preds == y_val,
                              "nss_mean_conv5_3": nss}).assign(**cols)
    paths["scene_attention_images"] = out / "scene_attention_images.csv"
    per_image.to_csv(paths["scene_attention_images"], index=False)
    rows = []
    for label, group in (("correct", per_image[per_image["correct"]]), ("wrong", per_image[~per_image["correct"]])):
        values = group["nss_mean_conv5_3"].dropna()
        rows.append({"classified": label, "n_images": len(group), "n_with_fixations": len(values),
                     "nss_mean": values.mean() if len(values) else np.nan,
                     "nss_std": values.std() if len(values) > 1 else np.nan, **cols})
    paths["scene_attention"] = out / "scene_attention.csv"
    pd.DataFrame(rows).to_csv(paths["scene_attention"], index=False)
    return paths


def _mean_map_nss(mean_map: torch.Tensor, split, i: int) -> float:
    """NSS of the channel-mean conv5_3 map upsampled to image ``i`` (NaN: no fixations / constant)."""
    from datasets.fixations import resize_map
    from probes.metrics import nss

    if not len(split.fixations[i]):
        return float("nan")
    fix = np.zeros(split.shapes[i], dtype=bool)
    fix.flat[split.fixations[i]] = True
    return nss(resize_map(mean_map.float(), split.shapes[i]), fix)


def _nanmean(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")
