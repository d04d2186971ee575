"""Models: the zoo (torchvision backbones and He et al.'s task heads), their layer names, hooks, inputs.

* :mod:`dissect.models.zoo`: :func:`load_model`, :func:`save_checkpoint`;
* :mod:`dissect.models.backbones`: the ImageNet classifiers and their weights;
* :mod:`dissect.models.heads`: He et al.'s saliency and scene models on a VGG16 encoder;
* :mod:`dissect.models.layers`: readable layer names (``conv5_3``) and shapes;
* :mod:`dissect.models.hooks`: recording activations (:class:`ActivationRecorder`);
* :mod:`dissect.models.inputs`: images -> normalised batches (:func:`preprocess`).
"""
from dissect.models.backbones import (ALL_MODEL_NAMES, HEAD_NAMES, IMAGENET_MEAN, IMAGENET_STD, MODEL_NAMES,
                                      ClassifierNotBuilt, model_device)
from dissect.models.layers import layer_aliases, list_layers
from dissect.models.zoo import load_model, save_checkpoint, weights_identity

__all__ = ["ALL_MODEL_NAMES", "HEAD_NAMES", "IMAGENET_MEAN", "IMAGENET_STD", "MODEL_NAMES", "ClassifierNotBuilt",
           "layer_aliases", "list_layers", "load_model", "model_device", "save_checkpoint", "weights_identity"]
