"""A sweep's life as functions over its config: plan, submit, run here, status, cancel, aggregate.

What the ``fercluster`` commands call (``fercluster.cli`` only parses options and prints), so a
notebook and the command line get the same results and the same errors (``FerclusterError``
subclasses; the CLI turns them into one line and exit code 2).

Overrides: ``sweep_config`` is the config a command uses. A config path means that file's sweep
(its ``name``), with the overrides recorded by that sweep's last run (``jobs/<sweep>/state.json``)
unless overrides are given; no path means the last sweep started from this folder, with its
overrides. ``submit`` and ``run_local`` (the CLI's ``sweep`` calls them) record both before they
start, and say which jobs a change of overrides adds to the sweep and which it leaves.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from fercluster.api.frames import param_row, typed, with_params
from fercluster.api.outcomes import Aggregation, Cancelled, LocalRun
from fercluster.config import SweepConfig, load_config
from fercluster.errors import ConfigError
from fercluster.orchestration.backend import Backend
from fercluster.orchestration.store.entries import ConfigEntry
from fercluster.orchestration.store.state import load_state, save_state, state_path, sweep_lock
from fercluster.orchestration.submit.coordinator import SweepResult
from fercluster.orchestration.submit.reconcile import Diff
from fercluster.orchestration.watch.monitor import JobRow

PLAN_COLUMNS = ["job_id", "dataset", "fold", "variant", "seed", "k", "iterations", "run_dir"]
SUBMISSION_COLUMNS = ["job_id", "dataset", "fold", "variant", "seed", "k", "state", "action"]
STATUS_COLUMNS = list(JobRow.__dataclass_fields__)  # status --json's jobs (plus the failure details)


def sweep_config(path: str | Path | None = None, overrides: Sequence[str] | None = None) -> SweepConfig:
    """The config a command works on: ``path`` with ``overrides``.

    ``path``: that file's sweep; None: the last sweep started from this folder (``submit`` and
    ``run_local`` record it), with its overrides unless some are given. ``overrides`` None: those
    recorded by the last run of the file's sweep (``jobs/<name>/state.json``; none if it never ran);
    ``[]``: none.
    """
    if path is None:
        from fercluster.orchestration.submit.last import last_sweep

        last = last_sweep()
        if last is None:
            raise ConfigError(
                "no CONFIG given and no sweep started from this folder; example: fercluster status configs/smoke.yaml"
            )
        path, recorded = last
        return load_config(path, recorded if overrides is None else overrides)
    if overrides is not None:
        return load_config(path, overrides)
    cfg = load_config(path)
    recorded = recorded_overrides(cfg) if state_path(cfg.jobs_dir).exists() else []
    return load_config(path, recorded) if recorded else cfg


def never_submitted(config: SweepConfig) -> None:
    """ConfigError (one line, with the command that starts it) when ``config``'s sweep never ran."""
    if not state_path(config.jobs_dir).exists():
        src = os.path.relpath(config.source) if config.source else "CONFIG"
        sets = "".join(f" --set {o}" for o in config.overrides)
        raise ConfigError(
            f"sweep {config.name!r} was never submitted (no {state_path(config.jobs_dir)}); "
            f"start it with: fercluster sweep {src}{sets} (or --local), or check its name"
        )


def recorded_overrides(cfg: SweepConfig) -> list[str]:
    """The overrides recorded by the last run of ``cfg``'s sweep (``[]`` if none or never run)."""
    config = load_state(cfg.jobs_dir, cfg.name).config
    return [str(o) for o in config.overrides] if config is not None else []


def plan(config: SweepConfig | str | Path) -> pd.DataFrame:
    """The sweep's jobs in plan order, one row each (pure: asks SLURM nothing, runs nothing).

    Columns: job_id, dataset, fold, variant, seed, k (the drawn init scale), iterations, run_dir,
    then the job's training settings as ``params.*`` (``frames.PARAM_COLUMNS``).
    """
    from fercluster.orchestration.submit.plan import expand
    from fercluster.train.seeds import resolve_k

    config = _grid_only(config, "plan")
    specs = expand(config)
    ks = [resolve_k(s) for s in specs]
    pairs = list(zip(specs, ks, strict=True))
    rows = [(s.job_id, s.dataset, s.fold, s.variant, s.seed, k, s.train.iterations, s.run_dir) for s, k in pairs]
    frame = typed(pd.DataFrame(rows, columns=PLAN_COLUMNS))
    return with_params(frame, (param_row(s.train.model_dump(mode="json"), k) for s, k in pairs))


@dataclass(frozen=True)
class OverrideChange:
    """A run of a sweep whose overrides differ from those of its last run."""

    before: tuple[str, ...]
    after: tuple[str, ...]
    added: tuple[str, ...]  # job ids planned now that the sweep has not run or submitted before
    left: tuple[str, ...]  # job ids it ran or submitted that are no longer planned: left as they are

    def to_dict(self) -> dict[str, Any]:
        return {
            "before": list(self.before),
            "after": list(self.after),
            "added": list(self.added),
            "left": list(self.left),
        }

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
    renamed: tuple[tuple[str, str], ...] = ()  # (old id, new id) of jobs that run again under a new id

    def renamed_line(self) -> str | None:
        """Why jobs run again that an earlier version of fercluster ran: one line, None if none."""
        if not self.renamed:
            return None
        runs = self.config.results_dir / "runs"
        return (  # the place matches, not why the id changed: the version's change or the user's edit
            f"{len(self.renamed)} jobs have new ids: since fercluster 0.2 a job's id fingerprints the data "
            "by its content, not its path (a change of the data or of the settings changes it too); they will "
            f"run again (their old results stay in {runs}/<old id>)"
        )

    def __repr__(self) -> str:
        s = self.result.diff.summary()
        verb = "would submit" if self.result.dry_run else "submitted"
        return (
            f"<Submission of sweep {self.config.name!r}: {len(self.result.specs)} jobs; {verb} {s['submit']}, "
            f"retry {s['retry']}, {s['done']} done, {s['active']} queued/running, {s['failed']} failed>"
        )

    @property
    def jobs(self) -> pd.DataFrame:
        """One row per planned job: job_id, dataset, fold, variant, seed, k, state, action."""
        return typed(pd.DataFrame([job for job in self.to_dict()["jobs"]], columns=SUBMISSION_COLUMNS))

    def to_dict(self) -> dict[str, Any]:
        r, todo = self.result, actions(self.result.diff)
        keys = SUBMISSION_COLUMNS[:-1]
        return {
            "sweep": self.config.name,
            "dry_run": r.dry_run,
            "overrides": list(self.config.overrides),
            "overrides_changed": self.change.to_dict() if self.change else None,
            "renamed": [{"old": old, "new": new} for old, new in self.renamed],
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
            "stalled": [
                {"job_id": row.job_id, "slurm_id": row.slurm_id, "since_progress_s": row.since_progress_s}
                for row in r.stalled
            ],
            "requeued": r.requeued,
            "requeue_error": r.requeue_error,
            "code": r.code,
            "cannot_start": [c.to_dict() for c in r.cannot_start],
        }


def submit(
    config: SweepConfig | str | Path,
    *,
    dry_run: bool = False,
    retry_failed: bool = False,
    prune: bool = False,
    retry_code: str = "submitted",
    backend: Backend | None = None,
    requeue_stalled: bool = False,
) -> Submission:
    """Bring the sweep on SLURM in line with ``config``: submit missing jobs as job arrays and the
    aggregation job after them; skip what is done, leave what is queued or running.

    ``dry_run``: touch nothing, say what would be done. ``retry_failed``: resubmit failed jobs (at
    most ``slurm.max_retries`` each), on the code snapshot each ran with (``retry_code="submitted"``)
    or on the current code (``"current"``). ``prune``: cancel jobs no longer in the config.
    ``requeue_stalled``: requeue running jobs whose progress has not moved for ``slurm.stall_min``
    (they resume from their checkpoint; counted as requeues, not retries).
    ``backend``: default SLURM through submitit (``jobs/<sweep>/submitit``).
    """
    from fercluster.orchestration.submit.coordinator import run_sweep
    from fercluster.orchestration.submit.plan import renamed_jobs

    config = _grid_only(config, "submit")
    backend = backend or slurm_backend(config)
    before = load_state(config.jobs_dir, config.name)  # the jobs known before this run: renamed_jobs
    change = _override_change(config) if dry_run else _record_config(config)
    result = run_sweep(
        config,
        backend,
        dry_run=dry_run,
        retry_failed=retry_failed,
        prune=prune,
        retry_code=retry_code,
        requeue_stalled=requeue_stalled,
    )
    return Submission(config, result, change, tuple(renamed_jobs(result.specs, before)))


def run_local(config: SweepConfig | str | Path, *, console: Any = None) -> LocalRun:
    """Run the sweep's jobs that are not done on this machine, one at a time (GPU or CPU), then
    aggregate; same state, outputs, skip-if-done and resume as on SLURM.

    Returns a ``LocalRun``: counts (``jobs``, ``ran``, ``skipped``, ``left_to_slurm``, ``failed``),
    times, the ``aggregation`` (and its ``report``) and ``change`` (an ``OverrideChange`` or None).
    ``console``: a rich Console for the progress bars (default: a new one on stdout).
    """
    from rich.console import Console

    from fercluster.orchestration.local.run import run_local as run

    config = _grid_only(config, "run_local")
    console = console or Console()
    change = _record_config(config)
    for line in change.lines() if change else []:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    return LocalRun.from_summary(config.name, run(config, console), change)


def status(config: SweepConfig | str | Path, *, failed: bool = False, backend: Any = None) -> pd.DataFrame:
    """One row per planned job with its state (run directories and ONE SLURM query).

    Columns: those of ``status --json``'s jobs (job_id, dataset, fold, variant, seed, state,
    slurm_id, iteration, iterations, k, val_acc, test_acc, elapsed, node, reason, ..., stalled,
    attempts (a list of dicts: ``Results.attempts`` has them as a frame); with ``failed``, also
    exception, log_tail and log of the jobs that ended badly). ``attrs`` holds
    the rest of ``status --json``: sweep, counts, total, source, aggregate, removed_from_config.
    """
    from fercluster.orchestration.watch.status import snapshot

    config = _grid_only(config, "status")
    snap = snapshot(config, backend or slurm_backend(config), failed=failed, attempts=True).to_dict()
    jobs = snap.pop("jobs")
    extra = [c for job in jobs for c in job if c not in STATUS_COLUMNS]
    frame = typed(pd.DataFrame(jobs, columns=STATUS_COLUMNS + list(dict.fromkeys(extra))))
    frame.attrs.update(snap)
    return frame


def cancel(config: SweepConfig | str | Path, job: str | None = None, *, backend: Backend | None = None) -> Cancelled:
    """Cancel the sweep's queued and running SLURM jobs and its aggregation job, or only ``job``
    (a fercluster job id or a SLURM id); returns what was cancelled (``Cancelled``)."""
    from fercluster.orchestration.watch.status import cancel as cancel_jobs

    config = _config(config, "cancel")
    _require_folders(config)
    return Cancelled.of(config.name, cancel_jobs(config, backend or slurm_backend(config), job))


def aggregate(config: SweepConfig | str | Path, *, console: Any = None) -> Aggregation:
    """Write the sweep's tables and report from the jobs complete so far (``results/<sweep>/report``);
    returns an ``Aggregation`` (counts, the accuracy table, the report's path; ``to_dict()``: summary.json)."""
    from fercluster.analysis.report import aggregate as build

    config = _config(config, "aggregate")
    _require_folders(config)
    return Aggregation.from_summary(build(config, console))


def slurm_backend(config: SweepConfig) -> Backend:
    """SLURM through submitit, with the sweep's submitit folder (``backends.backend_for``)."""
    from fercluster.orchestration.backends import backend_for

    return backend_for(config)


def _config(config: SweepConfig | str | Path, what: str) -> SweepConfig:
    """A config given as itself or as its file's path (that file's sweep, as ``sweep_config``)."""
    if isinstance(config, (str, os.PathLike)):
        return sweep_config(config)
    if not isinstance(config, SweepConfig):
        raise ConfigError(
            f"{what}: expected a config or its file's path (e.g. 'configs/smoke.yaml'), got {type(config).__name__}"
        )
    return config


def _require_folders(config: SweepConfig) -> None:
    from fercluster.orchestration.preflight.folders import require_folders

    require_folders(config)


def _grid_only(config: SweepConfig | str | Path, what: str) -> SweepConfig:
    config = _config(config, what)
    if what != "plan":  # plan reads and writes nothing
        _require_folders(config)
    if config.tune is not None:
        raise ConfigError(
            f"{what}: sweep {config.name} is a Ray Tune search (it has a tune: section); "
            f"run it with: fercluster sweep {config.source or 'CONFIG'} [--local]"
        )
    return config


def record_last(config: SweepConfig) -> None:
    """Record ``config`` (its file and overrides) as the last sweep started from this folder, the one
    a command without CONFIG uses; a warning, not an error, when the per-user file cannot be written."""
    from fercluster.orchestration.submit.last import record_last as record

    if config.source is None:
        return  # built from a mapping: no file to point at
    try:
        record(config.source, overrides=config.overrides)
    except OSError as exc:  # a read-only home must not stop a sweep
        warnings.warn(f"could not record sweep {config.name} for commands without CONFIG ({exc})", stacklevel=3)


def _record_config(config: SweepConfig) -> OverrideChange | None:
    """Record the config file and overrides in the sweep's state and as the last sweep started here;
    the change from the sweep's last run."""
    record_last(config)
    with sweep_lock(config.jobs_dir) as lease:
        state = load_state(config.jobs_dir, config.name, lease)
        change = _override_change(config, state)
        state.config = ConfigEntry(config.source, tuple(config.overrides))
        save_state(config.jobs_dir, state)
    return change


def _override_change(config: SweepConfig, state: Any = None) -> OverrideChange | None:
    from fercluster.orchestration.submit.plan import expand

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
