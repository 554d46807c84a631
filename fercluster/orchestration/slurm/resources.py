"""A submission's ``Resources`` mapped to submitit's ``SlurmExecutor`` parameters, in one place."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Sequence

from fercluster import code
from fercluster.orchestration.backend import Resources, Submission


def submitit_parameters(
    res: Resources, *, job_name: str, dependency: Sequence[str] = (), code_dir: Path | None = None
) -> dict[str, Any]:
    """``SlurmExecutor.update_parameters`` keywords for one job of ``res`` (``backend.Resources``).

    GPUs per node, or several nodes, set the tasks per node (one per GPU for DDP). Tasks that are
    ranks of one job are started by ``srun --kill-on-bad-exit=1``: a rank that dies ends the others
    at once, where they would otherwise wait in a collective (NCCL: until its timeout). Extra sbatch
    flags pass through ``additional_parameters`` unchanged, e.g. ``{"mail-type": "END"}`` (the config
    refuses flags set here, ``config.MANAGED_FLAGS``). ``dependency``: ids it starts after
    (``afterany``). ``setup``: the site's lines, then the ones that make the job import ``code_dir``,
    its code snapshot (``code_setup``); None: whatever is installed when it starts.
    """
    params: dict[str, Any] = {
        "job_name": job_name,
        "time": res.time_min,
        "nodes": res.nodes,
        "cpus_per_task": res.cpus_per_task,
        "signal_delay_s": res.signal_delay_s,
        "wckey": None,  # submitit's default "submitit" fails on clusters that enforce wckeys
    }
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(res, key)
        if value is not None:
            params[key] = value
    if res.gpus_per_node > 0:
        n = res.gpus_per_node
        params["gpus_per_node"] = f"{res.gpu_type}:{n}" if res.gpu_type else n
        if res.mem_per_gpu_gb is not None:
            params["mem_per_gpu"] = f"{int(round(res.mem_per_gpu_gb * 1024))}MB"
    if res.gpus_per_node > 0 or res.nodes > 1:
        params["ntasks_per_node"] = res.tasks_per_node
    if res.ranks and res.processes > 1:
        params["srun_args"] = ["--kill-on-bad-exit=1"]
    if res.mem_gb is not None:
        params["mem"] = f"{int(round(res.mem_gb * 1024))}MB"
    if res.exclusive:
        params["exclusive"] = True
    if res.throttle is not None:
        params["array_parallelism"] = res.throttle
    if dependency:
        params["dependency"] = "afterany:" + ":".join(dependency)
    if res.extra:
        params["additional_parameters"] = dict(res.extra)
    setup = list(res.setup) + (code_setup(code_dir) if code_dir is not None else [])
    if setup:  # the site's lines first: a PYTHONPATH they set is kept, behind the snapshot
        params["setup"] = setup
    return params


def submission_parameters(sub: Submission) -> dict[str, Any]:
    """The parameters of ``sub`` (its name, resources, dependency and code)."""
    return submitit_parameters(sub.resources, job_name=sub.name, dependency=sub.after, code_dir=sub.code_dir)


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
