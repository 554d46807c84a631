"""CLI commands: aggregate (placeholder until its issue lands)."""

import typer


def register(app: typer.Typer, bench: typer.Typer) -> None:
    pass
