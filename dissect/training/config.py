"""The settings of a training run (:class:`TrainConfig`), its one-line error and the losses offered."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["TrainConfig", "TrainingError", "LOSSES", "check_k"]


LOSSES = ("nss", "kl+cc+nss+sim")


class TrainingError(ValueError):
    """Training cannot go on (non-finite loss, a run folder of another run); one line."""


@dataclass
class TrainConfig:
    """Every setting of a training run (written to ``run.json``)."""

    finetune: int | str = 0
    backbone: str = "vgg16"
    readout_layer: str | None = None
    encoder_weights: str = "auto"
    seed: int = 0
    steps: int = 10_000
    batch_size: int = 20
    lr: float = 5e-3
    lr_decay: float = 0.8
    decay_every: int = 500
    eval_every: int = 500
    loss: str = "nss"
    loss_weights: tuple[float, float, float, float] = (10.0, 2.0, 1.0, 1.0)
    image_size: int = 224
    sigma: float = 24.0
    cache: str = "auto"
    cache_dtype: str = "float32"
    cache_memory_mb: int = 4096
    device: str = "cpu"
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        """Raise a one-line ValueError for a setting outside its range."""
        positive = {"steps": self.steps, "batch_size": self.batch_size, "decay_every": self.decay_every,
                    "eval_every": self.eval_every, "image_size": self.image_size}
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"--lr must be a positive number, got {self.lr!r}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"--lr-decay must be in (0, 1], got {self.lr_decay!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if len(self.loss_weights) != 4 or not all(math.isfinite(w) for w in self.loss_weights):
            raise ValueError(f"--loss-weights needs 4 finite numbers KL,CC,NSS,SIM, got {self.loss_weights!r}")
        if self.backbone not in ("vgg16", "resnet50"):
            raise ValueError(f"--backbone must be vgg16 or resnet50, got {self.backbone!r}")
        if self.backbone == "vgg16" and self.readout_layer not in (None, "conv5_3"):
            raise ValueError("--readout-layer is for --backbone resnet50 (VGG16 reads out conv5_3, as He et al.)")
        if self.cache not in ("auto", "memory", "disk", "off"):
            raise ValueError(f"--cache must be auto, memory, disk or off, got {self.cache!r}")
        if self.cache_dtype not in ("float32", "float16"):
            raise ValueError(f"--cache-dtype must be float32 or float16, got {self.cache_dtype!r}")
        check_k(self.finetune, _n_units(self.backbone, self.readout_layer))


def _n_units(backbone: str, readout_layer: str | None) -> int:
    """Trainable units of an encoder without building it: VGG16's 13 convs, or ResNet-50's stem
    plus its residual blocks up to the read-out stage (3, 4, 6, 3 per stage)."""
    if backbone != "resnet50":
        return 13
    stages = ("layer1", "layer2", "layer3", "layer4")
    last = stages.index(readout_layer) + 1 if readout_layer in stages else 4
    return 1 + sum((3, 4, 6, 3)[:last])


def check_k(value: int | str, n: int) -> int:
    """``--finetune`` ``value`` as an int in ``0 .. n`` (``"all"`` = ``n``) for an encoder of ``n`` units."""
    if value == "all":
        return n
    try:
        k = int(value)
    except (TypeError, ValueError):
        k = -1
    if isinstance(value, bool) or k < 0 or k > n or str(value).strip() != str(k):
        raise ValueError(f"--finetune must be an integer in 0..{n} or 'all' for this encoder, got {value!r}")
    return k
