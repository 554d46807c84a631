"""Sweeps on the real SLURM test cluster (slurm/cluster.sh): submit, monitor, cancel, retry, requeue.

Each test works in its own folder with tiny synthetic jobs (32x32 images, 1/8 width, CPU).
Callables meant to fail are defined inside the tests so that cloudpickle sends them by value.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from slurm_helpers import all_in, fercluster, reached, requeued, small_config, smoke_data, wait_for

from fercluster.config import load_config, parse_config
from fercluster.orchestration.slurm.backend import SlurmBackend
from fercluster.orchestration.submit.aggregate import built_by
from fercluster.orchestration.submit.coordinator import run_sweep
from fercluster.orchestration.watch.status import snapshot

pytestmark = pytest.mark.slurm


def test_smoke_sweep_completes_then_rerun_submits_nothing(workdir: Path, shared_data: Path) -> None:
    (workdir / "smoke.yaml").write_text(yaml.safe_dump(smoke_data(shared_data)))
    out = fercluster("sweep", "smoke.yaml", cwd=workdir)
    assert out.returncode == 0, out.stderr
    assert "submitted array" in out.stdout and "submitted aggregation job" in out.stdout
    cfg = load_config(workdir / "smoke.yaml")
    backend = SlurmBackend(cfg.jobs_dir / "submitit")
    wait_for(cfg, backend, all_in(("COMPLETED",)), 240, "all smoke jobs COMPLETED")
    status = fercluster("status", "--json", cwd=workdir)  # CONFIG defaults to the last sweep
    snap = json.loads(status.stdout)
    assert snap["counts"] == {"COMPLETED": 4} and snap["source"] == "sacct"
    for job in snap["jobs"]:
        assert {
            "job_id",
            "dataset",
            "fold",
            "variant",
            "seed",
            "state",
            "slurm_id",
            "iteration",
            "iterations",
            "val_acc",
            "test_acc",
        } <= set(job)
        assert job["slurm_id"] and job["iteration"] == job["iterations"] == 40
        run = workdir / job["run_dir"]
        assert (run / "job.json").exists() and (run / "metrics.parquet").exists()
    again = fercluster("sweep", "smoke.yaml", cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert "did submit 0, retry 0; skip 4 done" in again.stdout and "submitted" not in again.stdout
    table = fercluster("status", "smoke.yaml", cwd=workdir)
    assert "COMPLETED 4" in table.stdout and snap["jobs"][0]["job_id"] in table.stdout  # (ids hash the data's paths)
    agg = wait_for(
        cfg, backend, lambda s: s["aggregate"]["state"] not in ("PENDING", "RUNNING"), 180, "aggregation job ended"
    )["aggregate"]
    assert agg["state"] == "COMPLETED", agg
    assert built_by(cfg.jobs_dir) == agg["slurm_id"]  # its evidence, for when SLURM forgets it (no accounting)


def test_scancel_shows_cancelled_and_retry_resubmits_only_it(workdir: Path, shared_data: Path) -> None:
    path = small_config(workdir, "cancel", shared_data, iterations=40)
    data = yaml.safe_load(path.read_text())
    data["grid"][0]["variants"] = ["none", "AD"]
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    backend = SlurmBackend(cfg.jobs_dir / "submitit")
    first = run_sweep(cfg, backend)
    victim = first.specs[1]
    victim_sid = f"{first.arrays[0]['slurm_id']}_1"
    subprocess.run(["scancel", victim_sid], check=True)
    snap = wait_for(cfg, backend, all_in(("COMPLETED", "CANCELLED", "FAILED")), 180, "one done, one cancelled")
    row = next(j for j in snap["jobs"] if j["job_id"] == victim.job_id)
    assert row["state"] in ("CANCELLED", "FAILED") and "cancelled" in row["reason"]
    plain = run_sweep(cfg, backend)
    assert plain.arrays == []
    retried = run_sweep(cfg, backend, retry_failed=True)
    assert [a["n"] for a in retried.arrays] == [1]
    assert [s.job_id for s in retried.diff.retry] == [victim.job_id]
    wait_for(cfg, backend, all_in(("COMPLETED",)), 180, "retried job COMPLETED")


def test_preempted_and_requeued_job_resumes_with_the_same_metrics(workdir: Path, shared_data: Path) -> None:
    """One job is signalled for pre-emption (USR2, as SLURM does) and later requeued by scontrol;
    an identical job in another sweep runs uninterrupted. Both must end with the same metrics."""
    import pandas as pd

    train = {"iterations": 120, "eval_every": 20, "checkpoint_every": 10}
    ref_cfg = load_config(small_config(workdir, "reference", shared_data, **train))
    cfg = load_config(small_config(workdir, "preempted", shared_data, **train))
    ref_backend = SlurmBackend(ref_cfg.jobs_dir / "submitit")
    backend = SlurmBackend(cfg.jobs_dir / "submitit")
    run_sweep(ref_cfg, ref_backend)
    result = run_sweep(cfg, backend, fn_for=_paced_training)
    spec = result.specs[0]
    sid = result.arrays[0]["slurm_id"]
    progress = Path(spec.run_dir) / "progress.json"

    wait_for(cfg, backend, reached(20), 120, "job running past its first checkpoint")
    subprocess.run(["scancel", "--signal=USR2", sid], check=True)  # pre-emption notice
    snap = wait_for(
        cfg,
        backend,
        lambda s: s["jobs"][0]["state"] == "PENDING" or (s["jobs"][0]["state"] == "RUNNING" and requeued(sid)),
        90,
        "job requeued after USR2",
    )
    assert snap["jobs"][0]["state"] in ("PENDING", "RUNNING")  # a requeue is not a failure
    before = json.loads(progress.read_text())["iteration"]
    wait_for(cfg, backend, reached(before + 20), 180, "job resumed and training again")
    subprocess.run(["scontrol", "requeue", sid], check=True)  # the administrator's way
    snap = wait_for(cfg, backend, all_in(("COMPLETED",)), 300, "requeued job COMPLETED")
    wait_for(ref_cfg, ref_backend, all_in(("COMPLETED",)), 120, "reference job COMPLETED")
    assert requeued(sid) >= 2
    a = pd.read_parquet(Path(spec.run_dir) / "metrics.parquet").drop(columns=["wall_time"])
    ref_dir = Path(ref_cfg.results_dir) / "runs" / spec.job_id
    b = pd.read_parquet(ref_dir / "metrics.parquet").drop(columns=["wall_time"])
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    ja, jb = (json.loads((d / "job.json").read_text()) for d in (Path(spec.run_dir), ref_dir))
    assert (ja["val_acc"], ja["test_acc"], ja["selected_iteration"]) == (
        jb["val_acc"],
        jb["test_acc"],
        jb["selected_iteration"],
    )


def _paced_training() -> Any:
    """The real training callable (requeue included), slowed to 0.2 s a step so the test can
    signal the job while it runs, whatever the machine's speed. Built inside a function so that
    submitit's cloudpickle sends the class by value."""
    from fercluster.orchestration.slurm.requeue import JobCheckpointable

    class Paced(JobCheckpointable):
        def __call__(self, spec: Any, **kwargs: Any) -> dict:

            from fercluster.train.job import run_job

            return run_job(spec, progress=lambda it, total: time.sleep(0.2))

    return Paced()


def test_job_that_sigkills_itself_is_failed_not_running(workdir: Path, shared_data: Path) -> None:
    cfg = load_config(small_config(workdir, "killed", shared_data))

    def suicide() -> Any:
        def run(spec: Any) -> None:
            os.kill(os.getpid(), signal.SIGKILL)

        return run

    backend = SlurmBackend(cfg.jobs_dir / "submitit")
    run_sweep(cfg, backend, fn_for=suicide, prepare=False)
    snap = wait_for(cfg, backend, all_in(("FAILED",)), 120, "killed job FAILED")
    row = snap["jobs"][0]
    assert "signal 9" in row["reason"] or "exit code" in row["reason"] or "no job.json" in row["reason"], row

    class NoAccounting(SlurmBackend):  # a site without slurmdbd: sacct fails, squeue answers
        def _run(self, argv: Any, check: bool = True) -> Any:
            if argv[0] == "sacct":
                return subprocess.CompletedProcess(argv, 1, "", "Slurm accounting storage is disabled")
            return super()._run(argv, check)

    fallback = snapshot(cfg, NoAccounting(cfg.jobs_dir / "submitit")).to_dict()
    assert fallback["source"] == "squeue" and fallback["jobs"][0]["state"] == "FAILED"


def test_two_tasks_on_one_node_train_with_ddp(workdir: Path, shared_data: Path) -> None:
    path = small_config(workdir, "ddp", shared_data, iterations=20, eval_every=10, checkpoint_every=10)
    data = yaml.safe_load(path.read_text())
    data["slurm"].update({"gpus_per_node": 2, "cpus_per_task": 1, "mem_gb": 1})  # 2 fake GPUs -> 2 tasks
    cfg = parse_config(data)
    backend = SlurmBackend(cfg.jobs_dir / "submitit")
    result = run_sweep(cfg, backend)
    sid = result.arrays[0]["slurm_id"]
    submission = (cfg.jobs_dir / "submitit" / sid / f"{sid}_submission.sh").read_text()
    assert "--ntasks-per-node=2" in submission and "--gpus-per-node=2" in submission
    wait_for(cfg, backend, all_in(("COMPLETED",)), 180, "DDP job COMPLETED")
    job = json.loads((Path(result.specs[0].run_dir) / "job.json").read_text())
    logs = sorted((cfg.jobs_dir / "submitit" / sid).glob("*_log.err"))
    ranks = {p.name.split("_")[1] for p in logs}
    assert ranks == {"0", "1"}, logs  # srun started two tasks
    assert "2" in job["device"] or job.get("world_size") == 2, job["device"]
