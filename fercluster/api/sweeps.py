"""A sweep's life as functions over its config: plan, submit, run here, status, cancel, aggregate.

What the ``fercluster`` commands call (``fercluster.cli`` only parses options and prints), so a
notebook and the command line get the same results and the same errors (``FerclusterError``
subclasses; the CLI turns them into one line and exit code 2).

Overrides: ``sweep_config`` is the config a command uses. Overrides given (``--set``) are used as
they are; none given means the ones recorded by the sweep's last run (``jobs/<sweep>/state.json``,
or, when the file's own sweep never ran, those of the last sweep started here from the same file),
so ``status``, ``aggregate``, ``job`` and a re-run see the config the sweep ran with. ``submit`` and
``run_local`` record them before they start, and say which jobs a change of overrides adds to the
sweep and which it leaves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from fercluster.config import SweepConfig, load_config
from fercluster.errors import ConfigError
from fercluster.orchestration.backend import Backend
from fercluster.orchestration.coordinator import Diff, SweepResult
from fercluster.orchestration.monitor import JobRow
from fercluster.orchestration.store.entries import ConfigEntry
from fercluster.orchestration.store.state import load_state, save_state, state_path, sweep_lock

PLAN_COLUMNS = ["job_id", "dataset", "fold", "variant", "seed", "k", "iterations", "run_dir"]
SUBMISSION_COLUMNS = ["job_id", "dataset", "fold", "variant", "seed", "k", "state", "action"]
STATUS_COLUMNS = list(JobRow.__dataclass_fields__)  # status --json's jobs (plus the failure details)


def sweep_config(path: str | Path | None = None, overrides: Sequence[str] | None = None) -> SweepConfig:
    """The config a command works on: ``path`` with ``overrides``.

    ``path`` None: the last sweep started from this folder (with its overrides unless some are
    given). ``overrides`` None: those recorded by the last run of the file's sweep
    (``jobs/<name>/state.json``); if that sweep never ran, those of the last sweep started here
    from the same file (which may have overridden ``name``); ``[]``: none.
    """
    from fercluster.orchestration.last import last_sweep

    last = last_sweep()
    if path is None:
        if last is None:
            raise ConfigError(
                "no CONFIG given and no sweep started from this folder; example: fercluster status configs/smoke.yaml"
            )
        path, recorded = last
        return load_config(path, recorded if overrides is None else overrides)
    if overrides is not None:
        return load_config(path, overrides)
    cfg = load_config(path)
    if state_path(cfg.jobs_dir).exists():
        recorded = recorded_overrides(cfg)
    else:
        recorded = last[1] if last is not None and last[0] == Path(path).resolve() else []
    return load_config(path, recorded) if recorded else cfg


def recorded_overrides(cfg: SweepConfig) -> list[str]:
    """The overrides recorded by the last run of ``cfg``'s sweep (``[]`` if none or never run)."""
    config = load_state(cfg.jobs_dir, cfg.name).config
    return [str(o) for o in config.overrides] if config is not None else []


def plan(config: SweepConfig) -> pd.DataFrame:
    """The sweep's jobs in plan order, one row each (pure: reads nothing, asks SLURM nothing).

    Columns: job_id, dataset, fold, variant, seed, k (the drawn init scale), iterations, run_dir.
    """
    from fercluster.orchestration.plan import expand
    from fercluster.train.seeds import resolve_k

    _grid_only(config, "plan")
    rows = [
        (s.job_id, s.dataset, s.fold, s.variant, s.seed, resolve_k(s), s.train.iterations, s.run_dir)
        for s in expand(config)
    ]
    return pd.DataFrame(rows, columns=PLAN_COLUMNS)


@dataclass(frozen=True)
class OverrideChange:
    """A run of a sweep whose overrides differ from those of its last run."""

    before: tuple[str, ...]
    after: tuple[str, ...]
    added: tuple[str, ...]  # job ids planned now that the sweep has not run or submitted before
    left: tuple[str, ...]  # job ids it ran or submitted that are no longer planned: left as they are

    def to_dict(self) -> dict[str, Any]:
        return {"before": list(self.before), "after": list(self.after), "added": list(self.added),
                "left": list(self.left)}  # fmt: skip

    def lines(self, dry_run: bool = False, shown: int = 20) -> list[str]:
        """What a person reads: the change, then the job ids added and left (``shown`` of each)."""
        was, now = " ".join(self.before) or "none", " ".join(self.after) or "none"
        out = [
            f"overrides changed since the last run (was: {was}; now: {now}): "
            f"{'would add' if dry_run else 'adds'} {len(self.added)} jobs, leaves {len(self.left)} jobs of the "
            "earlier config as they are (--prune cancels those still queued or running)"
        ]
        for title, ids in (("added", self.added), ("left", self.left)):
            if ids:
                more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
                out.append(f"  {title}: {' '.join(ids[:shown])}{more}")
        return out


def actions(diff: Diff) -> dict[str, str]:
    """What a sweep does (or would do) with each job: submit, retry, skip, leave or failed."""
    out = {s.job_id: "submit" for s in diff.submit}
    out.update({s.job_id: "retry" for s in diff.retry})
    out.update({s.job_id: "requeue" for s in diff.requeue})
    out.update({s.job_id: "skip" for s in diff.done})
    out.update({s.job_id: "leave" for s in diff.active})
    out.update({s.job_id: "failed" for s, _ in diff.failed})
    out.update({s.job_id: "wait" for s, _ in diff.waiting})
    return out


@dataclass(frozen=True)
class Submission:
    """What ``submit`` did, or would do with ``dry_run``: ``to_dict()`` is ``sweep --json``."""

    config: SweepConfig
    result: SweepResult  # the coordinator's account: specs, rows, diff, arrays, aggregation job
    change: OverrideChange | None = None

    @property
    def jobs(self) -> pd.DataFrame:
        """One row per planned job: job_id, dataset, fold, variant, seed, k, state, action."""
        return pd.DataFrame([job for job in self.to_dict()["jobs"]], columns=SUBMISSION_COLUMNS)

    def to_dict(self) -> dict[str, Any]:
        r, todo = self.result, actions(self.result.diff)
        keys = SUBMISSION_COLUMNS[:-1]
        return {
            "sweep": self.config.name,
            "dry_run": r.dry_run,
            "overrides": list(self.config.overrides),
            "overrides_changed": self.change.to_dict() if self.change else None,
            "summary": r.diff.summary(),
            "jobs": [
                {**{key: getattr(row, key) for key in keys}, "action": todo.get(row.job_id, "")} for row in r.rows
            ],
            "arrays": r.arrays,
            "aggregate_id": r.aggregate_id,
            "adopted": r.adopted,
            "recovery_error": r.recovery_error,
            "submit_error": r.submit_error,
            "waiting": [{"job_id": s.job_id, "why": why} for s, why in r.diff.waiting],
            "cancelled": r.cancelled,
            "code": r.code,
        }


def submit(
    config: SweepConfig,
    *,
    dry_run: bool = False,
    retry_failed: bool = False,
    prune: bool = False,
    retry_code: str = "submitted",
    backend: Backend | None = None,
) -> Submission:
    """Bring the sweep on SLURM in line with ``config``: submit missing jobs as job arrays and the
    aggregation job after them; skip what is done, leave what is queued or running.

    ``dry_run``: touch nothing, say what would be done. ``retry_failed``: resubmit failed jobs (at
    most ``slurm.max_retries`` each), on the code snapshot each ran with (``retry_code="submitted"``)
    or on the current code (``"current"``). ``prune``: cancel jobs no longer in the config.
    ``backend``: default SLURM through submitit (``jobs/<sweep>/submitit``).
    """
    from fercluster.orchestration.coordinator import run_sweep

    _grid_only(config, "submit")
    backend = backend or slurm_backend(config)
    change = _override_change(config) if dry_run else _record_config(config)
    result = run_sweep(config, backend, dry_run=dry_run, retry_failed=retry_failed, prune=prune, retry_code=retry_code)
    return Submission(config, result, change)


def run_local(config: SweepConfig, *, console: Any = None) -> dict[str, Any]:
    """Run the sweep's jobs that are not done on this machine, one at a time (GPU or CPU), then
    aggregate; same state, outputs, skip-if-done and resume as on SLURM.

    Returns counts (``jobs``, ``ran``, ``skipped``, ``left_to_slurm``, ``failed``), times, the
    aggregation's summary (``aggregate``) and ``change`` (an ``OverrideChange`` or None).
    ``console``: a rich Console for the progress bars (default: a new one on stdout).
    """
    from rich.console import Console

    from fercluster.orchestration.local import run_local as run

    _grid_only(config, "run_local")
    console = console or Console()
    change = _record_config(config)
    for line in change.lines() if change else []:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    summary = run(config, console)
    summary["change"] = change
    return summary


def status(config: SweepConfig, *, failed: bool = False, backend: Any = None) -> pd.DataFrame:
    """One row per planned job with its state (run directories and ONE SLURM query).

    Columns: those of ``status --json``'s jobs (job_id, dataset, fold, variant, seed, state,
    slurm_id, iteration, iterations, k, val_acc, test_acc, elapsed, node, reason, ...; with
    ``failed``, also exception, log_tail and log of the jobs that ended badly). ``attrs`` holds
    the rest of ``status --json``: sweep, counts, total, source, aggregate, removed_from_config.
    """
    from fercluster.orchestration.status import snapshot

    _grid_only(config, "status")
    snap = snapshot(config, backend or slurm_backend(config), failed=failed).to_dict()
    jobs = snap.pop("jobs")
    extra = [c for job in jobs for c in job if c not in STATUS_COLUMNS]
    frame = pd.DataFrame(jobs, columns=STATUS_COLUMNS + list(dict.fromkeys(extra)))
    frame.attrs.update(snap)
    return frame


def cancel(config: SweepConfig, job: str | None = None, *, backend: Backend | None = None) -> list[str]:
    """Cancel the sweep's queued and running SLURM jobs and its aggregation job, or only ``job``
    (a fercluster job id or a SLURM id); returns the SLURM ids cancelled."""
    from fercluster.orchestration.status import cancel as cancel_jobs

    return cancel_jobs(config, backend or slurm_backend(config), job)


def aggregate(config: SweepConfig, *, console: Any = None) -> dict[str, Any]:
    """Write the sweep's tables and report from the jobs complete so far (``results/<sweep>/report``);
    returns ``summary.json``'s content plus ``paths`` and ``table`` (the accuracy table)."""
    from fercluster.analysis.report import aggregate as build

    return build(config, console)


def slurm_backend(config: SweepConfig) -> Backend:
    """SLURM through submitit, with the sweep's submitit folder."""
    from fercluster.orchestration.slurm.backend import SlurmBackend

    return SlurmBackend(config.jobs_dir / "submitit", max_timeout_requeues=config.slurm.max_timeout_requeues)


def _grid_only(config: SweepConfig, what: str) -> None:
    if not isinstance(config, SweepConfig):
        raise ConfigError(f"{what}: expected a config (fercluster.load_config(path)), got {type(config).__name__}")
    if config.tune is not None:
        raise ConfigError(
            f"{what}: sweep {config.name} is a Ray Tune search (it has a tune: section); "
            f"run it with: fercluster sweep {config.source or 'CONFIG'} [--local]"
        )


def _record_config(config: SweepConfig) -> OverrideChange | None:
    """Record the config file and overrides in the sweep's state; the change from the last run."""
    with sweep_lock(config.jobs_dir):
        state = load_state(config.jobs_dir, config.name)
        change = _override_change(config, state)
        state.config = ConfigEntry(config.source, tuple(config.overrides))
        save_state(config.jobs_dir, state)
    return change


def _override_change(config: SweepConfig, state: Any = None) -> OverrideChange | None:
    from fercluster.orchestration.plan import expand

    state = state or load_state(config.jobs_dir, config.name)
    before = state.config.overrides if state.config is not None else ()
    if state.config is None or before == config.overrides:
        return None
    planned = [s.job_id for s in expand(config)]
    known = set(state.jobs)
    wanted = set(planned)
    return OverrideChange(
        before=before,
        after=config.overrides,
        added=tuple(j for j in planned if j not in known),
        left=tuple(j for j in state.jobs if j not in wanted),
    )
