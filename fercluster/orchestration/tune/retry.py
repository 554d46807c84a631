"""``fercluster sweep --retry-failed`` on a Ray Tune search: its trials that ended in error, run again.

Ray restores a search with its errored trials left as they are unless told otherwise
(``Tuner.restore(..., resume_errored=True)``), and it can only be told for all of a Tuner's errored
trials at once. So a retry is a round: ``begin`` counts it in ``search.json`` (``retries``) and
names the data sets whose next restore resumes their errored trials (``retry_errored``), each from
its last checkpoint, as a grid job's retry resumes; the driver's restore of such a data set takes
its name off (``take``), so one round resumes them once, even when the allocation is requeued
during it. At most ``slurm.max_retries`` rounds per search, so no trial runs again more often than
that. A plain ``sweep`` restores an interrupted search without its errored trials, as it leaves a
grid's failed jobs alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Mapping

from fercluster.config import SweepConfig
from fercluster.orchestration.store.vocabulary import FAILED, from_ray
from fercluster.orchestration.tune.state import load_search, save_search, status_path, trial_row


@dataclass(frozen=True)
class RetryPlan:
    """What ``--retry-failed`` does to a search: ``round`` 0 when it reruns nothing."""

    failed: Mapping[str, int]  # data set -> its trials that ended in error
    round: int  # this retry's number (1: the first)
    max_retries: int  # slurm.max_retries

    def line(self, sweep: str) -> str:
        count = sum(self.failed.values())
        if not count:
            return f"search {sweep}: no failed trials to retry"
        if not self.round:
            return (
                f"search {sweep}: {count} failed trial(s) not retried: retried {self.max_retries} time(s) already "
                "(slurm.max_retries); raise it to retry again"
            )
        return (
            f"search {sweep}: retrying {count} failed trial(s) of {', '.join(self.failed)} from their last "
            f"checkpoint (retry {self.round} of at most {self.max_retries}, slurm.max_retries)"
        )


def failed_trials(cfg: SweepConfig) -> dict[str, int]:
    """Per data set of the search, its trials that ended in error (Ray's ERROR), from the status
    files the driver wrote (no Ray); data sets without any are left out."""
    assert cfg.tune is not None
    failed: dict[str, int] = {}
    for name in cfg.tune.datasets:
        try:
            rows = json.loads(status_path(cfg, name).read_text()).get("trials", [])
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        count = sum(1 for row in map(trial_row, rows) if from_ray(row["state"], row["stopped_by_asha"]) == FAILED)
        if count:
            failed[name] = count
    return failed


def begin(cfg: SweepConfig, write: bool = True) -> RetryPlan:
    """Begin a retry round, or say why there is none (``write=False``: only say, for a dry run).

    A round begun whose restore has not run yet (its data sets still named) is that same round,
    not counted again.
    """
    record, failed, limit = load_search(cfg), failed_trials(cfg), cfg.slurm.max_retries
    if record.retry_errored:
        return RetryPlan({name: failed.get(name, 0) for name in record.retry_errored}, record.retries, limit)
    if not failed or record.retries >= limit:
        return RetryPlan(failed, 0, limit)
    plan = RetryPlan(failed, record.retries + 1, limit)
    if write:
        save_search(cfg, replace(record, retries=plan.round, retry_errored=tuple(failed)))
    return plan


def pending(cfg: SweepConfig, dataset: str) -> bool:
    """Whether the next restore of ``dataset`` resumes its errored trials (a round names it)."""
    return dataset in load_search(cfg).retry_errored


def take(cfg: SweepConfig, dataset: str) -> None:
    """The restore of ``dataset`` resumed its errored trials: its name comes off the round."""
    record = load_search(cfg)
    save_search(cfg, replace(record, retry_errored=tuple(d for d in record.retry_errored if d != dataset)))
