"""What identifies a run's inputs in its fingerprint: the model's weights, the dataset, options as JSON.

Two parts of a run (a checkpoint and its resumption, or two shards) must agree on these; the
pass core (:mod:`dissect.runner`) compares them and refuses to mix runs.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from dissect.models.zoo import weights_identity

__all__ = ["run_identity", "jsonable"]


def run_identity(model, dataset, image_size, run_key: dict | None = None) -> dict:
    """The model (architecture and weights), the dataset (name, root, seed), the input size, ``run_key``."""
    info = getattr(model, "dissect_info", {}) if model is not None else {}
    root = getattr(dataset, "root", None)
    return {
        "dataset": getattr(dataset, "name", type(dataset).__name__),
        "dataset_root": str(Path(root).resolve()) if root is not None else None,
        "dataset_seed": getattr(dataset, "seed", None),
        "image_size": image_size,
        "model": info.get("arch", type(model).__name__) if model is not None else None,
        "weights": weights_identity(model) if model is not None else None,
        **(run_key or {}),
    }


def jsonable(obj):
    """Options as JSON for a fingerprint: tensors and arrays by a digest of their bytes."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "detach"):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return f"array{list(obj.shape)} sha256:{hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest()[:16]}"
    return f"{type(obj).__name__}:{obj}"
