"""CLI commands: ``sweep``, ``status``, ``cancel`` and ``bench orchestration``.

A thin layer over ``fercluster.orchestration``: the library plans, submits and reads states; this
module picks the backend, prints tables and turns options into calls.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import typer

from fercluster import fmt
from fercluster.cli.overrides import load, set_option
from fercluster.errors import ConfigError
from fercluster.orchestration.store.vocabulary import ACTIVE, ENDED_BADLY
from fercluster.orchestration.store.vocabulary import STYLE as STATE_STYLE

INTERRUPTED_EXIT = 130  # a search stopped before its end (Ctrl-C): running the command again restores it

# where a status refresh read the states of jobs not done (status.snapshot's "source")
SOURCE_TEXT = {"": "SLURM not asked: no job of the sweep waits on it", "sacct": "states from SLURM's sacct",
               "squeue": "states from SLURM's squeue", "local": "states of jobs running here"}  # fmt: skip


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("sweep")(sweep_cmd)
    app.command("status")(status_cmd)
    app.command("cancel")(cancel_cmd)
    bench.command("orchestration")(bench_cmd)


# -- helpers ---------------------------------------------------------------------------------------
def _console(stderr: bool = False) -> Any:
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160)  # pipes: wide rows, no wrap


def _backend(cfg: Any) -> Any:
    from fercluster.api.sweeps import slurm_backend

    return slurm_backend(cfg)


def jobs_table(rows: list[Any], title: str = "", actions: dict[str, str] | None = None, limit: int = 500) -> Any:
    from rich.table import Table

    table = Table(title=title, show_lines=False, header_style="bold")
    cols = ["job", "data set", "fold", "variant", "seed", "k", "state", "iter", "val", "test", "elapsed", "node",
            "SLURM id", "code"]  # fmt: skip
    if actions is not None:
        cols.append("action")
    for c in cols:
        table.add_column(c, justify="right" if c in ("fold", "seed", "k", "iter", "val", "test", "elapsed") else "left")
    for row in rows[:limit]:
        style = STATE_STYLE.get(row.state, "")
        it = f"{'-' if row.iteration is None else row.iteration}/{row.iterations or '?'}"
        cells = [
            row.job_id,
            row.dataset,
            str(row.fold),
            row.variant,
            str(row.seed),
            "-" if row.k is None else f"{row.k:.3f}",
            f"[{style}]{row.state}[/]",
            it,
            fmt.acc(row.val_acc),
            fmt.acc(row.test_acc),
            fmt.duration(row.elapsed),
            row.node or "-",
            row.slurm_id or "-",
            row.code or "-",
        ]
        if actions is not None:
            cells.append(actions.get(row.job_id, ""))
        table.add_row(*cells)
    if len(rows) > limit:
        table.caption = f"{len(rows) - limit} more rows not shown (use --json)"
    return table


def counts_line(counts: dict[str, int]) -> str:
    return "  ".join(f"[{STATE_STYLE.get(k, '')}]{k}[/] {v}" for k, v in counts.items())


# -- sweep -----------------------------------------------------------------------------------------
def sweep_cmd(
    config: Path = typer.Argument(..., help="Sweep config (YAML)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and what would be done; touch nothing."),
    local: bool = typer.Option(False, "--local", help="Run the jobs here, one at a time (GPU or CPU), then aggregate."),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="Resubmit failed jobs (at most slurm.max_retries each)."
    ),
    prune: bool = typer.Option(False, "--prune", help="Cancel jobs no longer in the config."),
    code: Optional[str] = typer.Option(
        None,
        "--code",
        help="With --retry-failed: rerun failed jobs on the code they were submitted with ('submitted', "
        "the default: their snapshot) or on the current code ('current').",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the plan (each job's id, place, k and action) and what was done as JSON."
    ),
    sets: Optional[list[str]] = set_option(),
    no_overrides: bool = typer.Option(
        False, "--no-overrides", help="Drop the overrides of the sweep's last run: the config file alone."
    ),
) -> None:
    """Submit a sweep's missing jobs to SLURM as job arrays (or run them here with --local).

    Re-running submits nothing that is done, queued or running; with other overrides than the
    last run it says which jobs they add and which they leave.

    Example: fercluster sweep configs/smoke.yaml --dry-run --json --set train.iterations=20
    """
    from fercluster import api

    if code is not None and (not retry_failed or code not in ("submitted", "current")):
        raise ConfigError(f"--code: got {code!r}; it goes with --retry-failed and is 'submitted' or 'current'")
    cfg = load(config, sets, no_overrides=no_overrides, hint="--set replaces them, --no-overrides drops them")
    console = _console()
    if dry_run:  # a run would stop at a data set it cannot find: say so now
        from fercluster.orchestration.doctor import data_warnings

        for line in data_warnings(cfg):
            _console(stderr=True).print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)
    if cfg.tune is not None:
        if not dry_run:
            api.record_last(cfg)  # a grid sweep's submit and run_local record it themselves
        if dry_run:
            console.print(f"[bold]{cfg.name}[/]: a Ray Tune search (dry run, nothing started):")
            console.print(cfg.tune.model_dump(mode="json"))
            return
        _search(cfg, local, console)
        return
    if local:
        if dry_run or prune or retry_failed:
            raise ConfigError(
                "--local runs the plan here; it does not combine with --dry-run, --prune or --retry-failed"
            )
        summary = api.run_local(cfg, console=console)  # it says first what changed overrides add and leave
        console.print(
            f"[bold]{cfg.name}[/]: ran {summary.ran}, skipped {summary.skipped} done, "
            f"failed {summary.failed}, in {summary.total_s:.1f} s"
        )
        if summary.failed:
            raise typer.Exit(1)
        return
    submission = api.submit(
        cfg,
        dry_run=dry_run,
        retry_failed=retry_failed,
        prune=prune,
        retry_code=code or "submitted",
        backend=_backend(cfg),
    )
    if as_json:
        print(json.dumps(submission.to_dict(), default=str))
    else:
        _print_change(submission.change, console, dry_run=dry_run)
        if submission.renamed_line():
            console.print(submission.renamed_line(), style="yellow", markup=False, highlight=False, soft_wrap=True)
        _print_sweep(cfg, submission.result, console)
    if submission.result.submit_error:  # the summary is out: what went in stands, the rest waits
        raise typer.Exit(1)


ACTION_TEXT = {"submit": "submit", "retry": "retry", "skip": "skip (done)", "leave": "leave (queued/running)",
               "failed": "failed: --retry-failed", "wait": "wait",
               "requeue": "requeue (pre-empted)"}  # fmt: skip


def _print_change(change: Any, console: Any, dry_run: bool) -> None:
    if change is not None:
        for line in change.lines(dry_run=dry_run):
            console.print(line, markup=False, highlight=False, soft_wrap=True)


def _search(cfg: Any, local: bool, console: Any) -> None:
    """Run the Ray Tune search here (then aggregate) or submit its allocation."""
    if local:
        from fercluster.orchestration.tune.search import run_tune_local

        result = run_tune_local(cfg, console)
    else:
        from fercluster.orchestration.tune.allocation import submit_tune_slurm

        result = submit_tune_slurm(cfg, console)
    if result.get("state") == "interrupted":
        _console(stderr=True).print(
            f"[red]interrupted[/]: search {cfg.name} stopped before its end; run the same command again to restore it"
        )
        raise typer.Exit(INTERRUPTED_EXIT)
    best = result.get("best") or {}
    if best:
        console.print(f"[bold]{cfg.name}[/]: best k = {best.get('k')} (val acc {best.get('val_acc')})")
    if local:
        from fercluster.analysis.report import aggregate

        aggregate(cfg, console)


def _print_sweep(cfg: Any, result: Any, console: Any) -> None:
    d = result.diff
    if result.dry_run:
        from fercluster.api.sweeps import actions

        shown = {job_id: ACTION_TEXT[a] for job_id, a in actions(d).items()}
        console.print(jobs_table(result.rows, title=f"plan of sweep {cfg.name} (dry run)", actions=shown))
        verb = "would"
    else:
        verb = "did"
    s = d.summary()
    console.print(
        f"[bold]{cfg.name}[/]: {len(result.specs)} jobs; {verb} submit {s['submit']}, retry {s['retry']}"
        + (f", requeue {s['requeue']} pre-empted" if s["requeue"] else "")
        + "; "
        f"skip {s['done']} done; leave {s['active']} queued/running; {s['failed']} failed not retried"
        + (f"; {s['removed']} removed from the config still active" if s["removed"] else "")
        + (f"; {s['waiting']} waiting" if s.get("waiting") else "")
    )
    for name in result.adopted:
        console.print(f"adopted orphan submission {name} (crash between sbatch and recording)")
    if result.recovery_error:
        console.print(
            f"[yellow]orphan recovery could not ask SLURM[/] ({result.recovery_error}); "
            f"{len(d.waiting)} jobs of unrecorded submissions are NOT submitted again now: "
            "the next `sweep` retries recovery",
            soft_wrap=True,
        )
    for line in (result.code or {}).get("lines", []):
        console.print(line, markup=False, highlight=False)
    if result.code and result.code["note"]:
        console.print(f"note: {result.code['note']}", style="yellow", markup=False)
    for a in result.arrays:
        console.print(
            f"submitted array {a['slurm_id']} ({a['name']}): {a['n']} jobs, at most {a['throttle']} at once, "
            f"code {a['code']}"
        )
    if result.aggregate_id:
        console.print(f"submitted aggregation job {result.aggregate_id} (afterany the training jobs)")
    if result.submit_error:
        console.print(
            f"[red]sbatch failed part-way[/]: {result.submit_error}; {len(result.arrays)} arrays "
            f"({s['submit'] + s['retry'] + s['requeue']} jobs) went in before it, {s.get('waiting', 0)} jobs wait: "
            "run the same `sweep` again to submit them"
            + (f" ({result.diff.waiting[0][1]})" if result.diff.waiting else ""),
            soft_wrap=True,
        )
    if result.cancelled:
        console.print(f"cancelled {len(result.cancelled)} jobs no longer in the config")
    for spec, row in d.failed[:20]:
        console.print(f"[red]failed[/] {spec.job_id} ({spec.dataset} fold {spec.fold} {spec.variant}): {row.reason}")


# -- status ----------------------------------------------------------------------------------------
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
        from fercluster.orchestration.tune.state import status_table, tune_status

        snap = tune_status(cfg)
        if as_json:
            print(json.dumps({"sweep": cfg.name, "tune": snap, "jobs": []}, default=str))
        else:
            _console().print(status_table(snap) if snap is not None else f"no tune run recorded for {cfg.name}")
        return
    from fercluster.api.sweeps import never_submitted
    from fercluster.orchestration.status import snapshot

    never_submitted(cfg)
    backend = _backend(cfg)
    if as_json:
        print(json.dumps(snapshot(cfg, backend, failed=failed).to_dict(), default=str))
        return
    console = _console()
    if not watch:
        console.print(_render(cfg, snapshot(cfg, backend, failed=failed), failed))
        return
    _watch(cfg, backend, console, failed, interval)


def _watch(cfg: Any, backend: Any, console: Any, failed: bool, interval: float) -> None:
    """Refresh until every job has ended: never faster than the floor, backing off while SLURM fails."""
    from rich.live import Live

    from fercluster.orchestration.status import snapshot, watch_interval

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


def _render(cfg: Any, snap: Any, failed: bool, next_s: float | None = None) -> Any:
    """The status screen of a ``StatusSnapshot``: a header, the notes, the jobs table (or the failed jobs)."""
    from rich.console import Group
    from rich.text import Text

    parts: list[Any] = [
        Text.from_markup(
            f"[bold]{cfg.name}[/]: {snap.total} jobs  "
            + counts_line(dict(snap.counts))
            + f"  ({SOURCE_TEXT.get(snap.source, snap.source)}, at {time.strftime('%H:%M:%S')})"
        )
    ]
    if snap.stale:
        parts.append(Text(f"stale: SLURM could not be asked about every job ({snap.stale}); "
                          "their last known states are shown", style="yellow"))  # fmt: skip
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
    parts += _failed_parts(snap) if failed else [jobs_table(snap.jobs)]
    return Group(*parts)


def _failed_parts(snap: Any) -> list[Any]:
    """The failed jobs' table, then per job its reason, exception and log tail."""
    from rich.markup import escape
    from rich.text import Text

    bad = [r for r in snap.jobs if r.state in ENDED_BADLY]
    if not bad:
        return [Text("no failed jobs")]
    parts: list[Any] = [jobs_table(bad, title="failed jobs")]
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


# -- cancel ----------------------------------------------------------------------------------------
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
    done = cancel(cfg, job, backend=_backend(cfg))
    _console().print(f"cancelled {len(done)} SLURM job(s) of sweep {cfg.name}: {done.by_array}", soft_wrap=True)


# -- bench -----------------------------------------------------------------------------------------
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
    console = _console()
    console.print(f"[bold]orchestration benchmark[/]: {report['jobs']} jobs, backend: {report['backend']}")
    for t in report["targets"]:
        mark = "[green]PASS[/]" if t["pass"] else "[red]FAIL[/]"
        console.print(f"  {mark} {t['name']}: {t['value']} (target {t['target']})")
    for k, v in report["figures"].items():
        console.print(f"  {k}: {v}")
    if not all(t["pass"] for t in report["targets"]):
        raise typer.Exit(1)
