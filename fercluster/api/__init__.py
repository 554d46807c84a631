"""fercluster as a library: the functions the ``fercluster`` commands are made of.

Re-exported lazily by ``fercluster`` itself (``fercluster.results``, ...). At the top of the layers,
with the CLI: it may use every other part of the package, and nothing below imports it. Every
function takes a config or a config path; every result is typed.

- ``sweeps``: ``load_config``, ``sweep_config`` (the config a command uses, with recorded
  overrides), ``plan``, ``submit`` (-> ``Submission``), ``run_local`` (-> ``LocalRun``), ``status``,
  ``cancel`` (-> ``Cancelled``), ``aggregate`` (-> ``Aggregation``).
- ``sweep_results``: ``results`` (-> ``Results``: jobs, metrics, predictions, accuracy, kl,
  activations as pandas DataFrames; a Ray Tune sweep's ``trials``).
- ``handles``: ``jobs`` (-> ``[Job]``: a handle per job: state, wait, result, logs, cancel).
- ``frames``: the dtypes the frames share and the ``params.*`` columns.
"""

from fercluster.api.handles import Job, JobResult, jobs
from fercluster.api.outcomes import Aggregation, Cancelled, LocalRun
from fercluster.api.sweep_results import Results, results
from fercluster.api.sweeps import (
    OverrideChange,
    Submission,
    aggregate,
    cancel,
    load_config,
    plan,
    record_last,
    run_local,
    status,
    submit,
    sweep_config,
)
from fercluster.api.tune_results import TuneResults

__all__ = [
    "load_config",
    "sweep_config",
    "plan",
    "submit",
    "run_local",
    "status",
    "cancel",
    "aggregate",
    "results",
    "jobs",
    "Job",
    "JobResult",
    "Results",
    "TuneResults",
    "Submission",
    "OverrideChange",
    "record_last",
    "LocalRun",
    "Aggregation",
    "Cancelled",
]
