"""``fercluster status``: a sweep's jobs, counts by state and one row per job, once or live."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from fercluster.cli import tables
from fercluster.cli.overrides import load, set_option
from fercluster.orchestration.store.vocabulary import ACTIVE, ENDED_BADLY

if TYPE_CHECKING:
    from rich.console import Console, Group, RenderableType

    from fercluster.config import SweepConfig
    from fercluster.orchestration.backend import Backend
    from fercluster.orchestration.store.snapshot import StatusSnapshot

# where a status refresh read the states of jobs not done (status.snapshot's "source")
SOURCE_TEXT = {
    "": "SLURM not asked: no job of the sweep waits on it",
    "sacct": "states from SLURM's sacct",
    "squeue": "states from SLURM's squeue",
    "local": "states of jobs running here",
}


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("status")(status_cmd)


def status_cmd(
    config: Optional[Path] = typer.Argument(None, help="Sweep config (default: the most recent sweep)."),
    watch: bool = typer.Option(False, "--watch", help="Refresh live until every job has ended."),
    failed: bool = typer.Option(False, "--failed", help="Show each failed job's reason and the tail of its log."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with a 'jobs' list."),
    interval: float = typer.Option(
        30.0,
        "--interval",
        help="Seconds between refreshes with --watch (at least slurm.watch_floor_s; longer on errors).",
    ),
    sets: Optional[list[str]] = set_option(),
) -> None:
    """Show a sweep's jobs: counts by state and one row per job (one SLURM query per refresh).

    Example: fercluster status configs/smoke.yaml --watch
    """
    cfg = load(config, sets)
    if cfg.tune is not None:
        _tune_status(cfg, as_json)
        return
    from fercluster.api.sweeps import never_submitted
    from fercluster.orchestration.watch.status import snapshot

    never_submitted(cfg)
    backend = tables.backend(cfg)
    if as_json:
        print(json.dumps(snapshot(cfg, backend, failed=failed, attempts=True).to_dict(), default=str))
        return
    console = tables.console()
    if not watch:
        console.print(_render(cfg, snapshot(cfg, backend, failed=failed), failed))
        return
    _watch(cfg, backend, console, failed, interval)


def _tune_status(cfg: SweepConfig, as_json: bool) -> None:
    """A Ray Tune search's trials (its own table)."""
    from fercluster.orchestration.tune.state import status_table, tune_status

    snap = tune_status(cfg)
    if as_json:
        print(json.dumps({"sweep": cfg.name, "tune": snap, "jobs": []}, default=str))
    else:
        tables.console().print(status_table(snap) if snap is not None else f"no tune run recorded for {cfg.name}")


def _watch(cfg: SweepConfig, backend: Backend, console: Console, failed: bool, interval: float) -> None:
    """Refresh until every job has ended: never faster than the floor, backing off while SLURM fails."""
    from rich.live import Live

    from fercluster.orchestration.watch.status import snapshot, watch_interval

    floor = cfg.slurm.watch_floor_s
    if interval < floor:
        console.print(f"note: --interval {interval:g} s is below slurm.watch_floor_s: refreshing every {floor:g} s")
    failures = 0
    with Live(console=console, auto_refresh=False) as live:
        while True:
            snap = snapshot(cfg, backend, failed=failed)
            failures = failures + 1 if snap.stale else 0
            wait = watch_interval(interval, floor, failures)
            live.update(_render(cfg, snap, failed, next_s=wait), refresh=True)
            if not any(k in snap.counts for k in ACTIVE):
                break
            time.sleep(wait)


def _render(cfg: SweepConfig, snap: StatusSnapshot, failed: bool, next_s: float | None = None) -> Group:
    """The status screen of a ``StatusSnapshot``: a header, the notes, the jobs table (or the failed jobs)."""
    from rich.console import Group
    from rich.text import Text

    parts: list[RenderableType] = [
        Text.from_markup(
            f"[bold]{cfg.name}[/]: {snap.total} jobs  "
            + tables.counts_line(dict(snap.counts))
            + f"  ({SOURCE_TEXT.get(snap.source, snap.source)}, at {time.strftime('%H:%M:%S')})"
        )
    ]
    if snap.stale:
        parts.append(
            Text(
                f"stale: a SLURM query failed ({snap.stale}); jobs no other query answered for show their last "
                "known state, marked stale",
                style="yellow",
            )
        )
    if snap.stalled:
        parts.append(_stalled_text(cfg, snap))
    if next_s is not None:
        parts.append(Text(f"next refresh in {next_s:g} s" + (" (backing off)" if snap.stale else "")))
    if snap.cost:
        parts.append(Text(f"cost: {snap.cost['line']}"))
    if snap.aggregate is not None:
        parts.append(Text(f"aggregation job {snap.aggregate.slurm_id}: {snap.aggregate_state or '-'}"))
    if snap.code:
        parts.append(Text(snap.code["line"]))
        if "warning" in snap.code:
            parts.append(Text(snap.code["warning"], style="yellow"))
    for stuck in snap.cannot_start:
        parts.append(Text(stuck.line(), style="yellow"))
    for record in snap.pending:
        parts.append(Text(record.line(), style="yellow"))
    if snap.pending:
        parts.append(Text(f"warning: --forget-pending: {snap.pending[0].warning}", style="yellow"))
    parts += _failed_parts(snap) if failed else [tables.jobs_table(snap.jobs)]
    return Group(*parts)


def _stalled_text(cfg: SweepConfig, snap: StatusSnapshot, shown: int = 5) -> RenderableType:
    """How many RUNNING jobs are stalled, the first few with their time without progress, and the fix."""
    from rich.text import Text

    from fercluster.orchestration.watch.stall import stall_line

    rows = snap.stalled
    lines = [
        f"{len(rows)} running job{'s' if len(rows) != 1 else ''} stalled: no progress for longer than "
        f"slurm.stall_min; `fercluster sweep {os.path.relpath(cfg.source) if cfg.source else 'CONFIG'} "
        "--requeue-stalled` requeues them"
    ]
    lines += [f"  {r.job_id} (SLURM {r.slurm_id or '-'}, node {r.node or '-'}): {stall_line(r)}" for r in rows[:shown]]
    return Text("\n".join(lines), style="red")


def _failed_parts(snap: StatusSnapshot) -> list[RenderableType]:
    """The failed jobs' table, then per job its reason, exception and log tail."""
    from rich.markup import escape
    from rich.text import Text

    bad = [r for r in snap.jobs if r.state in ENDED_BADLY]
    if not bad:
        return [Text("no failed jobs")]
    parts: list[RenderableType] = [tables.jobs_table(bad, title="failed jobs")]
    for r in bad:
        parts.append(
            Text.from_markup(  # the reason is the job's own text: "[...]" in it is not markup
                f"[red]{r.job_id}[/] ({r.dataset} fold {r.fold} {r.variant} "
                f"seed {r.seed}, SLURM {r.slurm_id}): {escape(str(r.reason))}"
            )
        )
        why = snap.failures.get(r.job_id)
        if why is not None and why.exception:
            parts.append(Text(f"  exception: {why.exception}"))
        if why is not None and why.log_tail:
            parts.append(Text(f"  log {why.log}:\n" + "\n".join("    " + ln for ln in why.log_tail.splitlines())))
    return parts
