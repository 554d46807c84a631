"""SLURM resources of a sweep mapped to submitit's ``SlurmExecutor`` parameters, in one place."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Sequence

from fercluster import code
from fercluster.config import Slurm


def submitit_parameters(
    slurm: Slurm,
    *,
    job_name: str,
    array_parallelism: int | None = None,
    dependency: str | None = None,
    gpus: bool = True,
    code_dir: Path | None = None,
) -> dict[str, Any]:
    """``SlurmExecutor.update_parameters`` keywords for ``slurm`` (the config's ``slurm:`` section).

    A job with several GPUs per node runs one task per GPU (DDP, ranks from ``SLURM_PROCID``),
    one without GPUs one task per node. A job of several tasks is started by ``srun
    --kill-on-bad-exit=1``: a rank that dies ends the others at once, where they would otherwise
    wait in a collective (NCCL: until its timeout). ``gpus=False`` drops GPUs, tasks and
    ``--exclusive`` (the aggregation job). Extra sbatch flags pass through ``additional_parameters``
    unchanged, e.g. ``{"mail-type": "END"}`` (the config refuses flags set here,
    ``config.MANAGED_FLAGS``). ``setup``: the config's lines, then the ones that make the job import
    ``code_dir``, its code snapshot (``code_setup``); None: whatever is installed when it starts.
    """
    params: dict[str, Any] = {
        "job_name": job_name,
        "time": slurm.time_min,
        "nodes": slurm.nodes if gpus else 1,
        "cpus_per_task": slurm.cpus_per_task,
        "signal_delay_s": slurm.signal_delay_s,
        "wckey": None,  # submitit's default "submitit" fails on clusters that enforce wckeys
    }
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(slurm, key)
        if value is not None:
            params[key] = value
    if gpus and slurm.gpus_per_node > 0:
        n = slurm.gpus_per_node
        params["gpus_per_node"] = f"{slurm.gpu_type}:{n}" if slurm.gpu_type else n
        params["ntasks_per_node"] = n
        if slurm.mem_per_gpu_gb is not None:
            params["mem_per_gpu"] = f"{int(round(slurm.mem_per_gpu_gb * 1024))}MB"
    elif gpus and slurm.nodes > 1:
        params["ntasks_per_node"] = 1
    if gpus and processes(slurm) > 1:
        params["srun_args"] = ["--kill-on-bad-exit=1"]
    if slurm.mem_gb is not None:
        mem_mb = int(round(slurm.mem_gb * 1024))
        params["mem"] = f"{mem_mb}MB"
    if slurm.exclusive and gpus:
        params["exclusive"] = True
    if array_parallelism is not None:
        params["array_parallelism"] = array_parallelism
    if dependency:
        params["dependency"] = dependency
    if slurm.extra:
        params["additional_parameters"] = dict(slurm.extra)
    setup = list(slurm.setup) + (code_setup(code_dir) if code_dir is not None else [])
    if setup:  # the site's lines first: a PYTHONPATH they set is kept, behind the snapshot
        params["setup"] = setup
    return params


def code_setup(code_dir: Path) -> list[str]:
    """Lines of the sbatch script, before srun, that make the job import ``fercluster`` from ``code_dir``.

    A requeue reruns the same script, so it imports the same snapshot. PYTHONSAFEPATH keeps
    ``python -m`` (submitit's entry point) from putting the working directory first on sys.path,
    where a checkout's ``fercluster/`` would shadow the snapshot when the sweep runs from the repo.
    """
    folder = shlex.quote(str(Path(code_dir).absolute()))
    return [
        f"export {code.ENV}={folder}",
        f"export PYTHONPATH={folder}${{PYTHONPATH:+:$PYTHONPATH}}",
        "export PYTHONSAFEPATH=1",
    ]


def processes(slurm: Slurm) -> int:
    """How many processes a training job runs as under ``slurm`` (``JobSpec.processes``; DDP when > 1):
    one task per GPU of each node, or one per node without GPUs (as ``submitit_parameters`` asks)."""
    return slurm.nodes * (slurm.gpus_per_node if slurm.gpus_per_node > 0 else 1)


def array_throttles(n_arrays: int, parallelism: int) -> list[int]:
    """Split the sweep's concurrency limit over its arrays so that together they never exceed it.

    (submitit applies ``%K`` per array; a sweep split into several arrays would otherwise run
    K x arrays at once.) Each array gets at least one slot.
    """
    base, extra = divmod(parallelism, n_arrays)
    return [max(1, base + (i < extra)) for i in range(n_arrays)]


def array_lanes(n_new: int, limit: int, active: Sequence[tuple[str, int]]) -> list[tuple[int, str | int | None]]:
    """Per new array: its ``%K`` and what it waits for (``afterany``), so that the sweep never runs
    more than ``limit`` tasks at once, however many arrays it has.

    ``active``: the sweep's arrays that still have queued or running tasks, as (SLURM id, ``%K``).
    The slots they leave free are split into lanes (at most one per new array); when there are
    more new arrays than lanes, an array waits for the one before it in its lane (an int: that new
    array's index). With no slot free, new arrays start after all the active ones
    (``"900:901"``: the ids of an ``afterany`` list).
    """
    free = limit - sum(k for _, k in active)
    first: str | None = None
    if free < 1:  # start after every active array (they may be chained among themselves)
        free, first = limit, ":".join(a for a, _ in active)
    lanes = min(n_new, free) or 1
    shares = array_throttles(lanes, free)
    tails: list[str | int | None] = [first] * lanes
    out: list[tuple[int, str | int | None]] = []
    for i in range(n_new):
        lane = i % lanes
        out.append((shares[lane], tails[lane]))
        tails[lane] = i
    return out
