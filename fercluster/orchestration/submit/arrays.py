"""The training arrays of one ``sweep`` run: one per code snapshot, split to fit the scheduler.

Every array gets its pending record BEFORE its sbatch (a name with a nonce of its own), then its
id. An sbatch the scheduler refused for sure (``backend.refused``) drops its record at once:
nothing went in. One refused by a submit limit (SLURM: MaxSubmitJobsPerUser, which counts array
tasks) is split in halves, down to one job, so that what fits goes in now; what does not waits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from fercluster.config import SweepConfig
from fercluster.errors import SlurmError
from fercluster.orchestration.backend import Backend, Resources, Submission, SubmitLimit, refused
from fercluster.orchestration.store.entries import TRAIN, PendingEntry
from fercluster.orchestration.store.state import SweepState, array_name, ensure_dir, save_state
from fercluster.orchestration.submit.lanes import array_lanes
from fercluster.orchestration.submit.recovery import summaries
from fercluster.orchestration.submit.snapshots import CodeChoice, CodePlan
from fercluster.train.spec import JobSpec


@dataclass
class _Run:
    """What every array of this run shares."""

    cfg: SweepConfig
    state: SweepState
    backend: Backend
    fn: Callable[..., Any]
    specs_by_id: dict[str, JobSpec]
    current: CodeChoice
    retry_ids: set[str]
    requeue_ids: set[str]


def submit_arrays(
    cfg: SweepConfig,
    state: SweepState,
    backend: Backend,
    fn_for: Callable[[], Any],
    specs: list[JobSpec],
    code: CodePlan,
    retry_ids: set[str],
    requeue_ids: set[str] = frozenset(),
    active: Sequence[tuple[str, int]] = (),
) -> tuple[list[dict[str, Any]], SlurmError | None]:
    """One array per code snapshot (split at the cluster's MaxArraySize); returns the arrays
    submitted and, when an sbatch failed, why (the arrays after it are not tried: they would
    fail the same way, each after sbatch's own retries). A failed array's pending record stays
    unless the refusal was definite: the next run looks it up (a time-out may have submitted it)."""
    ensure_dir(cfg.jobs_dir / "submitit")
    size = max(1, backend.max_tasks())
    chunks = [(choice, group[i : i + size]) for choice, group in code.groups for i in range(0, len(group), size)]
    lanes = array_lanes(len(chunks), cfg.slurm.array_parallelism, active)
    run = _Run(cfg, state, backend, fn_for(), {s.job_id: s for s in specs}, code.current, retry_ids, requeue_ids)
    arrays: list[dict[str, Any]] = []
    tails: list[str] = []  # per chunk: the id of its last array (a later chunk of its lane waits for it)
    for (choice, chunk), (throttle, after) in zip(chunks, lanes, strict=True):
        wait = (tails[after],) if isinstance(after, int) else after or ()  # its lane's array before it
        sent, error = _submit_split(run, choice, chunk, throttle, tuple(wait))
        arrays += sent
        if error is not None:
            return arrays, error
        tails.append(sent[-1]["slurm_id"])
    return arrays, None


def _submit_split(
    run: _Run, choice: CodeChoice, chunk: list[JobSpec], throttle: int, wait: tuple[str, ...]
) -> tuple[list[dict[str, Any]], SlurmError | None]:
    """``chunk`` as one array; refused by a submit limit, as two halves (the second after the
    first, so the lane's throttle holds), and so on down to one job."""
    try:
        return [_submit_one(run, choice, chunk, throttle, wait)], None
    except SubmitLimit as exc:
        if not exc.definite or len(chunk) == 1:
            return [], exc
    except SlurmError as exc:
        return [], exc
    half = (len(chunk) + 1) // 2
    first, error = _submit_split(run, choice, chunk[:half], throttle, wait)
    if error is not None:
        return first, error
    rest, error = _submit_split(run, choice, chunk[half:], throttle, (first[-1]["slurm_id"],))
    return first + rest, error


def _submit_one(
    run: _Run, choice: CodeChoice, chunk: list[JobSpec], throttle: int, wait: tuple[str, ...]
) -> dict[str, Any]:
    """Pending record, sbatch, id: one array. A definite refusal drops the record and raises."""
    cfg, state = run.cfg, run.state
    job_ids = [s.job_id for s in chunk]
    name = array_name(cfg.name, job_ids)
    state.pending[name] = PendingEntry(
        tuple(job_ids),
        TRAIN,
        time.time(),
        tuple(sorted(run.retry_ids.intersection(job_ids))),
        tuple(sorted(run.requeue_ids.intersection(job_ids))),
        choice.key,
    )
    save_state(cfg.jobs_dir, state)  # BEFORE sbatch: a crash after it is found by name
    resources = replace(Resources.training(cfg.slurm), throttle=throttle)
    args = list(chunk) if choice.key == run.current.key else [s.to_dict() for s in chunk]  # older code: dicts
    sub = Submission(name, "train", run.fn, tuple(args), resources, wait, choice.path)
    try:
        sid = run.backend.submit(sub).id
    except SlurmError as exc:
        if refused(exc):  # nothing went in: no record to look up
            state.pending.pop(name, None)
            save_state(cfg.jobs_dir, state)
        raise
    state.record_array(
        name,
        sid,
        job_ids,
        run.retry_ids,
        summaries(run.specs_by_id, job_ids),
        code=choice.key,
        requeue_ids=run.requeue_ids,
        throttle=throttle,
    )
    save_state(cfg.jobs_dir, state)
    return {
        "name": name,
        "slurm_id": sid,
        "n": len(chunk),
        "throttle": throttle,
        "code": choice.key,
        "after": ":".join(wait) or None,
    }
