"""A sweep's status as one plain object (what ``status --json`` prints), and cancelling its jobs."""

from __future__ import annotations

from typing import Any, Sequence

from fercluster.config import SweepConfig
from fercluster.errors import SlurmError
from fercluster.orchestration import plan as plan_mod
from fercluster.orchestration.backend import Backend, JobInfo, JobQuery, base_id
from fercluster.orchestration.coordinator import removed_specs
from fercluster.orchestration.cost import spent as _spent
from fercluster.orchestration.known import load_known, save_known
from fercluster.orchestration.monitor import counts, failure_details, job_rows
from fercluster.orchestration.snapshots import code_status
from fercluster.orchestration.state import load_state
from fercluster.orchestration.states import ACTIVE, ENDED_BADLY


def snapshot(cfg: SweepConfig, backend: JobQuery, failed: bool = False) -> dict[str, Any]:
    """Counts by state, one row per planned job, the aggregation job, the code (``snapshots.code_status``);
    ONE SLURM query.

    ``failed``: add each failed job's exception (submitit's result pickle) and log tail.
    """
    specs = plan_mod.expand(cfg)
    state = load_state(cfg.jobs_dir, cfg.name)
    agg = dict(state.aggregate or {})
    extra = [agg["slurm_id"]] if agg.get("slurm_id") else []
    infos: dict[str, JobInfo] = {}
    known = load_known(cfg.jobs_dir)
    rows = job_rows(specs, state, backend, extra_ids=extra, infos_out=infos, known=known)
    save_known(known)
    spent = _spent(cfg.name, known, state, len(rows))
    jobs = [r.to_dict() for r in rows]
    if failed:
        for job, row in zip(jobs, rows, strict=True):
            if row.state in ENDED_BADLY:
                job.update(failure_details(cfg.jobs_dir / "submitit", row))
    if extra:
        info = infos.get(extra[0])
        agg["state"] = info.state if info else "UNKNOWN"
        if info and info.state in ENDED_BADLY:
            agg["reason"] = info.failure_reason()
    removed = [j for j in removed_specs(specs, state)]
    return {
        "sweep": cfg.name,
        "counts": counts(rows),
        "total": len(rows),
        "source": backend.last_source,
        "stale": backend.last_error or None,  # why some states shown are the last known, not fresh
        "aggregate": agg or None,
        "cost": spent,
        "removed_from_config": [s.job_id for s in removed],
        "code": code_status(cfg, state, [r.code for r in rows]),
        "jobs": jobs,
    }


WATCH_MAX_S = 600.0  # the longest wait between refreshes when SLURM keeps failing


def watch_interval(requested: float, floor: float, failures: int) -> float:
    """Seconds until the next ``status --watch`` refresh: ``requested`` raised to ``floor``,
    doubled per refresh in a row that failed (stale states), capped at ``WATCH_MAX_S``."""
    base = max(requested, floor)
    return min(base * 2 ** min(failures, 16), max(base, WATCH_MAX_S))


def cancel(cfg: SweepConfig, backend: Backend, job: str | None = None) -> list[str]:
    """scancel the sweep's queued/running jobs (``job``: one fercluster job id or SLURM id)."""
    specs = plan_mod.expand(cfg)
    state = load_state(cfg.jobs_dir, cfg.name)
    rows = job_rows(list(specs) + removed_specs(specs, state), state, backend)
    if job is not None:
        chosen = [r for r in rows if job in (r.job_id, r.slurm_id)]
        if not chosen:
            raise SlurmError(f"no job {job!r} in sweep {cfg.name}; ids are listed by 'fercluster status'")
        rows = chosen
    ids = [r.slurm_id for r in rows if r.state in ACTIVE and r.slurm_id]
    if job is None and state.aggregate and state.aggregate.get("slurm_id"):
        ids.append(state.aggregate["slurm_id"])
    if ids:  # the whole sweep: scancel its arrays (a short command line), not thousands of task ids
        backend.cancel(ids if job is not None else sorted({base_id(i) for i in ids}, key=int))
    return ids


def by_array(ids: Sequence[str]) -> str:
    """``["1000_0", "1000_3", "1001"]`` -> ``"array 1000 (2 tasks), job 1001"``: a summary by array."""
    tasks: dict[str, int] = {}
    for sid in ids:
        tasks[base_id(sid)] = tasks.get(base_id(sid), 0) + ("_" in sid)
    parts = [f"array {b} ({n} task{'s' if n != 1 else ''})" if n else f"job {b}" for b, n in tasks.items()]
    return ", ".join(parts) or "-"
