"""The callables the coordinator submits: a training job and the aggregation job.

Both are module-level and take plain data, so submitit pickles them by reference. Imports of the
training and analysis code happen inside, on the node.
"""

from __future__ import annotations

from typing import Any, Callable


def training_callable() -> Callable[..., Any]:
    """The training job as submitit's Checkpointable (requeued on pre-emption and time-out)."""
    from fercluster.train.job import JobCheckpointable

    return JobCheckpointable()


def local_runner() -> Callable[..., Any]:
    """``run_job(spec, reporter=None)`` for local mode."""
    from fercluster.train.job import run_job

    return run_job


def aggregate_job(config: dict[str, Any]) -> dict[str, Any]:
    """The aggregation job (submitted after the training arrays, ``afterany``)."""
    from fercluster.config import parse_config

    from fercluster.analysis.report import aggregate

    return aggregate(parse_config(config, source="aggregation job"))
