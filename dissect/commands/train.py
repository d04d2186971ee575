"""``cli.py train saliency|scene``: train He et al.'s saliency model (setups I/II) or scene model.

Also the training flags and the training data that ``study finetune`` shares.
"""
from __future__ import annotations

from pathlib import Path

from dissect.commands.common import add_dataset_args, dataset_options, flags_of, resolve_device

__all__ = ["add_parser", "add_training_flags", "open_training_data", "train_config", "run"]


def add_parser(sub) -> None:
    t = sub.add_parser("train", help="train He et al.'s saliency (setups I/II) or scene model",
                       description="Fine-tune a model of the studies and write best.pt, last.pt, per-evaluation "
                                   "checkpoints, train_log.csv, val.csv, run.json and curves.png.")
    tsub = t.add_subparsers(dest="train_command", required=True)
    for name in ("saliency", "scene"):
        p = tsub.add_parser(name, help="He et al.'s saliency model: VGG16/ResNet-50 + 1x1 read-out, loss -NSS"
                            if name == "saliency" else "He et al. sec. 8: VGG16 + 3 FC layers, scene labels")
        if name == "saliency":
            p.add_argument("--finetune", default="0", help="K: 0 = setup I (only the read-out trains), K = also "
                                                          "the last K convs (setup II), all = 13 (default 0)")
            p.add_argument("--backbone", choices=("vgg16", "resnet50"), default="vgg16",
                           help="encoder: vgg16 (He et al., default) or resnet50 (with --readout-layer)")
            p.add_argument("--readout-layer", help="resnet50: the stage read out, layer1..layer4 (default layer4)")
            p.add_argument("--loss", choices=("nss", "kl+cc+nss+sim"), default="nss",
                           help="-NSS (He et al., default) or STRA-Net's KL + CC + NSS + SIM")
            p.add_argument("--loss-weights", default="10,2,1,1", help="KL,CC,NSS,SIM weights (STRA-Net: 10,2,1,1)")
        else:
            p.add_argument("--labels", required=True, help="CSV with columns image,scene (one row per image)")
            p.add_argument("--finetune", default="1", help="convs of the encoder that train (default 1: conv5_3)")
            p.add_argument("--class-weights", choices=("balanced", "none"), default="balanced",
                           help="cross-entropy class weights (default balanced: n / (classes * count))")
            p.set_defaults(backbone="vgg16", readout_layer=None, loss="nss", loss_weights="10,2,1,1")
        add_dataset_args(p, "osie", "osie (default), salicon or folder: a dataset with fixations")
        add_training_flags(p)
        p.add_argument("--out", help="run folder (default runs/train-...)")
        p.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
        p.add_argument("--overwrite", action="store_true", help="discard a run already in --out")


def add_training_flags(p) -> None:
    """The training settings shared by `train` and `study finetune`."""
    p.add_argument("--encoder-weights", default="auto", help="auto, imagenet, random or a path to VGG16 weights")
    p.add_argument("--train-ids", help="file with one training image id per line")
    p.add_argument("--val-ids", help="file with one validation image id per line")
    p.add_argument("--val-fraction", type=float, help="random validation fraction (default 0.1, seeded)")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights, split and data order")
    p.add_argument("--steps", type=int, default=10000, help="optimiser steps (default 10000, He et al.)")
    p.add_argument("--batch-size", type=int, default=20, help="images per step (default 20)")
    p.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate (default 5e-3)")
    p.add_argument("--lr-decay", type=float, default=0.8, help="lr factor every --decay-every steps")
    p.add_argument("--decay-every", type=int, default=500, help="steps between learning-rate decays (default 500)")
    p.add_argument("--eval-every", type=int, default=500, help="validate and checkpoint every N steps")
    p.add_argument("--image-size", type=int, default=224, help="network input side in pixels (default 224)")
    p.add_argument("--cache", choices=("auto", "memory", "disk", "off"), default="auto",
                   help="frozen-prefix cache: auto (memory, or a disk memmap above --cache-memory-mb), "
                        "memory, disk or off")
    p.add_argument("--cache-dtype", choices=("float32", "float16"), default="float32",
                   help="storage of the cached features (float16: half the memory, tolerance documented)")
    p.add_argument("--cache-memory-mb", type=int, default=4096, help="above this the cache is a disk memmap")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def open_training_data(args):
    """The dataset of a ``train`` command, its train/val split and how it was opened."""
    from datasets import load_dataset
    from dissect.training import read_ids, split_dataset

    if args.dataset not in ("osie", "salicon", "folder"):
        raise ValueError(f"--dataset {args.dataset} cannot train a model: use osie, salicon or folder "
                         "(datasets with human fixations)")
    options = dataset_options(args.dataset, args.data_root, args.seed, **flags_of(args))
    if args.dataset == "osie":
        options.setdefault("regions", "none")  # training needs images and fixations only
    dataset = load_dataset(args.dataset, args.data_root, **options)
    train, val = split_dataset(dataset, train_ids=read_ids(args.train_ids) if args.train_ids else None,
                               val_ids=read_ids(args.val_ids) if args.val_ids else None,
                               val_fraction=args.val_fraction, seed=args.seed)
    root = getattr(dataset, "root", args.data_root)
    info = {"name": dataset.name, "root": str(Path(root).resolve()) if root else None, "options": options}
    return train, val, info


def train_config(args):
    from dissect.training import TrainConfig

    try:
        weights = tuple(float(w) for w in args.loss_weights.split(","))
    except ValueError:
        raise ValueError(f"--loss-weights takes 4 numbers KL,CC,NSS,SIM, e.g. 10,2,1,1; got {args.loss_weights!r}") \
            from None
    return TrainConfig(finetune=args.finetune, backbone=args.backbone, readout_layer=args.readout_layer,
                       encoder_weights=args.encoder_weights, seed=args.seed, steps=args.steps,
                       batch_size=args.batch_size, lr=args.lr, lr_decay=args.lr_decay,
                       decay_every=args.decay_every, eval_every=args.eval_every, loss=args.loss,
                       loss_weights=weights, image_size=args.image_size, cache=args.cache,
                       cache_dtype=args.cache_dtype, cache_memory_mb=args.cache_memory_mb,
                       device=resolve_device(args.device), progress=not args.no_progress)


def run(args) -> int:
    """``cli.py train saliency|scene``: one library call, ``train_saliency`` or ``train_scene``."""
    import pandas as pd

    cfg = train_config(args)
    cfg.check()  # bad settings fail before the data is read
    train, val, info = open_training_data(args)
    if args.train_command == "scene":
        from dissect.training import train_scene

        paths = train_scene(train, val, args.out or Path("runs") / "train-scene", cfg,
                            labels=args.labels, class_weights=args.class_weights, resume=args.resume,
                            overwrite=args.overwrite, dataset_info=info)
    else:
        from dissect.training import train_saliency

        out = args.out or Path("runs") / f"train-saliency-{cfg.backbone}-K{cfg.finetune}"
        paths = train_saliency(train, val, out, cfg, resume=args.resume, overwrite=args.overwrite,
                               dataset_info=info)
    table = pd.read_csv(paths["val"])
    cols = [c for c in table.columns if c not in ("model", "weights")]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
