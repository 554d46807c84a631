"""Issue 18's submission defects on the fake backend: nonce names, refusals, the bound without
accounting, the aggregation job after a failed sbatch and on its own resources, submit limits,
and retries of jobs SLURM has requeued."""

from __future__ import annotations

from pathlib import Path

from orch_helpers import SWEEP_KW, finish, make_config
from typer.testing import CliRunner

from fercluster.orchestration.fake import FakeBackend
from fercluster.orchestration.store.entries import PendingEntry
from fercluster.orchestration.store.state import load_state, save_state
from fercluster.orchestration.submit.aggregate import built_by, record_aggregated
from fercluster.orchestration.submit.coordinator import run_sweep


def test_a_retry_whose_sbatch_timed_out_never_adopts_the_ended_array_of_its_jobs(workdir: Path) -> None:
    """Defect 2: a retry of the same job set gets a name of its own, so recovery cannot take the
    earlier, failed retry array for it; the job reruns."""
    cfg = make_config(workdir, slurm={"max_retries": 2})
    backend = FakeBackend()
    first = run_sweep(cfg, backend, **SWEEP_KW)
    job = first.specs[2].job_id
    backend.set_state([f"{first.arrays[0]['slurm_id']}_2"], "FAILED")
    retried = run_sweep(cfg, backend, retry_failed=True, **SWEEP_KW)
    backend.set_state([retried.arrays[0]["slurm_id"]], "FAILED")
    backend.sbatch_faults = ["timeout"]  # no answer: the record stays, looked up next time
    lost = run_sweep(cfg, backend, retry_failed=True, **SWEEP_KW)
    assert lost.arrays == [] and len(load_state(cfg.jobs_dir, cfg.name).pending) == 1
    again = run_sweep(cfg, backend, retry_failed=True, **SWEEP_KW)
    assert again.adopted == [] and [a["n"] for a in again.arrays] == [1]
    rec = load_state(cfg.jobs_dir, cfg.name).jobs[job]
    assert rec.retries == 2 and len(set(rec.slurm_ids)) == 3  # three distinct submissions, each ran
    assert backend.states[rec.slurm_ids[-1]] == "PENDING"


def test_a_definite_sbatch_refusal_drops_its_pending_record(cfg, workdir: Path) -> None:
    """Defect 3: sbatch answered with an error: nothing went in, no record is kept, nothing held."""
    backend = FakeBackend()
    backend.sbatch_faults = ["refuse"]
    refused = run_sweep(cfg, backend, **SWEEP_KW)
    assert refused.arrays == [] and "Invalid account" in refused.submit_error
    assert load_state(cfg.jobs_dir, cfg.name).pending == {}
    again = run_sweep(cfg, backend, **SWEEP_KW)
    assert [a["n"] for a in again.arrays] == [4] and again.diff.waiting == []


def test_without_accounting_a_lost_sbatch_is_settled_by_squeue_after_the_bound(cfg, workdir: Path) -> None:
    """Defect 3: accounting off, sbatch timed out: the jobs are held while the record is younger
    than slurm.pending_bound_s, then (squeue does not show the name) submitted."""
    backend = FakeBackend()
    backend.sacct_ok = False
    backend.sbatch_faults = ["timeout"]
    run_sweep(cfg, backend, **SWEEP_KW)
    held = run_sweep(cfg, backend, **SWEEP_KW)
    assert held.arrays == [] and len(held.diff.waiting) == 4 and held.recovery_error
    state = load_state(cfg.jobs_dir, cfg.name)
    name, rec = next(iter(state.pending.items()))
    state.pending[name] = PendingEntry(rec.job_ids, rec.kind, rec.created - cfg.slurm.pending_bound_s, code=rec.code)
    save_state(cfg.jobs_dir, state)
    settled = run_sweep(cfg, backend, **SWEEP_KW)
    assert [a["n"] for a in settled.arrays] == [4] and settled.recovery_error == ""
    assert load_state(cfg.jobs_dir, cfg.name).pending == {}


def test_without_accounting_a_queued_lost_submission_is_adopted(cfg, workdir: Path) -> None:
    backend = FakeBackend()
    backend.sacct_ok = False
    backend.sbatch_faults = ["lost"]  # it went in; the reply did not come back
    run_sweep(cfg, backend, **SWEEP_KW)
    adopted = run_sweep(cfg, backend, **SWEEP_KW)
    assert len(adopted.adopted) == 1 and adopted.arrays == []
    assert sum(len(s.args) for s in backend.submitted if s.submission.kind == "train") == 4


def test_forget_pending_drops_the_record_with_a_warning(cfg, workdir: Path, monkeypatch) -> None:
    from fercluster.cli.main import _register, app

    backend = FakeBackend()
    backend.sbatch_faults = ["timeout"]
    run_sweep(cfg, backend, **SWEEP_KW)
    name = next(iter(load_state(cfg.jobs_dir, cfg.name).pending))
    cfg_file = workdir / "c.yaml"
    cfg_file.write_text(cfg.model_dump_json())
    _register()
    out = CliRunner().invoke(app, ["sweep", str(cfg_file), "--forget-pending", "all"])
    assert out.exit_code == 0, out.output
    assert f"dropped pending {name} (" in out.output and "4 jobs: " in out.output
    assert "its jobs now run twice" in " ".join(out.output.split())
    assert load_state(cfg.jobs_dir, cfg.name).pending == {}
    missing = CliRunner().invoke(app, ["sweep", str(cfg_file), "--forget-pending", "nope"])
    assert "no pending record 'nope' in sweep t; pending records: none" in str(missing.exception)  # main(): exit 2


def test_an_aggregation_job_is_submitted_after_its_sbatch_failed_once(cfg, workdir: Path) -> None:
    """Defect 6: the arrays went in, the aggregation sbatch was refused; the next run, with no new
    training work, submits one after the live arrays."""
    backend = FakeBackend()
    backend.sbatch_faults = ["", "refuse"]  # the array goes in, the aggregation job is refused
    first = run_sweep(cfg, backend, **SWEEP_KW)
    assert first.aggregate_id is None and load_state(cfg.jobs_dir, cfg.name).aggregate is None
    again = run_sweep(cfg, backend, **SWEEP_KW)
    state = load_state(cfg.jobs_dir, cfg.name)
    assert again.arrays == [] and again.aggregate_id and state.aggregate.slurm_id == again.aggregate_id
    assert state.aggregate.after == (first.arrays[0]["slurm_id"],)
    third = run_sweep(cfg, backend, **SWEEP_KW)  # queued after every live array: not again
    assert third.aggregate_id is None and backend.calls["scancel"] == 0


def test_a_sweep_whose_jobs_all_ended_without_an_aggregation_job_submits_one(cfg, workdir: Path) -> None:
    """report-missed: the aggregation sbatch was refused and the jobs ended before the next run;
    that run submits one, with no dependency, once; not while it is queued, nor once it COMPLETED."""
    backend = FakeBackend()
    backend.sbatch_faults = ["", "refuse"]
    first = run_sweep(cfg, backend, **SWEEP_KW)
    assert first.aggregate_id is None
    for spec in first.specs:
        finish(spec)
    backend.set_state(list(backend.submitted[0].ids), "COMPLETED")
    again = run_sweep(cfg, backend, **SWEEP_KW)
    sent = backend.submitted[-1]
    assert again.arrays == [] and again.aggregate_id == sent.ids[0] and again.submit_error == ""
    assert sent.submission.kind == "aggregate" and sent.submission.after == () and "dependency" not in sent.params
    assert load_state(cfg.jobs_dir, cfg.name).aggregate.slurm_id == again.aggregate_id
    queued = run_sweep(cfg, backend, **SWEEP_KW)  # it waits in the queue: not again
    backend.set_state([again.aggregate_id], "COMPLETED")
    done = run_sweep(cfg, backend, **SWEEP_KW)  # it ran after every array: not again
    assert queued.aggregate_id is None and done.aggregate_id is None and backend.calls["sbatch"] == 3


def test_an_aggregation_job_that_failed_after_every_job_ended_is_submitted_again(cfg, workdir: Path) -> None:
    backend = FakeBackend()
    first = run_sweep(cfg, backend, **SWEEP_KW)
    for spec in first.specs:
        finish(spec)
    backend.set_state(list(backend.submitted[0].ids), "COMPLETED")
    backend.set_state([first.aggregate_id], "COMPLETED")
    assert run_sweep(cfg, backend, **SWEEP_KW).aggregate_id is None  # it ran after them all
    backend.set_state([first.aggregate_id], "FAILED")
    again = run_sweep(cfg, backend, **SWEEP_KW)
    assert again.aggregate_id and backend.submitted[-1].submission.after == ()


def test_without_accounting_a_forgotten_aggregation_job_counts_as_run_only_if_it_wrote_aggregated_json(
    cfg, workdir: Path
) -> None:
    """No accounting, and the aggregation job left squeue: SLURM cannot say how it ended. It built
    the report only if ``aggregated.json`` names it (the job writes it as it ends complete)."""
    backend = FakeBackend()
    backend.sacct_ok = False
    first = run_sweep(cfg, backend, **SWEEP_KW)
    for spec in first.specs:
        finish(spec)
    for sid in [*backend.submitted[0].ids, first.aggregate_id]:
        backend.states.pop(sid)  # ended, then gone from squeue (MinJobAge)
    record_aggregated(cfg.jobs_dir, "999")  # an earlier aggregation job's evidence: not this one's
    again = run_sweep(cfg, backend, **SWEEP_KW)
    assert again.aggregate_id and backend.submitted[-1].submission.after == ()  # it failed: one more
    backend.states.pop(again.aggregate_id)
    record_aggregated(cfg.jobs_dir, again.aggregate_id)
    assert built_by(cfg.jobs_dir) == again.aggregate_id
    assert run_sweep(cfg, backend, **SWEEP_KW).aggregate_id is None  # it completed: the report is built


def test_an_aggregation_job_found_after_a_lost_reply_cancels_the_one_it_replaced(cfg, workdir: Path) -> None:
    """aggregate-orphan: the retry's aggregation sbatch lost its reply; the next run adopts the job
    by name, records what it waits for, and cancels the one it replaced (as a clean sbatch would)."""
    backend = FakeBackend()
    first = run_sweep(cfg, backend, **SWEEP_KW)
    backend.set_state([f"{first.arrays[0]['slurm_id']}_0"], "FAILED")
    backend.sbatch_faults = ["", "lost"]  # the retry array goes in, the aggregation job's reply is lost
    retried = run_sweep(cfg, backend, retry_failed=True, **SWEEP_KW)
    assert retried.aggregate_id is None and backend.states[first.aggregate_id] == "PENDING"
    lost = backend.submitted[-1]
    run_sweep(cfg, backend, **SWEEP_KW)
    state = load_state(cfg.jobs_dir, cfg.name)
    assert state.pending == {} and state.aggregate.slurm_id == lost.ids[0]
    assert state.aggregate.after == lost.submission.after and len(lost.submission.after) == 2
    assert backend.states[first.aggregate_id] == "CANCELLED" and backend.states[lost.ids[0]] == "PENDING"


def test_a_new_aggregation_job_goes_in_before_the_old_one_is_cancelled(cfg, workdir: Path) -> None:
    backend = FakeBackend()
    first = run_sweep(cfg, backend, **SWEEP_KW)
    backend.set_state([f"{first.arrays[0]['slurm_id']}_0"], "FAILED")
    backend.sbatch_faults = ["", "refuse"]  # the retry array goes in, the new aggregation job does not
    retried = run_sweep(cfg, backend, retry_failed=True, **SWEEP_KW)
    assert retried.aggregate_id is None and backend.states[first.aggregate_id] == "PENDING"  # the old one stays
    again = run_sweep(cfg, backend, **SWEEP_KW)
    assert again.aggregate_id and backend.states[first.aggregate_id] == "CANCELLED"
    assert set(load_state(cfg.jobs_dir, cfg.name).aggregate.after) == {first.arrays[0]["slurm_id"],
                                                                       retried.arrays[0]["slurm_id"]}  # fmt: skip


def test_the_aggregation_job_asks_for_slurm_aggregate_resources(workdir: Path) -> None:
    """Defect 7: its own partition, QOS, account, time, CPUs and memory; unset ones: the training job's."""
    cfg = make_config(workdir, slurm={"partition": "gpu", "qos": "long", "account": "lab", "time_min": 600,
                                      "aggregate": {"partition": "cpu", "qos": "short", "mem_gb": 8}})  # fmt: skip
    backend = FakeBackend()
    run_sweep(cfg, backend, **SWEEP_KW)
    train, agg = backend.submitted[0].params, backend.submitted[-1].params
    assert (train["partition"], train["qos"], train["time"]) == ("gpu", "long", 600)
    assert (agg["partition"], agg["qos"], agg["account"], agg["time"]) == ("cpu", "short", "lab", 30)
    assert agg["mem"] == "8192MB" and agg["cpus_per_task"] == 1


def test_a_submit_limit_below_the_array_size_splits_the_array(cfg, workdir: Path) -> None:
    """Defect 8: MaxSubmitJobsPerUser 3, an array of 4: what fits goes in now, the rest once jobs end."""
    backend = FakeBackend()
    backend.max_submit_jobs = 3
    first = run_sweep(cfg, backend, **SWEEP_KW)
    assert [a["n"] for a in first.arrays] == [2, 1] and len(first.diff.waiting) == 1
    assert first.arrays[1]["after"] == first.arrays[0]["slurm_id"]  # one lane: its throttle holds
    assert (
        "MaxSubmitJobsPerUser" in first.diff.waiting[0][1]
        and "once queued jobs of yours end" in first.diff.waiting[0][1]
    )
    assert load_state(cfg.jobs_dir, cfg.name).pending == {}
    for spec in first.specs[:3]:
        finish(spec)
    backend.set_state([s for s in backend.states], "COMPLETED")
    second = run_sweep(cfg, backend, **SWEEP_KW)
    assert [a["n"] for a in second.arrays] == [1] and second.submit_error == "" and second.aggregate_id
    sent = [s.job_id for sub in backend.submitted if sub.submission.kind == "train" for s in sub.args]
    assert sorted(sent) == sorted(s.job_id for s in first.specs)  # each job once


def test_retry_skips_a_job_squeue_shows_requeued(cfg, workdir: Path) -> None:
    """Defect 13: sacct still says NODE_FAIL, squeue already PENDING (SLURM requeued it): no retry."""
    backend = FakeBackend()
    first = run_sweep(cfg, backend, **SWEEP_KW)
    base = first.arrays[0]["slurm_id"]
    backend.set_state([f"{base}_0", f"{base}_1"], "NODE_FAIL")
    backend.squeue_states[f"{base}_0"] = "PENDING"
    retried = run_sweep(cfg, backend, retry_failed=True, **SWEEP_KW)
    assert [a["n"] for a in retried.arrays] == [1]
    assert backend.submitted[-2].args == (first.specs[1],)
    # the query itself asks squeue about ids sacct says NODE_FAIL (slurm.parse.with_queue): PENDING
    assert first.specs[0].job_id in {s.job_id for s in retried.diff.active}
    assert retried.rows[0].state == "PENDING"


def test_status_lists_pending_records_with_the_command_that_drops_them(cfg, workdir: Path, monkeypatch) -> None:
    """Deliver 3: an unsettled submission is shown by `status` (and --json): name, age, the jobs it
    holds, and `sweep --forget-pending NAME` with its warning."""
    import json

    from fercluster.cli.main import _register, app

    backend = FakeBackend()
    backend.sbatch_faults = ["timeout"]  # no answer: it may be in SLURM, its record stays
    run_sweep(cfg, backend, **SWEEP_KW)
    name = next(iter(load_state(cfg.jobs_dir, cfg.name).pending))
    cfg_file = workdir / "c.yaml"
    cfg_file.write_text(cfg.model_dump_json())
    monkeypatch.setattr("fercluster.cli.tables.backend", lambda cfg: backend)
    monkeypatch.chdir(workdir)
    _register()
    out = CliRunner().invoke(app, ["status", "c.yaml"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert f"pending submission {name} (0 min old, holds 4 jobs): its sbatch's outcome is not known" in text
    assert f"if it stays stuck: fercluster sweep c.yaml --forget-pending {name}" in text
    assert "warning: --forget-pending: if such a submission did reach SLURM, its jobs now run twice" in text
    snap = json.loads(CliRunner().invoke(app, ["status", "c.yaml", "--json"]).stdout)
    [record] = snap["pending"]
    assert record["name"] == name and record["kind"] == "train" and len(record["jobs"]) == 4
    assert record["hint"] == f"fercluster sweep c.yaml --forget-pending {name}" and record["age_s"] >= 0
    assert "run twice" in record["warning"]
    CliRunner().invoke(app, ["sweep", "c.yaml", "--forget-pending", name])
    assert json.loads(CliRunner().invoke(app, ["status", "c.yaml", "--json"]).stdout)["pending"] == []
