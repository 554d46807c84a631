"""What a sweep cost on SLURM: GPU-hours and CPU-hours of its runs (sacct's AllocTRES x ElapsedRaw),
and its requeues, as one line ("paper: 70 jobs, 41.2 GPU-hours, 12.0 CPU-hours, 3 requeues").

``status`` shows it (``snapshot()["cost"]``), the report writes it (``sweep_cost``). Kept apart from
``status`` so that the aggregation's report can call it without importing the coordinator.
"""

from __future__ import annotations

from typing import Any

from fercluster.config import SweepConfig
from fercluster.orchestration.backend import JobQuery
from fercluster.orchestration.store.known import Known, cost, load_known, save_known
from fercluster.orchestration.store.state import SweepState, load_state
from fercluster.orchestration.submit import plan as plan_mod
from fercluster.orchestration.watch.monitor import job_rows


def sweep_cost(cfg: SweepConfig, backend: JobQuery | None = None) -> dict[str, Any]:
    """The sweep's cost: refreshed through ``backend`` (one query, as ``status``), or without one
    as the last ``status`` left it in ``known.json``."""
    specs = plan_mod.expand(cfg)
    state = load_state(cfg.jobs_dir, cfg.name)
    known = load_known(cfg.jobs_dir)
    if backend is not None:
        job_rows(specs, state, backend, known=known)
        save_known(known)
    return spent(cfg.name, known, state, len(specs))


def spent(sweep: str, known: Known, state: SweepState, jobs: int) -> dict[str, Any]:
    out = {**cost(known), "jobs": jobs, "requeues": sum(e.requeues for e in state.jobs.values())}
    out["line"] = cost_line(sweep, out)
    return out


def cost_line(sweep: str, spent: dict[str, Any]) -> str:
    """``"paper: 70 jobs, 41.2 GPU-hours, 12.0 CPU-hours, 3 requeues"``."""
    return (
        f"{sweep}: {spent['jobs']} jobs, {spent['gpu_hours']:.1f} GPU-hours, {spent['cpu_hours']:.1f} CPU-hours, "
        f"{spent['requeues']} requeues"
    )
