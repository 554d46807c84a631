"""The SLURM test cluster of slurm/cluster.sh, driven through submitit as fercluster drives it.

Each test submits a tiny job and waits for it (seconds). The functions are defined inside the
tests so that cloudpickle sends them by value: the job's Python cannot import this test module.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

JOB_TIMEOUT_S = 300  # queue wait included: other jobs may hold the 2 CPUs for a while


def make_executor(folder: Path, partition: str, **params):
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(timeout_min=5, slurm_partition=partition, cpus_per_task=1, **params)
    return executor


def wait_done(job) -> None:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel(check=False)
            pytest.fail(f"job {job.job_id} not done after {JOB_TIMEOUT_S} s; state {job.state}")
        time.sleep(0.5)


def sacct_state(job_id: str, want: str = "COMPLETED", timeout_s: float = 30) -> str:
    """The job's state in accounting (slurmctld reports job ends to slurmdbd a moment later)."""
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["sacct", "-j", job_id, "-X", "--noheader", "--parsable2", "--format=State"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        state = out.stdout.strip()
        if state == want:
            break
        time.sleep(0.5)
    return state


def test_submitit_job_returns_its_result_and_sacct_says_completed(slurm_cluster, tmp_path):
    def add(a: int, b: int) -> int:
        return a + b

    job = make_executor(tmp_path, slurm_cluster.partition).submit(add, 2, 40)
    wait_done(job)

    assert job.result() == 42
    assert sacct_state(job.job_id) == "COMPLETED"


def test_job_with_one_fake_gpu_sees_it_in_its_environment(slurm_cluster, tmp_path):
    def gpu_env() -> dict[str, str | None]:
        import os

        return {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "SLURM_GPUS_ON_NODE")}

    job = make_executor(tmp_path, slurm_cluster.partition, gpus_per_node=1).submit(gpu_env)
    wait_done(job)

    assert job.result() == {"CUDA_VISIBLE_DEVICES": "0", "SLURM_GPUS_ON_NODE": "1"}


def test_two_task_job_runs_ranks_0_and_1_through_srun(slurm_cluster, tmp_path):
    def rank() -> tuple[str | None, str | None]:
        import os

        return os.environ.get("SLURM_PROCID"), os.environ.get("SLURM_NTASKS")

    job = make_executor(tmp_path, slurm_cluster.partition, tasks_per_node=2).submit(rank)
    wait_done(job)

    assert job.results() == [("0", "2"), ("1", "2")]
    assert sacct_state(job.job_id) == "COMPLETED"


def test_two_node_job_runs_one_task_on_each_node(two_node_cluster, tmp_path):
    """The test cluster's two nodes (slurm/cluster.sh): srun over 2 nodes, ranks 0 and 1, and both
    node names resolve to this machine (DDP's MASTER_ADDR is the first one)."""

    def where() -> tuple[str | None, str | None, str]:
        import os
        import socket

        node = os.environ["SLURMD_NODENAME"]
        return os.environ.get("SLURM_PROCID"), node, socket.gethostbyname(node)

    job = make_executor(tmp_path, two_node_cluster.partition, nodes=2, tasks_per_node=1).submit(where)
    wait_done(job)

    results = job.results()
    assert [r[0] for r in results] == ["0", "1"]
    assert len({r[1] for r in results}) == 2 and {r[1] for r in results} <= set(two_node_cluster.nodes)
    assert all(r[2] for r in results)  # gethostbyname did not fail on either node name
