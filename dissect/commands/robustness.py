"""``cli.py robustness``: the FGSM fooling rate of each model at each epsilon (Lai et al. 2020, eq. 11)."""
from __future__ import annotations

import time
from pathlib import Path

from dissect.commands.common import (add_dataset_args, add_model_run_args, check_numbers, dataset_notes,
                                     dataset_options, flags_of, resolve_device, root_word, weights_word)

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    r = sub.add_parser("robustness", help="FGSM fooling rate per model (captum)",
                       description="Fraction of images whose top-1 label changes under a one-step FGSM "
                                   "perturbation of size epsilon (pixel units of [0, 1] images).")
    r.add_argument("--model", dest="models", action="append", help="repeatable (default vgg16)")
    r.add_argument("--epsilon", type=float, action="append", required=True, help="repeatable, in [0, 1]")
    add_dataset_args(r, "popout", "any dataset (default popout)")
    r.add_argument("--max-images", type=int, help="use only N images, taken round-robin over the pop-out dimensions")
    r.add_argument("--out", help="folder for robustness.csv and run.json (default runs/robustness-MODELS-DATASET-"
                                 "eps=...)")
    add_model_run_args(r, batch_size=8, batch_help="images per attack step")
    r.add_argument("--seed", type=int, default=0, help="seed of random weights and generated arrays")
    r.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args) -> int:
    """``cli.py robustness``: one library call, :func:`dissect.studies.robustness.robustness_table`."""
    from datasets import load_dataset
    from datasets.base import first
    from dissect.reports.tables import weights_banner
    from dissect.runner.folders import (atomic_write_csv, atomic_write_json, check_writable, default_run_dir,
                                        prepare_run_dir, run_folder, run_record)
    from dissect.studies.robustness import robustness_table

    check_numbers(args)
    for eps in args.epsilon:
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"--epsilon {eps} is outside [0, 1] (it is in pixel units of images scaled to [0, 1])")
    models = args.models or ["vgg16"]
    out = Path(args.out).expanduser() if args.out else default_run_dir(
        "robustness", models, args.dataset, root_word(args.data_root), eps=args.epsilon,
        weights=weights_word(args.weights), first=args.max_images,
        size=None if args.image_size == 224 else args.image_size, seed=args.seed or None)
    prepare_run_dir(out, "robustness", outputs=("robustness.csv",), overwrite=args.overwrite)
    with run_folder(out):
        check_writable(out)
        options = dataset_options(args.dataset, args.data_root, args.seed, **flags_of(args))
        dataset = first(load_dataset(args.dataset, args.data_root, **options), args.max_images)
        t0 = time.perf_counter()
        table, infos = robustness_table(models, dataset, args.epsilon, weights=args.weights, seed=args.seed,
                                        device=resolve_device(args.device), image_size=args.image_size,
                                        batch_size=args.batch_size, progress=not args.no_progress)
        atomic_write_csv(table, out / "robustness.csv")
        atomic_write_json(out / "run.json", run_record(
            "robustness", vars(args), model=infos, dataset=dataset.name, dataset_options=options,
            dataset_size=len(dataset), **dataset_notes(dataset), n_images=len(dataset),
            timings_s={"total": round(time.perf_counter() - t0, 4)}))
    print("FGSM fooling rate" + (", RANDOM WEIGHTS:" if any(i.get("weights") == "random" for i in infos) else ":"))
    print(table.drop(columns=["weights_detail"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for info in infos:
        if weights_banner(info):
            print(weights_banner(info))
    if sum(i.get("weights") == "random" for i in infos) > 1:
        print(f"note: the random-weight models share --seed {args.seed} (saliency_vgg16's encoder is then vgg16's): "
              "equal rates say nothing about the architectures")
    print(f"wrote {out / 'robustness.csv'}, {out / 'run.json'}")
    return 0
