"""One handle per job, as submitit's: ``fercluster.jobs(cfg)`` -> ``[Job, ...]`` in plan order.

(Named ``handles``: a module ``api.jobs`` would be shadowed by the function ``api.jobs``.)

A ``Job`` is a planned job of a sweep (its spec) and the backend that ran it (SLURM, or this
machine for ``run_local``): ``state`` asks again each time it is read, through the same rows as
``fercluster.status`` (``orchestration.watch.monitor.job_rows``: the run directory, then ONE query);
``fercluster.jobs`` builds every handle from one ``fercluster.status`` call. ``wait`` polls
``state``; ``result`` reads the job's ``job.json`` and ``metrics.parquet``; ``stdout``/``stderr``
are tails of its SLURM logs; ``cancel`` cancels it on SLURM.

    job = fercluster.jobs(cfg)[0]
    job.wait(timeout=600)
    job.result().metrics
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from fercluster.api.outcomes import Cancelled
from fercluster.api.sweeps import _grid_only, cancel, slurm_backend, status
from fercluster.config import SweepConfig
from fercluster.errors import AnalysisError
from fercluster.orchestration.store.vocabulary import COMPLETED, ENDED_BADLY, NOT_SUBMITTED
from fercluster.train.spec import JobSpec

DONE = (COMPLETED, *ENDED_BADLY, NOT_SUBMITTED)  # states ``wait`` returns on: nothing more happens by itself


@dataclass(frozen=True)
class JobResult:
    """A complete job's record (``job.json``) and its evaluations (``metrics.parquet``)."""

    job_id: str
    dataset: str
    fold: int
    variant: str
    seed: int
    k: float | None  # the init scale it drew
    val_acc: float | None  # of the selected checkpoint (fractions, 0-1)
    test_acc: float | None
    selected_iteration: int | None
    run_dir: Path
    record: Mapping[str, Any] = field(repr=False)  # job.json, every field
    metrics: pd.DataFrame = field(repr=False)  # iteration, train_loss, train_acc, val_acc, test_acc, wall_time


class Job:
    """A planned job of a sweep; build them with ``fercluster.jobs(config)``."""

    def __init__(self, config: SweepConfig, spec: JobSpec, backend: Any, row: Mapping[str, Any] | None = None):
        self.config, self.spec, self._backend = config, spec, backend
        self.row: dict[str, Any] = dict(row or {})  # the latest status row (``fercluster.status``'s columns)

    job_id = property(lambda self: self.spec.job_id)
    dataset = property(lambda self: self.spec.dataset)
    fold = property(lambda self: self.spec.fold)
    variant = property(lambda self: self.spec.variant)
    seed = property(lambda self: self.spec.seed)
    run_dir = property(lambda self: Path(self.spec.run_dir))

    def __repr__(self) -> str:  # the state last read: a repr asks nothing
        state = self.row.get("state") or "?"
        return f"<Job {self.job_id} {self.dataset} fold {self.fold} {self.variant}: {state}>"

    @property
    def state(self) -> str:
        """The job's state now (one query, as ``fercluster.status`` asks it): PENDING, RUNNING,
        COMPLETED, FAILED, CANCELLED, TIMEOUT, PREEMPTED or NOT_SUBMITTED."""
        from fercluster.orchestration.store.state import load_state
        from fercluster.orchestration.watch.monitor import job_rows

        state = load_state(self.config.jobs_dir, self.config.name)
        (row,) = job_rows([self.spec], state, self._backend)
        self.row = row.to_dict()
        return row.state

    def wait(self, timeout: float | None = None, poll: float = 5.0) -> str:
        """Poll ``state`` every ``poll`` seconds until the job is COMPLETED, ended badly (FAILED,
        CANCELLED, TIMEOUT, PREEMPTED) or NOT_SUBMITTED (nothing runs it); returns that state.
        Raises ``TimeoutError`` when ``timeout`` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.state
            if state in DONE:
                return state
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"job {self.job_id} still {state} after {timeout} s (sweep {self.config.name})")
            time.sleep(poll if left is None else min(poll, left))

    def result(self) -> JobResult:
        """The job's record and metrics; ``AnalysisError`` when it is not complete (or unreadable)."""
        from fercluster.analysis.collect import ALL_METRIC_COLUMNS, read_runs
        from fercluster.analysis.collect import JobResult as Collected

        (outcome,) = read_runs([self.run_dir], metric_columns=ALL_METRIC_COLUMNS)
        if isinstance(outcome, dict):
            raise AnalysisError(f"job {self.job_id} completed but its files do not read: {outcome['reason']}")
        if not isinstance(outcome, Collected):
            raise AnalysisError(
                f"job {self.job_id} is not complete ({self.state}): it has no job.json in {self.run_dir} yet; "
                "wait for it with job.wait()"
            )
        info = outcome.info
        metrics = pd.DataFrame({c: outcome.metrics[c] for c in ALL_METRIC_COLUMNS})
        number = lambda key: float(info[key]) if isinstance(info.get(key), (int, float)) else None  # noqa: E731
        selected = info.get("selected_iteration")
        return JobResult(
            self.job_id,
            self.dataset,
            self.fold,
            self.variant,
            self.seed,
            number("k"),
            number("val_acc"),
            number("test_acc"),
            int(selected) if selected is not None else None,
            self.run_dir,
            dict(info),
            metrics.astype({"iteration": "int64"}),
        )

    def stdout(self, lines: int = 20) -> str:
        """The last ``lines`` of its SLURM stdout log; "" when it has none (never on SLURM: a local
        run prints to ``run_local``'s console)."""
        return self._log("stdout", lines)

    def stderr(self, lines: int = 20) -> str:
        """The last ``lines`` of its SLURM stderr log (tracebacks land here); "" when it has none."""
        return self._log("stderr", lines)

    def cancel(self) -> Cancelled:
        """Cancel it on SLURM if it is queued or running (a job run here: nothing to cancel)."""
        return cancel(self.config, self.job_id, backend=self._backend)

    def _log(self, which: str, lines: int) -> str:
        from fercluster.orchestration.store.state import load_state
        from fercluster.orchestration.watch.monitor import submitit_paths

        slurm_id = load_state(self.config.jobs_dir, self.config.name).slurm_id(self.job_id)
        if not slurm_id:
            return ""
        path = getattr(submitit_paths(self.config.jobs_dir / "submitit", slurm_id), which)
        try:
            text = Path(path).read_text(errors="replace")
        except (FileNotFoundError, NotADirectoryError):
            return ""
        return "\n".join(text.splitlines()[-lines:]) if lines > 0 else ""


def jobs(config: SweepConfig | str | Path, *, backend: Any = None) -> list[Job]:
    """A handle per planned job, in plan order, with the states of ONE ``fercluster.status`` query.

    ``config``: a config or a config path; ``backend``: SLURM by default (a job run here by
    ``run_local`` is seen without it, as in ``status``)."""
    from fercluster.orchestration.submit.plan import expand

    config = _grid_only(config, "jobs")
    backend = backend or slurm_backend(config)
    rows = status(config, backend=backend).to_dict("records")
    return [Job(config, spec, backend, row) for spec, row in zip(expand(config), rows, strict=True)]
