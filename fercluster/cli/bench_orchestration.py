"""``fercluster bench orchestration``: the coordinator, status and results at scale, on a fake SLURM."""

from __future__ import annotations

import json

import typer

from fercluster.cli import tables


def register(app: typer.Typer, bench: typer.Typer) -> None:
    bench.command("orchestration")(bench_cmd)


def bench_cmd(
    jobs: int = typer.Option(10_000, "--jobs", help="Number of jobs in the synthetic sweep."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as one JSON object."),
) -> None:
    """Time planning, submission, a status refresh and a no-op re-run over a large synthetic sweep.

    Runs against the in-memory fake SLURM backend (no cluster needed).

    Example: fercluster bench orchestration --jobs 10000
    """
    from fercluster.api.sweep_results import results
    from fercluster.orchestration.bench import run_bench

    report = run_bench(jobs, results=results)
    if as_json:
        print(json.dumps(report))
        return
    console = tables.console()
    console.print(f"[bold]orchestration benchmark[/]: {report['jobs']} jobs, backend: {report['backend']}")
    for t in report["targets"]:
        mark = "[green]PASS[/]" if t["pass"] else "[red]FAIL[/]"
        console.print(f"  {mark} {t['name']}: {t['value']} (target {t['target']})")
    for k, v in report["figures"].items():
        console.print(f"  {k}: {v}")
    if not all(t["pass"] for t in report["targets"]):
        raise typer.Exit(1)
