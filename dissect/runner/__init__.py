"""The runner: the one resumable, shardable pass every study plugs into, run folders, merge and Ray.

* :mod:`dissect.runner.study`: what a study is to the core (:class:`Study`, :class:`State`,
  :class:`RecordState`);
* :mod:`dissect.runner.passes`: :func:`run_pass`, the pipelined pass with checkpoints, resume and shards;
* :mod:`dissect.runner.merge`: shard folders (or passes) -> the single run's state;
* :mod:`dissect.runner.registry`: studies by kind (``merge`` finds them there);
* :mod:`dissect.runner.folders`: the run-folder policy, atomic files, ``run.json``;
* :mod:`dissect.runner.orchestrate`: a command's single run, shard, Ray run or merge;
* :mod:`dissect.runner.shards`, :mod:`dissect.runner.npz`, :mod:`dissect.runner.ray_backend`: the split,
  object-free files, Ray.

A new study gets checkpoints, ``--resume``, ``--shard``, ``merge`` and ``--ray`` by subclassing
:class:`Study` and registering itself; it writes none of them.
"""
from dissect.runner.merge import merge_folders, merge_passes, read_part
from dissect.runner.passes import Pass, run_pass
from dissect.runner.registry import register, study_class
from dissect.runner.study import RecordState, State, Study

__all__ = ["Pass", "RecordState", "State", "Study", "merge_folders", "merge_passes", "read_part", "register",
           "run_pass", "study_class"]
