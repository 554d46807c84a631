"""fercluster: the experiments of Khorrami et al. (ICCVW 2015) as reproducible SLURM sweeps.

The library (``fercluster.api``, documented in the README) is re-exported here lazily (PEP 562):
every job imports this package, and a job must not load pandas-heavy orchestration, rich,
submitit or ray for names it never uses. ``fercluster.results`` imports them on first use.
``dir(fercluster)`` is ``__all__``: the API, its result types, ``SweepConfig`` and the errors.

    import fercluster
    cfg = fercluster.load_config("configs/smoke.yaml", overrides=["train.iterations=20"])
    fercluster.results(cfg).jobs
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
