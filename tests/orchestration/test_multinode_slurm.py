"""Jobs of several processes on the two-node SLURM test cluster, through the sweep's own path.

- DDP over 2 nodes x 1 task (gloo) agrees with the 1-process run, and its ranks ran on two nodes;
- 2 tasks on one node (the fake GPUs) checkpoint, are requeued by ``scontrol requeue`` and resume
  exactly (metrics equal to an uninterrupted 2-task run);
- the same job told its time is up (USR2 to every task, as ``--signal=USR2@N`` does) stops every
  rank at one step, rank 0 requeues it (rank 1 does not end first with an error that would have
  srun kill rank 0), and it resumes from that checkpoint exactly;
- a rank that dies fails the whole job within a minute (srun --kill-on-bad-exit), with the
  rank's error in ``fercluster status --failed``;
- a Ray Tune search whose allocation spans both nodes runs its trials on both, each as ONE
  process (a Ray worker inherits its SLURM task's SLURM_NTASKS and SLURM_PROCID: a trial that
  trusted them would join a process group with the other trials).

Tiny synthetic jobs (32x32 images, 1/8 width, CPU). Callables meant to fail are built inside
functions so that cloudpickle sends them by value.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from slurm_helpers import (
    all_in,
    attempts_of,
    fercluster,
    learnable_set,
    paced_training,
    reached,
    requeued,
    sacct_states,
    small_config,
    smoke_data,
    wait_for,
)

from fercluster.config import load_config
from fercluster.orchestration.slurm.backend import SlurmBackend
from fercluster.orchestration.submit.coordinator import run_sweep

pytestmark = pytest.mark.slurm

# The job of tests/train/test_distributed.py's two-process test (variant AD, seed 3, k 0.8, 20 steps)
DDP_TRAIN = {"iterations": 20, "eval_every": 10, "checkpoint_every": 10, "k": 0.8}


def _sweep(workdir: Path, name: str, shared: Path, slurm: dict, fn_for: Any = None, **settings: Any):
    cfg = load_config(small_config(workdir, name, shared, slurm=slurm, **settings))
    backend = SlurmBackend(cfg.jobs_dir / "submitit")
    return cfg, backend, run_sweep(cfg, backend, **({"fn_for": fn_for} if fn_for else {}))


def test_ddp_over_two_nodes_agrees_with_one_process(workdir: Path, shared_data: Path, two_node_cluster) -> None:
    one_node = {"gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 1}
    job = {"job": ("AD", 3), "data_set": learnable_set(shared_data), **DDP_TRAIN}
    ref_cfg, ref_backend, ref = _sweep(workdir, "one-process", shared_data, one_node, **job)
    cfg, backend, result = _sweep(workdir, "two-nodes", shared_data, {**one_node, "nodes": 2}, **job)
    sid = result.arrays[0]["slurm_id"]
    submission = (cfg.jobs_dir / "submitit" / sid / f"{sid}_submission.sh").read_text()
    assert "--nodes=2" in submission and "--ntasks-per-node=1" in submission and "--kill-on-bad-exit=1" in submission
    wait_for(cfg, backend, all_in(("COMPLETED",)), 180, "2-node DDP job COMPLETED")
    wait_for(ref_cfg, ref_backend, all_in(("COMPLETED",)), 120, "1-process job COMPLETED")

    two_dir, one_dir = Path(result.specs[0].run_dir), Path(ref.specs[0].run_dir)
    job, ref_job = (json.loads((d / "job.json").read_text()) for d in (two_dir, one_dir))
    assert job["world_size"] == 2 and ref_job["world_size"] == 1
    assert len(job["nodes"]) == 2 and set(job["nodes"]) <= set(two_node_cluster.nodes), job["nodes"]
    assert len(set(job["nodes"])) == 2, f"both ranks ran on {job['nodes'][0]}"  # one rank per node
    logs = {p.name.split("_")[1] for p in (cfg.jobs_dir / "submitit" / sid).glob(f"{sid}_*_log.out")}
    assert logs == {"0", "1"}
    # as tests/train/test_distributed.py: same start, each rank draws its own batches, losses close
    m2, m1 = (pd.read_parquet(d / "metrics.parquet") for d in (two_dir, one_dir))
    assert m1["iteration"].tolist() == m2["iteration"].tolist() == [0, 10, 20]
    assert m1.loc[0, ["val_acc", "test_acc"]].tolist() == m2.loc[0, ["val_acc", "test_acc"]].tolist()
    assert m2["train_loss"][1:].sub(m1["train_loss"][1:]).abs().max() < 0.25
    assert abs(job["test_acc"] - ref_job["test_acc"]) <= 0.25
    snap = json.loads(fercluster("status", "two-nodes.yaml", "--json", cwd=workdir).stdout)
    assert set(snap["jobs"][0]["node"].split(",")) == set(job["nodes"])  # status shows both nodes


def _paced_training() -> Any:
    """The real training callable, slowed to 0.2 s a step (see test_sweep_slurm.py)."""
    from fercluster.orchestration.slurm.requeue import JobCheckpointable

    class Paced(JobCheckpointable):
        def __call__(self, spec: Any, **kwargs: Any) -> dict:
            import time

            from fercluster.train.job import run_job

            return run_job(spec, progress=lambda it, total: time.sleep(0.2))

    return Paced()


def test_two_task_job_requeued_by_scontrol_resumes_exactly(workdir: Path, shared_data: Path, slurm_cluster) -> None:
    train = {"iterations": 60, "eval_every": 20, "checkpoint_every": 10}
    two_tasks = {"gpus_per_node": 2, "cpus_per_task": 1, "mem_gb": 1}  # 2 fake GPUs -> 2 tasks, gloo on CPU
    ref_cfg, ref_backend, ref = _sweep(workdir, "uninterrupted", shared_data, two_tasks, **train)
    cfg, backend, result = _sweep(workdir, "requeued", shared_data, two_tasks, fn_for=_paced_training, **train)
    sid = result.arrays[0]["slurm_id"]
    wait_for(cfg, backend, reached(25), 150, "2-task job running past its second checkpoint")
    subprocess.run(["scontrol", "requeue", sid], check=True)
    wait_for(cfg, backend, all_in(("COMPLETED",)), 240, "requeued 2-task job COMPLETED")
    wait_for(ref_cfg, ref_backend, all_in(("COMPLETED",)), 120, "uninterrupted 2-task job COMPLETED")
    assert requeued(sid) >= 1
    _assert_same_two_task_run(result, ref)


def test_usr2_to_every_task_of_a_two_task_job_requeues_it_and_it_resumes_exactly(
    workdir: Path, shared_data: Path, slurm_cluster
) -> None:
    """``scancel --signal=USR2 JOB`` signals every task of the job's steps and not the batch shell,
    as SLURM's time-limit warning (``--signal=USR2@N``, submitit's ``signal_delay_s``) does, and as
    submitit's own ``SlurmJob._interrupt(timeout=True)`` sends it."""
    train = {"iterations": 80, "eval_every": 20, "checkpoint_every": 10}
    two_tasks = {"gpus_per_node": 2, "cpus_per_task": 1, "mem_gb": 1}
    log = workdir / "attempts.txt"
    ref_cfg, ref_backend, ref = _sweep(workdir, "uninterrupted", shared_data, two_tasks, **train)
    cfg, backend, result = _sweep(workdir, "usr2", shared_data, two_tasks, fn_for=lambda: paced_training(log), **train)
    sid = result.arrays[0]["slurm_id"]
    wait_for(cfg, backend, reached(12), 150, "2-task job running past its first checkpoint")
    subprocess.run(["scancel", "--signal=USR2", sid], check=True)
    wait_for(cfg, backend, all_in(("COMPLETED",)), 240, "2-task job COMPLETED after USR2")
    wait_for(ref_cfg, ref_backend, all_in(("COMPLETED",)), 120, "uninterrupted 2-task job COMPLETED")
    assert requeued(sid) == 1 and sacct_states(sid) == ["REQUEUED", "COMPLETED"], sacct_states(sid)
    # no rank ended with an error on the signal (one that did made srun end rank 0, maybe before its
    # requeue); the logs of both runs, appended, are in each task's log
    logs = {p.name: p.read_text() for p in (cfg.jobs_dir / "submitit" / sid).glob(f"{sid}_*_log.err")}
    assert len(logs) == 2 and not [name for name, text in logs.items() if "Traceback" in text], logs
    starts = attempts_of(log)  # (restart, rank, first iteration trained)
    assert starts[:2] == [(0, 0, 1), (0, 1, 1)], starts
    # both ranks stopped at the same agreed step (a multiple of 20 before the end) and resumed there
    assert len(starts) == 4 and starts[2][:2] == (1, 0) and starts[3][:2] == (1, 1), starts
    assert starts[2][2] == starts[3][2] and (starts[2][2] - 1) % 20 == 0 and 1 < starts[2][2] < 80, starts
    _assert_same_two_task_run(result, ref)


def _rank_one_dies() -> Any:
    """Training in which rank 1 raises at iteration 5 (rank 0 then waits in the next all-reduce)."""
    from fercluster.orchestration.slurm.requeue import JobCheckpointable

    class RankOneDies(JobCheckpointable):
        def __call__(self, spec: Any, **kwargs: Any) -> dict:
            import os

            from fercluster.train.job import run_job

            def progress(iteration: int, total: int) -> None:
                if iteration == 5 and os.environ.get("SLURM_PROCID") == "1":
                    raise RuntimeError("rank 1 fails on purpose at iteration 5")

            return run_job(spec, progress=progress)

    return RankOneDies()


def test_a_rank_that_dies_fails_the_whole_job_with_its_error(
    workdir: Path, shared_data: Path, two_node_cluster
) -> None:
    slurm = {"nodes": 2, "gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 1}
    cfg, backend, result = _sweep(workdir, "rank-dies", shared_data, slurm, fn_for=_rank_one_dies, iterations=400)
    wait_for(cfg, backend, lambda s: s["jobs"][0]["state"] != "PENDING", 120, "job started")
    started = time.monotonic()
    snap = wait_for(cfg, backend, all_in(("FAILED",)), 90, "job FAILED after rank 1 died")
    assert time.monotonic() - started < 60, "the job outlived its dead rank by a minute"
    assert snap["jobs"][0]["iteration"] is None or snap["jobs"][0]["iteration"] < 400
    out = fercluster("status", "rank-dies.yaml", "--failed", "--json", cwd=workdir)
    job = json.loads(out.stdout)["jobs"][0]
    assert job["state"] == "FAILED"
    assert "rank 1 fails on purpose at iteration 5" in job["exception"] and job["exception"].startswith("task 1:")
    text = fercluster("status", "rank-dies.yaml", "--failed", cwd=workdir).stdout
    assert "rank 1 fails on purpose" in text


def _tune_config(workdir: Path, shared: Path) -> Path:
    """A tiny search in one allocation of 2 nodes x 1 CPU: two trials at once, one per node."""
    data = smoke_data(shared)
    data["name"] = "tune-two-nodes"
    del data["grid"]
    data["train"].update({"iterations": 40, "eval_every": 20, "checkpoint_every": 20})
    data["tune"] = {
        "datasets": ["ckplus"], "folds": [0], "variant": "none",
        "space": {"k": {"type": "uniform", "low": 0.2, "high": 1.2}},
        "search": "random", "num_samples": 2, "grace_period": 20, "reduction_factor": 2,
        "gpus_per_trial": 0, "cpus_per_trial": 1, "max_concurrent": 2, "seed": 0,
    }  # fmt: skip
    data["slurm"] = {"time_min": 10, "nodes": 2, "gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 2}
    path = workdir / "tune-two-nodes.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.timeout(600)
def test_tune_search_over_two_nodes_runs_single_process_trials_on_both(
    workdir: Path, shared_data: Path, two_node_cluster
) -> None:
    from fercluster.orchestration.tune.state import tune_status

    path = _tune_config(workdir, shared_data)
    out = fercluster("sweep", path.name, cwd=workdir)
    assert out.returncode == 0, out.stderr
    assert "submitted allocation" in out.stdout and "2 node(s)" in out.stdout
    cfg = load_config(path)
    trials_dir = cfg.results_dir / "tune" / "trials"
    deadline = time.monotonic() + 300
    while (tune_status(cfg) or {}).get("state") not in ("COMPLETED", "FAILED", "INTERRUPTED"):
        for done in trials_dir.glob("*/job.json"):  # fail as soon as a trial ran as a rank of a group
            job = json.loads(done.read_text())
            assert job["world_size"] == 1, (
                f"trial {done.parent.name} ran as rank of {job['world_size']}: {job['nodes']}"
            )
        assert time.monotonic() < deadline, f"search not finished: {tune_status(cfg)}"
        time.sleep(2)
    status = tune_status(cfg)
    logs = sorted((cfg.jobs_dir / "tune" / "submitit").rglob("*_log.*"))
    assert status["state"] == "COMPLETED", (status, [p.read_text()[-2000:] for p in logs])
    trials = sorted(trials_dir.iterdir())
    assert len(trials) == 2
    for trial in trials:  # one process each, not ranks of a group spanning the allocation
        job = json.loads((trial / "job.json").read_text())
        assert job["world_size"] == 1 and len(job["nodes"]) == 1, job
    nodes = {json.loads((t / "job.json").read_text())["nodes"][0] for t in trials}
    assert nodes == set(two_node_cluster.nodes[:2]) or len(nodes) == 2, f"trials ran on {nodes} only"
    frame = pd.read_parquet(cfg.results_dir / "tune" / "trials.parquet")
    assert set(frame["nodes"]) == nodes  # the node of each trial is surfaced in trials.parquet
    text = fercluster("status", path.name, cwd=workdir).stdout
    assert all(n in text for n in nodes)


def _assert_same_two_task_run(result, ref) -> None:
    """The interrupted 2-task job's metrics and record equal the uninterrupted one's."""
    run, ref_run = Path(result.specs[0].run_dir), Path(ref.specs[0].run_dir)
    a, b = (pd.read_parquet(d / "metrics.parquet").drop(columns=["wall_time"]) for d in (run, ref_run))
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    ja, jb = (json.loads((d / "job.json").read_text()) for d in (run, ref_run))
    assert ja["world_size"] == jb["world_size"] == 2
    assert (ja["val_acc"], ja["test_acc"], ja["selected_iteration"]) == (
        jb["val_acc"],
        jb["test_acc"],
        jb["selected_iteration"],
    )
