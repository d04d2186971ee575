"""Shards of a dissection from your own scheduler: split with ``run_dissection(..., shard=(i, n))``, merge here.

The split, the checks and the merge are :mod:`dissect.runner`'s, the same for every study; this
module is the short path the README shows (``from dissect.shards import merge_dissections``).
Other studies' shard folders merge with :func:`dissect.runner.merge_folders` (``cli.py merge``).
"""
from dissect.runner.shards import parse_shard, shard_batches, shard_images
from dissect.studies.dissection import merge_dissections

__all__ = ["merge_dissections", "parse_shard", "shard_batches", "shard_images"]
