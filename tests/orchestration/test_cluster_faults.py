"""Faults of the real two-node test cluster, one per test; the cluster is whole again after each.

- a node set DOWN under a running job: SLURM requeues the job (NODE_FAIL, JobRequeue=1 in
  slurm.conf), it starts again on the other node from its checkpoint and ends COMPLETED with the
  metrics of an uninterrupted run; ``status`` never calls it FAILED on the way;
- slurmctld stopped while ``fercluster sweep`` submits: one line of error, no traceback, exit code
  not 0; once it is back, a re-run submits each job once (no job in two submissions);
- slurmdbd stopped: ``fercluster status`` still answers (exit 0, the table), from squeue and the
  last known states, and says that accounting did not answer.

Faults go through ``slurm/cluster.sh stop-daemon NAME`` and ``scontrol update``; the ``faults``
fixture resumes the nodes a test set down and runs ``cluster.sh start`` (which starts whatever is
not running), also when the test fails.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pytest
from slurm_helpers import (
    REPO,
    all_in,
    attempts_of,
    paced_training,
    reached,
    requeued,
    sacct_states,
    small_config,
    wait_for,
)

from fercluster.config import load_config
from fercluster.orchestration.slurm.backend import SlurmBackend
from fercluster.orchestration.submit.coordinator import run_sweep

pytestmark = pytest.mark.slurm

CLUSTER_SH = REPO / "slurm" / "cluster.sh"
ONE_CPU = {"gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 1}


def cluster_sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(CLUSTER_SH), *args], capture_output=True, text=True, timeout=300)


def scontrol_node(node: str, state: str) -> None:
    extra = ["reason=fercluster fault test"] if state == "down" else []
    subprocess.run(["scontrol", "update", f"nodename={node}", f"state={state}", *extra], check=True, timeout=60)


@pytest.fixture
def faults(two_node_cluster: Any) -> Iterator[list[str]]:
    """The nodes the test sets DOWN (it appends them); afterwards they are resumed and every daemon
    runs again (``cluster.sh start``), whatever the test did."""
    downed: list[str] = []
    try:
        yield downed
    finally:
        for node in downed:
            subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], capture_output=True, timeout=60)
        out = cluster_sh("start")
        assert out.returncode == 0, f"the cluster did not come back: {out.stderr[-2000:]}"


def _sweep(workdir: Path, name: str, shared: Path, fn_for: Any = None, **train: Any) -> tuple[Any, SlurmBackend, Any]:
    cfg = load_config(small_config(workdir, name, shared, slurm=ONE_CPU, **train))
    backend = SlurmBackend(cfg.jobs_dir / "submitit")
    return cfg, backend, run_sweep(cfg, backend, **({"fn_for": fn_for} if fn_for else {}))


def _cli(*args: str, cwd: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = f"{path}:{env['PATH']}"
    return subprocess.run(
        [sys.executable, "-m", "fercluster.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _poll(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached after {timeout_s:.0f} s")
        time.sleep(0.5)
    return value


def test_a_node_set_down_under_a_running_job_requeues_it_and_it_resumes_from_its_checkpoint(
    workdir: Path, shared_data: Path, faults: list[str]
) -> None:
    train = {"iterations": 100, "eval_every": 20, "checkpoint_every": 10}
    log = workdir / "attempts.txt"
    ref_cfg, ref_backend, ref = _sweep(workdir, "uninterrupted", shared_data, **train)
    cfg, backend, result = _sweep(workdir, "node-down", shared_data, fn_for=lambda: paced_training(log), **train)
    sid = result.arrays[0]["slurm_id"]
    # the reference ends (unpaced) before the node goes down, wherever it ran
    wait_for(ref_cfg, ref_backend, all_in(("COMPLETED",)), 120, "uninterrupted job COMPLETED")
    snap = wait_for(cfg, backend, reached(25), 120, "job running past its second checkpoint")
    node = snap["jobs"][0]["node"]
    assert node in two_node_names(), snap["jobs"][0]
    # ReturnToService=2: the node comes back when its slurmd registers again, the job may run there
    faults.append(node)
    scontrol_node(node, "down")
    _poll(lambda: requeued(sid) >= 1, 60, f"job {sid} requeued by SLURM after node {node} went DOWN")
    # status may be asked at any time: a job SLURM requeued is never FAILED (wait_for fails on that)
    snap = wait_for(cfg, backend, all_in(("COMPLETED",)), 120, "job COMPLETED after its node went DOWN")
    assert sacct_states(sid) == ["NODE_FAIL", "COMPLETED"], sacct_states(sid)
    starts = attempts_of(log)  # (restart, rank, first iteration trained)
    assert len(starts) == 2 and starts[0] == (0, 0, 1) and starts[1][:2] == (1, 0), starts
    assert starts[1][2] > 20, f"restarted from iteration {starts[1][2] - 1}, not from its checkpoint"
    a, b = (
        pd.read_parquet(Path(s.run_dir) / "metrics.parquet").drop(columns=["wall_time"])
        for s in (result.specs[0], ref.specs[0])
    )
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def two_node_names() -> set[str]:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, check=True).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def _submissions(prefix: str, since: str) -> dict[str, list[str]]:
    """This user's submissions since ``since`` whose job name starts with ``prefix``: {name: [ids]}
    (from accounting, every state)."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-S", since, "-u", getpass.getuser(), "-o", "JobID,JobName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        jid, _, name = line.partition("|")
        if name.startswith(prefix):
            found.setdefault(name, []).append(jid)
    return found


def test_slurmctld_stopped_during_sweep_is_one_line_and_the_rerun_submits_no_duplicate(
    workdir: Path, shared_data: Path, faults: list[str]
) -> None:
    """The controller goes away as the sweep calls sbatch: an ``sbatch`` first on PATH stops slurmctld
    (once), then runs the real one, which cannot reach it."""
    real = subprocess.run(
        ["bash", "-c", "command -v sbatch"], capture_output=True, text=True, check=True
    ).stdout.strip()
    shim = workdir / "bin"
    shim.mkdir()
    (shim / "sbatch").write_text(
        "#!/bin/bash\n"
        f"if mkdir {workdir / 'slurmctld-stopped'} 2>/dev/null; then\n"
        f"    bash {CLUSTER_SH} stop-daemon slurmctld >/dev/null 2>&1\n"
        "fi\n"
        f'exec {real} "$@"\n'
    )
    (shim / "sbatch").chmod(0o755)
    path = small_config(workdir, "ctld-down", shared_data, slurm=ONE_CPU, iterations=20, eval_every=10)
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 1))
    out = _cli("sweep", path.name, cwd=workdir, path=str(shim))
    assert (workdir / "slurmctld-stopped").exists(), out.stdout + out.stderr  # the fault happened
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: sbatch failed part-way: sbatch failed for fc-ctld-down-")
    assert "Unable to contact slurm controller" in errors[0] and "0 arrays (0 jobs) went in" in errors[0], errors

    up = cluster_sh("start")  # slurmctld back
    assert up.returncode == 0, up.stderr
    again = _cli("sweep", path.name, cwd=workdir)
    assert again.returncode == 0 and "did submit 1," in again.stdout, again.stdout + again.stderr
    cfg = load_config(path)
    wait_for(cfg, SlurmBackend(cfg.jobs_dir / "submitit"), all_in(("COMPLETED",)), 120, "job COMPLETED")
    third = _cli("sweep", path.name, cwd=workdir)
    assert third.returncode == 0 and "did submit 0," in third.stdout, third.stdout + third.stderr
    train = {n: ids for n, ids in _submissions("fc-ctld-down-", since).items() if "-aggregate-" not in n}
    assert len(train) == 1 and [len(ids) for ids in train.values()] == [1], train  # one submission, went in once


def test_status_answers_from_the_queue_while_slurmdbd_is_stopped(
    workdir: Path, shared_data: Path, faults: list[str]
) -> None:
    cfg, backend, result = _sweep(workdir, "dbd-down", shared_data, fn_for=paced_training, iterations=400)
    sid = result.arrays[0]["slurm_id"]
    wait_for(cfg, backend, reached(3), 120, "job running")
    before = _cli("status", "dbd-down.yaml", "--json", cwd=workdir)  # accounting answers: states remembered
    assert before.returncode == 0 and json.loads(before.stdout)["stale"] is None, before.stdout + before.stderr
    stopped = cluster_sh("stop-daemon", "slurmdbd")
    assert stopped.returncode == 0 and "slurmdbd: stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    try:
        table = _cli("status", "dbd-down.yaml", cwd=workdir)
        snap = _cli("status", "dbd-down.yaml", "--json", cwd=workdir)
    finally:
        up = cluster_sh("start")
        subprocess.run(["scancel", sid], timeout=60)
    assert up.returncode == 0, up.stderr
    for out in (table, snap):
        assert out.returncode == 0 and "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
    job = result.specs[0].job_id
    row = [line for line in table.stdout.splitlines() if job in line]
    assert len(row) == 1 and "RUNNING" in row[0], table.stdout
    data = json.loads(snap.stdout)
    assert data["source"] == "squeue" and "sacct" in data["stale"], data  # said: accounting did not answer
    assert "Problem talking to the database" in data["stale"] and "\n" not in data["stale"], data["stale"]
    assert [j["state"] for j in data["jobs"]] == ["RUNNING"] and data["jobs"][0]["slurm_id"], data["jobs"]
    assert "sacct" in table.stdout + table.stderr, table.stdout + table.stderr
