"""Fault injection: stand-in SLURM commands on PATH (``fakeslurm.py``) that fail, time out,
rate-limit, lag and show other users' jobs; fercluster never submits a job twice and never asks
the whole cluster."""

from __future__ import annotations

import getpass
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from orch_helpers import SWEEP_KW, finish, make_config

from fercluster.orchestration.backend import PartialLookup
from fercluster.orchestration.fake import FakeBackend
from fercluster.orchestration.slurm.backend import SlurmBackend
from fercluster.orchestration.store.state import load_state
from fercluster.orchestration.submit.coordinator import run_sweep
from fercluster.orchestration.submit.plan import expand
from fercluster.orchestration.watch.status import snapshot, watch_interval
from fercluster.train.attempts import END, START, HistoryLine, append
from fercluster.train.attempts import FAILED as FAILED_END

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

    def leave_queue(self) -> None:
        """Every job ends and leaves squeue (MinJobAge); sacct still has them (unless it fails)."""
        world = self.world()
        for job in world["jobs"]:
            job["gone"] = True
        (self.home / "world.json").write_text(json.dumps(world))

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

    def submit(self, submission):
        ids = super().submit(submission)
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
    assert load_state(cfg.jobs_dir, cfg.name).arrays[name].slurm_id == newer
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


# -- status: one sacct for the sweep's ids, fallbacks for those ids only, stale states in outages --
def _submitted(workdir: Path, fake: FakeSlurm):
    cfg = _cfg(workdir)
    backend = SlurmBackend(cfg.jobs_dir / "submitit", timeout_s=1.0)
    run_sweep(cfg, backend, **SWEEP_KW)
    for i in range(30):  # a busy cluster: other users' jobs, one with the sweep's own array name
        fake.add_job(f"their-job-{i}", "alice", n=3, state="RUNNING")
    fake.clear_calls()
    return cfg, backend


def _scoped(fake: FakeSlurm) -> None:
    """No query the stand-ins saw asked about the whole cluster."""
    assert not fake.calls("scontrol")
    for call in fake.calls("squeue"):
        assert "--me" in call and "-j" in call, call
    for call in fake.calls("sacct"):
        assert "-j" in call, call


def test_healthy_refresh_is_one_sacct_for_the_sweeps_ids(workdir: Path, fakeslurm: FakeSlurm) -> None:
    cfg, backend = _submitted(workdir, fakeslurm)
    snap = snapshot(cfg, backend).to_dict()
    calls = fakeslurm.calls()
    assert [c[0] for c in calls] == ["sacct"] and snap["stale"] is None
    mine = sorted(j["id"] for j in fakeslurm.world()["jobs"] if j["user"] == getpass.getuser())
    assert sorted(calls[0][calls[0].index("-j") + 1].split(",")) == mine
    assert snap["counts"] == {"PENDING": 4}


def test_sacct_lag_asks_squeue_for_the_missing_ids_only(workdir: Path, fakeslurm: FakeSlurm) -> None:
    cfg, backend = _submitted(workdir, fakeslurm)
    base = load_state(cfg.jobs_dir, cfg.name).arrays.popitem()[1].slurm_id
    fakeslurm.fault(lag=[f"{base}_1"])
    snap = snapshot(cfg, backend).to_dict()
    squeue = fakeslurm.calls("squeue")
    assert [c[0] for c in fakeslurm.calls()] == ["sacct", "squeue"]
    assert squeue[0][squeue[0].index("-j") + 1] == base  # only the array that lags
    assert snap["counts"] == {"PENDING": 4} and snap["stale"] is None
    _scoped(fakeslurm)


@pytest.mark.parametrize("fault", ["fail", "timeout", "ratelimit"])
def test_outage_shows_last_known_states_stale_then_converges(workdir: Path, fakeslurm: FakeSlurm, fault: str) -> None:
    cfg, backend = _submitted(workdir, fakeslurm)
    fakeslurm.set_states("RUNNING")
    assert snapshot(cfg, backend).to_dict()["counts"] == {"RUNNING": 4}  # remembered in known.json
    fakeslurm.clear_calls()
    fakeslurm.fault(sacct=fault, squeue=fault)
    snap = snapshot(cfg, backend).to_dict()
    assert sorted(c[0] for c in fakeslurm.calls()) == ["sacct", "squeue"]  # no storm, no scontrol
    assert snap["stale"] and snap["counts"] == {"RUNNING": 4}
    assert all(j["reason"].startswith("stale (last known") for j in snap["jobs"])
    _scoped(fakeslurm)
    before = sorted(p.name for p in (cfg.jobs_dir).iterdir())
    result = run_sweep(cfg, backend, **SWEEP_KW)  # a sweep in the outage submits nothing again
    assert result.arrays == [] and len(result.diff.active) == 4
    assert sorted(p.name for p in (cfg.jobs_dir).iterdir()) == before
    fakeslurm.fault()
    fakeslurm.set_states("COMPLETED")
    snap = snapshot(cfg, backend).to_dict()
    assert snap["stale"] is None and snap["counts"] == {"FAILED": 4}  # COMPLETED without job.json
    assert all("no job.json" in j["reason"] for j in snap["jobs"])


def test_sacct_down_squeue_answers_for_the_ids(workdir: Path, fakeslurm: FakeSlurm) -> None:
    cfg, backend = _submitted(workdir, fakeslurm)
    fakeslurm.set_states("RUNNING")
    fakeslurm.fault(sacct="ratelimit")
    snap = snapshot(cfg, backend).to_dict()
    assert [c[0] for c in fakeslurm.calls()] == ["sacct", "squeue"]
    assert snap["counts"] == {"RUNNING": 4} and "rate limit" in snap["stale"]
    assert snap["source"] == "squeue"
    _scoped(fakeslurm)


def test_without_accounting_a_job_that_left_the_queue_unseen_is_failed_not_stale_and_retried(
    workdir: Path, fakeslurm: FakeSlurm
) -> None:
    """sacct fails (no accounting), squeue answers and no longer shows the jobs, no job.json: they
    ended unseen. Failed, with what their history says, and retried; never "stale" for ever."""
    cfg, backend = _submitted(workdir, fakeslurm)
    fakeslurm.set_states("RUNNING")
    assert snapshot(cfg, backend).to_dict()["counts"] == {"RUNNING": 4}  # remembered in known.json
    specs = expand(cfg)
    token = "a1"
    sid = next(j["slurm_id"] for j in snapshot(cfg, backend).to_dict()["jobs"] if j["job_id"] == specs[0].job_id)
    append(specs[0].run_dir, HistoryLine(START, token, 1.0, slurm_id=sid))
    append(specs[0].run_dir, HistoryLine(END, token, 2.0, slurm_id=sid, ended=FAILED_END, detail="ValueError: nan"))
    fakeslurm.fault(sacct="fail")
    fakeslurm.leave_queue()
    snap = snapshot(cfg, backend).to_dict()
    assert snap["counts"] == {"FAILED": 4} and all("ended unseen" in j["reason"] for j in snap["jobs"])
    reasons = {j["job_id"]: j["reason"] for j in snap["jobs"]}
    assert "its history says: failed (ValueError: nan)" in reasons[specs[0].job_id]
    plain = run_sweep(cfg, backend, **SWEEP_KW)
    assert plain.arrays == [] and len(plain.diff.active) == 0  # not held as "unknown"
    retried = run_sweep(cfg, backend, retry_failed=True, **SWEEP_KW)
    assert [a["n"] for a in retried.arrays] == [4]
    fakeslurm.fault(sacct="fail", squeue="fail")  # neither answers: stale, never taken for ended
    snap = snapshot(cfg, backend).to_dict()
    assert snap["stale"] and "FAILED" not in snap["counts"]


@pytest.mark.parametrize("fault", ["disabled", "fail"])
def test_a_lookup_says_whether_the_site_has_no_accounting_or_an_outage(
    workdir: Path, fakeslurm: FakeSlurm, fault: str
) -> None:
    """Only a site without accounting lets a pending record squeue does not show go after the bound;
    in an outage (slurmdbd down) the submission may have run and ended: the record waits."""
    backend = SlurmBackend(workdir / "submitit", timeout_s=1.0)
    fakeslurm.fault(sacct=fault)
    with pytest.raises(PartialLookup) as lookup:
        backend.find(["fc-t-abc-123"])
    assert lookup.value.found == {} and lookup.value.disabled == (fault == "disabled")


def test_completed_jobs_files_are_read_once(cfg, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fercluster.orchestration.store import index as index_mod
    from fercluster.orchestration.watch import monitor

    backend = FakeBackend()
    result = run_sweep(cfg, backend, **SWEEP_KW)
    for spec in result.specs[:3]:
        finish(spec)
    reads: list[str] = []
    progress_real, record_real = monitor.read_progress, index_mod.read_job_record
    monkeypatch.setattr(monitor, "read_progress", lambda d: reads.append("progress.json") or progress_real(d))
    monkeypatch.setattr(index_mod, "read_job_record", lambda d: reads.append("job.json") or record_real(d))
    assert snapshot(cfg, backend).to_dict()["counts"] == {"COMPLETED": 3, "PENDING": 1}
    assert reads.count("job.json") == 3
    reads.clear()
    before = backend.calls["sacct"]
    snap = snapshot(cfg, backend).to_dict()
    assert snap["counts"] == {"COMPLETED": 3, "PENDING": 1} and snap["jobs"][0]["val_acc"] == 0.5
    assert reads == ["progress.json"]  # the one job whose state can change
    assert backend.calls["sacct"] - before == 1
    finish(result.specs[0], test=0.75)  # a record replaced in place (a rerun): read again
    assert snapshot(cfg, backend).jobs[0].test_acc == 0.75 and reads.count("job.json") == 1


def test_fake_backend_outage_and_recovery(cfg, workdir: Path) -> None:
    backend = FakeBackend()
    result = run_sweep(cfg, backend, **SWEEP_KW)
    base = result.arrays[0]["slurm_id"]
    backend.set_state([f"{base}_{i}" for i in range(4)], "RUNNING")
    snapshot(cfg, backend).to_dict()
    backend.failing = {"sacct", "squeue"}
    calls = sum(backend.calls.values())
    snap = snapshot(cfg, backend).to_dict()
    assert sum(backend.calls.values()) - calls == 2 and snap["stale"] and snap["counts"] == {"RUNNING": 4}
    backend.failing = set()
    backend.set_state([f"{base}_{i}" for i in range(4)], "FAILED")
    snap = snapshot(cfg, backend).to_dict()
    assert snap["stale"] is None and snap["counts"] == {"FAILED": 4}


def test_watch_interval_has_a_floor_and_backs_off() -> None:
    assert watch_interval(5, 30, 0) == 30 and watch_interval(60, 30, 0) == 60
    assert [watch_interval(30, 30, n) for n in range(6)] == [30, 60, 120, 240, 480, 600]


def test_watch_raises_an_interval_below_the_floor(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from fercluster.cli.main import _register, app

    _register()
    cfg_file = workdir / "w.yaml"
    cfg_file.write_text(
        json.dumps(
            {
                "name": "w",
                "datasets": {"ckplus": {"kind": "ckplus", "root": "raw", "classes": 8}},
                "grid": [{"dataset": "ckplus", "folds": [0], "variants": ["none"]}],
                "train": {"iterations": 40, "k": 0.7},
            }
        )  # fmt: skip
    )
    backend = FakeBackend()
    monkeypatch.setattr("fercluster.cli.tables.backend", lambda cfg: backend)
    monkeypatch.setattr("fercluster.orchestration.submit.jobs.training_callable", lambda: print)
    monkeypatch.setattr("fercluster.orchestration.submit.coordinator.prepare_datasets", lambda cfg, names: None)
    runner = CliRunner()
    assert runner.invoke(app, ["sweep", str(cfg_file)]).exit_code == 0
    backend.set_state(list(backend.states), "FAILED")
    out = runner.invoke(app, ["status", str(cfg_file), "--watch", "--interval", "5"])
    assert out.exit_code == 0, out.output
    assert "--interval 5 s is below slurm.watch_floor_s: refreshing every 30 s" in out.output
    assert "next refresh in 30 s" in out.output


# -- a broken job.json is a failed job everywhere -------------------------------------------------
@pytest.mark.parametrize(
    ("content", "why"),
    [('{"status": "compl', "JSONDecodeError"), ('{"status": "completed"}', "lacks val_acc, test_acc"), ("[1]", "list")],
)
def test_broken_job_record_is_failed_everywhere_and_rerun(cfg, workdir: Path, content: str, why: str) -> None:
    backend = FakeBackend()
    first = run_sweep(cfg, backend, **SWEEP_KW)
    base = first.arrays[0]["slurm_id"]
    backend.set_state([f"{base}_{i}" for i in range(4)], "COMPLETED")
    for spec in first.specs[1:]:
        finish(spec)
    broken = first.specs[0]
    Path(broken.run_dir).mkdir(parents=True)
    Path(broken.run_dir, "job.json").write_text(content)
    dry = run_sweep(cfg, backend, dry_run=True, **SWEEP_KW)
    plain = run_sweep(cfg, backend, **SWEEP_KW)
    snap = snapshot(cfg, backend).to_dict()
    for result in (dry, plain):
        assert [s.job_id for s, _ in result.diff.failed] == [broken.job_id] and len(result.diff.done) == 3
        assert why in result.diff.failed[0][1].reason and "corrupt job.json" in result.diff.failed[0][1].reason
    assert snap["counts"] == {"FAILED": 1, "COMPLETED": 3} and why in snap["jobs"][0]["reason"]
    assert plain.arrays == [] and backend.calls["sbatch"] == 2
    from fercluster.analysis.collect import collect

    assert broken.job_id in {s["job_id"] for s in collect(cfg).skipped}  # the aggregation: failed, with why
    retried = run_sweep(cfg, backend, retry_failed=True, **SWEEP_KW)
    assert [a["n"] for a in retried.arrays] == [1] and backend.submitted[-2].args == (broken,)


def test_the_job_moves_a_broken_record_aside_and_runs_again(cfg, workdir: Path, monkeypatch) -> None:
    from fercluster.train import job as job_mod

    spec = run_sweep(cfg, FakeBackend(), dry_run=True, **SWEEP_KW).specs[0]
    Path(spec.run_dir).mkdir(parents=True)
    Path(spec.run_dir, "job.json").write_text("{not json")

    class Ran(Exception):
        pass

    monkeypatch.setattr(job_mod.code, "check_imported_snapshot", lambda: (_ for _ in ()).throw(Ran()))
    with pytest.raises(Ran):  # past the record: it trains again
        job_mod.run_job(spec)
    assert not Path(spec.run_dir, "job.json").exists()
    assert [p.name.startswith("job.json.broken-") for p in Path(spec.run_dir).iterdir()] == [True]


# -- sbatch failing part-way: a summary, what went in stands, the rest waits; sbatch bounded ----
@pytest.mark.parametrize("fault", ["fail", "timeout"])
def test_sbatch_failing_part_way_ends_with_a_summary(workdir: Path, fakeslurm: FakeSlurm, fault: str) -> None:
    from submitit.slurm.slurm import SlurmExecutor

    original = SlurmExecutor._make_submission_command
    cfg = _cfg(workdir)
    backend = SlurmBackend(cfg.jobs_dir / "submitit", timeout_s=5.0, sbatch_timeout_s=1.0)
    fakeslurm.fault(sbatch=fault, sbatch_ok=1, max_array=2)  # the second array on is refused
    result = run_sweep(cfg, backend, **SWEEP_KW)
    assert [a["n"] for a in result.arrays] == [2] and len(result.diff.waiting) == 2
    assert result.diff.summary()["submit"] == 2
    assert result.aggregate_id is None
    # refused as well: said; after a time-out (that array may be in) it waits for the next sweep
    assert ("aggregation job: " in result.submit_error) == (fault == "fail")
    assert result.code["lines"] == [  # what went in, not what was planned
        "code: did run 2 of 4 jobs on live code: each imports the code installed when it starts (slurm.code: live)"
    ]
    if fault == "timeout":  # the bound holds for the array's sbatch
        assert result.submit_error.count("did not finish within 1 s") == 1
        assert SlurmExecutor._make_submission_command is original  # through a subclass: submitit untouched
    else:
        assert "Unable to contact slurm controller" in result.submit_error
    fakeslurm.fault(max_array=2)  # the limit lifts: the next sweep submits the rest, nothing twice
    again = run_sweep(cfg, backend, **SWEEP_KW)
    assert [a["n"] for a in again.arrays] == [2] and again.submit_error == "" and again.aggregate_id
    mine = [j for j in fakeslurm.world()["jobs"] if "aggregate" not in j["name"]]
    assert sum(j["n"] for j in mine) == 4 and load_state(cfg.jobs_dir, cfg.name).pending == {}


def test_cli_sweep_prints_the_summary_then_fails(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from fercluster.cli.main import _register, app
    from fercluster.orchestration.backend import SubmitLimit

    LIMIT = "the QOS limit on jobs submitted per user (MaxSubmitJobsPerUser)"

    class Refusing(FakeBackend):
        def submit(self, submission):
            if submission.kind == "train" and self.calls["sbatch"] >= 1:  # the aggregation job goes in
                self.calls["sbatch"] += 1
                raise SubmitLimit("sbatch: error: QOSMaxSubmitJobPerUserLimit", LIMIT)
            return super().submit(submission)

    _register()
    cfg_file = workdir / "p.yaml"
    cfg_file.write_text(
        json.dumps(
            {
                "name": "p",
                "datasets": {"ckplus": {"kind": "ckplus", "root": "raw", "classes": 8}},
                "grid": [{"dataset": "ckplus", "folds": [0, 1, 2], "variants": ["none"]}],
                "train": {"iterations": 40, "k": 0.7},
            }
        )  # fmt: skip
    )
    backend = Refusing(max_array=2)
    monkeypatch.setattr("fercluster.cli.tables.backend", lambda cfg: backend)
    monkeypatch.setattr("fercluster.orchestration.submit.jobs.training_callable", lambda: print)
    monkeypatch.setattr("fercluster.orchestration.submit.coordinator.prepare_datasets", lambda cfg, names: None)
    out = CliRunner().invoke(app, ["sweep", str(cfg_file)])
    assert out.exit_code == 1, out.output
    assert "p: 3 jobs; did submit 2, retry 0; skip 0 done; leave 0 queued/running; 0 failed not retried; 1 waiting" in (
        out.output
    )
    assert "sbatch failed part-way: sbatch: error: QOSMaxSubmitJobPerUserLimit; 1 arrays (2 jobs)" in out.output
    assert "submitted aggregation job" in out.output
    assert "(waits: the QOS limit on jobs submitted per user (MaxSubmitJobsPerUser) is reached" in out.output


# -- cost accounting: GPU-hours and CPU-hours from sacct, summed per sweep -----------------------
def test_cost_from_alloctres_and_elapsedraw() -> None:
    from fercluster.orchestration.slurm.parse import parse_sacct

    text = (
        "77_0|COMPLETED|0:0|01:00:00|n1|None|billing=8,cpu=8,gres/gpu=2,mem=32G,node=1|3600\n"
        "77_0.batch|COMPLETED|0:0|01:00:00|n1||cpu=8,gres/gpu=2,mem=32G,node=1|3600\n"
        "78|FAILED|1:0|00:30:00|n2|None|cpu=4,mem=8G,node=1|1800\n"
        "79|PENDING|0:0|00:00:00|None assigned|Priority||0\n"
    )
    jobs = parse_sacct(text)
    assert (jobs["77_0"].gpu_hours, jobs["77_0"].cpu_hours) == (2.0, 8.0)
    assert (jobs["78"].gpu_hours, jobs["78"].cpu_hours) == (0.0, 2.0)  # no GPU allocated
    assert jobs["79"].gpu_hours is None  # nothing allocated yet: not known


def test_status_sums_the_sweeps_cost_and_requeues(cfg, workdir: Path) -> None:
    backend = FakeBackend()  # every job: 1 CPU, 1 GPU, 60 s
    result = run_sweep(cfg, backend, **SWEEP_KW)
    base = result.arrays[0]["slurm_id"]
    backend.set_state([f"{base}_{i}" for i in range(4)], "COMPLETED")
    backend.set_state([f"{base}_0"], "PREEMPTED")
    for spec in result.specs[1:]:
        finish(spec)
    run_sweep(cfg, backend, **SWEEP_KW)  # requeues the pre-empted job
    snap = snapshot(cfg, backend).to_dict()
    # the runs the sweeps and status heard of: the pre-empted run and the first aggregation job (the
    # second sweep saw them), 3 completed tasks, the requeued run, the aggregation job after it
    assert snap["cost"]["runs"] == 7
    assert snap["cost"]["requeues"] == 1 and snap["cost"]["gpu_hours"] == round(7 * 60 / 3600, 2)
    assert (
        snap["cost"]["line"] == f"t: 4 jobs, {7 * 60 / 3600:.1f} GPU-hours, {7 * 60 / 3600:.1f} CPU-hours, 1 requeues"
    )
    assert [j["gpu_hours"] for j in snap["jobs"][1:]] == [60 / 3600] * 3  # completed: their final cost, cached
    before = backend.calls["sacct"]
    again = snapshot(cfg, backend).to_dict()
    assert again["cost"] == snap["cost"] and backend.calls["sacct"] - before == 1


# -- cancel takes the sweep's lock: it never interleaves with a `sweep` submitting -----------------
def test_cancel_waits_for_the_sweep_lock_and_names_its_holder(cfg, workdir: Path) -> None:
    from fercluster.lock import LockBusy
    from fercluster.orchestration.store.state import sweep_lock
    from fercluster.orchestration.watch.status import cancel

    backend = FakeBackend()
    run_sweep(cfg, backend, **SWEEP_KW)
    with sweep_lock(cfg.jobs_dir):  # a `sweep` of the same sweep, submitting
        with pytest.raises(LockBusy) as info:
            cancel(cfg, backend, lock_timeout_s=0)
        assert backend.calls["scancel"] == 0
    message = str(info.value)
    assert message.startswith(f"cancel: nothing cancelled: sweep {cfg.name}: the lock ")
    assert f"held by process {os.getpid()}" in message and message.endswith("once it has ended")
    assert len(cancel(cfg, backend)) == 5 and backend.calls["scancel"] == 1  # the lock is free: 4 tasks + aggregation


# -- the cluster's MaxJobCount: said at sbatch's first "sleeping and retrying", not after the bound ---
def test_max_job_count_is_said_at_sbatchs_first_message(workdir: Path, fakeslurm: FakeSlurm, monkeypatch) -> None:
    from fercluster.orchestration.slurm.executor import BoundedExecutor

    # the stand-in sleeps 30 s before its retry where sbatch sleeps 1 s: stopped within half of it, surely before
    monkeypatch.setattr(BoundedExecutor, "first_retry_sleep_s", 60.0)
    cfg = _cfg(workdir)
    backend = SlurmBackend(cfg.jobs_dir / "submitit", timeout_s=5.0, sbatch_timeout_s=20.0)
    fakeslurm.fault(sbatch="busy", max_jobs=5000)
    limit = "the cluster's job limit (MaxJobCount = 5000, every user's jobs together)"
    for _ in range(2):  # every re-run says so at once; none waits out the 20 s bound
        result = run_sweep(cfg, backend, **SWEEP_KW)
        assert result.arrays == [] and result.aggregate_id is None and len(result.diff.waiting) == 4
        assert "SLURM refuses new jobs (Slurm temporarily unable to accept job, sleeping and retrying)" in (
            result.submit_error
        )
        assert f"{limit} is reached; stopped at sbatch's first retry instead of waiting 20 s" in result.submit_error
        assert result.diff.waiting[0][1].startswith(f"waits: {limit} is reached; a later `sweep` submits it once")
        assert load_state(cfg.jobs_dir, cfg.name).pending == {}  # sure: nothing went in, no record to look up
        assert result.code["lines"] == [
            "code: submitted none of the 4 jobs meant to run on live code: each imports the code installed "
            "when it starts (slurm.code: live)"
        ]
    assert not fakeslurm.calls("sbatch-retry")  # stopped before sbatch asked again
    # per run: the array of 4, then halves of 2 and 1 (MaxJobCount counts array tasks: a smaller one may
    # fit), each stopped at once; the aggregation job not tried
    assert len(fakeslurm.calls("sbatch")) == 6


def _watch(watch: Path, bounds: tuple[str, str, str], script: str) -> subprocess.CompletedProcess[str]:
    """``sbatch_watch`` (BOUND_S KILL_AFTER_S SURE_S) around a Python stand-in for sbatch."""
    cmd = [sys.executable, "-I", str(watch), *bounds, sys.executable, "-c", script]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_sbatch_watch_passes_sbatchs_answer_through(tmp_path: Path) -> None:
    """Without a refusal the watcher is transparent: sbatch's stdout, stderr and exit code."""
    from fercluster.orchestration.slurm import executor, sbatch_watch

    script = "import sys; print('Submitted batch job 42'); print('sbatch: warning: x', file=sys.stderr); sys.exit(3)"
    proc = _watch(executor.WATCH, ("5", "1", "0.5"), script)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "Submitted batch job 42\n", "sbatch: warning: x\n")
    busy = "import sys, time; print('sbatch: error: Slurm job queue full, sleeping and retrying.', file=sys.stderr, flush=True); time.sleep(60)"
    proc = _watch(executor.WATCH, ("30", "1", "60"), busy)
    assert proc.returncode == sbatch_watch.REFUSED and proc.stderr.splitlines() == [
        "sbatch: error: Slurm job queue full, sleeping and retrying.",
        f"{sbatch_watch.MARK} (SLURM refuses new jobs)",
    ]
