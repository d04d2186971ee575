"""``cli.py popout generate``: write synthetic pop-out search arrays (PNG images, PNG masks, metadata.csv)."""
from __future__ import annotations

from pathlib import Path

from dissect.commands.common import check_numbers

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("popout", help="synthetic pop-out search arrays")
    psub = p.add_subparsers(dest="popout_command", required=True)
    g = psub.add_parser("generate", help="write pop-out arrays (PNG images, PNG masks, metadata.csv)")
    g.add_argument("--out", help="folder to write (default runs/popout-n=N...)")
    g.add_argument("--n-per-dimension", type=int, default=10, help="arrays per pop-out dimension (default 10)")
    g.add_argument("--seed", type=int, default=0, help="seed of the arrays (default 0)")
    g.add_argument("--overwrite", action="store_true", help="replace the arrays already in --out")
    g.add_argument("--canvas", type=int, default=224, help="image side in pixels (default 224)")
    g.add_argument("--with-control", action="store_true", help="add the conjunction (no pop-out) control")


def run(args) -> int:
    """``cli.py popout generate``: write the arrays (:func:`datasets.popout.write_popout_set`)."""
    from datasets.popout import CONTROL_DIMENSIONS, DIMENSIONS, PopoutDataset, PopoutParams, write_popout_set
    from dissect.runner.folders import check_writable, default_run_dir, prepare_run_dir, run_folder

    check_numbers(args)
    out = Path(args.out).expanduser() if args.out else default_run_dir(
        "popout", n=args.n_per_dimension, seed=args.seed or None, canvas=None if args.canvas == 224 else args.canvas,
        control=args.with_control)
    prepare_run_dir(out, "popout generate", outputs=("metadata.csv",), overwrite=args.overwrite)
    with run_folder(out):
        check_writable(out)
        dims = DIMENSIONS + (CONTROL_DIMENSIONS if args.with_control else ())
        params = PopoutParams(canvas=(args.canvas, args.canvas))
        dataset = PopoutDataset(n_per_dimension=args.n_per_dimension, seed=args.seed, dimensions=dims, params=params)
        write_popout_set(dataset, out)
    print(f"wrote {len(dataset)} pop-out arrays ({', '.join(dims)}) to {out}")
    print(f"next: python cli.py dissect --dataset popout --data-root {out}")
    return 0
