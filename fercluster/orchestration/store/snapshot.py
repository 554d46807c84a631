"""A sweep's status, typed: one ``JobRow`` per job and the ``StatusSnapshot`` of a refresh.

``status --json`` prints ``StatusSnapshot.to_dict()`` (with each job's attempts); the CLI renders
the snapshot itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from fercluster.orchestration.store.entries import AggregateEntry
from fercluster.train.attempts import Attempt


@dataclass(slots=True)
class JobRow:
    """One job as status shows it. Filled in by ``monitor.job_rows`` (so not frozen), then read only."""

    job_id: str
    dataset: str
    fold: int
    variant: str
    seed: int
    state: str  # one of ``vocabulary.STATES`` ("" while the monitor still has to ask)
    slurm_id: str | None = None
    iteration: int | None = None
    iterations: int | None = None
    k: float | None = None  # the job's init scale (as drawn from its identity, or recorded by the job)
    val_acc: float | None = None  # best validation accuracy so far (the final one when done)
    test_acc: float | None = None
    elapsed: float | None = None  # seconds
    node: str = ""
    reason: str = ""
    retries: int = 0
    submissions: int = 0
    run_dir: str = ""
    code: str | None = None  # the code it ran (job.json) or its latest submission runs: a snapshot hash or "live"
    gpu_hours: float | None = None  # its latest run's cost (sacct's AllocTRES x ElapsedRaw)
    cpu_hours: float | None = None
    requeues: int = 0  # resubmissions and requeues after a pre-emption or a stall (no retry used)
    progress_at: float | None = None  # when it last wrote progress.json (epoch seconds, the job's clock)
    sec_per_iter: float | None = None  # as the job measured it between its last two progress writes
    since_progress_s: float | None = None  # RUNNING: seconds without progress (``watch.stall``)
    stall_after_s: float | None = None  # RUNNING: the threshold it is judged by (None: not judged)
    stalled: bool = False  # RUNNING, and no progress for longer than ``stall_after_s``

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _ROW_FIELDS}  # flat: asdict's deep copy is slow


_ROW_FIELDS = tuple(f.name for f in fields(JobRow))


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a job that ended badly did (``status --failed``): submitit's exception and its log's tail."""

    exception: str = ""
    log_tail: str = ""
    log: str = ""


@dataclass(frozen=True, slots=True)
class CannotStart:
    """Pending jobs whose SLURM reason waiting never clears (``slurm.reasons.never_starts``)."""

    reason: str  # SLURM's, e.g. "PartitionTimeLimit"
    why: str  # in words, with what to do
    job_ids: tuple[str, ...]
    slurm_ids: tuple[str, ...]

    def line(self) -> str:
        ids = ", ".join(self.slurm_ids[:5]) + (", ..." if len(self.slurm_ids) > 5 else "")
        return f"warning: {len(self.job_ids)} pending jobs cannot start ({self.reason}): {self.why} (SLURM {ids})"

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "why": self.why, "jobs": list(self.job_ids), "slurm_ids": list(self.slurm_ids)}


@dataclass(frozen=True, slots=True)
class PendingRecord:
    """A submission written to the state before its sbatch whose outcome is not settled yet
    (``state.pending``): its jobs are held until a ``sweep`` finds it in SLURM or not."""

    name: str  # its SLURM job name
    kind: str  # train or aggregate
    age_s: float | None
    job_ids: tuple[str, ...]
    hint: str  # the command that drops it by hand
    warning: str  # what dropping it risks

    def line(self) -> str:
        age = "age unknown" if self.age_s is None else f"{self.age_s / 60:.0f} min old"
        held = "the aggregation job" if self.kind == "aggregate" else f"holds {len(self.job_ids)} jobs"
        return (
            f"pending submission {self.name} ({age}, {held}): its sbatch's outcome is not known; the next "
            f"`sweep` looks it up; if it stays stuck: {self.hint}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "age_s": self.age_s,
            "jobs": list(self.job_ids),
            "hint": self.hint,
            "warning": self.warning,
        }


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    sweep: str
    counts: Mapping[str, int]  # jobs by state, in ``STATES`` order, states with none left out
    jobs: list[JobRow]
    source: str  # the SLURM command that answered (squeue, sacct), or local
    stale: str | None = None  # why some states shown are the last known, not fresh
    aggregate: AggregateEntry | None = None
    aggregate_state: str = ""
    aggregate_reason: str = ""
    cost: Mapping[str, Any] | None = None  # cost.spent
    removed_from_config: tuple[str, ...] = ()
    code: Mapping[str, Any] | None = None  # snapshots.code_status
    failures: Mapping[str, Failure] = field(default_factory=dict)  # job id -> why (with --failed)
    pending: tuple[PendingRecord, ...] = ()  # submissions whose sbatch's outcome is not settled
    cannot_start: tuple[CannotStart, ...] = ()  # pending jobs that waiting will not start, by reason
    attempts: Mapping[str, tuple[Attempt, ...]] = field(default_factory=dict)  # job id -> its attempts (--json)

    @property
    def total(self) -> int:
        return len(self.jobs)

    @property
    def stalled(self) -> list[JobRow]:
        """RUNNING jobs whose progress has not moved for ``slurm.stall_min`` (``watch.stall``)."""
        return [r for r in self.jobs if r.stalled]

    def aggregate_dict(self) -> dict[str, Any] | None:
        if self.aggregate is None:
            return None
        out = self.aggregate.to_dict()
        if self.aggregate_state:
            out["state"] = self.aggregate_state
        if self.aggregate_reason:
            out["reason"] = self.aggregate_reason
        return out

    def to_dict(self) -> dict[str, Any]:
        """What ``status --json`` prints."""
        jobs = []
        for row in self.jobs:
            job = row.to_dict()
            why = self.failures.get(row.job_id)
            if why is not None:
                job.update(exception=why.exception, log_tail=why.log_tail, log=why.log)
            if row.job_id in self.attempts:
                job["attempts"] = [a.to_dict() for a in self.attempts[row.job_id]]
            jobs.append(job)
        return {
            "sweep": self.sweep,
            "counts": dict(self.counts),
            "stalled": len(self.stalled),
            "total": self.total,
            "source": self.source,
            "stale": self.stale,
            "aggregate": self.aggregate_dict(),
            "cost": self.cost,
            "removed_from_config": list(self.removed_from_config),
            "code": self.code,
            "pending": [p.to_dict() for p in self.pending],
            "cannot_start": [c.to_dict() for c in self.cannot_start],
            "jobs": jobs,
        }
