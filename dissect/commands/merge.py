"""``cli.py merge OUT SHARD_DIR...``: the shard folders of one run -> the files a single run writes."""
from __future__ import annotations

from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    m = sub.add_parser("merge", help="merge the shard folders of one run into the files a single run writes",
                       description="Merge shard folders (dissect/attention --shard I/N) into OUT: the same CSV files "
                                   "a single run with the same options writes, byte for byte, and its run.json. "
                                   "Refuses shards of different runs, missing, repeated or unfinished shards.")
    m.add_argument("out", help="folder for the merged files")
    m.add_argument("shard_dirs", nargs="+", metavar="SHARD_DIR", help="every shard folder of the run, any order")
    m.add_argument("--overwrite", action="store_true", help="replace the files of a previous merge in OUT")


def run(args) -> int:
    """``cli.py merge``: one library call, :func:`dissect.runner.orchestrate.merge_into`."""
    from dissect.runner.orchestrate import merge_into
    from dissect.studies import register_all

    register_all()  # any study's shard folders merge
    out = Path(args.out).expanduser()
    folders = [Path(f) for f in args.shard_dirs]
    if any(out.resolve() == f.resolve() for f in folders):
        raise ValueError(f"OUT {out} is one of the shard folders; merge into a new folder")
    if (out / "run.json").exists() and not args.overwrite:
        raise ValueError(f"{out} already holds a run (run.json); pass --overwrite to replace it, or choose another OUT")
    return merge_into(out, folders)
