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
from fercluster.orchestration.backend import Backend, Resources, Submission, SubmitLimit
from fercluster.orchestration.store.entries import AGGREGATE, TRAIN, AggregateEntry, PendingEntry
from fercluster.orchestration.store.state import (
    SweepState,
    array_name,
    ensure_dir,
    load_state,
    private_umask,
    save_state,
    sweep_lock,
)
from fercluster.orchestration.store.vocabulary import ACTIVE
from fercluster.orchestration.submit import jobs as jobs_mod
from fercluster.orchestration.submit import plan as plan_mod
from fercluster.orchestration.submit.lanes import array_lanes
from fercluster.orchestration.submit.reconcile import Diff, reconcile, removed_specs
from fercluster.orchestration.submit.snapshots import CodeChoice, CodePlan, RetryCode, plan_code
from fercluster.orchestration.watch.monitor import JobRow, job_rows
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


def adopt_orphans(
    state: SweepState,
    backend: Backend,
    fn_for: Callable[[], Any] | None,
    specs_by_id: dict[str, JobSpec],
    resources: Resources,
) -> tuple[list[str], str]:
    """Pending submissions (written before sbatch) whose array SLURM has: record them.

    Returns the adopted names and, when the lookup failed, why (else ""). Pending records SLURM
    does not know are dropped (sbatch never ran); their jobs are submitted again by the caller.
    A lookup that FAILED drops nothing: the records stay, their jobs are held (``Diff.hold``) and
    the next run tries again; "could not ask" is never "not found". An adopted array gets any
    submitted pickles it is missing (``Backend.adopt``).
    """
    if not state.pending:
        return [], ""
    try:
        found = backend.find(sorted(state.pending))
    except SlurmError as exc:
        return [], str(exc)
    adopted = []
    for name, rec in list(state.pending.items()):
        sid = found.get(name)
        if sid is None:
            state.pending.pop(name)
            continue
        if rec.kind == AGGREGATE:
            state.aggregate = AggregateEntry(name, sid, rec.created, code=rec.code)
            state.pending.pop(name)
        else:
            job_ids = list(rec.job_ids)
            summaries = _summaries(specs_by_id, job_ids)
            state.record_array(
                name, sid, job_ids, set(rec.retry), summaries, code=rec.code, requeue_ids=set(rec.requeue)
            )
            args = [specs_by_id[j] for j in job_ids if j in specs_by_id]  # already as submitted (processes)
            if fn_for is not None and len(args) == len(job_ids):
                backend.adopt(Submission(name, "train", fn_for(), tuple(args), resources), sid)
        adopted.append(name)
    return adopted, ""


def _summaries(specs_by_id: dict[str, JobSpec], job_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for j in job_ids:
        s = specs_by_id.get(j)
        if s is not None:
            out[j] = {"dataset": s.dataset, "fold": s.fold, "variant": s.variant, "seed": s.seed, "run_dir": s.run_dir}
    return out


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
) -> SweepResult:
    """Bring the sweep on SLURM in line with the config. ``fn_for()`` builds the submitted callable.

    ``retry_code``: the code retried jobs run, their own snapshot (``submitted``) or the current one.
    """
    t0 = time.perf_counter()
    fn_for = fn_for or jobs_mod.training_callable
    aggregate_fn = aggregate_fn or jobs_mod.aggregate_job
    specs = _planned(cfg)
    timings = {"plan_s": time.perf_counter() - t0}
    if dry_run:
        return _dry_run(cfg, specs, backend, retry_failed, timings, retry_code)
    with sweep_lock(cfg.jobs_dir) as lease:
        backend = _Fenced(backend, lease)  # every sbatch first checks that the lock is still ours
        state = load_state(cfg.jobs_dir, cfg.name)
        result = _recover_and_diff(cfg, specs, state, backend, retry_failed, timings, fn_for)
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
    up are held (what they hold may be in SLURM already)."""
    specs_by_id = {s.job_id: s for s in specs}
    adopted, recovery_error = adopt_orphans(state, backend, fn_for, specs_by_id, Resources.training(cfg.slurm))
    if adopted:
        save_state(cfg.jobs_dir, state)
    result = _diff(cfg, specs, state, backend, retry_failed, timings, dry_run=False)
    result.adopted, result.recovery_error = adopted, recovery_error
    if state.pending:  # recovery failed: what these records hold may be in SLURM already
        held = {j for rec in state.pending.values() for j in rec.job_ids}
        result.diff.hold(held, "orphan recovery could not ask SLURM; the next sweep retries it")
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
    if todo or any(n in state.arrays for n in result.adopted):  # new training work: aggregate after it
        with private_umask():  # the snapshot too: not writable by others (requeues: their own code)
            code = plan_code(cfg, state, d.submit, d.retry + d.requeue, retry_code)
        result.code = code.summary()
        if todo:
            if prepare:
                prepare_datasets(cfg, {s.dataset for s in todo})
            retry_ids, requeue_ids = {s.job_id for s in d.retry}, {s.job_id for s in d.requeue}
            with private_umask():
                result.arrays, error = _submit_arrays(
                    cfg,
                    state,
                    backend,
                    fn_for,
                    specs,
                    code,
                    retry_ids,
                    requeue_ids,
                    _active_arrays(state, backend, result.rows, cfg.slurm.array_parallelism),
                )
            result.submit_error = str(error) if error else ""
            if error:
                sent = {j for a in result.arrays for j in state.arrays[a["name"]].job_ids}
                limit = error.limit if isinstance(error, SubmitLimit) else None
                why = (f"waits: {limit} is reached; the next `sweep` submits it" if limit else
                       f"not submitted: {result.submit_error}; the next `sweep` submits it")  # fmt: skip
                d.hold({s.job_id for s in todo} - sent, why)
        _aggregate_after(cfg, state, backend, result, aggregate_fn, code)


def _aggregate_after(
    cfg: SweepConfig,
    state: SweepState,
    backend: Backend,
    result: SweepResult,
    aggregate_fn: Callable[..., Any],
    code: CodePlan,
) -> None:
    """The aggregation job, after every queued or running training job of the sweep."""
    live = [r.slurm_id for r in result.rows if r.state in ACTIVE and r.slurm_id]
    deps = backend.submissions_of([a["slurm_id"] for a in result.arrays] + live)
    # a pending aggregation record left by a crash may be in SLURM: recovery decides next time;
    # nothing submitted because sbatch fails: an aggregation job now would fail as well
    crashed = any(rec.kind == AGGREGATE for rec in state.pending.values())
    if not crashed and not (result.submit_error and not result.arrays):
        try:
            with private_umask():
                result.aggregate_id = _submit_aggregate(
                    cfg, state, backend, aggregate_fn, deps, code.aggregate or code.current
                )
        except SlurmError as exc:
            result.submit_error = "; ".join(e for e in (result.submit_error, f"aggregation job: {exc}") if e)


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
    rows = job_rows(list(specs) + extra, state, backend)
    rows, removed_rows = rows[: len(specs)], rows[len(specs) :]
    timings["status_s"] = time.perf_counter() - t
    diff = reconcile(
        specs, rows, state, retry_failed=retry_failed, max_retries=cfg.slurm.max_retries, removed_rows=removed_rows
    )
    return SweepResult(specs=specs, rows=rows, diff=diff, dry_run=dry_run, timings=timings)


def prepare_datasets(cfg: SweepConfig, datasets: set[str]) -> None:
    """Prepare the data sets on this machine once, before jobs that all need them start."""
    from fercluster.data import ensure_prepared

    for name in sorted(datasets):
        ensure_prepared(cfg, name)


def _submit_arrays(
    cfg: SweepConfig,
    state: SweepState,
    backend: Backend,
    fn_for: Callable[[], Any],
    specs: list[JobSpec],
    code: CodePlan,
    retry_ids: set[str],
    requeue_ids: set[str] = frozenset(),
    active: Sequence[tuple[str, int]] = (),
) -> tuple[list[dict[str, Any]], SlurmError | None]:
    """One array per code snapshot (split at the cluster's MaxArraySize); returns the arrays
    submitted and, when an sbatch failed, why (the arrays after it are not tried: they would
    fail the same way, each after sbatch's own retries). The failed array's pending record
    stays: the next run looks it up (an sbatch that timed out may have submitted it)."""
    ensure_dir(cfg.jobs_dir / "submitit")
    size = max(1, backend.max_tasks())
    chunks = [(choice, group[i : i + size]) for choice, group in code.groups for i in range(0, len(group), size)]
    lanes = array_lanes(len(chunks), cfg.slurm.array_parallelism, active)
    specs_by_id = {s.job_id: s for s in specs}
    fn = fn_for()
    arrays = []
    for (choice, chunk), (throttle, after) in zip(chunks, lanes, strict=True):
        job_ids = [s.job_id for s in chunk]
        name = array_name(cfg.name, job_ids)
        state.pending[name] = PendingEntry(tuple(job_ids), TRAIN, time.time(), tuple(sorted(retry_ids.intersection(job_ids))),
                                           tuple(sorted(requeue_ids.intersection(job_ids))), choice.key)  # fmt: skip
        save_state(cfg.jobs_dir, state)  # BEFORE sbatch: a crash after it is found by name
        wait = (arrays[after]["slurm_id"],) if isinstance(after, int) else after or ()  # its lane's array before it
        resources = replace(Resources.training(cfg.slurm), throttle=throttle)
        sub = Submission(name, "train", fn, tuple(_args(chunk, choice, code.current)), resources, wait, choice.path)
        try:
            sid = backend.submit(sub).id
        except SlurmError as exc:
            return arrays, exc
        summaries = _summaries(specs_by_id, job_ids)
        state.record_array(name, sid, job_ids, retry_ids, summaries, code=choice.key,
                           requeue_ids=requeue_ids, throttle=throttle)  # fmt: skip
        save_state(cfg.jobs_dir, state)
        arrays.append({"name": name, "slurm_id": sid, "n": len(chunk), "throttle": throttle,
                       "code": choice.key, "after": ":".join(wait) or None})  # fmt: skip
    return arrays, None


def _active_arrays(state: SweepState, backend: Backend, rows: Sequence[JobRow], limit: int) -> list[tuple[str, int]]:
    """The sweep's arrays with tasks queued or running, as (id, its throttle), oldest first: they hold
    slots of ``array_parallelism`` (an array recorded without its throttle is taken to hold all ``limit``)."""
    live = backend.submissions_of([r.slurm_id for r in rows if r.state in ACTIVE and r.slurm_id])
    throttles = {a.slurm_id: int(a.throttle or limit) for a in state.arrays.values()}
    return [(sid, throttles[sid]) for sid in live if sid in throttles]


def _args(chunk: list[JobSpec], choice: CodeChoice, current: CodeChoice) -> list[Any]:
    """The submitted arguments: specs, or plain dicts for jobs retried on an older snapshot, whose
    ``JobSpec`` class may differ from this code's (it reads them back with ``JobSpec.from_dict``)."""
    return list(chunk) if choice.key == current.key else [s.to_dict() for s in chunk]


def _submit_aggregate(
    cfg: SweepConfig,
    state: SweepState,
    backend: Backend,
    aggregate_fn: Callable[..., Any],
    deps: list[str],
    code: CodeChoice,
) -> str:
    """The aggregation job, after every queued or running training job (afterany)."""
    old = state.aggregate
    if old is not None and old.slurm_id:
        try:  # superseded: if still pending it would run before the new arrays end
            backend.cancel([old.slurm_id])
        except SlurmError:
            pass  # already finished
    name = array_name(cfg.name + "-aggregate", deps)
    state.pending[name] = PendingEntry((AGGREGATE,), AGGREGATE, time.time(), code=code.key)
    save_state(cfg.jobs_dir, state)
    resources = Resources.aggregation(cfg.slurm)
    sub = Submission(name, "aggregate", aggregate_fn, (cfg.model_dump(mode="json"),), resources, tuple(deps), code.path)
    sid = backend.submit(sub).id
    state.aggregate = AggregateEntry(name, sid, time.time(), tuple(deps), code.key)
    state.pending.pop(name, None)
    return sid
