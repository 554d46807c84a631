"""The ``--set KEY=VALUE`` option of the commands that read a sweep config, and the config it gives.

``--set`` (repeatable) overrides one setting of the file (``fercluster.overrides``); without it, a
command uses the overrides recorded by the sweep's last run (``fercluster.api.sweep_config``) and
says so on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

SET_HELP = (
    "Override a setting of the config: KEY=VALUE, a dotted key and a YAML value, e.g. "
    "--set train.iterations=500 --set grid.0.folds=[0,1]; repeatable. Default: the overrides of the sweep's last run."
)


def set_option() -> Any:
    return typer.Option(None, "--set", metavar="KEY=VALUE", help=SET_HELP)


def load(config: Optional[Path], sets: Optional[list[str]], *, no_overrides: bool = False, hint: str = "") -> Any:
    """The config of a command: ``config`` (default: the last sweep) with ``--set`` (default: recorded)."""
    from fercluster.api import sweep_config
    from fercluster.errors import ConfigError
    from fercluster.orchestration.preflight.folders import require_folders

    if no_overrides and sets:
        raise ConfigError("--no-overrides uses the config file alone; it does not combine with --set")
    given = list(sets or []) or ([] if no_overrides else None)
    cfg = sweep_config(config, given)
    require_folders(cfg)  # before any work: paths.jobs / paths.results under a file or not writable
    if given is None and cfg.overrides:
        print(
            f"note: sweep {cfg.name}: using the overrides of its last run: {' '.join(cfg.overrides)}"
            + (f" ({hint})" if hint else " (--set replaces them)"),
            file=sys.stderr,
        )
    return cfg
