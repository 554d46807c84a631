"""Fault injection: stand-in SLURM commands on PATH (``fakeslurm.py``) that fail, time out,
rate-limit, lag and show other users' jobs; fercluster never submits a job twice and never asks
the whole cluster."""

from __future__ import annotations

import getpass
import json
import os
import stat
import sys
from pathlib import Path

import pytest
from orch_helpers import SWEEP_KW, make_config

from fercluster.orchestration.coordinator import run_sweep
from fercluster.orchestration.fake import FakeBackend
from fercluster.orchestration.slurm.backend import SlurmBackend
from fercluster.orchestration.state import load_state

COMMANDS = ("sbatch", "squeue", "sacct", "scontrol", "scancel")


class FakeSlurm:
    """The stand-in cluster of one test: its world, its faults and the calls it recorded."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def fault(self, **faults: object) -> None:
        (self.home / "faults.json").write_text(json.dumps(faults))

    def world(self) -> dict:
        path = self.home / "world.json"
        return json.loads(path.read_text()) if path.exists() else {"next_id": 5000, "jobs": []}

    def add_job(self, name: str, user: str, n: int = 4, state: str = "PENDING") -> str:
        world = self.world()
        jid = str(world["next_id"])
        world["next_id"] += 1
        world["jobs"].append({"id": jid, "name": name, "user": user, "n": n, "array": n > 1,
                              "states": {str(i): state for i in range(n)}})  # fmt: skip
        (self.home / "world.json").write_text(json.dumps(world))
        return jid

    def set_states(self, state: str) -> None:
        world = self.world()
        for job in world["jobs"]:
            job["states"] = {k: state for k in job["states"]}
        (self.home / "world.json").write_text(json.dumps(world))

    def calls(self, cmd: str | None = None) -> list[list[str]]:
        path = self.home / "calls.jsonl"
        lines = [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []
        return [c for c in lines if cmd is None or c[0] == cmd]

    def clear_calls(self) -> None:
        (self.home / "calls.jsonl").unlink(missing_ok=True)


@pytest.fixture
def fakeslurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSlurm:
    home, bin_dir = tmp_path / "fakeslurm", tmp_path / "fakeslurm-bin"
    home.mkdir()
    bin_dir.mkdir()
    script = Path(__file__).with_name("fakeslurm.py")
    for cmd in COMMANDS:
        exe = bin_dir / cmd
        exe.write_text(f'#!/bin/sh\nexec {sys.executable} {script} --as {cmd} "$@"\n')
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKESLURM", str(home))
    return FakeSlurm(home)


class CrashOnce(SlurmBackend):
    """sbatch runs, then the sweep dies before recording the id (Ctrl-C, a killed login session)."""

    crash = True

    def submit_array(self, fn, args, params):
        ids = super().submit_array(fn, args, params)
        if self.crash:
            self.crash = False
            raise KeyboardInterrupt("crash between sbatch and recording the id")
        return ids


def _cfg(workdir: Path):
    return make_config(workdir, slurm={"code": "live"})


def _training_sbatches(fake: FakeSlurm) -> list[str]:
    names = [j["name"] for j in fake.world()["jobs"] if j["user"] == getpass.getuser()]
    return [n for n in names if "aggregate" not in n]


@pytest.mark.parametrize("fault", ["fail", "timeout", "ratelimit"])
def test_failed_orphan_lookup_never_resubmits(workdir: Path, fakeslurm: FakeSlurm, fault: str) -> None:
    cfg = _cfg(workdir)
    backend = CrashOnce(cfg.jobs_dir / "submitit", timeout_s=1.0)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, backend, **SWEEP_KW)
    name = next(iter(load_state(cfg.jobs_dir, cfg.name).pending))
    fakeslurm.fault(squeue=fault, sacct=fault)
    result = run_sweep(cfg, backend, **SWEEP_KW)
    assert result.recovery_error and result.adopted == [] and result.arrays == []
    assert len(result.diff.waiting) == 4 and result.aggregate_id is None
    assert name in load_state(cfg.jobs_dir, cfg.name).pending  # kept: the next sweep retries
    assert len(_training_sbatches(fakeslurm)) == 1
    fakeslurm.fault()  # the fault ends: the next sweep adopts, submits no training array again
    result = run_sweep(cfg, backend, **SWEEP_KW)
    assert result.adopted == [name] and result.arrays == []
    assert _training_sbatches(fakeslurm) == [name]
    assert load_state(cfg.jobs_dir, cfg.name).pending == {}


def test_lookup_is_scoped_to_the_user_and_the_newest_array_wins(workdir: Path, fakeslurm: FakeSlurm) -> None:
    cfg = _cfg(workdir)
    backend = CrashOnce(cfg.jobs_dir / "submitit", timeout_s=5.0)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, backend, **SWEEP_KW)
    name = next(iter(load_state(cfg.jobs_dir, cfg.name).pending))
    mine = [j["id"] for j in fakeslurm.world()["jobs"]][0]
    newer = fakeslurm.add_job(name, getpass.getuser())  # e.g. a retry array of the same job set
    fakeslurm.add_job(name, "alice")  # another user's identical sweep, newest of all
    fakeslurm.clear_calls()
    result = run_sweep(cfg, backend, **SWEEP_KW)
    assert result.adopted == [name] and int(newer) > int(mine)
    assert load_state(cfg.jobs_dir, cfg.name).arrays[name]["slurm_id"] == newer
    lookups = [c for c in fakeslurm.calls() if any(a.startswith("--name=") for a in c)]
    assert lookups and all("--me" in c or "-u" in c for c in lookups)
    assert not [c for c in fakeslurm.calls("sbatch") if name in Path(c[-1]).read_text()]


def test_fake_backend_lookup_failure_keeps_the_pending_record(cfg, workdir: Path) -> None:
    backend = FakeBackend(crash_after_sbatch=True)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, backend, **SWEEP_KW)
    backend.lookup_error = "squeue: Socket timed out"
    for _ in range(2):
        result = run_sweep(cfg, backend, **SWEEP_KW)
        assert "timed out" in result.recovery_error and backend.calls["sbatch"] == 1
    backend.lookup_error = ""
    result = run_sweep(cfg, backend, **SWEEP_KW)
    assert len(result.adopted) == 1 and backend.calls["sbatch"] == 2  # the aggregation job only
    live = [sid for sid, st in backend.states.items() if st == "PENDING"]
    assert len(live) == 5  # 4 tasks + the aggregation job: no job twice
