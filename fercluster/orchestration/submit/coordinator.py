"""Reconcile a sweep with SLURM: submit what is missing, skip what is done, leave alone what runs.

``reconcile.reconcile`` is the diff (pure over rows and state); ``run_sweep`` takes the lock, adopts orphans
of a crash, submits arrays (pending record first, then sbatch, then the id; one array per code
snapshot, ``snapshots.plan_code``), the aggregation job after them (``afterany``), and, with
``prune``, cancels jobs no longer in the config.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from fercluster.config import SweepConfig
from fercluster.errors import SlurmError
from fercluster.orchestration.backend import Backend, JobInfo, Resources, Submission, SubmitLimit
from fercluster.orchestration.store.entries import JobEntry
from fercluster.orchestration.store.known import load_known, save_known
from fercluster.orchestration.store.snapshot import CannotStart
from fercluster.orchestration.store.state import SweepState, load_state, private_umask, save_state, sweep_lock
from fercluster.orchestration.store.vocabulary import ACTIVE, COMPLETED, NOT_SUBMITTED
from fercluster.orchestration.submit import jobs as jobs_mod
from fercluster.orchestration.submit import plan as plan_mod
from fercluster.orchestration.submit.aggregate import built_by, missed, needed_after, submit_aggregate
from fercluster.orchestration.submit.arrays import submit_arrays
from fercluster.orchestration.submit.reconcile import Diff, reconcile, removed_specs
from fercluster.orchestration.submit.recovery import adopt_orphans, hold_live, summaries
from fercluster.orchestration.submit.snapshots import CodePlan, RetryCode, plan_code
from fercluster.orchestration.watch import stall
from fercluster.orchestration.watch.attempts import end_stalled
from fercluster.orchestration.watch.monitor import JobRow, cannot_start, job_rows
from fercluster.train.spec import JobSpec


@dataclass
class SweepResult:
    specs: list[JobSpec]
    rows: list[JobRow]
    diff: Diff
    arrays: list[dict[str, Any]] = field(default_factory=list)  # name, slurm_id, n, throttle
    adopted: list[str] = field(default_factory=list)
    recovery_error: str = ""  # orphan recovery could not ask SLURM: its pending records were kept
    submit_error: str = ""  # an sbatch failed part-way: what was submitted before stands, the rest waits
    aggregate_id: str | None = None
    cancelled: list[str] = field(default_factory=list)
    dry_run: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    code: dict[str, Any] | None = None  # CodePlan.summary() of what was (or would be) submitted
    aggregate_info: JobInfo | None = None  # the recorded aggregation job, as SLURM saw it now
    accounting_silent: bool = False  # accounting did not answer the refresh (a site without it, an outage)
    cannot_start: tuple[CannotStart, ...] = ()  # pending jobs SLURM will not start by waiting, by reason
    stalled: list[JobRow] = field(default_factory=list)  # --requeue-stalled: the stalled jobs found
    requeued: list[str] = field(default_factory=list)  # job ids requeued because they stalled
    requeue_error: str = ""  # scontrol requeue failed: nothing was requeued


def run_sweep(
    cfg: SweepConfig,
    backend: Backend,
    *,
    dry_run: bool = False,
    retry_failed: bool = False,
    prune: bool = False,
    fn_for: Callable[[], Any] | None = None,
    aggregate_fn: Callable[..., Any] | None = None,
    prepare: bool = True,
    retry_code: RetryCode = "submitted",
    requeue_stalled: bool = False,
) -> SweepResult:
    """Bring the sweep on SLURM in line with the config. ``fn_for()`` builds the submitted callable.

    ``retry_code``: the code retried jobs run, their own snapshot (``submitted``) or the current one.
    ``requeue_stalled``: requeue the RUNNING jobs whose progress has not moved for ``slurm.stall_min``
    (``watch.stall``) under their own SLURM ids; counted as requeues, not retries.
    """
    t0 = time.perf_counter()
    fn_for = fn_for or jobs_mod.training_callable
    aggregate_fn = aggregate_fn or jobs_mod.aggregate_job
    specs = _planned(cfg)
    timings = {"plan_s": time.perf_counter() - t0}
    if dry_run:
        result = _dry_run(cfg, specs, backend, retry_failed, timings, retry_code)
        result.stalled = stall.mark(result.rows, specs, cfg.slurm) if requeue_stalled else []
        return result
    with sweep_lock(cfg.jobs_dir) as lease:
        backend = _Fenced(backend, lease)  # every sbatch first checks that the lock is still ours
        state = load_state(cfg.jobs_dir, cfg.name, lease)  # and so does every write of the state
        result = _recover_and_diff(cfg, specs, state, backend, retry_failed, timings, fn_for)
        if requeue_stalled:
            _requeue_stalled(cfg, specs, state, backend, result)
        t1 = time.perf_counter()
        _submit_work(cfg, state, backend, result, fn_for, aggregate_fn, specs, prepare, retry_code)
        if prune:
            _prune(state, backend, result, {s.job_id for s in specs})
        save_state(cfg.jobs_dir, state)
        timings["submit_s"] = time.perf_counter() - t1
    return result


class _Fenced:
    """``backend`` whose ``submit`` first checks the sweep's lease (``lock.Lease.check``): a holder
    that lost its claim (taken over after a stall, its heartbeat not written) stops before sbatch
    with ``LockLost`` instead of submitting beside the new holder. Everything else is ``backend``'s."""

    def __init__(self, backend: Backend, lease: Any) -> None:
        self._backend, self._lease = backend, lease

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def submit(self, submission: Submission) -> Any:
        if self._lease is not None:
            self._lease.check()
        return self._backend.submit(submission)

    def requeue(self, ids: Sequence[str]) -> None:
        if self._lease is not None:
            self._lease.check()
        self._backend.requeue(ids)


def _requeue_stalled(
    cfg: SweepConfig, specs: list[JobSpec], state: SweepState, backend: Backend, result: SweepResult
) -> None:
    """``scontrol requeue`` the stalled jobs (one call), count a requeue each, and end their current
    attempt as ``stalled`` in their history (the job, hung, cannot). What is requeued runs again
    under its id: it stays active, and the aggregation job still waits for it."""
    result.stalled = [r for r in stall.mark(result.rows, specs, cfg.slurm) if r.slurm_id]
    if not result.stalled:
        return
    try:
        backend.requeue([r.slurm_id for r in result.stalled if r.slurm_id])
    except SlurmError as exc:
        result.requeue_error = str(exc)
        return
    for row in result.stalled:
        entry = state.jobs[row.job_id]
        state.jobs[row.job_id] = replace(entry, requeues=entry.requeues + 1)
        result.requeued.append(row.job_id)
        end_stalled(row)
    save_state(cfg.jobs_dir, state)


def _planned(cfg: SweepConfig) -> list[JobSpec]:
    """The sweep's jobs, each with the processes it runs as (DDP when > 1; not in its id)."""
    specs = plan_mod.expand(cfg)
    n = Resources.training(cfg.slurm).processes
    return [replace(s, processes=n) for s in specs] if n > 1 else specs


def _dry_run(
    cfg: SweepConfig,
    specs: list[JobSpec],
    backend: Backend,
    retry_failed: bool,
    timings: dict[str, float],
    retry_code: RetryCode,
) -> SweepResult:
    """What a run would do, with the code it would submit; no lock taken, nothing written."""
    state = load_state(cfg.jobs_dir, cfg.name)
    result = _diff(cfg, specs, state, backend, retry_failed, timings, dry_run=True)
    d = result.diff
    result.code = plan_code(cfg, state, d.submit, d.retry + d.requeue, retry_code, make=False).summary()
    return result


def _recover_and_diff(
    cfg: SweepConfig,
    specs: list[JobSpec],
    state: SweepState,
    backend: Backend,
    retry_failed: bool,
    timings: dict[str, float],
    fn_for: Callable[[], Any],
) -> SweepResult:
    """Adopt the orphans of a crash, then the diff; the jobs of records recovery could not look
    up are held (what they hold may be in SLURM already), and so are retries the queue shows live."""
    specs_by_id = {s.job_id: s for s in specs}
    resources = Resources.training(cfg.slurm)
    adopted, recovery_error = adopt_orphans(state, backend, fn_for, specs_by_id, resources, cfg.slurm.pending_bound_s)
    if adopted:
        save_state(cfg.jobs_dir, state)
    result = _diff(cfg, specs, state, backend, retry_failed, timings, dry_run=False)
    result.adopted, result.recovery_error = adopted, recovery_error
    if state.pending:  # recovery failed: what these records hold may be in SLURM already
        held = {j for rec in state.pending.values() for j in rec.job_ids}
        result.diff.hold(held, "orphan recovery could not ask SLURM; the next sweep retries it")
    hold_live(result.diff, result.rows, backend)
    return result


def _prune(state: SweepState, backend: Backend, result: SweepResult, planned: set[str]) -> None:
    """Cancel the active jobs no longer in the config; move every such job to ``removed``."""
    if result.diff.removed:
        ids = [state.slurm_id(j) for j in result.diff.removed]
        backend.cancel([i for i in ids if i])
        result.cancelled = list(result.diff.removed)
    for job_id in [j for j in state.jobs if j not in planned]:
        state.removed[job_id] = state.jobs.pop(job_id)


def _submit_work(
    cfg: SweepConfig,
    state: SweepState,
    backend: Backend,
    result: SweepResult,
    fn_for: Callable[[], Any],
    aggregate_fn: Callable[..., Any],
    specs: list[JobSpec],
    prepare: bool,
    retry_code: RetryCode,
) -> None:
    """Submit the diff's jobs (arrays by code snapshot) and the aggregation job after them, into
    ``result``; an sbatch failing part-way leaves the rest waiting, with why."""
    d = result.diff
    todo = d.submit + d.retry + d.requeue
    code: CodePlan | None = None
    if todo:
        with private_umask():  # the snapshot too: not writable by others (requeues: their own code)
            code = plan_code(cfg, state, d.submit, d.retry + d.requeue, retry_code)
        result.code = code.summary()
        if prepare:
            prepare_datasets(cfg, {s.dataset for s in todo})
        retry_ids, requeue_ids = {s.job_id for s in d.retry}, {s.job_id for s in d.requeue}
        active = _active_arrays(state, backend, result.rows, cfg.slurm.array_parallelism)
        with private_umask():
            result.arrays, error = submit_arrays(
                cfg, state, backend, fn_for, specs, code, retry_ids, requeue_ids, active
            )
        result.submit_error = str(error) if error else ""
        code.sent = {}
        for a in result.arrays:  # what went in: the code lines never claim a refused array ran
            code.sent[a["code"]] = code.sent.get(a["code"], 0) + a["n"]
        result.code = code.summary()
        if error:
            sent = {j for a in result.arrays for j in state.arrays[a["name"]].job_ids}
            limit = error.limit if isinstance(error, SubmitLimit) else None
            why = (
                f"waits: {limit} is reached; a later `sweep` submits it once queued jobs"
                + ("" if "MaxJobCount" in limit else " of yours")
                + " end"
                if limit
                else f"not submitted: {result.submit_error}; the next `sweep` submits it"
            )
            d.hold({s.job_id for s in todo} - sent, why)
    _aggregate_after(cfg, state, backend, result, aggregate_fn, code, retry_code)


def _aggregate_after(
    cfg: SweepConfig,
    state: SweepState,
    backend: Backend,
    result: SweepResult,
    aggregate_fn: Callable[..., Any],
    code: CodePlan | None,
    retry_code: RetryCode,
) -> None:
    """The aggregation job, after every queued or running training job of the sweep, whenever the
    recorded one is not queued after all of them (``aggregate.needed_after``); with every job
    ended, one with no dependency when none ran after them all (``aggregate.missed``)."""
    live = [r.slurm_id for r in result.rows if r.state in ACTIVE and r.slurm_id]
    deps = needed_after(state, backend, [a["slurm_id"] for a in result.arrays] + live, result.aggregate_info)
    ended = not (live or result.arrays or result.diff.waiting) and all(r.state != NOT_SUBMITTED for r in result.rows)
    # jobs complete with no run of theirs recorded: an array whose lost reply was never found (no
    # accounting) ran them; once an aggregation job is queued after them, they are recorded
    unseen = [r.job_id for r in result.rows if r.state == COMPLETED and r.job_id not in state.jobs]
    silent = result.accounting_silent
    evidence = built_by(cfg.jobs_dir) if silent else None
    late = not deps and ended and missed(state, result.aggregate_info, evidence, bool(unseen), silent)
    if unseen and not (deps or late) and result.aggregate_info and result.aggregate_info.state in ACTIVE:
        _record_unseen(cfg, state, result.specs, unseen)  # the queued aggregation job runs after them
    # nothing submitted because sbatch fails: an aggregation job now would fail as well
    if not (deps or late) or (result.submit_error and not result.arrays):
        return
    if code is None:
        with private_umask():
            code = plan_code(cfg, state, [], [], retry_code)
        result.code = code.summary()
    try:
        result.aggregate_id = submit_aggregate(
            cfg, state, backend, aggregate_fn, deps, code.aggregate or code.current, result.aggregate_info
        )
    except SlurmError as exc:
        result.submit_error = "; ".join(e for e in (result.submit_error, f"aggregation job: {exc}") if e)
        return
    if unseen:
        _record_unseen(cfg, state, result.specs, unseen)


def _record_unseen(cfg: SweepConfig, state: SweepState, specs: Sequence[JobSpec], job_ids: list[str]) -> None:
    """Record jobs that completed in a run the state never knew of (no SLURM id, no submission)."""
    rows = summaries({s.job_id: s for s in specs}, job_ids)
    for job_id in job_ids:
        state.jobs[job_id] = JobEntry(**rows.get(job_id, {}))
    save_state(cfg.jobs_dir, state)


def _diff(
    cfg: SweepConfig,
    specs: list[JobSpec],
    state: SweepState,
    backend: Backend,
    retry_failed: bool,
    timings: dict[str, float],
    dry_run: bool,
) -> SweepResult:
    t = time.perf_counter()
    extra = removed_specs(specs, state)
    agg = state.aggregate.slurm_id if state.aggregate is not None and state.aggregate.slurm_id else None
    infos: dict[str, Any] = {}
    # what status or an earlier sweep heard: a job SLURM no longer shows (accounting silent) ended as
    # SLURM last said (pre-empted: requeued), as status shows it; the sweep remembers what it hears
    known = load_known(cfg.jobs_dir)
    rows = job_rows(list(specs) + extra, state, backend, extra_ids=[agg] if agg else (), infos_out=infos, known=known)
    if not dry_run:
        save_known(known)
    rows, removed_rows = rows[: len(specs)], rows[len(specs) :]
    timings["status_s"] = time.perf_counter() - t
    diff = reconcile(
        specs, rows, state, retry_failed=retry_failed, max_retries=cfg.slurm.max_retries, removed_rows=removed_rows
    )
    result = SweepResult(specs=specs, rows=rows, diff=diff, dry_run=dry_run, timings=timings)
    result.cannot_start = cannot_start(rows)
    result.aggregate_info = infos.get(agg) if agg else None
    result.accounting_silent = bool(backend.last_error)
    return result


def prepare_datasets(cfg: SweepConfig, datasets: set[str]) -> None:
    """Prepare the data sets on this machine once, before jobs that all need them start."""
    from fercluster.data import ensure_prepared

    for name in sorted(datasets):
        ensure_prepared(cfg, name)


def _active_arrays(state: SweepState, backend: Backend, rows: Sequence[JobRow], limit: int) -> list[tuple[str, int]]:
    """The sweep's arrays with tasks queued or running, as (id, its throttle), oldest first: they hold
    slots of ``array_parallelism`` (an array recorded without its throttle is taken to hold all ``limit``)."""
    live = backend.submissions_of([r.slurm_id for r in rows if r.state in ACTIVE and r.slurm_id])
    throttles = {a.slurm_id: int(a.throttle or limit) for a in state.arrays.values()}
    return [(sid, throttles[sid]) for sid in live if sid in throttles]
