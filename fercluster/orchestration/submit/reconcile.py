"""Reconciling, pure: which planned jobs to submit, retry, requeue, skip or leave, and which
jobs of the state the config no longer has.

``reconcile`` compares the plan with one row per job (``watch.monitor.job_rows``: the run
directories and ONE query) and returns a ``Diff``; ``coordinator.run_sweep`` carries it out.
Nothing here reads a file or asks the backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from fercluster.config import Train
from fercluster.orchestration.store.state import SweepState
from fercluster.orchestration.store.vocabulary import ACTIVE, COMPLETED, NOT_SUBMITTED, PREEMPTED
from fercluster.orchestration.watch.monitor import JobRow
from fercluster.train.spec import JobSpec


@dataclass
class Diff:
    submit: list[JobSpec] = field(default_factory=list)  # never submitted (or local run stopped)
    retry: list[JobSpec] = field(default_factory=list)  # ended badly, --retry-failed, retries left
    requeue: list[JobSpec] = field(default_factory=list)  # pre-empted (SIGTERM): resubmitted, no retry used
    done: list[JobSpec] = field(default_factory=list)
    active: list[JobSpec] = field(default_factory=list)  # queued or running: left alone
    failed: list[tuple[JobSpec, JobRow]] = field(default_factory=list)  # ended badly, not retried
    removed: list[str] = field(default_factory=list)  # in the state, not in the config, still active
    waiting: list[tuple[JobSpec, str]] = field(default_factory=list)  # not submitted this time, and why

    def summary(self) -> dict[str, int]:
        out = {
            "submit": len(self.submit),
            "retry": len(self.retry),
            "requeue": len(self.requeue),
            "done": len(self.done),
            "active": len(self.active),
            "failed": len(self.failed),
            "removed": len(self.removed),
        }
        if self.waiting:
            out["waiting"] = len(self.waiting)
        return out

    def hold(self, job_ids: set[str], why: str) -> None:
        """Move the jobs ``job_ids`` out of submit and retry, into waiting (``why``)."""
        self.waiting += [(s, why) for s in self.submit + self.retry + self.requeue if s.job_id in job_ids]
        self.submit = [s for s in self.submit if s.job_id not in job_ids]
        self.retry = [s for s in self.retry if s.job_id not in job_ids]
        self.requeue = [s for s in self.requeue if s.job_id not in job_ids]


def reconcile(
    specs: Sequence[JobSpec],
    rows: Sequence[JobRow],
    state: SweepState,
    *,
    retry_failed: bool,
    max_retries: int,
    removed_rows: Sequence[JobRow] = (),
) -> Diff:
    diff = Diff()
    for spec, row in zip(specs, rows, strict=True):
        if row.state == COMPLETED:
            diff.done.append(spec)
        elif row.state in ACTIVE:
            diff.active.append(spec)
        elif row.state == NOT_SUBMITTED:
            diff.submit.append(spec)
        elif row.state == PREEMPTED:  # SLURM took the node back (PreemptMode=CANCEL): not the job's fault
            diff.requeue.append(spec)
        elif retry_failed and row.retries < max_retries:
            diff.retry.append(spec)
        else:
            if retry_failed:
                row.reason = f"retries exhausted ({row.retries}/{max_retries}); {row.reason}"
            diff.failed.append((spec, row))
    diff.removed = [r.job_id for r in removed_rows if r.state in ACTIVE]
    return diff


def removed_specs(specs: Sequence[JobSpec], state: SweepState) -> list[JobSpec]:
    """Jobs the state knows that the config no longer has (as stand-in specs for the monitor)."""
    planned = {s.job_id for s in specs}
    # their settings are gone: no iteration count or k to show (k: None is neither a number nor "random")
    unknown = Train.model_construct(iterations=0, k=None)
    out = []
    for job_id, e in state.jobs.items():
        if job_id not in planned:
            out.append(
                JobSpec(
                    sweep=state.sweep,
                    dataset=e.dataset or "?",
                    kind="?",
                    classes=0,
                    fold=-1 if e.fold is None else e.fold,
                    variant=e.variant or "?",
                    seed=-1 if e.seed is None else e.seed,
                    train=unknown,
                    prepared_dir="",
                    run_dir=e.run_dir or "/nonexistent",
                    job_id=job_id,
                )
            )
    return out
