"""The column types every API frame shares, and the per-job parameter columns (``params.*``).

``plan``, ``status``, ``results`` and ``jobs`` describe the same jobs, so a column they share has
one dtype in all of them (``typed``); a test compares them. Integers are pandas' nullable
``Int64``: ``results`` of a results folder has jobs whose fold and seed are not known until their
``job.json`` is written, and ``status`` has jobs with no iteration yet; ``int64`` cannot hold a
missing value (pandas would turn the column into ``float64`` or ``object``), ``Int64`` can, and it
compares equal to plain ints. Text columns are pandas' ``str``; accuracies and ``k`` ``float64``.

Parameters, as MLflow's ``params.*`` columns: a job's resolved training settings (every field of
``fercluster.config.Train``, ``k`` as drawn for the job), from its spec (the plan's for a planned
job, ``job.json``'s for a complete one), so jobs can be grouped and filtered by what they ran with.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Iterable, Mapping

import pandas as pd

from fercluster.config import Train

PREFIX = "params."
TEXT = ("job_id", "dataset", "variant", "state", "run_dir", "action")
COLUMN_TYPES: dict[str, str] = {
    **{name: "str" for name in TEXT},
    **{name: "Int64" for name in ("fold", "seed", "iteration", "iterations", "selected_iteration", "from_iteration")},
    **{name: "float64" for name in ("k", "val_acc", "test_acc", "elapsed", "gpu_hours", "cpu_hours")},
    **{
        name: "float64" for name in ("progress_at", "sec_per_iter", "since_progress_s", "stall_after_s", "start", "end")
    },
}


def _param_type(annotation: Any) -> str:
    """The dtype of a ``Train`` field: int -> Int64, float -> float64, bool -> boolean, else str."""
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "Int64"
    if annotation is float:
        return "float64"
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        if float in typing.get_args(annotation):  # k: a number or "random"/"from_tune": resolved, a number
            return "float64"
    return "str"


PARAM_TYPES: dict[str, str] = {
    PREFIX + name: _param_type(field.annotation) for name, field in Train.model_fields.items()
}
PARAM_COLUMNS = list(PARAM_TYPES)
_TRAIN_FIELDS = tuple(Train.model_fields)  # once: pydantic's class property costs 10 us per access
_K = _TRAIN_FIELDS.index("k")


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the shared dtypes on the columns it has (``COLUMN_TYPES``, ``PARAM_TYPES``)."""
    types_ = {c: t for c, t in {**COLUMN_TYPES, **PARAM_TYPES}.items() if c in frame.columns}
    return frame.astype(types_)


def param_row(train: Mapping[str, Any] | None, k: float | None) -> list[Any]:
    """A job's ``params.*`` values, in ``PARAM_COLUMNS`` order: its ``train`` settings (a
    ``Train``'s JSON dump, e.g. ``job.json``'s ``spec.train``) with ``k`` as drawn for the job."""
    train = train or {}
    row = [train.get(name) for name in _TRAIN_FIELDS]  # PARAM_COLUMNS' order
    row[_K] = k
    return row


def params_frame(rows: Iterable[list[Any]]) -> pd.DataFrame:
    """The ``params.*`` columns of some jobs, typed, from their ``param_row``s."""
    return typed(pd.DataFrame(list(rows), columns=PARAM_COLUMNS))


def with_params(frame: pd.DataFrame, rows: Iterable[list[Any]]) -> pd.DataFrame:
    """``frame`` (one row per job) with the jobs' ``params.*`` columns appended."""
    params = params_frame(rows)
    params.index = frame.index
    return pd.concat([frame, params], axis=1)
