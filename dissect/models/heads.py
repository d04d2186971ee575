"""Task heads on a VGG16 encoder: He et al.'s saliency model and scene classifier.

Both use VGG16 conv1_1..conv5_3 (``features[:30]``: pool5 dropped, output = ReLU(conv5_3),
512 channels) as the encoder, so the layer aliases of :func:`dissect.models.layers.layer_aliases`
(``conv1_1`` .. ``conv5_3``, ``pool1`` .. ``pool4``) address the same modules as in ``vgg16``.
No training loop lives here; :func:`freeze_encoder` sets He et al.'s setups I and II.
A model saved with :func:`dissect.models.save_checkpoint` reloads with
``load_model("saliency_vgg16" | "scene_vgg16", weights=path)``; ``dissect_info`` follows
``load_model``'s record (``weights`` ``"random"``, ``"imagenet-encoder"`` or ``"file-encoder"``).
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dissect.models.backbones import load_backbone

__all__ = ["SaliencyVGG", "SaliencyResNet", "SceneVGG", "nss_loss", "freeze_encoder"]

RESNET_READOUT_LAYERS = ("layer1", "layer2", "layer3", "layer4")

_N_ENCODER_MODULES = 30  # features[:30] ends at ReLU(conv5_3); features[30] is pool5


def _vgg16_encoder(
    weights: str | os.PathLike, seed: int, progress: bool
) -> tuple[nn.Sequential, nn.Module, dict]:
    """VGG16 ``features[:30]`` (up to ReLU(conv5_3)), its pool5, and the weights record."""
    vgg = load_backbone("vgg16", os.fspath(weights), seed, progress)
    return vgg.features[:_N_ENCODER_MODULES], vgg.features[_N_ENCODER_MODULES], vgg.dissect_info


def _head_info(arch: str, encoder_info: dict, seed: int, **options) -> dict:
    """``dissect_info`` of a task model built from an encoder record, as in ``load_model``.

    A random encoder and head share ``seed``, so ``weights_detail`` is just ``seed=...``;
    otherwise ``weights`` is ``"imagenet-encoder"`` / ``"file-encoder"`` and the detail names
    the encoder's weights and the head's seed.
    """
    if encoder_info["weights"] == "random":
        weights, detail = "random", f"seed={seed}"
    else:
        weights = f"{encoder_info['weights']}-encoder"
        detail = f"encoder {encoder_info['weights_detail']}, head seed={seed}"
    return {"arch": arch, "weights": weights, "weights_detail": detail, "seed": seed,
            "requested": encoder_info["requested"], **options, "encoder": encoder_info}


class SaliencyVGG(nn.Module):
    """He et al. 2019's saliency model: VGG16 up to ReLU(conv5_3) + a 1x1 conv read-out.

    ``forward(x, out_size)`` returns the raw read-out map upsampled bilinearly (half-pixel
    centres, ``align_corners=False``) to ``out_size``, shape ``N x H x W``. He et al.'s demo
    also min-maxes each map; NSS is affine-invariant, so the loss does not need it.

    Args:
        encoder_weights: weights of the VGG16 encoder, as ``weights`` of
            :func:`dissect.models.load_model` (``"auto"``, ``"imagenet"``, ``"random"``, path).
        seed: seed of the random initialisation (encoder if random, and the read-out).
        progress: show a download progress bar.
    """

    dissect_alias_family = "vgg"

    def __init__(self, encoder_weights: str | os.PathLike = "auto", *, seed: int = 0,
                 progress: bool = False) -> None:
        super().__init__()
        self.features, _, encoder_info = _vgg16_encoder(encoder_weights, seed, progress)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            # He et al. 2019 (PyTorch code): Conv2d(512, 1, 1, bias=False), a linear read-out.
            self.readout = nn.Conv2d(512, 1, kernel_size=1, bias=False)
        self.dissect_info = _head_info("saliency_vgg16", encoder_info, seed)
        self.eval()

    def forward(self, x: torch.Tensor, out_size: Sequence[int] | None = None) -> torch.Tensor:
        """Saliency maps ``N x H x W`` for images ``N x 3 x h x w`` (ImageNet-normalised).

        Args:
            x: input batch.
            out_size: ``(H, W)`` of the output (the fixation-map size); ``None``: the input's size.
        """
        size = tuple(x.shape[-2:]) if out_size is None else tuple(int(s) for s in out_size)
        maps = self.readout(self.features(x))
        maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
        return maps[:, 0]


class SaliencyResNet(nn.Module):
    """He et al.'s saliency read-out on a ResNet-50: the network up to ``readout_layer`` + a 1x1 conv.

    The stem (``conv1, bn1, relu, maxpool``) and ``layer1 .. readout_layer`` are top-level
    modules named as in torchvision, so ``layer_aliases`` (``conv1``, ``layer1`` ..) and
    checkpoints address them as in ``resnet50``. ``forward`` is that of :class:`SaliencyVGG`.

    Args:
        encoder_weights: weights of the ResNet-50 encoder, as in :class:`SaliencyVGG`.
        readout_layer: the stage read out, ``"layer1"`` .. ``"layer4"`` (256 .. 2048 channels).
        seed: seed of the random initialisation (encoder if random, and the read-out).
        progress: show a download progress bar.

    Raises:
        ValueError: unknown ``readout_layer``.
    """

    dissect_alias_family = "resnet"

    def __init__(self, encoder_weights: str | os.PathLike = "auto", *, readout_layer: str = "layer4",
                 seed: int = 0, progress: bool = False) -> None:
        super().__init__()
        if readout_layer not in RESNET_READOUT_LAYERS:
            raise ValueError(f"readout_layer must be one of {', '.join(RESNET_READOUT_LAYERS)}, "
                             f"got {readout_layer!r}")
        net = load_backbone("resnet50", os.fspath(encoder_weights), seed, progress)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        n_stages = RESNET_READOUT_LAYERS.index(readout_layer) + 1
        for name in RESNET_READOUT_LAYERS[:n_stages]:
            setattr(self, name, getattr(net, name))
        channels = 256 * 2 ** (n_stages - 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.readout = nn.Conv2d(channels, 1, kernel_size=1, bias=False)
        self.readout_layer = readout_layer
        self.dissect_info = _head_info("saliency_resnet50", net.dissect_info, seed,
                                       readout_layer=readout_layer)
        self.eval()

    def encoder_stages(self) -> list[nn.Module]:
        """The encoder as a chain: stem modules, then every residual block in forward order."""
        stages: list[nn.Module] = [self.conv1, self.bn1, self.relu, self.maxpool]
        for name in RESNET_READOUT_LAYERS:
            if hasattr(self, name):
                stages.extend(getattr(self, name))
        return stages

    def forward(self, x: torch.Tensor, out_size: Sequence[int] | None = None) -> torch.Tensor:
        """Saliency maps ``N x H x W`` for images ``N x 3 x h x w`` (ImageNet-normalised)."""
        size = tuple(x.shape[-2:]) if out_size is None else tuple(int(s) for s in out_size)
        for stage in self.encoder_stages():
            x = stage(x)
        maps = F.interpolate(self.readout(x), size=size, mode="bilinear", align_corners=False)
        return maps[:, 0]


class SceneVGG(nn.Module):
    """He et al. 2019 sec. 8 scene classifier: the VGG16 encoder + 3 fully connected layers.

    Encoder ``features[:30]``, then pool5, global average pooling and
    ``Linear(512, hidden) -> ReLU -> Dropout -> Linear(hidden, hidden) -> ReLU -> Dropout ->
    Linear(hidden, n_classes)``. The paper does not give the FC sizes or pooling; global
    average pooling is our choice (any input size works, few parameters to train).

    Args:
        n_classes: number of scene classes (26 Places classes on SALICON in the paper).
        encoder_weights: as in :class:`SaliencyVGG`.
        hidden: width of the two hidden FC layers.
        dropout: dropout probability after each hidden layer.
        seed: seed of the random initialisation.
        progress: show a download progress bar.

    Raises:
        ValueError: ``n_classes`` or ``hidden`` < 1, or ``dropout`` outside [0, 1).
    """

    dissect_alias_family = "vgg"

    def __init__(self, n_classes: int = 26, encoder_weights: str | os.PathLike = "auto", *,
                 hidden: int = 1024, dropout: float = 0.5, seed: int = 0,
                 progress: bool = False) -> None:
        super().__init__()
        if not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be a positive int, got {hidden!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.features, self.pool5, encoder_info = _vgg16_encoder(encoder_weights, seed, progress)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.classifier = nn.Sequential(
                nn.Linear(512, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                nn.Linear(hidden, n_classes),
            )
        self.dissect_info = _head_info("scene_vgg16", encoder_info, seed, n_classes=n_classes,
                                       hidden=hidden, dropout=dropout)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``N x n_classes`` for images ``N x 3 x h x w`` (h, w >= 32)."""
        f = self.pool5(self.features(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(f, 1), 1))


def nss_loss(pred: torch.Tensor, fixation_maps: torch.Tensor) -> torch.Tensor:
    """Negative NSS averaged over the batch, the training loss of He et al. 2019.

    Per image, ``z = (S - mean(S)) / std(S)`` with the population std (ddof = 0, digest
    section 2; He et al.'s TF code) over the whole map, and
    ``NSS = sum(z * f) / sum(f)`` over the fixated pixels ``f = fixation_maps > 0`` (unique
    fixated pixels; non-binary maps are binarised). Returns ``-mean_n NSS_n``. A constant map
    has no z-score: its NSS, and so the loss, is NaN.

    Args:
        pred: predicted maps ``N x H x W`` (``N x 1 x H x W`` is accepted).
        fixation_maps: binary fixation maps of the same shape (bool or 0/1).

    Returns:
        Scalar tensor, differentiable with respect to ``pred``.

    Raises:
        ValueError: shapes differ, the maps are not ``N x H x W``, or an image has no fixation.
    """
    if pred.dim() == 4 and pred.shape[1] == 1:
        pred = pred[:, 0]
    if fixation_maps.dim() == 4 and fixation_maps.shape[1] == 1:
        fixation_maps = fixation_maps[:, 0]
    if pred.dim() != 3 or pred.shape != fixation_maps.shape:
        raise ValueError(
            f"pred and fixation_maps must both be N x H x W, got {tuple(pred.shape)} and "
            f"{tuple(fixation_maps.shape)}: resize pred to the fixation-map size first"
        )
    fix = (fixation_maps > 0).to(pred.dtype)
    n_fix = fix.sum(dim=(1, 2))
    if bool((n_fix == 0).any()):
        empty = torch.nonzero(n_fix == 0).flatten().tolist()
        raise ValueError(f"fixation_maps of images {empty} have no fixated pixel: NSS is undefined")
    mean = pred.mean(dim=(1, 2), keepdim=True)
    std = pred.std(dim=(1, 2), correction=0, keepdim=True)
    z = (pred - mean) / std
    nss = (z * fix).sum(dim=(1, 2)) / n_fix
    return -nss.mean()


def freeze_encoder(model: nn.Module, train_last_convs: int = 0) -> list[str]:
    """Freeze the encoder except its last ``k`` convs; the head stays trainable.

    He et al. 2019 setup I: ``train_last_convs=0`` (only the read-out trains); setup II:
    ``k = 1..13``; scene fine-tuning: ``k = 1`` (conv5_3).

    Args:
        model: a :class:`SaliencyVGG` or :class:`SceneVGG` (anything with ``features``).
        train_last_convs: how many of the encoder's last Conv2d layers stay trainable.

    Returns:
        Dotted paths of the encoder convs left trainable, in forward order.

    Raises:
        ValueError: ``train_last_convs`` outside ``0 .. number of encoder convs``.
    """
    convs = [(f"features.{i}", m) for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    if not isinstance(train_last_convs, int) or not 0 <= train_last_convs <= len(convs):
        raise ValueError(
            f"train_last_convs must be an int in 0..{len(convs)}, got {train_last_convs!r}"
        )
    for p in model.features.parameters():
        p.requires_grad_(False)
    trainable = convs[len(convs) - train_last_convs:]
    for _, conv in trainable:
        for p in conv.parameters():
            p.requires_grad_(True)
    return [path for path, _ in trainable]
