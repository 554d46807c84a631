"""The aggregation job: while the sweep has training jobs queued or running, one is queued after them.

Each ``sweep`` run checks it, with or without new training work: when the recorded aggregation job
is not queued (ended, cancelled, never submitted because its sbatch failed) or does not wait for
every live training submission, a new one is submitted after them (``afterany``), on
``slurm.aggregate``'s resources; the old one is cancelled only once the new one is in. Once every
job has ended, a sweep that finds no aggregation job that ran after them all (``missed``: its sbatch
failed while they ran) submits one with no dependency, so the report is built after all.

How the recorded one ended is SLURM's word while SLURM has it; once it does not (no accounting, and
the job left squeue), the evidence is ``jobs/<sweep>/aggregated.json``, which the aggregation job
writes as it ends complete (``record_aggregated``): the SLURM id of the last one that built the
report. An aggregation job found by name after a lost reply replaces the recorded one the same
way: the one it replaced is cancelled (``recovery.adopt_orphans``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import orjson

from fercluster.atomic import write_json
from fercluster.config import SweepConfig
from fercluster.errors import SlurmError
from fercluster.orchestration.backend import Backend, JobInfo, Resources, Submission, refused
from fercluster.orchestration.store.entries import AGGREGATE, AggregateEntry, ArrayEntry, PendingEntry
from fercluster.orchestration.store.state import SweepState, array_name, private_umask, save_state
from fercluster.orchestration.store.vocabulary import ACTIVE, COMPLETED
from fercluster.orchestration.submit.snapshots import CodeChoice


def needed_after(state: SweepState, backend: Backend, live_ids: Sequence[str], info: JobInfo | None) -> list[str]:
    """The training submissions a new aggregation job must wait for; [] when none is needed (no
    training job is live, the recorded one is queued after all of them, or a pending record may be
    in SLURM: an aggregation job, or an array it could not wait for, its id unknown; the next run's
    recovery settles it, then the aggregation job follows)."""
    deps = backend.submissions_of(list(live_ids))
    if not deps or state.pending:
        return []
    old = state.aggregate
    queued = old is not None and old.slurm_id and info is not None and info.state in ACTIVE
    return [] if queued and set(deps) <= set(old.after) else deps


def missed(
    state: SweepState, info: JobInfo | None, built_by: str | None = None, unseen: bool = False, silent: bool = False
) -> bool:
    """Whether a sweep whose jobs have all ended lacks an aggregation job that ran after every
    training array: none recorded (its sbatch failed, its reply was lost), the recorded one ended
    other than COMPLETED, or it was submitted before the latest array. False while the recorded
    one is queued or running, or a pending record may be in SLURM (recovery settles it first).
    ``info`` None where accounting was ``silent`` (none, or down) and the queue no longer shows it:
    it completed only if it is ``built_by``, the id ``aggregated.json`` names (accounting that
    answered without it: purged long ago, taken as run). ``unseen``: jobs complete that no
    recorded run explains (an array whose lost reply was never found, without accounting, ran
    them): one is due."""
    old = state.aggregate
    if state.pending or (old is not None and old.slurm_id and info is not None and info.state in ACTIVE):
        return False
    if unseen or not state.arrays:
        return unseen
    if old is None or not old.slurm_id:
        return True
    ran_after = all(_after(old, a) for a in state.arrays.values())
    if info is not None:
        completed = info.state == COMPLETED
    else:
        completed = built_by == old.slurm_id or not silent
    return not ran_after or not completed


def aggregated_path(jobs_dir: Path) -> Path:
    return Path(jobs_dir) / "aggregated.json"


def record_aggregated(jobs_dir: Path, slurm_id: str | None = None) -> None:
    """Written by the aggregation job once the report is built: its SLURM id (``SLURM_JOB_ID``)."""
    sid = slurm_id if slurm_id is not None else os.environ.get("SLURM_JOB_ID")
    write_json(aggregated_path(jobs_dir), {"slurm_id": sid, "finished": time.time()})


def built_by(jobs_dir: Path) -> str | None:
    """The SLURM id of the last aggregation job that built the report (None: none recorded, or
    the file does not read: then SLURM's word is all there is, and a missing word means missed)."""
    try:
        sid = orjson.loads(aggregated_path(jobs_dir).read_bytes()).get("slurm_id")
    except (OSError, ValueError, AttributeError):
        return None
    return str(sid) if sid else None


def _after(agg: AggregateEntry, array: ArrayEntry) -> bool:
    """Whether ``agg`` ran after ``array``: it waited for it, or was submitted later (SLURM ids
    count up; ids that are not numbers: by the times recorded)."""
    if array.slurm_id in agg.after:
        return True
    try:
        return int(agg.slurm_id or "") > int(array.slurm_id.split("_")[0])
    except ValueError:
        return (agg.submitted or 0.0) >= (array.submitted or 0.0)


def submit_aggregate(
    cfg: SweepConfig,
    state: SweepState,
    backend: Backend,
    aggregate_fn: Callable[..., Any],
    deps: list[str],
    code: CodeChoice,
    old_info: JobInfo | None = None,
) -> str:
    """The aggregation job after ``deps`` (afterany); then the one it replaces is cancelled (if it
    still waits, it would run before the new arrays end). A refused sbatch drops its record."""
    old = state.aggregate
    name = array_name(cfg.name + "-aggregate", deps)
    state.pending[name] = PendingEntry((AGGREGATE,), AGGREGATE, time.time(), code=code.key, after=tuple(deps))
    save_state(cfg.jobs_dir, state)
    sub = Submission(
        name,
        "aggregate",
        aggregate_fn,
        (cfg.model_dump(mode="json"),),
        Resources.aggregation(cfg.slurm),
        tuple(deps),
        code.path,
    )
    try:
        with private_umask():
            sid = backend.submit(sub).id
    except SlurmError as exc:
        if refused(exc):
            state.pending.pop(name, None)
            save_state(cfg.jobs_dir, state)
        raise
    state.aggregate = AggregateEntry(name, sid, time.time(), tuple(deps), code.key)
    state.pending.pop(name, None)
    save_state(cfg.jobs_dir, state)
    if old is not None and old.slurm_id and (old_info is None or old_info.state in ACTIVE):
        try:
            backend.cancel([old.slurm_id])
        except SlurmError:
            pass  # already finished
    return sid
