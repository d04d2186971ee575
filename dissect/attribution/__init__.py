"""Attribution: attention maps of classification networks (captum methods, dense attention) and FGSM.

* :mod:`dissect.attribution.methods`: :func:`attention_maps` (activation, CAM, Grad-CAM, guided
  backprop, guided Grad-CAM, dense) and :func:`dense_attention_maps`;
* :mod:`dissect.attribution.fgsm`: :func:`fgsm_perturb`, one FGSM step on [0, 1] pixels.
"""
from dissect.attribution.fgsm import fgsm_perturb
from dissect.attribution.methods import METHODS, attention_maps, dense_attention_maps, fit_cam_regression, top1

__all__ = ["METHODS", "attention_maps", "dense_attention_maps", "fgsm_perturb", "fit_cam_regression", "top1"]
