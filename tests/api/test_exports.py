"""What ``import fercluster`` offers: the API, its result types, ``SweepConfig`` and every error."""

from __future__ import annotations

import inspect

import fercluster
from fercluster import errors


def test_dir_shows_only_the_api() -> None:
    shown = dir(fercluster)
    assert shown == sorted(fercluster.__all__)
    assert not {"Any", "TYPE_CHECKING", "annotations", "_ERRORS"} & set(shown)
    for name in fercluster.__all__:
        assert getattr(fercluster, name) is not None, name


def test_every_error_and_the_config_type_are_exported() -> None:
    defined = {name for name, value in vars(errors).items()
               if inspect.isclass(value) and issubclass(value, errors.FerclusterError)}  # fmt: skip
    assert defined <= set(fercluster.__all__), f"not exported from fercluster: {sorted(defined - set(dir(fercluster)))}"
    assert {"ConfigError", "DataError", "SlurmError", "AnalysisError", "FerclusterError"} <= defined
    assert fercluster.AnalysisError is errors.AnalysisError and issubclass(
        fercluster.SlurmError, fercluster.FerclusterError
    )
    from fercluster.config import SweepConfig

    assert fercluster.SweepConfig is SweepConfig


def test_the_api_returns_typed_results() -> None:
    """No ``dict[str, Any]`` return: every function's return annotation names a type of the API."""
    for name in ("plan", "submit", "run_local", "status", "cancel", "aggregate", "results", "jobs"):
        returned = inspect.signature(getattr(fercluster, name)).return_annotation
        assert "dict" not in str(returned) and returned is not inspect.Signature.empty, (name, returned)
    assert fercluster.__dict__.get("Any") is None or "Any" not in dir(fercluster)
