"""Run shards as Ray tasks (``--ray [ADDRESS]``): Ray schedules, retries and reports; we only shard.

Ray is an optional extra (``pip install -e '.[ray]'``). :func:`run_tasks` runs a list of calls,
one Ray task each, on

* an embedded local cluster started for the occasion (``address=None`` or ``"local"``, what a
  laptop gets; it is shut down afterwards), or
* an existing cluster: ``"auto"`` (the one this machine belongs to) or ``"ray://HOST:PORT"``
  (Ray Client); or an already initialised Ray session (``ray.init`` called by the caller),
  which is used as it is and left running.

Each call is expected to checkpoint its own work (a shard folder with ``resume``): a task whose
worker dies (killed, out of memory, node lost) is retried by Ray (``max_retries``) and the retry
continues from the checkpoint; an exception raised by the call itself is not retried (it would
fail again) and is reported as one line. ``num_gpus=1`` asks one GPU per task (Ray sets
``CUDA_VISIBLE_DEVICES``, so ``cuda`` inside the task is that GPU). Workers find this package
through ``PYTHONPATH`` (set to this checkout in the task's ``runtime_env``); on a remote cluster
install saliency-dissect on the nodes and give shard folders on storage every node can reach.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

__all__ = ["RAY_EXTRA_HINT", "import_ray", "connect", "run_tasks", "task_slots"]

RAY_EXTRA_HINT = "pip install -e '.[ray]'"
_ROOT = Path(__file__).resolve().parents[2]  # the checkout: dissect/runner/ray_backend.py


def import_ray():
    """The ``ray`` module, or a one-line ``RuntimeError`` naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise RuntimeError(f"--ray needs Ray, an optional extra that is not installed: {RAY_EXTRA_HINT} "
                           "(or pip install 'ray[default]')") from None
    return ray


def _runtime_env() -> dict:
    path = os.pathsep.join(p for p in (str(_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


@contextmanager
def connect(address: str | None = None, *, num_cpus: int | None = None):
    """A Ray session: reuse an initialised one, else start a local cluster or join ``address``.

    Yields ``(ray, address_used)``; a session started here is shut down on exit.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray, "existing session"
        return
    local = address in (None, "", "local")
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING,
                              "runtime_env": _runtime_env()}
    if local and num_cpus is not None:
        kwargs["num_cpus"] = int(num_cpus)
    try:
        ray.init(address=None if local else address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuntimeError(f"cannot start or join the Ray cluster {address or 'local'!r}: {first}") from None
    try:
        yield ray, "local" if local else address
    finally:
        ray.shutdown()


def task_slots(resources: dict, *, num_cpus: float = 1, num_gpus: float = 0) -> int:
    """How many tasks of this size the cluster runs at once (at least 1)."""
    if num_gpus:
        return max(int(resources.get("GPU", 0) // num_gpus), 1)
    return max(int(resources.get("CPU", 1) // max(num_cpus, 1e-9)), 1)


def _timed(fn: Callable, args: tuple, attempts_file: str | None) -> dict:
    """Run ``fn(*args)`` in a worker; count this attempt in ``attempts_file`` first."""
    attempt = 1
    if attempts_file:
        path = Path(attempts_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        attempt = (len(path.read_text().splitlines()) + 1) if path.exists() else 1
        with open(path, "a") as handle:
            handle.write(f"{time.time():.3f} pid {os.getpid()} on {socket.gethostname()}\n")
    t0 = time.time()
    value = fn(*args)
    return {"value": value, "wall_s": round(time.time() - t0, 3), "host": socket.gethostname(),
            "pid": os.getpid(), "attempt": attempt,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0))}


def run_tasks(calls, *, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
              max_retries: int = 3, progress: bool = True, desc: str = "shards",
              local_cpus: int | None = None) -> dict:
    """Run each ``fn(*args)`` of ``calls`` as one Ray task; return results and a driver record.

    Args:
        calls: ``(fn, args, attempts_file)`` triples, or a function of the cluster's resources
            returning them (to size the split to the cluster). ``fn`` must be importable by the
            workers (module level); each attempt is logged as a line of ``attempts_file`` (or
            ``None``), whose line count is the attempt number reported.
        address: ``None``/``"local"`` (embedded cluster), ``"auto"`` or ``"ray://HOST:PORT"``.
        num_cpus, num_gpus: resources of each task.
        max_retries: retries of a task whose worker died.
        progress: a tqdm bar over the tasks.
        local_cpus: CPUs of an embedded local cluster (default: all).

    Returns:
        ``{"address", "cluster_resources", "tasks": [{"value", "wall_s", "host", "pid", "attempt",
        "started"}...], "wall_s"}`` in the order of ``calls``.

    Raises:
        RuntimeError: Ray missing (names the extra), no cluster, a task that failed (its
            exception, one line) or whose worker died more than ``max_retries`` times.
    """
    t0 = time.time()
    with connect(address, num_cpus=local_cpus) as (ray, used):
        resources = {k: v for k, v in ray.cluster_resources().items() if not k.startswith("node:")}
        if callable(calls):
            calls = calls(resources)
        remote = ray.remote(_timed).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=int(max_retries),
                                            retry_exceptions=False, runtime_env=_runtime_env())
        refs = {remote.remote(fn, tuple(args), attempts): k for k, (fn, args, attempts) in enumerate(calls)}
        results: list[dict | None] = [None] * len(calls)
        pending = list(refs)
        bar = tqdm(total=len(calls), desc=desc, unit="task", disable=not progress, dynamic_ncols=True)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    k = refs[ref]
                    try:
                        results[k] = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                        text = str(cause).strip().splitlines()
                        raise RuntimeError(f"{desc} task {k} failed: {text[-1] if text else type(cause).__name__}") \
                            from None
                    except (ray.exceptions.WorkerCrashedError, ray.exceptions.RayError) as exc:
                        raise RuntimeError(f"{desc} task {k}: its worker died {max_retries + 1} times "
                                           f"({type(exc).__name__}); rerun with --resume to continue from "
                                           "its checkpoint") from None
                    bar.update(1)
        finally:
            bar.close()
            for ref in pending:
                ray.cancel(ref, force=True)
    return {"address": used, "cluster_resources": resources, "tasks": results, "wall_s": round(time.time() - t0, 3)}
