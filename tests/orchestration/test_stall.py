"""Hung jobs: a RUNNING job whose progress has not moved shows stalled (with the time since), and
``sweep --requeue-stalled`` requeues it through the backend, counted as a requeue, not a retry."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import pytest
import yaml
from orch_helpers import SWEEP_KW, make_config
from typer.testing import CliRunner

from fercluster.cli.main import _register, app
from fercluster.config import Slurm
from fercluster.errors import ConfigError, SlurmError
from fercluster.orchestration.backend import JobInfo
from fercluster.orchestration.fake import FakeBackend
from fercluster.orchestration.local.backend import LocalBackend
from fercluster.orchestration.slurm.backend import SlurmBackend
from fercluster.orchestration.store import read_history
from fercluster.orchestration.store.state import load_state
from fercluster.orchestration.submit.coordinator import run_sweep
from fercluster.orchestration.watch.status import snapshot

_register()
runner = CliRunner()
HOURS_3 = 3 * 3600.0


class Running(FakeBackend):
    """The fake SLURM, with SLURM's elapsed time of chosen runs (the fake's own is 60 s for all)."""

    def __init__(self) -> None:
        super().__init__()
        self.elapsed: dict[str, float] = {}

    def query(self, slurm_ids: Sequence[str]) -> dict[str, JobInfo]:
        infos = super().query(slurm_ids)
        return {s: replace(i, elapsed_s=self.elapsed.get(s, i.elapsed_s)) for s, i in infos.items()}


def progress(run_dir: str, iteration: int, updated: float, sec_per_iter: float | None = 1.0) -> None:
    """A hand-written progress.json, as the job writes it at an evaluation."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    record = {"job_id": Path(run_dir).name, "state": "running", "iteration": iteration, "iterations": 40,
              "sec_per_iter": sec_per_iter, "updated": updated, "schema": 1}  # fmt: skip
    (Path(run_dir) / "progress.json").write_text(json.dumps(record))


def hung_sweep(cfg):
    """Four submitted jobs: 0 hung for 3 h, 1 fresh, 2 restarted a minute ago after old progress, 3 queued."""
    backend = Running()
    result = run_sweep(cfg, backend, **SWEEP_KW)
    state = load_state(cfg.jobs_dir, cfg.name)
    sids = [state.slurm_id(s.job_id) for s in result.specs]
    now = time.time()
    backend.set_state(sids[:3], "RUNNING")
    backend.elapsed.update({sids[0]: 4 * 3600.0, sids[1]: 4 * 3600.0, sids[2]: 60.0})
    for spec, age in zip(result.specs[:3], (HOURS_3, 30.0, HOURS_3), strict=True):
        progress(spec.run_dir, 20, now - age)
    return backend, result.specs, sids


def test_default_stall_time_is_three_evaluation_intervals_and_at_least_ten_minutes() -> None:
    slurm = Slurm()
    assert slurm.stall_min is None  # derived
    assert slurm.stall_after_s(eval_every=1000, sec_per_iter=0.5) == 1500.0  # 3 x 1000 x 0.5 s
    assert slurm.stall_after_s(eval_every=1000, sec_per_iter=0.1) == 600.0  # 300 s: the floor, 10 min
    assert slurm.stall_after_s(eval_every=20, sec_per_iter=None) is None  # nothing measured: not judged
    assert Slurm(stall_min=5).stall_after_s(eval_every=1000, sec_per_iter=9.0) == 300.0  # set: as given
    with pytest.raises(ConfigError, match="stall_min"):
        make_config(Path("/x"), slurm={"stall_min": 0})


def test_a_job_whose_progress_stopped_shows_stalled_with_the_time_since(cfg, workdir: Path) -> None:
    backend, specs, sids = hung_sweep(cfg)
    snap = snapshot(cfg, backend)
    rows = {r.job_id: r for r in snap.jobs}
    hung, fresh, restarted, queued = (rows[s.job_id] for s in specs)
    assert [r.state for r in (hung, fresh, restarted, queued)] == ["RUNNING", "RUNNING", "RUNNING", "PENDING"]
    assert hung.stalled and HOURS_3 <= hung.since_progress_s < HOURS_3 + 60 and hung.stall_after_s == 600.0
    assert not fresh.stalled and fresh.since_progress_s < 60
    # its progress is 3 h old, but SLURM started this run a minute ago: measured from that start
    assert not restarted.stalled and restarted.since_progress_s == 60.0
    assert not queued.stalled and queued.since_progress_s is None
    assert snap.counts == {"PENDING": 1, "RUNNING": 3}  # a mark on RUNNING, not a state of its own
    assert [r.job_id for r in snap.stalled] == [hung.job_id] and snap.to_dict()["stalled"] == 1

    slow = make_config(workdir, slurm={"stall_min": 200})  # 3 h 20 min: not yet
    assert not any(r.stalled for r in snapshot(slow, backend).jobs)


def test_the_status_commands_show_a_stalled_job(workdir: Path, monkeypatch) -> None:
    path = config_file(workdir)
    backend, specs, sids = hung_sweep(cli_config(path))
    monkeypatch.setattr("fercluster.cli.tables.backend", lambda cfg: backend)
    out = runner.invoke(app, ["status", str(path)])
    assert out.exit_code == 0, out.output
    assert "RUNNING stalled 3:00:" in out.output and "1 running job stalled" in out.output
    assert f"{specs[0].job_id} (SLURM {sids[0]}, node localhost): no progress for 3:00:" in out.output
    assert "--requeue-stalled` requeues them" in out.output
    data = json.loads(runner.invoke(app, ["status", str(path), "--json"]).output)
    jobs = {j["job_id"]: j for j in data["jobs"]}
    assert data["stalled"] == 1 and jobs[specs[0].job_id]["stalled"] is True
    assert jobs[specs[0].job_id]["since_progress_s"] >= HOURS_3 and jobs[specs[1].job_id]["stalled"] is False


def test_requeue_stalled_requeues_through_the_backend_and_counts_a_requeue(cfg, workdir: Path) -> None:
    backend, specs, sids = hung_sweep(cfg)
    before = backend.calls["scontrol"]
    dry = run_sweep(cfg, backend, dry_run=True, requeue_stalled=True, **SWEEP_KW)
    assert [r.job_id for r in dry.stalled] == [specs[0].job_id] and backend.calls["scontrol"] == before
    result = run_sweep(cfg, backend, requeue_stalled=True, **SWEEP_KW)
    assert result.requeued == [specs[0].job_id] and not result.requeue_error
    assert backend.calls["scontrol"] == before + 1  # ONE scontrol requeue
    assert backend.states[sids[0]] == "PENDING" and backend.states[sids[1]] == "RUNNING"  # same id, queued
    entry = load_state(cfg.jobs_dir, cfg.name).jobs[specs[0].job_id]
    assert (entry.requeues, entry.retries, entry.submissions, entry.slurm_ids) == (1, 0, 1, (sids[0],))
    (attempt,) = read_history(specs[0].run_dir)  # the hung job wrote no start here: the coordinator's end alone
    assert (attempt.slurm_id, attempt.ended, attempt.ended_by, attempt.iteration) == (
        sids[0], "stalled", "coordinator", 20)  # fmt: skip
    assert attempt.detail.startswith("no progress for 3:00:")
    assert snapshot(cfg, backend).cost["requeues"] == 1
    again = run_sweep(cfg, backend, requeue_stalled=True, **SWEEP_KW)  # now queued: nothing to requeue
    assert again.requeued == [] and backend.calls["scontrol"] == before + 1


def test_a_stalled_job_ends_its_running_attempt(cfg, workdir: Path) -> None:
    """The coordinator's end goes to the attempt the job started, and wins over the job's later one."""
    from fercluster.train.attempts import END, START, HistoryLine, append

    backend, specs, sids = hung_sweep(cfg)
    run_dir = specs[0].run_dir
    append(run_dir, HistoryLine(START, "t1", time.time() - 4 * 3600, slurm_id=sids[0], node="n1"))
    run_sweep(cfg, backend, requeue_stalled=True, **SWEEP_KW)
    append(run_dir, HistoryLine(END, "t1", time.time(), iteration=21, ended="pre-emption", detail="SIGTERM"))
    (attempt,) = read_history(run_dir)
    assert (attempt.node, attempt.ended, attempt.ended_by, attempt.iteration) == ("n1", "stalled", "coordinator", 21)


def test_a_failed_requeue_counts_nothing(cfg, workdir: Path) -> None:
    backend, specs, _ = hung_sweep(cfg)

    def refuse(ids: Sequence[str]) -> None:
        raise SlurmError("scontrol requeue ... failed (exit 1): Requested operation is presently disabled")

    backend.requeue = refuse
    result = run_sweep(cfg, backend, requeue_stalled=True, **SWEEP_KW)
    assert result.requeued == [] and "presently disabled" in result.requeue_error
    assert load_state(cfg.jobs_dir, cfg.name).jobs[specs[0].job_id].requeues == 0
    assert read_history(specs[0].run_dir) == ()


def test_the_sweep_command_requeues_stalled_jobs(workdir: Path, monkeypatch) -> None:
    path = config_file(workdir)
    backend, specs, sids = hung_sweep(cli_config(path))
    monkeypatch.setattr("fercluster.cli.tables.backend", lambda cfg: backend)
    monkeypatch.setattr("fercluster.orchestration.submit.coordinator.prepare_datasets", lambda cfg, names: None)
    dry = runner.invoke(app, ["sweep", str(path), "--dry-run", "--requeue-stalled"])
    assert dry.exit_code == 0, dry.output
    assert f"would requeue stalled job {specs[0].job_id} (SLURM {sids[0]}): no progress for 3:00:" in dry.output
    out = runner.invoke(app, ["sweep", str(path), "--requeue-stalled", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["requeued"] == [specs[0].job_id] and data["stalled"][0]["slurm_id"] == sids[0]
    none = runner.invoke(app, ["sweep", str(path), "--requeue-stalled"])
    assert "no stalled job" in none.output
    local = runner.invoke(app, ["sweep", str(path), "--local", "--requeue-stalled"])
    assert local.exit_code != 0 and isinstance(local.exception, ConfigError)
    assert "a local run is no queued job" in str(local.exception)


def test_each_backend_requeues_or_refuses(workdir: Path) -> None:
    ran: list[list[str]] = []
    slurm = SlurmBackend(workdir)
    slurm._run = lambda argv, check=True: ran.append(list(argv))  # type: ignore[method-assign]
    slurm.requeue(["1000_0", "1001"])
    assert ran == [["scontrol", "requeue", "1000_0,1001"]]  # ONE call for all of them
    fake = FakeBackend()
    fake.set_state(["7"], "RUNNING")
    fake.set_state(["8"], "COMPLETED")
    fake.requeue(["7", "8"])
    assert fake.states == {"7": "PENDING", "8": "COMPLETED"} and fake.calls["scontrol"] == 1
    with pytest.raises(SlurmError, match="a local run cannot be requeued"):
        LocalBackend({}).requeue(["abc"])


def config_file(root: Path) -> Path:
    cfg = make_config(root)
    data = json.loads(cfg.model_dump_json())
    path = root / "t.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli_config(path: Path):
    from fercluster.config import load_config

    return load_config(path)
