"""How a command runs a study into a run folder: a single run, one shard, every shard on Ray, a merge.

A command (``dissect``, ``attention``, ``evaluate``) is described once by a :class:`Command`:
its name, a module-level ``build(config)`` that loads the data and the model and returns the
:class:`~dissect.runner.study.Study` with the run's ``run.json`` parameters, and its policy
(which files mark a finished run, whether a single run keeps a resumable checkpoint).
:func:`run_command` then does everything else the same way for every study: the run-folder
policy (:func:`dissect.runner.folders.prepare_run_dir`), the pass with its checkpoints, Ctrl-C
and ``--resume``, ``--shard I/N`` folders, ``--ray`` (each shard a Ray task running
:func:`run_command` on its shard folder, then a merge), and the report: ``Study.write`` writes
the files and ``Study.console`` says what to print. :func:`merge_into` is ``cli.py merge``.
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from dissect.runner import ray_backend
from dissect.runner.folders import (atomic_write_json, check_writable, prepare_run_dir, read_json, remove_checkpoint,
                                  run_dir_state, run_folder)
from dissect.runner.merge import merge_folders
from dissect.runner.passes import PROGRESS_FILE, run_pass
from dissect.runner.study import Study

__all__ = ["Command", "RunOptions", "Built", "run_command", "merge_into", "PARAMS_FILE", "SHARDS_DIR"]

#: A shard folder's ``run.json`` parameters (the merge writes them into the merged ``run.json``).
PARAMS_FILE = "params.json"
#: Where ``--ray`` puts its shard folders, inside ``--out``.
SHARDS_DIR = "shards"


@dataclass
class Built:
    """What a command's ``build(config)`` returns: the study and the ``run.json`` parameters."""

    study: Study
    params: dict


@dataclass(frozen=True)
class Command:
    """One command that runs a study (module docstring).

    Attributes:
        name: the command (``"dissect"``), as messages and ``run.json`` name it.
        build: module-level function ``(config, options) -> Built`` (Ray tasks import it by name).
        outputs: files whose presence marks a finished run (besides ``run.json``).
        resumable: a single run keeps a checkpoint and takes ``--resume`` (shards always do).
        next_hint: a line printed after a finished run (``{out}`` is replaced), or ``""``.
        study: the study class ``build`` makes (handed in, so it is registered: ``--ray`` merges its shards).
    """

    name: str
    build: Callable[[dict, "RunOptions"], Built]
    outputs: tuple[str, ...]
    resumable: bool = False
    next_hint: str = ""
    study: type[Study] | None = None


@dataclass(frozen=True)
class RunOptions:
    """How to run (none of it changes a number): the folder, shards, Ray, checkpoints, progress."""

    out: Path
    shard: tuple[int, int] | None = None
    resume: bool = False
    overwrite: bool = False
    ray: str | None = None
    n_shards: int | None = None
    ray_cpus: float = 1.0
    device: str = "cpu"
    checkpoint_seconds: float | None = None
    checkpoint_every: int | None = None
    progress: bool = True


def run_command(command: Command, config: dict, options: RunOptions) -> int:
    """Run ``command`` with ``config`` as ``options`` say; return the exit status (0, or 130 on Ctrl-C).

    Raises:
        ValueError, RuntimeError, OSError: one-line problems for the command line to print.
    """
    if options.ray is not None:
        return _on_ray(command, config, options)
    out = Path(options.out).expanduser()
    resumable = command.resumable or options.shard is not None
    # a shard (and every Ray task) may pass --resume before its folder holds anything: it then starts afresh
    resume = options.resume and resumable and not (options.shard and run_dir_state(out) in ("absent", "empty"))
    outputs = command.outputs + (("shard.json",) if not resume else ())
    state = prepare_run_dir(out, command.name, outputs=outputs, resume=resume, overwrite=options.overwrite,
                            resumable=resumable)
    if resume and state == "finished" and options.shard is None:
        print(f"{out} holds a finished run: nothing to resume (pass --overwrite to run it again)")
        if command.next_hint:
            print(command.next_hint.format(out=out))
        return 0
    with run_folder(out):  # a command that fails before writing anything leaves no empty folder
        check_writable(out)
        built = command.build(config, options)
        return _run_into(command, built, out, options, resume, checkpointed=resumable)


def _run_into(command: Command, built: Built, out: Path, options: RunOptions, resume: bool,
              checkpointed: bool) -> int:
    progress_file = out / PROGRESS_FILE
    before = progress_file.stat().st_mtime_ns if progress_file.exists() else None

    def saved_now() -> bool:  # did this run checkpoint anything?
        return progress_file.exists() and progress_file.stat().st_mtime_ns != before

    study = built.study
    try:
        done = run_pass(study, checkpoint_dir=out if checkpointed else None, resume=resume, shard=options.shard,
                        checkpoint_seconds=options.checkpoint_seconds, checkpoint_every=options.checkpoint_every,
                        progress=options.progress)
    except KeyboardInterrupt:
        if not checkpointed:
            raise
        where = f"finished batches are saved in {out}; rerun the same command with --resume" if saved_now() \
            else "no batch had finished, nothing to resume"
        print(f"interrupted: {where}", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, OSError) as exc:
        if checkpointed and saved_now():  # some batches finished: say how to keep them
            raise RuntimeError(f"{exc} (finished batches are saved in {out}: fix the problem and rerun "
                               "with --resume)") from exc
        raise
    if options.shard is not None:  # a shard keeps its resumable state for `cli.py merge`
        atomic_write_json(out / PARAMS_FILE, built.params)
        lo, hi = done.info["shard"]["images"]
        i, n = options.shard
        print(f"shard {i}/{n}: images {lo}..{hi - 1} ({hi - lo} of {study.n_items}) done in {out}; when every "
              "shard is done: python cli.py merge OUT SHARD_DIR...")
        return 0
    cls = type(study)
    result = cls.finish(done.state, done.info)
    paths = cls.write(result, out, built.params)
    remove_checkpoint(out)  # the run is finished: its resumable state has served
    for line in cls.console(result, built.params):
        print(line)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if command.next_hint:
        print(command.next_hint.format(out=out))
    return 0


# --------------------------------------------------------------------------- Ray


def _on_ray(command: Command, config: dict, options: RunOptions) -> int:
    """Every shard as a Ray task (:func:`run_command` on its shard folder, resuming it), then the merge."""
    if options.shard is not None:
        raise ValueError("--shard and --ray do not mix: --ray runs every shard itself (choose how many with --shards)")
    out = Path(options.out).expanduser()
    if not options.resume:  # the merged files follow the run-folder policy; shards/ is handled below
        prepare_run_dir(out, command.name, outputs=command.outputs, overwrite=options.overwrite)
    shards_dir = out / SHARDS_DIR
    if shards_dir.exists() and not (options.resume or options.overwrite):
        raise ValueError(f"{out} already holds a Ray run ({shards_dir}); pass --resume to continue it, "
                         "--overwrite to start again, or choose another --out")
    if options.overwrite and shards_dir.exists():
        shutil.rmtree(shards_dir)
    if options.n_shards is not None and options.n_shards < 1:
        raise ValueError(f"--shards must be >= 1, got {options.n_shards}")
    gpus = 1 if options.device.startswith("cuda") else 0  # Ray hides GPUs from tasks that ask none
    folders: list[Path] = []

    def calls(resources):
        n = options.n_shards or ray_backend.task_slots(resources, num_cpus=options.ray_cpus, num_gpus=gpus)
        folders.extend(shards_dir / f"shard-{i}-of-{n}" for i in range(n))
        return [(run_command, (command, config, replace(options, out=folder, shard=(i, n), ray=None, n_shards=None,
                                                       resume=True, overwrite=False, progress=False)),
                 str(folder / "attempts.log")) for i, folder in enumerate(folders)]

    record = ray_backend.run_tasks(calls, address=options.ray, num_cpus=options.ray_cpus, num_gpus=gpus,
                                   progress=options.progress, desc="shards")
    record["tasks"] = [{"shard": i, "folder": str(f), **{k: v for k, v in t.items() if k != "value"}}
                       for i, (f, t) in enumerate(zip(folders, record["tasks"]))]
    return merge_into(out, folders, ray=record, config=config)


# --------------------------------------------------------------------------- merge


def _merged_params(params: dict, out: Path, config: dict | None = None) -> dict:
    """A shard's run parameters as the single run's: its --out, no --shard (or the Ray driver's ``config``)."""
    params = dict(params)
    if isinstance(params.get("config"), dict):
        params["config"] = dict(config) if config is not None else {**params["config"], "out": str(out),
                                                                      "shard": None}
    return params


def merge_into(out: str | Path, folders, *, ray: dict | None = None, config: dict | None = None) -> int:
    """Merge shard folders into ``out``: the files a single run writes, and its console report."""
    out = Path(out).expanduser()
    cls, merged = merge_folders(folders)
    out = check_writable(out)
    first = Path(merged.info["shards"][0]["name"])
    params = read_json(first / PARAMS_FILE) if (first / PARAMS_FILE).exists() else {}
    params = {**_merged_params(params, out, config), **({"ray": ray} if ray else {})}
    result = cls.finish(merged.state, merged.info)
    paths = cls.write(result, out, params)
    for line in cls.console(result, params, merged=len(folders)):
        print(line)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0

