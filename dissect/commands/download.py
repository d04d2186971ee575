"""``cli.py download NAME``: fetch a public dataset into the data cache (OSIE), or say where to get it (SALICON)."""
from __future__ import annotations

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    dl = sub.add_parser("download", help="fetch a public dataset into the data cache",
                        description="Download OSIE from its public repository (checksum verified) into the cache "
                                    "(~/.cache/saliency-dissect or $SALIENCY_DISSECT_DATA); for SALICON, say where "
                                    "to get it and how to lay it out.")
    dl.add_argument("name", choices=("osie", "salicon"), help="osie (downloaded) or salicon (instructions)")
    dl.add_argument("--data-dir", help="cache folder (default ~/.cache/saliency-dissect)")
    dl.add_argument("--force", action="store_true", help="download again even if the files are there")


def run(args) -> int:
    """``cli.py download``: :func:`datasets.download.download_osie` (SALICON: where to get it)."""
    from datasets import download

    if args.name == "osie":
        path = download.download_osie(args.data_dir, force=args.force)
        print(f"OSIE is in {path}: use --dataset osie --data-root {path} (or no --data-root); put He et al.'s "
              f"OSIE-SR export (SegmentationObject/, SegmentationClass/) in {path} for --dataset osie-sr")
    else:
        print(download.download_salicon(args.data_dir))
    return 0
