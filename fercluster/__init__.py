"""fercluster: the experiments of Khorrami et al. (ICCVW 2015) as reproducible SLURM sweeps.

The library (``fercluster.api``, documented in the README) is re-exported here lazily (PEP 562):
every job imports this package, and a job must not load pandas-heavy orchestration, rich,
submitit or ray for names it never uses. ``fercluster.results`` imports them on first use.

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
    "Results",
    "Submission",
    "OverrideChange",
    "ConfigError",
    "FerclusterError",
    "__version__",
]
_ERRORS = ("ConfigError", "FerclusterError")

if TYPE_CHECKING:  # for type checkers and editors; at run time, __getattr__ below
    from fercluster.api import (
        OverrideChange,
        Results,
        Submission,
        aggregate,
        cancel,
        load_config,
        plan,
        results,
        run_local,
        status,
        submit,
        sweep_config,
    )
    from fercluster.errors import ConfigError, FerclusterError


def __getattr__(name: str) -> Any:
    if name in _ERRORS:
        from fercluster import errors

        value = getattr(errors, name)
    elif name in __all__ and name != "__version__":
        from fercluster import api  # deferred: the one import of the top layer from here

        value = getattr(api, name)
    else:
        raise AttributeError(f"module 'fercluster' has no attribute {name!r}")
    globals()[name] = value  # later look-ups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
