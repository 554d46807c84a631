"""fercluster as a library: the functions the ``fercluster`` commands are made of.

Re-exported lazily by ``fercluster`` itself (``fercluster.results``, ...). At the top of the layers,
with the CLI: it may use every other part of the package, and nothing below imports it.

- ``sweeps``: ``load_config``, ``sweep_config`` (the config a command uses, with recorded
  overrides), ``plan``, ``submit`` (-> ``Submission``), ``run_local``, ``status``, ``cancel``,
  ``aggregate``.
- ``sweep_results``: ``results`` (-> ``Results``: jobs, metrics, predictions, accuracy, kl,
  activations as pandas DataFrames).
"""

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
    "Results",
    "Submission",
    "OverrideChange",
    "record_last",
]
