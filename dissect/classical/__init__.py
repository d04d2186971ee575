"""Classical saliency models beside the networks (He et al. 2019, Table 4).

``saliency_map(image, method, **options)`` returns an ``H x W`` float64 map for an ``H x W x 3``
uint8 RGB image; :data:`METHODS` lists the methods, one module each:

* ``gbvs``: Harel, Koch and Perona 2006, the authors' MATLAB algorithm and defaults
  (:mod:`dissect.classical.gbvs`);
* ``itti``: Itti, Koch and Niebur 1998 (:mod:`dissect.classical.itti`);
* ``bms``: Zhang and Sclaroff 2013, the authors' v2 code and parameters
  (:mod:`dissect.classical.bms`);
* ``spectral_residual``: Hou and Zhang 2007 through OpenCV contrib
  (:mod:`dissect.classical.spectral_residual`);
* ``centre_bias``: the Gaussian floor of the gaze reports (:mod:`dissect.classical.centre_bias`).

Conventions (every method):

* maps are min-maxed to [0, 1] (``centre_bias``: maximum 1), at the image's own resolution;
* **NaN rule**: an image without any contrast (every pixel the same colour) gives a constant map
  of zeros (``centre_bias`` excepted: it ignores the content). A constant map is never scored as
  a number: NSS, CC and NMM are NaN for it (:mod:`probes.metrics`), the ROC metrics 0.5;
* a grey image (``H x W`` or ``H x W x 1``) is converted to RGB by repeating its channel and a
  warning says so (:func:`dissect.studies.evaluation.run_evaluation` records such images in run.json);
* deterministic: the same image and options give the same map, bit for bit.
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np

from dissect.classical._common import as_rgb, with_defaults

__all__ = ["METHODS", "saliency_map", "method_defaults"]

METHODS: tuple[str, ...] = ("gbvs", "itti", "bms", "spectral_residual", "centre_bias")


def _function(method: str):
    if method == "gbvs":
        from dissect.classical import gbvs as mod
    elif method == "itti":
        from dissect.classical import itti as mod
    elif method == "bms":
        from dissect.classical import bms as mod
    elif method == "spectral_residual":
        from dissect.classical import spectral_residual as mod
    elif method == "centre_bias":
        from dissect.classical import centre_bias as mod
    else:
        raise ValueError(f"unknown classical saliency method {method!r}; choose from {', '.join(METHODS)}")
    return getattr(mod, method), mod.DEFAULTS


def method_defaults(method: str) -> dict:
    """The default options of ``method`` (what :func:`saliency_map` uses when none are given)."""
    return dict(_function(method)[1])


def saliency_map(image, method: str, **options) -> np.ndarray:
    """Saliency map of one image by a classical model.

    Args:
        image: ``H x W x 3`` uint8 RGB array (``H x W`` grey is converted, with a warning).
        method: one of :data:`METHODS`.
        **options: the method's parameters (see its module's ``DEFAULTS``); an unknown option is
            an error.

    Returns:
        ``H x W`` float64 map in [0, 1] (module docstring for the conventions).

    Raises:
        ValueError: unknown method or option, an image that is not uint8 RGB / grey, an image
            too small for the method (GBVS: 128 px).
    """
    func, _ = _function(method)
    rgb, grey = as_rgb(image)
    if grey:
        warnings.warn(f"{method}: grey image converted to RGB by repeating its channel", stacklevel=2)
    if method != "centre_bias" and (rgb == rgb[0, 0]).all():
        _check_options(method, options)
        return np.zeros(rgb.shape[:2])  # no contrast, no saliency: constant (NaN rule)
    with _one_blas_thread():
        out = np.asarray(func(rgb, **options), dtype=np.float64)
    if not np.isfinite(out).all():
        raise RuntimeError(f"{method} produced NaN/inf values on an image of shape {rgb.shape}")
    return out


_CONTROLLER = None


def _one_blas_thread():
    """BLAS limited to one thread while a model runs: its matrix products are small (32 px maps),
    and a multi-threaded BLAS on a busy CPU made them up to 200x slower (bench/classical_speed.py)."""
    global _CONTROLLER
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: without it the models are the same, only slower on busy machines
        return contextlib.nullcontext()
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


def _check_options(method: str, options: dict) -> None:
    with_defaults(method, options, method_defaults(method))
