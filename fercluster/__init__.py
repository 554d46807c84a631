"""fercluster: the experiments of Khorrami et al. (ICCVW 2015) as reproducible SLURM sweeps.

The library (``fercluster.api``, documented in the README) is re-exported here lazily (PEP 562):
every job imports this package, and a job must not load pandas-heavy orchestration, rich,
submitit or ray for names it never uses. ``fercluster.results`` imports them on first use.
``dir(fercluster)`` is ``__all__``: the API, its result types, ``SweepConfig`` and the errors.

    import fercluster
    cfg = fercluster.load_config("configs/smoke.yaml", overrides=["train.iterations=20"])
    fercluster.results(cfg).jobs

Layout. Layers, lowest first; a module imports its own layer or lower ones, never up
(``tests/test_layers.py`` keeps it so, and the sizes: modules under 400 lines, functions under 50):

- the base (modules directly in ``fercluster/``): ``config`` (the typed settings), ``code`` (code
  snapshots), ``errors``, ``atomic``, ``lock``, ``overrides`` and the small helpers they share.
- ``data/``: the data sets (CK+, TFD, their synthetic stand-ins), cropped and prepared for training.
- ``train/``: the job side: model, training, checkpoints, and each run's records (``job.json``, ...).
- ``orchestration/``: from a sweep config to jobs on SLURM and back: ``submit/`` (plan, reconcile,
  submit), ``watch/`` (status, cost), ``local/`` (``sweep --local``), ``preflight/`` (``doctor``),
  ``store/`` (the typed files of a sweep's folder), ``slurm/`` (submitit and SLURM), ``tune/`` (Ray Tune).
- ``analysis/``: the tables, figures and report of a sweep's results.
- ``api/`` and ``cli/``: the library's functions (re-exported here) and the ``fercluster`` command,
  one module per command, a thin layer over the API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

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
    "LocalRun",
    "Aggregation",
    "Cancelled",
    "SweepConfig",
    "FerclusterError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "TrainingError",
    "SlurmError",
    "CodeError",
    "AnalysisError",
    "StoreError",
    "__version__",
]
# every FerclusterError of fercluster.errors is exported (tests/api/test_exports.py keeps it so)
_ERRORS = frozenset(name for name in __all__ if name.endswith("Error"))

if TYPE_CHECKING:  # for type checkers and editors; at run time, __getattr__ below
    from fercluster.api import (
        Aggregation,
        Cancelled,
        Job,
        JobResult,
        LocalRun,
        OverrideChange,
        Results,
        Submission,
        TuneResults,
        aggregate,
        cancel,
        jobs,
        load_config,
        plan,
        results,
        run_local,
        status,
        submit,
        sweep_config,
    )
    from fercluster.config import SweepConfig
    from fercluster.errors import (
        AnalysisError,
        CheckpointError,
        CodeError,
        ConfigError,
        DataError,
        FerclusterError,
        SlurmError,
        StoreError,
        TrainingError,
    )


def __getattr__(name: str) -> Any:
    if name in _ERRORS:
        from fercluster import errors

        value = getattr(errors, name)
    elif name == "SweepConfig":
        from fercluster import config

        value = config.SweepConfig
    elif name in __all__ and name != "__version__":
        from fercluster import api  # deferred: the one import of the top layer from here

        value = getattr(api, name)
    else:
        raise AttributeError(f"module 'fercluster' has no attribute {name!r}")
    globals()[name] = value  # later look-ups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
