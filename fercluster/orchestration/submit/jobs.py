"""The callables the coordinator submits (a training job, the aggregation job) and local mode runs.

All are module-level and take plain data, so submitit pickles them by reference. The training
and analysis code is imported inside, where the job runs. ``aggregate_job`` is the ONE place
where the orchestration reaches the analysis (``tests/test_layers.py`` names this exception).
"""

from __future__ import annotations

from typing import Any, Callable

from fercluster.code import check_imported_snapshot
from fercluster.config import SweepConfig, parse_config


def training_callable() -> Callable[..., Any]:
    """The training job as submitit's Checkpointable (requeued on pre-emption and time-out)."""
    from fercluster.orchestration.slurm.requeue import JobCheckpointable

    return JobCheckpointable()


def local_runner() -> Callable[..., Any]:
    """``run_job(spec, reporter=None, progress=None)`` for local mode."""
    from fercluster.train.job import run_job

    return run_job


def aggregate_job(config: dict[str, Any] | SweepConfig, console: Any = None) -> dict[str, Any]:
    """The aggregation: submitted after the training arrays (``afterany``) with the config as a
    plain dict, or called by local mode with the parsed config and its console."""
    from fercluster.analysis.report import aggregate
    from fercluster.orchestration.submit.aggregate import record_aggregated

    check_imported_snapshot()  # submitted: runs the code snapshot of the sweep's submission
    submitted = not isinstance(config, SweepConfig)
    cfg = parse_config(config, source="aggregation job") if submitted else config
    summary = aggregate(cfg, console=console)
    if submitted:  # the evidence that it completed, once SLURM forgets it (no accounting)
        record_aggregated(cfg.jobs_dir)
    return summary
