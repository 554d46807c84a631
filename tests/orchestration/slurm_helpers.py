"""Helpers of the tests that run sweeps on the SLURM test cluster: configs, waiting, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from fercluster.orchestration.slurm.backend import SlurmBackend
from fercluster.orchestration.store.vocabulary import ENDED_BADLY
from fercluster.orchestration.watch.status import snapshot

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"


def fercluster(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fercluster.cli.main", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def smoke_data(shared: Path) -> dict:
    """configs/smoke.yaml with its data set in the shared folder."""
    data = yaml.safe_load(SMOKE.read_text())
    data.setdefault("paths", {})["data"] = str(shared)
    data["datasets"]["ckplus"]["root"] = str(shared / "raw" / "ckplus-smoke")
    return data


def learnable_set(shared: Path) -> dict:
    """A config's data set that a tiny network learns in 20 steps: the prepared set of
    tests/train/fake_prepared.py (a bright blob at its own place per class, 32x32), on which the
    DDP tests of tests/train/test_distributed.py set their tolerances. Made once per folder."""
    sys.path.insert(0, str(REPO / "tests" / "train"))
    import fake_prepared

    root, prepared = shared / "blobs" / "raw", shared / "blobs" / "prepared"
    if not (prepared / "info.json").exists():
        fake_prepared.make_prepared(prepared)  # 96x96, as every prepared set
        info = json.loads((prepared / "info.json").read_text())  # as if prepared from `root`
        info.update(source=str(root.resolve()), crop="none")
        (prepared / "info.json").write_text(json.dumps(info))
    return {"kind": "ckplus", "root": str(root), "prepared": str(prepared), "classes": 8, "crop": "none"}


def small_config(
    workdir: Path,
    name: str,
    shared: Path,
    slurm: dict | None = None,
    job: tuple[str, int] = ("none", 0),
    data_set: dict | None = None,
    **train: Any,
) -> Path:
    """configs/smoke.yaml with another name, one job (variant, seed), other training settings and
    SLURM resources, and optionally another data set."""
    data = smoke_data(shared)
    data["name"] = name
    data["grid"] = [{"dataset": "ckplus", "folds": [0], "variants": [job[0]], "seeds": [job[1]]}]
    if data_set is not None:
        data["datasets"]["ckplus"] = data_set
    data["train"].update(train)
    data["slurm"].update(slurm or {})
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def wait_for(cfg: Any, backend: SlurmBackend, done: Callable[[dict], bool], timeout_s: float, what: str) -> dict:
    """Poll the sweep's status until ``done(snapshot)``; fail after ``timeout_s``, or at once when
    every job has ended badly (nothing will change)."""
    deadline = time.monotonic() + timeout_s
    snap: dict = {}
    while time.monotonic() < deadline:
        snap = snapshot(cfg, backend).to_dict()
        if done(snap):
            return snap
        if snap["jobs"] and all(j["state"] in ENDED_BADLY for j in snap["jobs"]):
            pytest.fail(
                f"{what}: every job ended badly: {[(j['job_id'], j['state'], j['reason']) for j in snap['jobs']]}"
            )
        time.sleep(1.0)
    pytest.fail(
        f"{what}: not reached after {timeout_s:.0f} s; last status {json.dumps(snap.get('counts'))} "
        f"{[(j['job_id'], j['state'], j['reason']) for j in snap.get('jobs', [])]}"
    )


def all_in(states: tuple[str, ...]) -> Callable[[dict], bool]:
    return lambda snap: bool(snap["jobs"]) and all(j["state"] in states for j in snap["jobs"])


def reached(iteration: int) -> Callable[[dict], bool]:
    """The sweep's first job runs and has trained ``iteration`` iterations."""

    def check(snap: dict) -> bool:
        return snap["jobs"][0]["state"] == "RUNNING" and (snap["jobs"][0]["iteration"] or 0) >= iteration

    return check


def requeued(sid: str) -> int:
    """How many times SLURM restarted the job (scontrol's Restarts)."""
    out = subprocess.run(["scontrol", "show", "job", sid], capture_output=True, text=True).stdout
    for token in out.split():
        if token.startswith("Restarts="):
            return int(token.split("=")[1])
    return 0


def paced_training(attempts: Path | None = None) -> Any:
    """The real training callable (requeue included), slowed to 0.2 s a step so that a test can act
    on the job while it runs. With ``attempts``, each process appends "<restart> <rank> <first
    iteration it trained>" there when it starts training (``attempts_of``): a line with restart > 0
    and an iteration > 1 is a start from a checkpoint. Built inside a function so that submitit's
    cloudpickle sends the class by value; the log path is a class attribute, so the copy that
    ``checkpoint`` makes for the requeue (``type(self)()``) keeps it."""
    from fercluster.orchestration.slurm.requeue import JobCheckpointable

    log = str(attempts or "")

    class Paced(JobCheckpointable):
        attempts_log = log

        def __call__(self, spec: Any, **kwargs: Any) -> dict:
            import os
            import time

            from fercluster.train.job import run_job

            started: list[int] = []

            def progress(iteration: int, total: int) -> None:
                if self.attempts_log and not started:
                    started.append(iteration)
                    restart, rank = os.environ.get("SLURM_RESTART_COUNT", "0"), os.environ.get("SLURM_PROCID", "0")
                    with open(self.attempts_log, "a") as f:
                        f.write(f"{restart} {rank} {iteration}\n")
                time.sleep(0.2)

            return run_job(spec, progress=progress)

    return Paced()


def attempts_of(path: Path) -> list[tuple[int, int, int]]:
    """``paced_training``'s log: (restart count, rank, first iteration trained) per process start, sorted."""
    lines = path.read_text().split("\n") if path.exists() else []
    return sorted((int(a), int(b), int(c)) for a, b, c in (ln.split() for ln in lines if ln.strip()))


def sacct_states(sid: str, timeout_s: float = 60) -> list[str]:
    """How each run of job ``sid`` ended, oldest first (``sacct -D``: a requeued job's earlier runs
    too), once SLURM has ended its last run (a job that wrote job.json may still be exiting)."""
    deadline = time.monotonic() + timeout_s
    while True:
        out = subprocess.run(
            ["sacct", "-D", "-X", "-n", "-P", "-j", sid, "-o", "State"], capture_output=True, text=True, check=True
        ).stdout
        states = [line.split()[0] for line in out.splitlines() if line.strip()]
        if states and states[-1] not in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED"):
            return states
        if time.monotonic() > deadline:
            pytest.fail(f"job {sid} not ended after {timeout_s:.0f} s: sacct says {states}")
        time.sleep(1.0)
