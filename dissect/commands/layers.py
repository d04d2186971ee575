"""``cli.py layers``: a model's readable layer names with channels, stride and map size."""
from __future__ import annotations

import warnings

from dissect.commands.common import check_numbers

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    lay = sub.add_parser("layers", help="list a model's readable layer names with channels and stride")
    lay.add_argument("--model", default="vgg16", help="vgg16, vgg19, resnet50, alexnet, saliency_vgg16, scene_vgg16")
    lay.add_argument("--image-size", type=int, default=224, help="input side for the map sizes (default 224)")


def run(args) -> int:
    """``cli.py layers``: :func:`dissect.models.list_layers` of a model with random weights."""
    from dissect.models import list_layers, load_model

    check_numbers(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(args.model, weights="random")
    print(list_layers(model, input_size=args.image_size).to_string(index=False))
    return 0
