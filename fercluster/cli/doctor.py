"""CLI command ``fercluster doctor``: the preflight checks of ``orchestration.preflight.doctor``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

ERROR_EXIT = 1  # at least one check is an error


def doctor(
    config: Optional[Path] = typer.Argument(None, help="Sweep config (YAML); without it, the cluster only."),
    no_job: bool = typer.Option(False, "--no-job", help="Do not submit the tiny job to a compute node."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (checks, login, node)."),
    timeout: float = typer.Option(300, "--timeout", min=10, help="Seconds the node's job may queue and run."),
) -> None:
    """Check SLURM, accounting, the config's partition and resources, GPUs, data and folders, and
    one job on a compute node, before a sweep. Each line: ok, warning or error with its fix; the
    exit code is 1 when a line is an error.

    Example: fercluster doctor configs/paper.yaml
    """
    from fercluster.config import load_config
    from fercluster.orchestration.preflight.doctor import ERROR, run_doctor

    cfg = load_config(config) if config is not None else None
    report = run_doctor(cfg, job=not no_job, timeout_s=timeout)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        what = f"sweep {cfg.name} ({config})" if cfg is not None else "the cluster (no config given)"
        typer.echo(f"fercluster doctor: {what}")
        width = max(len(c.name) for c in report.checks)
        for check in report.checks:
            typer.echo(f"{check.status:<8} {check.name:<{width}}  {check.message}")
            if check.fix:
                typer.echo(f"{'':<8} {'':<{width}}  fix: {check.fix}")
        n_ok = len(report.checks) - report.errors - report.warnings
        typer.echo(f"{n_ok} ok, {report.warnings} warning(s), {report.errors} error(s)")
    if any(c.status == ERROR for c in report.checks):
        raise typer.Exit(ERROR_EXIT)


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("doctor")(doctor)
