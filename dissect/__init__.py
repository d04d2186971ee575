"""Models -> activations and attention maps, and the studies that score them.

Rooms, one job each (imports point down this list):

* :mod:`dissect.commands`: the command line's commands (parsers, configs, one library call each);
* :mod:`dissect.studies`: dissection, attention vs gaze, evaluation, robustness, the fine-tuning study;
* :mod:`dissect.training`: He et al.'s saliency and scene training;
* :mod:`dissect.attribution` (captum attention methods, dense attention, FGSM), :mod:`dissect.classical`
  (classical saliency models), :mod:`dissect.reports` (tables, console, figures);
* :mod:`dissect.runner`: the one resumable, shardable pass, run folders, merge and Ray;
* :mod:`dissect.models`: the model zoo, heads, layer names, hooks and inputs.

The names below are imported on first use, so ``import dissect.commands`` (the command line's
``--help``) does not load torch.
"""
from __future__ import annotations

import importlib

__all__ = ["ActivationRecorder", "DissectionResult", "MODEL_NAMES", "layer_aliases", "list_layers", "load_model",
           "resolve_layer", "run_dissection", "save_checkpoint"]

_HOMES = {
    "ActivationRecorder": "dissect.models.hooks",
    "resolve_layer": "dissect.models.hooks",
    "layer_aliases": "dissect.models.layers",
    "list_layers": "dissect.models.layers",
    "MODEL_NAMES": "dissect.models.backbones",
    "load_model": "dissect.models.zoo",
    "save_checkpoint": "dissect.models.zoo",
    "DissectionResult": "dissect.studies.dissection",
    "run_dissection": "dissect.studies.dissection",
}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'dissect' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
