"""``cli.py study finetune``: He et al.'s fine-tuning study (train each setup, dissect it, Tables 3, 4, 6)."""
from __future__ import annotations

import argparse
from pathlib import Path

from dissect.commands.common import dataset_options
from dissect.commands.train import add_training_flags, open_training_data, train_config

__all__ = ["add_parser", "study_inputs", "run"]


def add_parser(sub) -> None:
    s = sub.add_parser("study", help="He et al.'s fine-tuning study (Tables 3, 4, 6, Fig. 4, 7)")
    ssub = s.add_subparsers(dest="study_command", required=True)
    f = ssub.add_parser("finetune", help="train setups K, dissect each, write table3.csv and figures",
                        description="Train each setup from scratch (resumable), dissect its checkpoint on "
                                    "--dissect-dataset and on the pop-out arrays, and write table3.csv, "
                                    "improvement.png, popout_nmm.csv (Table 6), output_nmm.csv (Table 4 row) "
                                    "and spearman.csv (inner vs output saliency).")
    f.add_argument("--finetune", default="0,1,2,3,all", help="setups, comma separated (default 0,1,2,3,all)")
    f.add_argument("--backbone", choices=("vgg16",), default="vgg16", help="encoder (He et al.'s VGG16)")
    f.add_argument("--train-dataset", dest="dataset", default="osie", help="osie (default), salicon or folder")
    f.add_argument("--train-root", dest="data_root", help="folder of the training dataset")
    f.add_argument("--dissect-dataset", default="osie-sr", help="dataset dissected (default osie-sr)")
    f.add_argument("--dissect-root", help="folder of the dissection dataset")
    f.add_argument("--dissect-regions", choices=("auto", "sr", "clusters"),
                   help="OSIE regions of the dissection dataset (default: its loader's)")
    f.add_argument("--dissect-ids", help="file of image ids: dissect only these (e.g. the held-out images)")
    f.add_argument("--dissect-batch-size", type=int, default=8, help="images per forward pass when dissecting")
    f.add_argument("--layer", "--layers", dest="layers", action="append", help="layers dissected (default conv5_3)")
    f.add_argument("--popout-n", type=int, default=10, help="pop-out arrays per dimension (default 10: He et al.'s 80)")
    f.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which checkpoint to dissect")
    f.add_argument("--out", required=True, help="study folder")
    f.set_defaults(loss="nss", loss_weights="10,2,1,1", readout_layer=None)
    add_training_flags(f)
    f.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run each setup as a Ray task (it resumes its own checkpoints when retried): no ADDRESS "
                        "starts a local cluster, 'auto' or ray://HOST:PORT joins one (pip install -e '.[ray]')")
    f.add_argument("--ray-cpus", type=float, default=1.0, help="with --ray: CPUs per setup task (default 1; "
                                                               "--device cuda also asks 1 GPU per task)")


def study_inputs(args):
    """``(ks, (train, val), options)`` of ``study finetune``: what every setup needs."""
    from datasets import load_dataset
    from datasets.base import Subset
    from datasets.popout import PopoutDataset
    from dissect.training import image_ids, read_ids

    ks = []
    for part in args.finetune.split(","):
        part = part.strip()
        if part != "all" and not part.isdigit():
            raise ValueError(f"--finetune takes a comma list of K (0..13) or 'all', got {part!r}")
        ks.append(part if part == "all" else int(part))
    if len(set(ks)) != len(ks):
        raise ValueError(f"--finetune lists a setup twice: {args.finetune}")
    train, val, info = open_training_data(args)
    options = dataset_options(args.dissect_dataset, args.dissect_root, args.seed)
    if args.dissect_regions:
        options["regions"] = args.dissect_regions
    dissect_set = load_dataset(args.dissect_dataset, args.dissect_root, **options)
    if args.dissect_ids:
        wanted, ids = read_ids(args.dissect_ids), image_ids(dissect_set)
        missing = [w for w in wanted if w not in ids]
        if missing:
            raise ValueError(f"dissection id {missing[0]!r} is not in {dissect_set.name}")
        dissect_set = Subset(dissect_set, [ids.index(w) for w in wanted])
    root = args.dissect_root
    dissect_info = {"name": args.dissect_dataset, "root": str(Path(root).resolve()) if root else None,
                    "options": options}
    popout = PopoutDataset(n_per_dimension=args.popout_n, seed=args.seed)
    options = dict(cfg=train_config(args), dissect_set=dissect_set, popout_set=popout,
                   layers=args.layers or ["conv5_3"], dataset_info=info, dissect_info=dissect_info,
                   checkpoint=args.checkpoint, image_size=args.image_size, batch_size=args.dissect_batch_size)
    return ks, (train, val), options


def study_inputs_of(namespace: dict):
    """:func:`study_inputs` of a namespace as a dict (what a Ray task of ``study --ray`` gets)."""
    return study_inputs(argparse.Namespace(**namespace))


def run(args) -> int:
    """``cli.py study finetune``: one library call, ``run_finetune_study`` (or its Ray form)."""
    from dissect.studies import finetune

    if getattr(args, "ray", None) is not None:
        ks, _, options = study_inputs(args)  # checks the options and the data before any task starts
        written = finetune.run_setups_on_ray(ks, study_inputs_of, {**vars(args), "ray": None, "no_progress": True},
                                             Path(args.out), options, address=args.ray, cpus=args.ray_cpus,
                                             gpus=1 if args.device.startswith("cuda") else 0,
                                             progress=not args.no_progress, config=vars(args))
    else:
        ks, data, options = study_inputs(args)
        written = finetune.run_finetune_study(ks, *data, args.out, **options, progress=not args.no_progress)
    return _print_study(written)


def _print_study(written: dict) -> int:
    import pandas as pd

    table = pd.read_csv(written["table3"])
    last = list(dict.fromkeys(table["layer"]))[-1]
    print(table[table["layer"] == last].pivot(index="setup", columns="category", values="top_k_mean")
          .to_string(float_format=lambda v: f"{v:.2f}"))
    for name, path in written.items():
        print(f"{name:>12}  {path}")
    return 0
