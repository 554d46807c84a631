"""``fercluster sweep``: submit a sweep's missing jobs (``fercluster.api.submit``), run them here
(``api.run_local``) or start its Ray Tune search, and print what was (or would be) done."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from fercluster.cli import tables
from fercluster.cli.overrides import load, set_option
from fercluster.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from fercluster.api.sweeps import OverrideChange, Submission
    from fercluster.config import SweepConfig
    from fercluster.orchestration.submit.coordinator import SweepResult

INTERRUPTED_EXIT = 130  # a search stopped before its end (Ctrl-C): running the command again restores it

ACTION_TEXT = {
    "submit": "submit",
    "retry": "retry",
    "skip": "skip (done)",
    "leave": "leave (queued/running)",
    "failed": "failed: --retry-failed",
    "wait": "wait",
    "requeue": "requeue (pre-empted)",
}


_FORGET = typer.Option(
    None,
    "--forget-pending",
    metavar="NAME",
    help="Drop a stuck pending submission record (its NAME as `status` lists it, or 'all'); submits nothing.",
)


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("sweep")(sweep_cmd)


def sweep_cmd(
    config: Path = typer.Argument(..., help="Sweep config (YAML)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and what would be done; touch nothing."),
    local: bool = typer.Option(False, "--local", help="Run the jobs here, one at a time (GPU or CPU), then aggregate."),
    retry_failed: bool = typer.Option(
        False,
        "--retry-failed",
        help="Resubmit failed jobs (at most slurm.max_retries each); on a Ray Tune search, resume its failed trials.",
    ),
    prune: bool = typer.Option(
        False, "--prune", help="Cancel jobs no longer in the config (refused on a Ray Tune search)."
    ),
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
    forget_pending: Optional[str] = _FORGET,
    requeue_stalled: bool = typer.Option(
        False,
        "--requeue-stalled",
        help="Requeue running jobs whose progress has not moved for slurm.stall_min (`status` marks them "
        "stalled); they resume from their checkpoint, counted as requeues, not retries.",
    ),
) -> None:
    """Submit a sweep's missing jobs to SLURM as job arrays (or run them here with --local).

    Re-running submits nothing that is done, queued or running; with other overrides than the
    last run it says which jobs they add and which they leave.

    Example: fercluster sweep configs/smoke.yaml --dry-run --json --set train.iterations=20
    """
    # Over 50 lines: its typer option declarations, one per option; the body itself is 20 lines.
    from fercluster import api

    _check_code(code, retry_failed)
    cfg = load(config, sets, no_overrides=no_overrides, hint="--set replaces them, --no-overrides drops them")
    console = tables.console()
    if forget_pending is not None:
        return _forget(cfg, forget_pending, console)
    if dry_run:
        _warn_data(cfg)
    if cfg.tune is not None:
        _check_tune(prune, code)
        _tune(cfg, dry_run, local, retry_failed, console)
    elif local:
        _local(cfg, dry_run or prune or retry_failed or requeue_stalled, console)
    else:
        sub = api.submit(
            cfg,
            dry_run=dry_run,
            retry_failed=retry_failed,
            prune=prune,
            retry_code=code or "submitted",
            backend=tables.backend(cfg),
            requeue_stalled=requeue_stalled,
        )
        _print_submission(sub, console, dry_run, as_json, requeue_stalled)


def _forget(cfg: SweepConfig, which: str, console: Console) -> None:
    """``--forget-pending``: drop the records, say which, and warn what that risks."""
    from fercluster.orchestration.submit.recovery import FORGET_WARNING, forget

    lines = forget(cfg.jobs_dir, cfg.name, which)
    for line in lines:
        console.print(f"dropped {line}", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"warning: {FORGET_WARNING}; the next `sweep` submits these jobs again",
        style="yellow",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _print_submission(
    submission: Submission, console: Console, dry_run: bool, as_json: bool, requeue_stalled: bool = False
) -> None:
    """What ``submit`` did (or would do), as JSON or as lines; exit code 1 when an sbatch failed."""
    if as_json:
        print(json.dumps(submission.to_dict(), default=str))
    else:
        _print_change(submission.change, console, dry_run=dry_run)
        if submission.renamed_line():
            console.print(submission.renamed_line(), style="yellow", markup=False, highlight=False, soft_wrap=True)
        _print_sweep(submission.config, submission.result, console, requeue_stalled)
    if submission.result.submit_error or submission.result.requeue_error:  # what went in stands
        raise typer.Exit(1)


def _check_code(code: str | None, retry_failed: bool) -> None:
    if code is not None and (not retry_failed or code not in ("submitted", "current")):
        raise ConfigError(f"--code: got {code!r}; it goes with --retry-failed and is 'submitted' or 'current'")


def _warn_data(cfg: SweepConfig) -> None:
    """A run would stop at a data set it cannot find: say so now (on stderr)."""
    from fercluster.orchestration.preflight.doctor import data_warnings

    for line in data_warnings(cfg):
        tables.console(stderr=True).print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)


def _check_tune(prune: bool, code: str | None) -> None:
    """The grid's options that a Ray Tune search cannot honour: refused, never ignored."""
    if prune:
        raise ConfigError(
            "--prune: a Ray Tune search has no trials outside its search space (the space is fixed once the search "
            "starts, and a changed one is refused); to search a new space, give the sweep a new name"
        )
    if code == "submitted":
        raise ConfigError(
            "--code submitted: a Ray Tune search runs all its trials on one code, the current code's when it is "
            "submitted; drop --code (or give --code current)"
        )


def _tune(cfg: SweepConfig, dry_run: bool, local: bool, retry_failed: bool, console: Console) -> None:
    """A Ray Tune search: its settings (dry run), or the search run here or submitted."""
    from fercluster import api

    if dry_run:
        console.print(f"[bold]{cfg.name}[/]: a Ray Tune search (dry run, nothing started):")
        console.print(cfg.tune.model_dump(mode="json"))
        if retry_failed:
            from fercluster.orchestration.tune.retry import begin

            console.print(begin(cfg, write=False).line(cfg.name), markup=False, highlight=False, soft_wrap=True)
        return
    api.record_last(cfg)  # a grid sweep's submit and run_local record it themselves
    _search(cfg, local, retry_failed, console)


def _local(cfg: SweepConfig, other_flags: bool, console: Console) -> None:
    """``--local``: the plan run here (``api.run_local``), then one summary line."""
    from fercluster import api

    if other_flags:
        raise ConfigError(
            "--local runs the plan here; it does not combine with --dry-run, --prune, --retry-failed or "
            "--requeue-stalled (a local run is no queued job: stop it with Ctrl-C and run it again to resume it)"
        )
    summary = api.run_local(cfg, console=console)  # it says first what changed overrides add and leave
    console.print(
        f"[bold]{cfg.name}[/]: ran {summary.ran}, skipped {summary.skipped} done, "
        f"failed {summary.failed}, in {summary.total_s:.1f} s"
    )
    if summary.failed:
        raise typer.Exit(1)


def _print_change(change: OverrideChange | None, console: Console, dry_run: bool) -> None:
    if change is not None:
        for line in change.lines(dry_run=dry_run):
            console.print(line, markup=False, highlight=False, soft_wrap=True)


def _search(cfg: SweepConfig, local: bool, retry_failed: bool, console: Console) -> None:
    """Run the Ray Tune search here (then aggregate) or submit its allocation."""
    if local:
        from fercluster.orchestration.tune.search import run_tune_local

        result = run_tune_local(cfg, console, retry_failed=retry_failed)
    else:
        from fercluster.orchestration.tune.allocation import submit_tune_slurm

        result = submit_tune_slurm(cfg, console, retry_failed=retry_failed)
    if result.get("state") == "interrupted":
        tables.console(stderr=True).print(
            f"[red]interrupted[/]: search {cfg.name} stopped before its end; run the same command again to restore it"
        )
        raise typer.Exit(INTERRUPTED_EXIT)
    best = result.get("best") or {}
    if best:
        console.print(f"[bold]{cfg.name}[/]: best k = {best.get('k')} (val acc {best.get('val_acc')})")
    if result.get("errors") and not retry_failed:
        console.print(f"{result['errors']} trial(s) failed: `fercluster sweep --retry-failed` runs them again")
    if local:
        from fercluster.analysis.report import aggregate

        aggregate(cfg, console)


def _print_sweep(cfg: SweepConfig, result: SweepResult, console: Console, requeue_stalled: bool = False) -> None:
    """The plan (dry run), the summary line, then what was recovered, submitted, cancelled or failed."""
    if result.dry_run:
        from fercluster.api.sweeps import actions

        shown = {job_id: ACTION_TEXT[a] for job_id, a in actions(result.diff).items()}
        console.print(tables.jobs_table(result.rows, title=f"plan of sweep {cfg.name} (dry run)", actions=shown))
    console.print(_summary_line(cfg, result))
    _print_recovery(result, console)
    _print_code(result, console)
    _print_submitted(result, console)
    if requeue_stalled:
        _print_stalled(result, console)
    for spec, row in result.diff.failed[:20]:
        console.print(f"[red]failed[/] {spec.job_id} ({spec.dataset} fold {spec.fold} {spec.variant}): {row.reason}")
    for stuck in result.cannot_start:
        console.print(stuck.line(), style="yellow", markup=False, highlight=False, soft_wrap=True)


def _summary_line(cfg: SweepConfig, result: SweepResult) -> str:
    s = result.diff.summary()
    verb = "would" if result.dry_run else "did"
    return (
        f"[bold]{cfg.name}[/]: {len(result.specs)} jobs; {verb} submit {s['submit']}, retry {s['retry']}"
        + (f", requeue {s['requeue']} pre-empted" if s["requeue"] else "")
        + "; "
        f"skip {s['done']} done; leave {s['active']} queued/running; {s['failed']} failed not retried"
        + (f"; {s['removed']} removed from the config still active" if s["removed"] else "")
        + (f"; {s['waiting']} waiting" if s.get("waiting") else "")
    )


def _print_recovery(result: SweepResult, console: Console) -> None:
    for name in result.adopted:
        console.print(f"adopted orphan submission {name} (crash between sbatch and recording)")
    if result.recovery_error:
        console.print(
            f"[yellow]orphan recovery could not ask SLURM[/] ({result.recovery_error}); "
            f"{len(result.diff.waiting)} jobs of unrecorded submissions are NOT submitted again now: "
            "the next `sweep` retries recovery",
            soft_wrap=True,
        )


def _print_code(result: SweepResult, console: Console) -> None:
    for line in (result.code or {}).get("lines", []):
        console.print(line, markup=False, highlight=False)
    if result.code and result.code["note"]:
        console.print(f"note: {result.code['note']}", style="yellow", markup=False)


def _print_submitted(result: SweepResult, console: Console) -> None:
    """The arrays and the aggregation job submitted, an sbatch that failed part-way, the cancelled jobs."""
    for a in result.arrays:
        console.print(
            f"submitted array {a['slurm_id']} ({a['name']}): {a['n']} jobs, at most {a['throttle']} at once, "
            f"code {a['code']}"
        )
    if result.aggregate_id:
        console.print(f"submitted aggregation job {result.aggregate_id} (afterany the training jobs)")
    if result.submit_error:  # one line, on stderr; the waiting jobs' reason only where it adds to it
        s = result.diff.summary()
        why = result.diff.waiting[0][1] if result.diff.waiting else ""
        tables.console(stderr=True).print(
            f"error: sbatch failed part-way: {result.submit_error}; {len(result.arrays)} arrays "
            f"({s['submit'] + s['retry'] + s['requeue']} jobs) went in before it, {s.get('waiting', 0)} jobs wait: "
            "run the same `sweep` again to submit them"
            + (f" ({why})" if why and result.submit_error not in why else ""),
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
    if result.cancelled:
        console.print(f"cancelled {len(result.cancelled)} jobs no longer in the config")


def _print_stalled(result: SweepResult, console: Console) -> None:
    """``--requeue-stalled``: the stalled jobs requeued (or that a dry run would requeue), or why not."""
    from fercluster.orchestration.watch.stall import stall_line

    verb = "would requeue" if result.dry_run else "requeued"
    done = set(result.requeued) if not result.dry_run else {r.job_id for r in result.stalled}
    for row in result.stalled:
        if row.job_id in done:
            console.print(f"{verb} stalled job {row.job_id} (SLURM {row.slurm_id}): {stall_line(row)}", markup=False)
    if result.requeue_error:
        console.print(f"[red]requeue failed[/]: {result.requeue_error}; nothing was requeued", soft_wrap=True)
    elif not result.stalled:
        console.print("no stalled job: every running job has made progress within slurm.stall_min")
