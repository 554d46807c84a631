"""The Ray Tune search inside ONE SLURM allocation (submitted through submitit).

The allocation has ``slurm.nodes`` nodes and one task per node; every task runs
``TuneSearchJob``. Task 0 starts the Ray head on its node, writes the head's address to
``jobs/<sweep>/tune/head-<job>-<restart>.json``, waits for the other nodes, runs the search
(``tune.run_search``) and finally touches ``done-<job>-<restart>``. Every other task waits for the
address, joins its node to the head (``ray start --block``) and leaves when the done file appears
(or its Ray node dies with the head). Ports and temp dir come from ``ray_cluster``, so two
searches sharing a node do not collide. On pre-emption or time-out submitit requeues the job
(``Checkpointable``); the new run restores the search from ``jobs/<sweep>/ray``.

``slurm/ray_tune.sbatch`` does the same without submitit, for sites that prefer sbatch: it runs
``python -m fercluster.orchestration.tune_slurm CONFIG`` on every task through ``srun``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import submitit

from fercluster.config import SweepConfig, parse_config

WAIT_HEAD_S = 300  # how long a worker task waits for the head's address
LIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
               "REQUEUE_FED", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING"}  # fmt: skip


class TuneSearchJob(submitit.helpers.Checkpointable):
    """What every task of the allocation runs; requeued as is (the search restores itself)."""

    def __call__(self, cfg_data: dict[str, Any], cwd: str) -> dict[str, Any] | None:
        os.chdir(cwd)  # the config's paths are relative to where `fercluster sweep` ran
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        cfg = parse_config(cfg_data)
        env = submitit.JobEnvironment()
        tag = f"{env.job_id}-{os.environ.get('SLURM_RESTART_COUNT', '0')}"
        return run_task(cfg, env.global_rank, env.num_nodes, tag)


def run_task(cfg: SweepConfig, rank: int, nodes: int, tag: str) -> dict[str, Any] | None:
    from fercluster.orchestration.tune import state_dir

    folder = state_dir(cfg)
    cpus = _cpus()
    if rank == 0:
        return _head_task(cfg, folder, nodes, cpus, tag)
    _worker_task(folder, cpus, tag)
    return None


def _head_task(cfg: SweepConfig, folder: Path, nodes: int, cpus: int, tag: str) -> dict[str, Any]:
    from rich.console import Console

    from fercluster.atomic import write_json
    from fercluster.orchestration import ray_cluster, tune

    console = Console(highlight=False, soft_wrap=True)
    tune.prepare(cfg, console)  # done already when submitted by `fercluster sweep`; not with sbatch
    token = ray_cluster.auth_token(folder)
    node = ray_cluster.start_head(cpus, None, folder / f"ray-head-{tag}.log", token, tmp=ray_cluster.temp_dir(tag))
    try:
        write_json(folder / f"head-{tag}.json", {"address": node.address, "time": time.time()})
        tune.connect(node.address, token)
        seen = ray_cluster.wait_for_nodes(nodes)
        console.print(f"Ray head at {node.address}: {seen}/{nodes} nodes, {cpus} CPUs on the head node")
        with tune.search_lock(cfg):
            slurm_id = os.environ.get("SLURM_JOB_ID", tag)
            return tune.run_search(cfg, console, where={"mode": "slurm", "slurm_id": slurm_id,
                                                        "ray_address": node.address})  # fmt: skip
    finally:
        (folder / f"done-{tag}").touch()
        tune.disconnect()
        node.stop()


def _worker_task(folder: Path, cpus: int, tag: str) -> None:
    from fercluster.orchestration import ray_cluster

    head_file, done = folder / f"head-{tag}.json", folder / f"done-{tag}"
    deadline = time.monotonic() + WAIT_HEAD_S
    while not head_file.exists():
        if done.exists() or time.monotonic() > deadline:
            return  # the head finished (or never came): nothing to join
        time.sleep(1)
    address = json.loads(head_file.read_text())["address"]
    log = folder / f"ray-worker-{tag}-{os.uname().nodename}.log"
    node = ray_cluster.start_worker(address, cpus, None, log, ray_cluster.auth_token(folder))
    try:
        while node.alive() and not done.exists():
            time.sleep(2)
    finally:
        node.stop()


def _cpus() -> int:
    for key in ("SLURM_CPUS_ON_NODE", "SLURM_CPUS_PER_TASK"):
        value = os.environ.get(key, "")
        if value.isdigit():
            return int(value)
    return len(os.sched_getaffinity(0))


# -- the submitting side -------------------------------------------------------------------------
def slurm_parameters(cfg: SweepConfig) -> dict[str, Any]:
    """submitit parameters: the sweep's resources (``resources.submitit_parameters``), one task per node."""
    from fercluster.orchestration.resources import submitit_parameters

    params = submitit_parameters(cfg.slurm, job_name=f"fercluster-{cfg.name}-tune")
    params["nodes"] = cfg.slurm.nodes
    params["ntasks_per_node"] = 1  # one Ray node per SLURM node; Ray shares the node's GPUs among trials
    return params


def submit(cfg: SweepConfig, folder: Path) -> str:
    """Submit the allocation; returns its SLURM job id."""
    from fercluster.orchestration.state import ensure_dir

    executor = submitit.SlurmExecutor(folder=str(ensure_dir(folder / "submitit")))
    executor.update_parameters(**slurm_parameters(cfg))
    job = executor.submit(TuneSearchJob(), cfg.model_dump(mode="json"), str(Path.cwd()))
    return str(job.job_id)


def allocation_live(slurm_id: str | None) -> bool | None:
    """Whether SLURM still has the allocation queued or running (one ``squeue`` call).

    None when it cannot tell (no id, or ``squeue`` does not answer): callers then trust their files.
    """
    if not slurm_id:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-t", "all", "-j", str(slurm_id), "-o", "%T"],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return None
    states = {line.strip() for line in out.stdout.splitlines() if line.strip()}
    return bool(states & LIVE_STATES)

def main(argv: list[str] | None = None) -> int:
    """``python -m fercluster.orchestration.tune_slurm CONFIG``: one task of an sbatch allocation."""
    import sys

    from fercluster.config import load_config

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: srun python -m fercluster.orchestration.tune_slurm CONFIG", file=sys.stderr)
        return 2
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        print("not inside a SLURM allocation (no SLURM_JOB_ID); use `fercluster sweep CONFIG --local`", file=sys.stderr)
        return 2
    tag = f"{env['SLURM_JOB_ID']}-{env.get('SLURM_RESTART_COUNT', '0')}"
    rank, nodes = int(env.get("SLURM_PROCID", "0")), int(env.get("SLURM_NNODES", "1"))
    if rank != 0:  # sbatch --signal=USR1 tells the search (rank 0) to save and stop; workers wait for it
        import signal

        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    summary = run_task(load_config(args[0]), rank, nodes, tag)
    if summary is not None:
        print(json.dumps({k: v for k, v in summary.items() if k != "best"}, default=str))
        print(f"best k: {(summary.get('best') or {}).get('k')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
