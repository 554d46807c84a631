"""The coordinator against the fake SLURM backend: arrays, idempotence, lock, orphans, retry, prune."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from orch_helpers import SWEEP_KW, finish, make_config

from fercluster.orchestration.backend import Resources, Submission
from fercluster.orchestration.fake import FakeBackend
from fercluster.orchestration.store.state import load_state, state_path
from fercluster.orchestration.submit.coordinator import run_sweep
from fercluster.orchestration.submit.plan import expand


def test_submits_arrays_split_at_max_array_size_then_aggregation(workdir: Path) -> None:
    cfg = make_config(workdir, grid=[{"dataset": "ckplus", "folds": "all", "variants": ["none"]}])
    backend = FakeBackend(max_array=4)
    result = run_sweep(cfg, backend, **SWEEP_KW)
    assert [a["n"] for a in result.arrays] == [4, 4, 2]
    assert sum(a["throttle"] for a in result.arrays) <= cfg.slurm.array_parallelism
    train, agg = backend.submitted[:3], backend.submitted[3]
    assert [len(s.args) for s in train] == [4, 4, 2] and {s.submission.kind for s in train} == {"train"}
    assert [s.job_id for sub in train for s in sub.args] == [s.job_id for s in expand(cfg)]  # plan order
    assert agg.submission.after == tuple(sub.ids[0].split("_")[0] for sub in train)  # every array, oldest first
    assert agg.params["dependency"] == "afterany:" + ":".join(agg.submission.after)
    assert agg.submission.resources.gpus_per_node == 0 and "gpus_per_node" not in agg.params
    state = load_state(cfg.jobs_dir, cfg.name)
    rec = state.jobs[expand(cfg)[5].job_id]
    assert rec.slurm_ids == (train[1].ids[1],) and rec.task == 1 and rec.submissions == 1
    assert state.pending == {} and state.aggregate.slurm_id == agg.ids[0]
    for name in [s.name for s in train]:
        assert name.startswith("fc-t-") and name in state.arrays  # deterministic names


def test_rerun_submits_nothing_queued_running_or_done(cfg, workdir: Path) -> None:
    backend = FakeBackend()
    first = run_sweep(cfg, backend, **SWEEP_KW)
    ids = first.arrays[0]
    backend.set_state([f"{ids['slurm_id']}_0"], "RUNNING")
    backend.set_state([f"{ids['slurm_id']}_1"], "COMPLETED")
    finish(first.specs[1])
    calls = backend.calls["sbatch"]
    again = run_sweep(cfg, backend, **SWEEP_KW)
    assert backend.calls["sbatch"] == calls and again.arrays == [] and again.aggregate_id is None
    assert again.diff.summary() == {"submit": 0, "retry": 0, "requeue": 0, "done": 1, "active": 3, "failed": 0,
                                     "removed": 0}  # fmt: skip


def test_dry_run_touches_nothing(cfg, workdir: Path) -> None:
    backend = FakeBackend()
    result = run_sweep(cfg, backend, dry_run=True, **SWEEP_KW)
    assert len(result.diff.submit) == 4 and backend.calls["sbatch"] == 0
    assert not state_path(cfg.jobs_dir).exists()


def test_done_job_is_completed_whatever_slurm_says(cfg, workdir: Path) -> None:
    backend = FakeBackend()
    first = run_sweep(cfg, backend, **SWEEP_KW)
    backend.set_state(first.arrays and [f"{first.arrays[0]['slurm_id']}_0"], "FAILED")
    finish(first.specs[0])
    again = run_sweep(cfg, backend, retry_failed=True, **SWEEP_KW)
    assert first.specs[0] in again.diff.done and again.diff.retry == []


def test_retry_failed_is_explicit_and_bounded(cfg, workdir: Path) -> None:
    backend = FakeBackend()
    first = run_sweep(cfg, backend, **SWEEP_KW)
    base = first.arrays[0]["slurm_id"]
    backend.set_state([f"{base}_2"], "CANCELLED")
    backend.set_state([f"{base}_0", f"{base}_1", f"{base}_3"], "RUNNING")
    plain = run_sweep(cfg, backend, **SWEEP_KW)
    assert plain.arrays == [] and [s.job_id for s, _ in plain.diff.failed] == [first.specs[2].job_id]
    assert "cancelled" in plain.diff.failed[0][1].reason
    retried = run_sweep(cfg, backend, retry_failed=True, **SWEEP_KW)
    assert [a["n"] for a in retried.arrays] == [1]
    assert backend.submitted[-2].args == (first.specs[2],)  # only that job; then the aggregation
    rec = load_state(cfg.jobs_dir, cfg.name).jobs[first.specs[2].job_id]
    assert rec.retries == 1 and rec.submissions == 2 and len(rec.slurm_ids) == 2
    backend.set_state([rec.slurm_ids[-1]], "FAILED")
    exhausted = run_sweep(cfg, backend, retry_failed=True, **SWEEP_KW)  # max_retries: 1
    assert exhausted.arrays == [] and "retries exhausted" in exhausted.diff.failed[0][1].reason


def test_prune_cancels_jobs_removed_from_the_config(workdir: Path) -> None:
    backend = FakeBackend()
    cfg = make_config(workdir)
    first = run_sweep(cfg, backend, **SWEEP_KW)
    smaller = make_config(workdir, grid=[{"dataset": "ckplus", "folds": [0], "variants": ["none", "AD"]}])
    kept = run_sweep(smaller, backend, **SWEEP_KW)
    assert sorted(kept.diff.removed) == sorted(s.job_id for s in first.specs[2:])
    assert backend.calls["scancel"] == 0
    pruned = run_sweep(smaller, backend, prune=True, **SWEEP_KW)
    assert sorted(pruned.cancelled) == sorted(s.job_id for s in first.specs[2:])
    base = first.arrays[0]["slurm_id"]
    assert [backend.states[f"{base}_{i}"] for i in range(4)] == ["PENDING", "PENDING", "CANCELLED", "CANCELLED"]
    state = load_state(cfg.jobs_dir, cfg.name)
    assert set(state.removed) == {s.job_id for s in first.specs[2:]} and len(state.jobs) == 2


def test_crash_between_sbatch_and_recording_is_adopted(cfg, workdir: Path) -> None:
    backend = FakeBackend(crash_after_sbatch=True)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, backend, **SWEEP_KW)
    state = load_state(cfg.jobs_dir, cfg.name)
    assert len(state.pending) == 1 and state.jobs == {}  # pending written before sbatch, no id
    name = next(iter(state.pending))
    result = run_sweep(cfg, backend, **SWEEP_KW)
    assert result.adopted == [name] and backend.adopted == [(name, backend.names[name])]
    assert backend.calls["sbatch"] == 2  # the orphan array + the aggregation: no second training array
    state = load_state(cfg.jobs_dir, cfg.name)
    assert state.pending == {} and state.arrays[name].slurm_id == backend.names[name]
    assert all(rec.slurm_ids for rec in state.jobs.values()) and len(state.jobs) == 4


def test_pending_record_without_a_slurm_job_is_dropped_and_resubmitted(cfg, workdir: Path) -> None:
    backend = FakeBackend(crash_after_sbatch=True)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, backend, **SWEEP_KW)
    fresh = FakeBackend()  # SLURM never saw that sbatch
    result = run_sweep(cfg, fresh, **SWEEP_KW)
    assert result.adopted == [] and [a["n"] for a in result.arrays] == [4]


class SlowBackend(FakeBackend):
    def submit(self, submission):
        time.sleep(0.5)
        return super().submit(submission)


def test_two_sweeps_at_once_do_not_double_submit(cfg, workdir: Path) -> None:
    backend = SlowBackend()
    errors = []

    def go() -> None:
        try:
            run_sweep(cfg, backend, **SWEEP_KW)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len([s for s in backend.submitted if len(s.args) == 4]) == 1


def test_state_folder_not_world_writable(cfg, workdir: Path) -> None:
    old = os.umask(0)
    try:
        run_sweep(cfg, FakeBackend(), **SWEEP_KW)
    finally:
        os.umask(old)
    for folder in (cfg.jobs_dir, cfg.jobs_dir / "submitit"):
        assert folder.stat().st_mode & 0o022 == 0
    assert json.loads(state_path(cfg.jobs_dir).read_text())["sweep"] == "t"


def test_jobs_with_several_gpus_are_submitted_as_ddp_with_their_plan_ids(workdir: Path) -> None:
    cfg = make_config(workdir, slurm={"gpus_per_node": 2})
    backend = FakeBackend()
    run_sweep(cfg, backend, **SWEEP_KW)
    submitted = backend.submitted[0].args
    assert [s.processes for s in submitted] == [2] * 4
    assert [s.job_id for s in submitted] == [s.job_id for s in expand(cfg)]


def test_preempted_job_is_requeued_by_a_plain_sweep_without_using_a_retry(workdir: Path) -> None:
    cfg = make_config(workdir, slurm={"max_retries": 0})
    backend = FakeBackend()
    first = run_sweep(cfg, backend, **SWEEP_KW)
    base = first.arrays[0]["slurm_id"]
    backend.set_state([f"{base}_0"], "PREEMPTED")  # PreemptMode=CANCEL: SIGTERM, then PREEMPTED
    backend.set_state([f"{base}_{i}" for i in (1, 2, 3)], "RUNNING")
    again = run_sweep(cfg, backend, **SWEEP_KW)  # no --retry-failed, and no retries allowed
    assert [a["n"] for a in again.arrays] == [1] and again.diff.summary()["requeue"] == 1
    assert backend.submitted[-2].args == (first.specs[0],) and again.diff.failed == []
    rec = load_state(cfg.jobs_dir, cfg.name).jobs[first.specs[0].job_id]
    assert (rec.retries, rec.requeues, rec.submissions) == (0, 1, 2)


def test_timeout_requeues_are_configurable(workdir: Path) -> None:
    from fercluster.api.sweeps import slurm_backend

    cfg = make_config(workdir, slurm={"max_timeout_requeues": 7})
    backend = slurm_backend(cfg)
    assert backend.max_timeout_requeues == 7
    sub = Submission("x", "train", print, (1, 2), Resources.training(cfg.slurm))
    assert backend._executor(sub).max_num_timeout == 7


def test_one_at_a_time_holds_across_arrays_and_retries(workdir: Path) -> None:
    cfg = make_config(workdir, slurm={"array_parallelism": 1, "max_retries": 1})
    backend = FakeBackend(max_array=2)
    first = run_sweep(cfg, backend, **SWEEP_KW)
    a, b = first.arrays
    assert (a["throttle"], a["after"], b["throttle"], b["after"]) == (1, None, 1, a["slurm_id"])  # a chain
    assert backend.submitted[1].params["dependency"] == f"afterany:{a['slurm_id']}"
    backend.set_state([f"{a['slurm_id']}_0"], "FAILED")
    backend.set_state([f"{a['slurm_id']}_1"], "RUNNING")
    again = run_sweep(cfg, backend, retry_failed=True, **SWEEP_KW)  # b is still queued: the retry waits
    [retry] = again.arrays
    assert retry["throttle"] == 1 and retry["after"] == f"{a['slurm_id']}:{b['slurm_id']}"  # after both


def test_a_sweep_that_lost_its_lock_stops_before_sbatch(workdir, monkeypatch):
    """Fencing (issue 18, defect 5): every sbatch first checks the lease; a holder whose claim was
    taken over submits nothing and keeps its pending record for the next run to resolve."""
    import contextlib

    import fercluster.orchestration.submit.coordinator as coordinator
    from fercluster.lock import LockLost

    class LostLease:
        def check(self) -> None:
            raise LockLost("the claim jobs/t/.claim was taken over by host B")

    @contextlib.contextmanager
    def lost_lock(jobs_dir, timeout_s=600.0):
        yield LostLease()

    monkeypatch.setattr(coordinator, "sweep_lock", lost_lock)
    cfg = make_config(workdir)
    backend = FakeBackend()
    with pytest.raises(LockLost, match="taken over"):
        run_sweep(cfg, backend, **SWEEP_KW)
    assert backend.calls["sbatch"] == 0 and backend.submitted == []
    assert not state_path(cfg.jobs_dir).exists()  # not even the pending record: the state is the new holder's


def test_a_sweep_whose_claim_is_taken_over_during_sbatch_writes_nothing_over_the_new_holder(workdir):
    """Fenced writes (issue 18, fenced-overwrite): another host takes the claim over while this
    holder's first sbatch runs and records its own work; this holder stops with ``LockLost`` and
    its state (the array's id, the aggregation job's record) never overwrites the new holder's."""
    from fercluster.lock import LockLost
    from fercluster.orchestration.store.entries import TRAIN, PendingEntry
    from fercluster.orchestration.store.state import SweepState, save_state

    cfg = make_config(workdir)
    claim = cfg.jobs_dir / ".claim"

    class TakenOver(FakeBackend):
        def submit(self, submission):
            sent = super().submit(submission)
            if self.calls["sbatch"] == 1:  # the new holder takes the claim and writes its state
                claim.unlink()
                claim.write_text(json.dumps({"pid": 4242, "host": "login2", "token": "theirs", "beat": 0}))
                save_state(cfg.jobs_dir, SweepState("t", pending={"fc-t-theirs": PendingEntry(("j",), TRAIN, 1.0)}))
            return sent

    backend = TakenOver()
    with pytest.raises(LockLost, match="another's"):
        run_sweep(cfg, backend, **SWEEP_KW)
    state = load_state(cfg.jobs_dir, cfg.name)
    assert list(state.pending) == ["fc-t-theirs"] and state.arrays == {} and state.jobs == {}
    assert state.aggregate is None and backend.calls["sbatch"] == 1  # no aggregation job either
    assert json.loads(claim.read_text())["token"] == "theirs"  # its claim is left alone
