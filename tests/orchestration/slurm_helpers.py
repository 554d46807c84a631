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
from fercluster.orchestration.status import snapshot
from fercluster.orchestration.store.vocabulary import ENDED_BADLY

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
