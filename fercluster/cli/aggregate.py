"""CLI commands: ``fercluster aggregate`` and ``fercluster bench aggregate``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from fercluster.cli.overrides import load, set_option


def aggregate_cmd(
    config: Path = typer.Argument(..., help="The sweep's YAML config."),
    as_json: bool = typer.Option(False, "--json", help="Print summary.json instead of the table."),
    sets: Optional[list[str]] = set_option(),
) -> None:
    """Tables, curves, filter grids, KL rankings and a report from a sweep's complete jobs.

    Example: fercluster aggregate configs/demo.yaml
    """
    from rich.console import Console

    from fercluster.api import aggregate

    cfg = load(config, sets)
    done = aggregate(cfg, console=Console(stderr=True))
    if as_json:
        print(json.dumps(done.to_dict(), indent=2, default=str))
        return
    if len(done.accuracy):
        Console().print(accuracy_table(done.accuracy, cfg.name))
    print(f"report: {done.report}")
    if done.agreement is not None:
        print(
            f"agreement with planted AU regions: {done.agreement:.2f} (shuffled labels: {done.agreement_shuffled:.2f})"
        )
    if done.missing:
        print(f"{len(done.missing)} planned jobs not complete (listed in the report)")


def bench_aggregate(
    jobs: int = typer.Option(10_000, "--jobs", min=1, help="Fabricated job result sets to aggregate."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Time the tables over fabricated jobs and the KL rankings of one job (256 x 30 x 1,300).

    Example: fercluster bench aggregate --jobs 10000
    """
    from fercluster.analysis.bench import run_bench

    r = run_bench(jobs)
    if as_json:
        print(json.dumps(r, indent=2))
        return
    print(
        f"{r['jobs']} FABRICATED job result sets (random, no training) written in {r['fabricate_s']:.1f} s "
        "to a temporary folder"
    )
    print(
        f"tables: plan (orchestration's expand) {r['plan_s']:.2f} s, read {r['jobs_read']} jobs "
        f"{r['read_s']:.2f} s, tables + files {r['tables_s']:.2f} s; total {r['total_s']:.2f} s (target < 10 s)"
    )
    print(
        f"KL rankings of one job ({r['filters']} filters x {r['aus']} AUs x {r['images']} images): "
        f"{r['kl_s'] * 1000:.0f} ms median (target < 1 s)"
    )


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("aggregate")(aggregate_cmd)
    bench.command("aggregate")(bench_aggregate)


def accuracy_table(table, sweep: str):
    from rich.table import Table

    from fercluster.analysis.tables import QUOTED, QUOTED_NOTE, STD_NOTE, display_rows

    out = Table(title=f"sweep {sweep}: test accuracy", caption=f"{STD_NOTE}; {QUOTED_NOTE}")
    rows = display_rows(table)
    for col in rows[0] if rows else {}:
        out.add_column(col, justify="left" if col in ("data set", "variant") else "right")
    for row, diff, source in zip(rows, table["diff"], table["source"], strict=True):
        quoted = source == QUOTED  # the paper's quotation of prior art: shown, never coloured as ours
        style = None if quoted or not math.isfinite(diff) else ("green" if diff >= 0 else "yellow")
        out.add_row(*row.values(), style=style)
    return out
