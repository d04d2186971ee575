"""``cli.py stats RUN_DIR [RUN_DIR2]``: ANOVA, Tukey, OS/OD, Spearman, comparison and figures of a run."""
from __future__ import annotations

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    st = sub.add_parser("stats", help="ANOVA, Tukey, OS/OD, Spearman, run comparison and figures of a run",
                        description="Statistics of a dissection run (and optionally its comparison with a second "
                                    "run, e.g. pretrained vs fine-tuned), written as CSV and PNG.")
    st.add_argument("run_dir", help="folder of a finished dissection (units.csv, summary.csv, run.json)")
    st.add_argument("run_dir2", nargs="?", help="a second run to compare with (changes are run_dir2 - run_dir)")
    st.add_argument("--maps", help="folder of a model's output maps, <image_id>.npy|png, for OS/OD and Spearman")
    st.add_argument("--head", help="a trained saliency checkpoint (cli.py train saliency): OS/OD and Spearman from "
                                   "its maps, computed directly (instead of --maps)")
    st.add_argument("--out", help="where to write (default RUN_DIR/stats)")
    st.add_argument("--sigma", type=float, default=24.0, help="Gaussian sigma of the human density map (px)")
    st.add_argument("--no-overlays", action="store_true", help="skip the best-unit overlay figures "
                                                               "(they reload the run's model)")


def run(args) -> int:
    """``cli.py stats``: one library call, :func:`dissect.studies.run_statistics.write_stats_report`."""
    from dissect.studies.run_statistics import write_stats_report

    written = write_stats_report(args.run_dir, compare_to=args.run_dir2, maps_dir=args.maps, out=args.out,
                                 overlays=not args.no_overlays, sigma=args.sigma, head=args.head)
    for name, path in written.items():
        print(f"{name:>24}  {path}")
    return 0
