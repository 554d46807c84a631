"""Job rows: run directory first, then ONE SLURM query; dead jobs are never RUNNING."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from orch_helpers import SWEEP_KW, finish

from fercluster.orchestration.backend import Backend, JobQuery
from fercluster.orchestration.fake import FakeBackend
from fercluster.orchestration.local.backend import LocalBackend
from fercluster.orchestration.slurm.backend import SlurmBackend
from fercluster.orchestration.store.entries import JobEntry
from fercluster.orchestration.store.state import SweepState, load_state
from fercluster.orchestration.submit.coordinator import run_sweep
from fercluster.orchestration.watch.monitor import job_rows
from fercluster.orchestration.watch.status import snapshot


def submitted(cfg):
    backend = FakeBackend()
    result = run_sweep(cfg, backend, **SWEEP_KW)
    return backend, result, load_state(cfg.jobs_dir, cfg.name)


def test_one_accounting_query_per_refresh(cfg, workdir: Path) -> None:
    backend, result, _ = submitted(cfg)
    before = backend.calls["sacct"]
    snap = snapshot(cfg, backend).to_dict()
    assert backend.calls["sacct"] - before == 1  # the aggregation job rides in the same query
    assert snap["counts"] == {"PENDING": 4} and snap["aggregate"]["state"] == "PENDING"


def test_states_from_slurm_and_run_directory(cfg, workdir: Path) -> None:
    backend, result, state = submitted(cfg)
    base = result.arrays[0]["slurm_id"]
    backend.set_state([f"{base}_0"], "REQUEUED")
    backend.set_state([f"{base}_1"], "COMPLETED")  # but no job.json: it did not finish its work
    backend.set_state([f"{base}_2"], "RUNNING")
    backend.set_state([f"{base}_3"], "FAILED")
    finish(result.specs[3])  # job.json wins over SLURM's FAILED
    run = Path(result.specs[2].run_dir)
    run.mkdir(parents=True)
    (run / "progress.json").write_text(
        json.dumps({"state": "running", "iteration": 20, "iterations": 40, "best_val_acc": 0.4, "best_test_acc": 0.3})
    )
    rows = job_rows(result.specs, state, backend)
    assert [r.state for r in rows] == ["PENDING", "FAILED", "RUNNING", "COMPLETED"]
    assert "no job.json" in rows[1].reason
    assert (rows[2].iteration, rows[2].iterations, rows[2].val_acc, rows[2].test_acc) == (20, 40, 0.4, 0.3)
    assert (rows[3].val_acc, rows[3].test_acc, rows[3].iteration) == (0.5, 0.6, 40)


def test_job_slurm_forgot_is_failed_lost_not_running(cfg, workdir: Path) -> None:
    backend, result, state = submitted(cfg)
    base = result.arrays[0]["slurm_id"]
    for i in range(4):
        del backend.states[f"{base}_{i}"]  # e.g. purged, or a wrong state file
    rows = job_rows(result.specs, state, backend)
    assert {r.state for r in rows} == {"FAILED"} and all(r.reason.startswith("lost") for r in rows)


def test_array_task_cancelled_while_pending_is_cancelled(cfg, workdir: Path) -> None:
    backend, result, state = submitted(cfg)
    base = result.arrays[0]["slurm_id"]
    del backend.states[f"{base}_1"]  # SLURM keeps no record of it; its siblings are known
    rows = job_rows(result.specs, state, backend)
    assert rows[1].state == "CANCELLED" and "cancelled while pending" in rows[1].reason


def test_fallback_when_accounting_fails(cfg, workdir: Path) -> None:
    backend, result, _ = submitted(cfg)
    backend.set_state([f"{result.arrays[0]['slurm_id']}_0"], "FAILED")
    backend.sacct_ok = False
    snap = snapshot(cfg, backend).to_dict()
    assert snap["source"] == "squeue" and snap["jobs"][0]["state"] == "FAILED"


def test_local_runs_use_their_pid(cfg, workdir: Path) -> None:
    spec = run_sweep(cfg, FakeBackend(), dry_run=True, **SWEEP_KW).specs[0]
    state = SweepState(sweep=cfg.name)
    local = {"pid": os.getpid(), "host": socket.gethostname()}
    state.jobs[spec.job_id] = JobEntry(local=local)
    assert job_rows([spec], state, None)[0].state == "RUNNING"
    state.jobs[spec.job_id] = JobEntry(local={**local, "process_start": 1.0})  # this pid, another process
    assert job_rows([spec], state, None)[0].state == "NOT_SUBMITTED"
    state.jobs[spec.job_id] = JobEntry(local={**local, "pid": 2**22 + 12345})  # no such process
    assert job_rows([spec], state, None)[0].state == "NOT_SUBMITTED"
    run = Path(spec.run_dir)
    run.mkdir(parents=True)
    (run / "progress.json").write_text(json.dumps({"state": "running", "iteration": 20, "iterations": 40}))
    row = job_rows([spec], state, None)[0]
    assert (row.state, row.iteration) == ("NOT_SUBMITTED", 20)
    assert row.reason == "local run stopped at iteration 20; resumes from its checkpoint"


def test_backends_implement_the_protocol(workdir: Path) -> None:
    assert isinstance(FakeBackend(), Backend) and isinstance(SlurmBackend(workdir), Backend)
    local = LocalBackend({})
    assert isinstance(local, JobQuery) and not isinstance(local, Backend)  # the query side only
    assert local.query(["never-run"])["never-run"].state == "NOT_SUBMITTED"


def test_failed_job_of_several_tasks_shows_the_rank_that_failed_first(workdir: Path) -> None:
    """Rank 1 raised (its pickle is the older); rank 0 then failed in a collective: show rank 1."""
    import cloudpickle

    from fercluster.orchestration.watch.monitor import JobRow, failure_details

    folder = workdir / "submitit" / "77"
    folder.mkdir(parents=True)
    outcomes = {1: "Traceback (most recent call last):\n  ...\nRuntimeError: rank 1 ran out of luck\n",
                0: "Traceback (most recent call last):\n  ...\nRuntimeError: Connection closed by peer\n"}  # fmt: skip
    for task, when in ((1, 1000.0), (0, 1005.0)):
        with open(folder / f"77_{task}_result.pkl", "wb") as f:
            cloudpickle.dump(("error", outcomes[task]), f)
        os.utime(folder / f"77_{task}_result.pkl", (when, when))
        (folder / f"77_{task}_log.err").write_text(f"log of task {task}\n")
    row = JobRow("j", "ckplus", 0, "none", 0, "FAILED", slurm_id="77")
    details = failure_details(workdir / "submitit", row)
    assert details.exception == "task 1: RuntimeError: rank 1 ran out of luck"
    assert details.log.endswith("77_1_log.err") and details.log_tail == "log of task 1"
    (folder / "77_1_result.pkl").unlink()  # one task: as before, no task number
    assert failure_details(workdir / "submitit", row).exception == "RuntimeError: Connection closed by peer"


def test_failed_logs_are_read_from_their_end_only(workdir: Path, monkeypatch) -> None:
    """``status --failed`` reads the tail of a log (seeking from its end), never the whole file."""
    from fercluster.orchestration.watch import monitor
    from fercluster.orchestration.watch.monitor import JobRow, failure_details

    folder = workdir / "submitit" / "88"
    folder.mkdir(parents=True)
    log = folder / "88_0_log.err"
    with open(log, "w") as f:
        for i in range(200_000):  # about 3.5 MB
            f.write(f"step {i} loss 0.25\n")
    read = []
    real_open = open

    class Counting:
        def __init__(self, f) -> None:
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()

        def seek(self, *args):
            return self.f.seek(*args)

        def read(self, n: int = -1) -> bytes:
            data = self.f.read(n)
            read.append(len(data))
            return data

    monkeypatch.setattr(monitor, "open", lambda path, mode="r": Counting(real_open(path, mode)), raising=False)
    monkeypatch.setattr(Path, "read_text", lambda *a, **k: (_ for _ in ()).throw(AssertionError("whole log read")))
    row = JobRow("j", "ckplus", 0, "none", 0, "FAILED", slurm_id="88")
    details = failure_details(workdir / "submitit", row, tail_lines=20)
    assert details.log_tail.splitlines() == [f"step {i} loss 0.25" for i in range(199_980, 200_000)]
    assert sum(read) <= monitor.TAIL_CHUNK  # 20 short lines: one chunk from the end


def test_log_tail_of_long_lines_and_short_files(workdir: Path) -> None:
    from fercluster.orchestration.watch.monitor import log_tail

    path = workdir / "a.log"
    path.write_bytes(b"first\nsecond\nthird")  # no newline at the end
    assert log_tail(path, 2) == ["second", "third"] and log_tail(path, 10) == ["first", "second", "third"]
    path.write_bytes(b"x" * 100_000 + b"\nlast line\n")  # a line longer than the bound is left out, cut
    assert log_tail(path, 5, max_bytes=1000) == ["last line"]
    path.write_bytes(b"")
    assert log_tail(path, 5) == []


def test_a_job_that_cannot_start_is_said_by_status_and_sweep(cfg, workdir: Path, monkeypatch) -> None:
    """A pending reason that waiting never clears (PartitionTimeLimit): a warning line in `status`,
    `status --json` and `sweep`, naming the reason, what to do and the SLURM ids; Priority is not one."""
    from typer.testing import CliRunner

    from fercluster.cli.main import _register, app

    backend, result, _ = submitted(cfg)
    base = result.arrays[0]["slurm_id"]
    backend.reasons = {f"{base}_0": "PartitionTimeLimit", f"{base}_1": "PartitionTimeLimit", f"{base}_2": "Priority"}
    [stuck] = snapshot(cfg, backend).cannot_start
    assert stuck.reason == "PartitionTimeLimit" and stuck.slurm_ids == (f"{base}_0", f"{base}_1")
    again = run_sweep(cfg, backend, **SWEEP_KW)
    assert [c.job_ids for c in again.cannot_start] == [stuck.job_ids] and again.arrays == []
    cfg_file = workdir / "c.yaml"
    cfg_file.write_text(cfg.model_dump_json())
    monkeypatch.setattr("fercluster.cli.tables.backend", lambda cfg: backend)
    monkeypatch.setattr("fercluster.orchestration.submit.coordinator.prepare_datasets", lambda cfg, names: None)
    _register()
    line = (
        "warning: 2 pending jobs cannot start (PartitionTimeLimit): its time limit exceeds its partition's: "
        "lower slurm.time_min or change slurm.partition;"
    )
    for command in (["status", str(cfg_file)], ["sweep", str(cfg_file)]):
        out = CliRunner().invoke(app, command)
        assert out.exit_code == 0, out.output
        text = " ".join(out.output.split())
        assert line in text and f"(SLURM {base}_0, {base}_1)" in text and "Priority" not in text
    snap = json.loads(CliRunner().invoke(app, ["status", str(cfg_file), "--json"]).stdout)
    assert [c["slurm_ids"] for c in snap["cannot_start"]] == [[f"{base}_0", f"{base}_1"]]
    backend.reasons = {}
    assert snapshot(cfg, backend).cannot_start == ()
