"""Train He et al.'s saliency models (setups I and II) with a frozen-prefix cache and exact resume.

``train_saliency(train, val, out, cfg)`` fine-tunes :class:`dissect.models.heads.SaliencyVGG` (or
:class:`dissect.models.heads.SaliencyResNet`) on a dataset with fixations and writes, in ``out``:

* ``best.pt`` (best validation NSS), ``last.pt`` (also holds the optimiser, schedule and RNG
  state for ``resume``) and ``checkpoints/step-NNNNNN.pt`` at every evaluation (hard links to
  that evaluation's ``last.pt``: the weights are written once), all loadable by
  ``load_model(arch, weights=path)`` and ``cli.py dissect --model ARCH --weights PATH``;
* ``train_log.csv`` (step, loss, lr, seconds = cumulative training wall time), ``val.csv``
  (step, NSS, CC, KL, SIM, AUC-Judd on the validation images at their own resolution, with the
  centre-bias floor in ``floor_*`` columns), ``run.json`` and ``curves.png``.

Defaults follow He et al.'s PyTorch script (reference-implementations A.3): Adam 5e-3, batch 20,
lr x 0.8 every 500 steps, 10 000 steps, loss -NSS with the population std on binary fixation
maps at the dataset's own resolution, 224 x 224 input. ``finetune = K``: setup I (``K = 0``,
only the 1x1 read-out trains) or setup II (the last ``K`` convs of VGG16 also train; ``"all"``
= 13). For ResNet-50 ``K`` counts residual blocks (the stem counts as one), and every
BatchNorm keeps its ImageNet running statistics (eval mode; its affine parameters train in
the trainable blocks), so the frozen part stays a fixed function of the image.

**Frozen-prefix cache.** There is no augmentation, so the encoder up to the first trainable
unit is a fixed function of each image: its output is computed once per image (in memory, or
in a disk memmap ``cache/`` in the run folder when larger than ``cache_memory_mb``) and training
runs only the trainable top. Cached and uncached training compute the same function; they
differ only in float32 rounding of the prefix's convolutions, whose kernels may group batches
differently (~1e-7 relative per activation; Adam turns it into weights ~3e-4 of their norm apart
after a few steps; tested at 1e-3). ``cache_dtype="float16"`` halves the cache; its rounding
(relative 2^-11 per activation) keeps each step's loss within 5e-4 and the weights within 3e-2
of their norm (conv5_3 after 4 Adam steps; 1e-3 for the read-out alone) of float32 caching
(tested at those tolerances): fine for setup I, a visible perturbation for setup II.

**Resume.** The data order is a pure function of ``(seed, epoch)`` (a permutation per epoch,
``drop_last`` as He et al.), so ``last.pt`` (model, Adam, StepLR, torch RNG, best NSS) is the
whole state: on CPU, a run killed at any point and resumed ends bitwise equal to an
uninterrupted run with the same settings. A non-finite loss (e.g. constant predictions) stops
with :class:`TrainingError` naming the step; the checkpoints already written stay.

The package, one module per job (arrows point down: a module imports only those above it):
:mod:`~dissect.training.config` (settings), :mod:`~dissect.training.data` (splits, batches, epoch
order), :mod:`~dissect.training.prefix` (freezing, the frozen-prefix cache),
:mod:`~dissect.training.losses`, :mod:`~dissect.training.prediction`,
:mod:`~dissect.training.loop` (:func:`fit`, checkpoints, resume, run folder),
:mod:`~dissect.training.saliency` (:func:`train_saliency`) and :mod:`~dissect.training.scene`
(:func:`train_scene`, He et al.'s scene model).
"""
from dissect.training.config import LOSSES, TrainConfig, TrainingError
from dissect.training.data import image_ids, read_ids, split_dataset
from dissect.training.loop import fit, prepare_run_folder, setup_model
from dissect.training.losses import nss_loss_upsampled, stra_loss, upsample
from dissect.training.prediction import load_trained, saliency_maps
from dissect.training.prefix import FeatureCache, encoder_units, freeze_units, parse_finetune, split_point
from dissect.training.saliency import VAL_METRICS, build_saliency_model, train_saliency
from dissect.training.scene import class_weights_of, read_scene_labels, train_scene

__all__ = [
    "TrainConfig", "TrainingError", "build_saliency_model", "encoder_units", "freeze_units",
    "split_point", "FeatureCache", "split_dataset", "image_ids", "read_ids", "stra_loss",
    "saliency_maps", "upsample", "nss_loss_upsampled", "train_saliency", "load_trained", "VAL_METRICS",
    "LOSSES", "parse_finetune", "setup_model", "fit", "prepare_run_folder",
    "train_scene", "read_scene_labels", "class_weights_of",
]
