"""``fercluster cancel``: a sweep's queued and running jobs cancelled (``fercluster.api.cancel``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fercluster.cli import tables
from fercluster.cli.overrides import load, set_option


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("cancel")(cancel_cmd)


def cancel_cmd(
    config: Path = typer.Argument(..., help="Sweep config (YAML)."),
    job: Optional[str] = typer.Option(None, "--job", help="Cancel only this job (fercluster job id or SLURM id)."),
    sets: Optional[list[str]] = set_option(),
) -> None:
    """Cancel a sweep's queued and running jobs on SLURM (and its aggregation job).

    Example: fercluster cancel configs/smoke.yaml --job 3fa2c81d09
    """
    from fercluster.api import cancel

    cfg = load(config, sets)
    done = cancel(cfg, job, backend=tables.backend(cfg))
    tables.console().print(f"cancelled {len(done)} SLURM job(s) of sweep {cfg.name}: {done.by_array}", soft_wrap=True)
