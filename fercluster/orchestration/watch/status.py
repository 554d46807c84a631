"""A sweep's status as one typed snapshot (``status --json`` prints its dict form), and cancelling its jobs."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

from fercluster.config import SweepConfig
from fercluster.errors import SlurmError
from fercluster.lock import LockBusy
from fercluster.orchestration.backend import Backend, JobInfo, JobQuery
from fercluster.orchestration.slurm.parse import array_id
from fercluster.orchestration.store import many_records
from fercluster.orchestration.store.index import RunIndex
from fercluster.orchestration.store.known import load_known, save_known
from fercluster.orchestration.store.snapshot import PendingRecord, StatusSnapshot
from fercluster.orchestration.store.state import SweepState, load_state, sweep_lock
from fercluster.orchestration.store.vocabulary import ACTIVE, ENDED_BADLY, FAILED
from fercluster.orchestration.submit import plan as plan_mod
from fercluster.orchestration.submit.reconcile import removed_specs
from fercluster.orchestration.submit.recovery import FORGET_WARNING
from fercluster.orchestration.submit.snapshots import code_status
from fercluster.orchestration.watch import stall
from fercluster.orchestration.watch.attempts import job_attempts
from fercluster.orchestration.watch.cost import spent as _spent
from fercluster.orchestration.watch.monitor import cannot_start, counts, failure_details, job_rows

LOST = "lost: SLURM no longer knows this job"  # the aggregation job, as a training job SLURM lost


def snapshot(cfg: SweepConfig, backend: JobQuery, failed: bool = False, attempts: bool = False) -> StatusSnapshot:
    """Counts by state, one row per planned job, the aggregation job, the code (``snapshots.code_status``);
    ONE SLURM query. A complete job's files are read once (the run index, ``store.index``).
    RUNNING jobs whose progress has not moved for ``slurm.stall_min`` are marked stalled (``stall``).

    ``failed``: add each failed job's exception (submitit's result pickle) and log tail.
    ``attempts``: add each job's attempts (``watch.attempts``; ``status --json``).
    """
    with many_records():
        return _snapshot(cfg, backend, failed, attempts)


def _snapshot(cfg: SweepConfig, backend: JobQuery, failed: bool, attempts: bool = False) -> StatusSnapshot:
    specs = plan_mod.expand(cfg)
    state = load_state(cfg.jobs_dir, cfg.name)
    agg = state.aggregate
    extra = [agg.slurm_id] if agg is not None and agg.slurm_id else []
    infos: dict[str, JobInfo] = {}
    known = load_known(cfg.jobs_dir)
    index = RunIndex(cfg.results_dir)
    rows = job_rows(specs, state, backend, extra_ids=extra, infos_out=infos, known=known, index=index)
    save_known(known)
    stall.mark(rows, specs, cfg.slurm)
    failures = {}
    if failed:
        failures = {r.job_id: failure_details(cfg.jobs_dir / "submitit", r) for r in rows if r.state in ENDED_BADLY}
    histories = {}
    if attempts:  # a complete job's kept in the run index; the others' from their run directories
        for r in rows:
            history = index.history(r.job_id, r.run_dir)
            histories[r.job_id] = job_attempts(history, state.jobs.get(r.job_id), known, r.state, r.reason, r.iteration)
    index.save()
    info = infos.get(extra[0]) if extra else None
    return StatusSnapshot(
        sweep=cfg.name,
        counts=counts(rows),
        jobs=rows,
        source=backend.last_source,
        stale=backend.last_error or None,
        aggregate=agg,
        aggregate_state=(info.state if info else FAILED) if extra else "",
        aggregate_reason=(info.failure_reason() if info.state in ENDED_BADLY else "") if info else LOST * bool(extra),
        cost=_spent(cfg.name, known, state, len(rows)),
        removed_from_config=tuple(s.job_id for s in removed_specs(specs, state)),
        code=code_status(cfg, state, [r.code for r in rows]),
        failures=failures,
        pending=pending_records(cfg, state),
        cannot_start=cannot_start(rows),
        attempts=histories,
    )


def pending_records(cfg: SweepConfig, state: SweepState, now: float | None = None) -> tuple[PendingRecord, ...]:
    """The sweep's unsettled submissions, each with the command that drops it (``--forget-pending``)."""
    now = time.time() if now is None else now
    src = os.path.relpath(cfg.source) if cfg.source else "CONFIG"
    sets = "".join(f" --set {o}" for o in cfg.overrides)
    return tuple(
        PendingRecord(
            name,
            rec.kind,
            None if rec.created is None else max(0.0, now - rec.created),
            rec.job_ids,
            f"fercluster sweep {src}{sets} --forget-pending {name}",
            FORGET_WARNING,
        )
        for name, rec in sorted(state.pending.items())
    )


WATCH_MAX_S = 600.0  # the longest wait between refreshes when SLURM keeps failing


def watch_interval(requested: float, floor: float, failures: int) -> float:
    """Seconds until the next ``status --watch`` refresh: ``requested`` raised to ``floor``,
    doubled per refresh in a row that failed (stale states), capped at ``WATCH_MAX_S``."""
    base = max(requested, floor)
    return min(base * 2 ** min(failures, 16), max(base, WATCH_MAX_S))


CANCEL_LOCK_S = 60.0  # how long `cancel` waits for a running `sweep` of the same sweep to finish


def cancel(
    cfg: SweepConfig, backend: Backend, job: str | None = None, lock_timeout_s: float = CANCEL_LOCK_S
) -> list[str]:
    """scancel the sweep's queued/running jobs (``job``: one fercluster job id or SLURM id).

    Under the sweep's lock, as ``sweep`` submits: a cancel never interleaves with a submission (the
    arrays it is sending would escape it). A lock still held after ``lock_timeout_s``: ``LockBusy``
    naming its holder, nothing cancelled.
    """
    if not Path(cfg.jobs_dir).is_dir():  # never submitted: nothing to cancel, no folder made for a lock
        return []
    try:
        with sweep_lock(cfg.jobs_dir, timeout_s=lock_timeout_s):
            return _cancel(cfg, backend, job)
    except LockBusy as exc:
        raise LockBusy(
            f"cancel: nothing cancelled: {exc}; run `fercluster cancel` again once it has ended", exc.path, exc.holder
        ) from None


def _cancel(cfg: SweepConfig, backend: Backend, job: str | None) -> list[str]:
    specs = plan_mod.expand(cfg)
    state = load_state(cfg.jobs_dir, cfg.name)
    rows = job_rows(list(specs) + removed_specs(specs, state), state, backend)
    if job is not None:
        chosen = [r for r in rows if job in (r.job_id, r.slurm_id)]
        if not chosen:
            raise SlurmError(f"no job {job!r} in sweep {cfg.name}; ids are listed by 'fercluster status'")
        rows = chosen
    ids = [r.slurm_id for r in rows if r.state in ACTIVE and r.slurm_id]
    if job is None and state.aggregate is not None and state.aggregate.slurm_id:
        ids.append(state.aggregate.slurm_id)
    if ids:  # the whole sweep: scancel its arrays (a short command line), not thousands of task ids
        backend.cancel(ids if job is not None else backend.submissions_of(ids))
    return ids


def by_array(ids: Sequence[str]) -> str:
    """``["1000_0", "1000_3", "1001"]`` -> ``"array 1000 (2 tasks), job 1001"``: a summary by array."""
    tasks: dict[str, int] = {}
    for sid in ids:
        tasks[array_id(sid)] = tasks.get(array_id(sid), 0) + (array_id(sid) != sid)
    parts = [f"array {b} ({n} task{'s' if n != 1 else ''})" if n else f"job {b}" for b, n in tasks.items()]
    return ", ".join(parts) or "-"
