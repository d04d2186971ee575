"""Models -> activations and attention maps: model zoo, hooks, the dissection engine.

Attention maps (captum) live in :mod:`dissect.attention`, imported on demand.
"""
from dissect.dissection import DissectionResult, run_dissection
from dissect.hooks import ActivationRecorder, resolve_layer
from dissect.models import MODEL_NAMES, layer_aliases, list_layers, load_model, save_checkpoint

__all__ = [
    "ActivationRecorder",
    "DissectionResult",
    "MODEL_NAMES",
    "layer_aliases",
    "list_layers",
    "load_model",
    "resolve_layer",
    "run_dissection",
    "save_checkpoint",
]
