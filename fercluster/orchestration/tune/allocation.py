"""The Ray Tune search inside ONE SLURM allocation (submitted through submitit).

The allocation has ``slurm.nodes`` nodes and one task per node; every task runs
``TuneSearchJob``. Task 0 starts the Ray head on its node, writes the head's address to
``jobs/<sweep>/tune/head-<job>-<restart>.json``, waits for the other nodes, runs the search
(``search.run_search``) and finally touches ``done-<job>-<restart>``. Every other task waits for the
address, joins its node to the head (``ray start --block``) and leaves when the done file appears
(or its Ray node dies with the head). Ports and temp dir come from ``ray_cluster``, so two
searches sharing a node do not collide. On pre-emption or time-out submitit requeues the job
(``Checkpointable``); the new run restores the search from ``jobs/<sweep>/ray``.

``submit_tune_slurm`` submits the allocation (what ``fercluster sweep CONFIG`` does with a
``tune:`` section), on a snapshot of the current code as a grid's jobs (``snapshots``): the search
and its trials import ``fercluster`` from ``jobs/<sweep>/code/<hash>/``, requeues included. ``slurm/ray_tune.sbatch`` does the same without submitit, for sites that prefer
sbatch: it runs ``python -m fercluster.orchestration.tune.allocation CONFIG`` on every task
through ``srun`` (``main``).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import submitit

from fercluster.atomic import write_json
from fercluster.code import check_imported_snapshot
from fercluster.config import SweepConfig, load_config, parse_config
from fercluster.errors import SlurmError, TrainingError
from fercluster.orchestration.backend import Backend, Resources, Submission
from fercluster.orchestration.backends import SBATCH_TIMEOUT_S, backend_for
from fercluster.orchestration.slurm.backend import allocation_live
from fercluster.orchestration.store.state import ensure_dir, private_umask
from fercluster.orchestration.submit.snapshots import current_code
from fercluster.orchestration.tune import ray_cluster, retry, search
from fercluster.orchestration.tune.state import (
    check_fingerprint,
    completed,
    fingerprint,
    read_search,
    search_lock,
    state_dir,
)

WAIT_HEAD_S = 300  # how long a worker task waits for the head's address
PENDING_BOUND_S = 2 * SBATCH_TIMEOUT_S  # an sbatch begun for a pending record has ended (or landed) by then
INTERRUPTED_EXIT = 130  # ``main``'s exit status when the search stopped before its end (as after Ctrl-C)


class TuneSearchJob(submitit.helpers.Checkpointable):
    """What every task of the allocation runs; requeued as is (the search restores itself).

    A search that stops before its end (interrupted) fails the task with a ``TrainingError``, so
    SLURM and submitit see that it did not complete.
    """

    def __call__(self, cfg_data: dict[str, Any], cwd: str) -> dict[str, Any] | None:
        os.chdir(cwd)  # the config's paths are relative to where `fercluster sweep` ran
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        check_imported_snapshot()
        cfg = parse_config(cfg_data)
        env = submitit.JobEnvironment()
        tag = f"{env.job_id}-{os.environ.get('SLURM_RESTART_COUNT', '0')}"
        summary = run_task(cfg, env.global_rank, env.num_nodes, tag)
        if summary is not None and summary.get("state") == "interrupted":
            raise TrainingError(
                f"search {cfg.name} was interrupted; it restores itself when requeued or submitted again"
            )
        return summary


def run_task(cfg: SweepConfig, rank: int, nodes: int, tag: str) -> dict[str, Any] | None:
    """One task of the allocation: rank 0 runs the Ray head and the search, the others join it."""
    folder = state_dir(cfg)
    cpus = _cpus()
    if rank == 0:
        return _head_task(cfg, folder, nodes, cpus, tag)
    _worker_task(folder, cpus, tag)
    return None


def _head_task(cfg: SweepConfig, folder: Path, nodes: int, cpus: int, tag: str) -> dict[str, Any]:
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    search.prepare(cfg, console)  # done already when submitted by `fercluster sweep`; not with sbatch
    token = ray_cluster.auth_token(folder)
    node = ray_cluster.start_head(cpus, None, folder / f"ray-head-{tag}.log", token, seed=tag)
    try:
        write_json(folder / f"head-{tag}.json", {"address": node.address, "time": time.time()})
        search.connect(node.address, token)
        seen = ray_cluster.wait_for_nodes(nodes)
        console.print(f"Ray head at {node.address}: {seen}/{nodes} nodes, {cpus} CPUs on the head node")
        with search_lock(cfg):
            slurm_id = os.environ.get("SLURM_JOB_ID", tag)
            return search.run_search(
                cfg, console, where={"mode": "slurm", "slurm_id": slurm_id, "ray_address": node.address}
            )
    finally:
        (folder / f"done-{tag}").touch()
        search.disconnect()
        node.stop()


def _worker_task(folder: Path, cpus: int, tag: str) -> None:
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
def allocation(cfg: SweepConfig, code_dir: Path | None = None, name: str = "") -> Submission:
    """The allocation as a submission: the sweep's resources, one task per node (a Ray node; Ray
    shares the node's GPUs among trials; the tasks are Ray's head and workers, not the ranks of one
    job, as slurm/ray_tune.sbatch); ``code_dir``: the code snapshot it imports; ``name``: its SLURM
    job name (``submit_tune_slurm`` gives each submission its own, to find it again by name)."""
    resources = Resources.training(cfg.slurm).one_task_per_node()
    args = (cfg.model_dump(mode="json"), str(Path.cwd()))
    name = name or f"fercluster-{cfg.name}-tune"
    return Submission(name, "search", TuneSearchJob(), args, resources, code_dir=code_dir)


def submit_tune_slurm(
    cfg: SweepConfig,
    console: Any = None,
    *,
    retry_failed: bool = False,
    backend: Backend | None = None,
    live: Callable[[str], bool | None] = allocation_live,
) -> dict[str, Any]:
    """Submit the search as ONE allocation (``cfg.slurm``: nodes, CPUs, GPUs, time).

    Does nothing when the same search has completed, or its allocation is still queued or running,
    or when that cannot be told (``live`` answers None: squeue failed), or when an earlier sbatch
    may have reached SLURM (its pending record is unresolved): never two allocations at once.
    ``retry_failed``: the allocation also runs again the trials that ended in error (``retry``),
    begun only once no allocation of the search can be live. ``backend``/``live``: SLURM's (the
    tests give a fake).
    """
    search.require_tune(cfg)
    say = console.print if console is not None else (lambda text: None)
    done = completed(cfg)
    if done is not None and not (retry_failed and retry.begin(cfg, write=False).round):
        if retry_failed:
            say(retry.begin(cfg, write=False).line(cfg.name))
        return {**done, "submitted": False}
    check_fingerprint(cfg)
    with search_lock(cfg):
        backend = backend or backend_for(cfg, folder=ensure_dir(state_dir(cfg) / "submitit"))
        held = _held(cfg, backend, live)
        if held:
            say(f"search {cfg.name}: {held}")
            return {
                "state": "submitted",
                "slurm_id": read_search(cfg).get("slurm_id"),
                "submitted": False,
                "held": held,
            }
        if retry_failed:
            say(retry.begin(cfg).line(cfg.name))
        search.prepare(cfg, console)  # once, here, rather than racing on the nodes
        with private_umask():
            code, _ = current_code(cfg, make=True)
        before = read_search(cfg).get("code")
        slurm_id = _submit(cfg, backend, code.path, code.key)
    say(
        f"search {cfg.name}: submitted allocation {slurm_id} ({cfg.slurm.nodes} node(s)) on code {code.key}; "
        "follow it with `fercluster status`"
    )
    if before and before != code.key:
        say(f"[yellow]note: the search ran code {before} before; its trials now run {code.key}[/]")
    return {"state": "submitted", "slurm_id": slurm_id, "submitted": True, "code": code.key}


def _held(cfg: SweepConfig, backend: Backend, live: Callable[[str], bool | None]) -> str:
    """Why no allocation may be submitted now ("" when one may): an unresolved pending record, or
    the last allocation queued or running, or squeue not answering about it."""
    held = _resolve_pending(cfg, backend)
    current = read_search(cfg).get("slurm_id")
    alive = live(current) if not held and current else False
    if held or alive is False:  # True: queued or running; None: cannot tell, so not a second one
        return held
    if alive:
        return f"allocation {current} is already queued or running"
    return (
        f"cannot tell whether allocation {current} is still queued or running (squeue did not "
        "answer); not submitting another: run the sweep again later"
    )


def _submit(cfg: SweepConfig, backend: Backend, code_dir: Path, code_key: str) -> str:
    """sbatch the allocation under a name of its own, with a pending record written first; its id."""
    name = f"fercluster-{cfg.name}-tune-{uuid.uuid4().hex[:8]}"
    write_json(state_dir(cfg) / "search.json", {**read_search(cfg), "pending": {"name": name, "created": time.time()}})
    slurm_id = backend.submit(allocation(cfg, code_dir, name)).id  # fails: the record stays, resolved next time
    record = {
        **read_search(cfg),
        "state": "submitted",
        "mode": "slurm",
        "slurm_id": slurm_id,
        "submitted": time.time(),
        "fingerprint": fingerprint(cfg),
        "code": code_key,
    }
    record.pop("pending", None)
    write_json(state_dir(cfg) / "search.json", record)
    return slurm_id


def _resolve_pending(cfg: SweepConfig, backend: Backend) -> str:
    """Settle the pending record an interrupted or failed sbatch left: "" when settled, else why not.

    Found by its name: recorded as the allocation. Not found once ``PENDING_BOUND_S`` has passed
    since its sbatch began (an sbatch still running could land later): dropped, it never ran. The
    lookup failed: kept, and nothing is submitted ("could not ask" is never "not found").
    """
    record = read_search(cfg)
    pending = record.get("pending")
    if not pending:
        return ""
    name, age = pending["name"], time.time() - float(pending["created"])
    try:
        found = backend.find([name]).get(name)
    except SlurmError as exc:
        return (
            f"cannot tell whether the allocation {name} submitted {age:.0f} s ago reached SLURM ({exc}); "
            "not submitting another: run the sweep again later"
        )
    if found is None and age < PENDING_BOUND_S:
        return f"the sbatch of {name} began {age:.0f} s ago and may still land; run the sweep again in {PENDING_BOUND_S - age:.0f} s"
    record.pop("pending")
    if found is not None:
        record.update(state="submitted", mode="slurm", slurm_id=found, fingerprint=fingerprint(cfg))
    write_json(state_dir(cfg) / "search.json", record)
    return ""


def main(argv: list[str] | None = None) -> int:
    """``python -m fercluster.orchestration.tune.allocation CONFIG``: one task of an sbatch allocation."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: srun python -m {__spec__.name if __spec__ else __name__} CONFIG", file=sys.stderr)
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
        if summary.get("state") == "interrupted":
            print("search interrupted: sbatch the same script again to restore it", file=sys.stderr)
            return INTERRUPTED_EXIT
        print(f"best k: {(summary.get('best') or {}).get('k')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
