"""Pending records: submissions written to the state BEFORE their sbatch, settled afterwards.

Each submission's job name carries a nonce of its own (``store.state.array_name``), so a lookup by
name finds that submission and no other. ``adopt_orphans`` settles the records a crash, a time-out
or a lost reply left: found, the submission is recorded (adopted); not found, it never went in and
the record goes (its jobs are submitted again). When only the queue could answer because the site
has no accounting (sacct: "accounting storage is disabled"), a record that squeue does not show is
dropped once older than ``slurm.pending_bound_s`` (squeue shows this user's queued, running and
recently ended jobs); younger, its jobs are held. In an outage of accounting (slurmdbd down) it
stays, and its jobs are held, until accounting answers: the submission may have run and ended.
``forget_pending`` drops records by hand (``sweep --forget-pending``); ``pending_lines`` shows them.

Before a job is resubmitted (a retry, a requeue), ``hold_live`` asks the queue whether it is live:
accounting can lag the queue (SLURM requeues a job after a node failure, ``squeue`` shows it
PENDING while ``sacct -X`` still says NODE_FAIL for a few seconds), and a resubmission then would
run a second copy. One ``Backend.live`` call for those jobs; the ones it shows queued or running
(all of them when it cannot answer) are held.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

from fercluster.errors import SlurmError
from fercluster.orchestration.backend import Backend, PartialLookup, Resources, Submission
from fercluster.orchestration.store.entries import AGGREGATE, AggregateEntry
from fercluster.orchestration.store.state import SweepState, load_state, save_state, sweep_lock
from fercluster.orchestration.store.vocabulary import ACTIVE
from fercluster.orchestration.submit.reconcile import Diff
from fercluster.orchestration.watch.monitor import JobRow
from fercluster.train.spec import JobSpec


def adopt_orphans(
    state: SweepState,
    backend: Backend,
    fn_for: Callable[[], Any] | None,
    specs_by_id: dict[str, JobSpec],
    resources: Resources,
    bound_s: float = 600.0,
) -> tuple[list[str], str]:
    """Pending submissions whose array SLURM has: record them.

    Returns the adopted names and, when the lookup failed, why (else ""). Pending records SLURM
    does not know are dropped (sbatch never ran); their jobs are submitted again by the caller.
    A lookup that FAILED drops nothing: the records stay, their jobs are held (``Diff.hold``) and
    the next run tries again; "could not ask" is never "not found". When only the queue answered
    (``PartialLookup``) because the site has no accounting, records it does not show are dropped
    once older than ``bound_s``; in an accounting outage they stay until accounting answers.
    An adopted array gets any submitted pickles it is missing (``Backend.adopt``).
    """
    if not state.pending:
        return [], ""
    error, unsure, disabled = "", False, False
    try:
        found = backend.find(sorted(state.pending))
    except PartialLookup as exc:
        found, error, unsure, disabled = exc.found, str(exc), True, exc.disabled
    except SlurmError as exc:
        return [], str(exc)
    adopted, now = [], time.time()
    for name, rec in list(state.pending.items()):
        sid = found.get(name)
        if sid is None:
            if not unsure or (disabled and now - (rec.created or 0.0) >= bound_s):
                state.pending.pop(name)
            continue
        _adopt(state, backend, fn_for, specs_by_id, resources, name, sid)
        adopted.append(name)
    return adopted, error if state.pending else ""


def _adopt(
    state: SweepState,
    backend: Backend,
    fn_for: Callable[[], Any] | None,
    specs_by_id: dict[str, JobSpec],
    resources: Resources,
    name: str,
    sid: str,
) -> None:
    rec = state.pending[name]
    if rec.kind == AGGREGATE:  # it replaced the recorded one, as submit_aggregate would have
        old = state.aggregate
        state.aggregate = AggregateEntry(name, sid, rec.created, rec.after, rec.code)
        state.pending.pop(name)
        if old is not None and old.slurm_id and old.slurm_id != sid:
            try:
                backend.cancel([old.slurm_id])
            except SlurmError:
                pass  # ended already, or scancel did not answer: it then waits beside the new one
        return
    job_ids = list(rec.job_ids)
    state.record_array(
        name, sid, job_ids, set(rec.retry), summaries(specs_by_id, job_ids), code=rec.code, requeue_ids=set(rec.requeue)
    )
    args = [specs_by_id[j] for j in job_ids if j in specs_by_id]  # already as submitted (processes)
    if fn_for is not None and len(args) == len(job_ids):
        backend.adopt(Submission(name, "train", fn_for(), tuple(args), resources), sid)


def summaries(specs_by_id: dict[str, JobSpec], job_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per job, what ``status`` needs once the job leaves the config (data set, fold, ...)."""
    out = {}
    for j in job_ids:
        s = specs_by_id.get(j)
        if s is not None:
            out[j] = {"dataset": s.dataset, "fold": s.fold, "variant": s.variant, "seed": s.seed, "run_dir": s.run_dir}
    return out


def pending_lines(state: SweepState, now: float | None = None) -> list[str]:
    """One line per pending record: its name, age and jobs."""
    now = time.time() if now is None else now
    out = []
    for name, rec in sorted(state.pending.items()):
        age = f"{now - rec.created:.0f} s" if rec.created is not None else "age unknown"
        jobs = "the aggregation job" if rec.kind == AGGREGATE else f"{len(rec.job_ids)} jobs: {', '.join(rec.job_ids)}"
        out.append(f"pending {name} ({age}): {jobs}")
    return out


FORGET_WARNING = (
    "if such a submission did reach SLURM, its jobs now run twice: check `squeue --me -n NAME` (and "
    "`sacct -X -n NAME`) first, and cancel what they show"
)


def forget(jobs_dir: Path, sweep: str, which: str) -> list[str]:
    """``forget_pending`` on the sweep's state, under its lock (``sweep --forget-pending``)."""
    with sweep_lock(jobs_dir) as lease:
        state = load_state(jobs_dir, sweep, lease)
        lines = forget_pending(state, which)
        save_state(jobs_dir, state)
    return lines


def forget_pending(state: SweepState, which: str) -> list[str]:
    """Drop the pending record ``which`` (a name, or ``all``); returns the lines of what was dropped.
    ``SlurmError`` naming the records there are when ``which`` is none of them."""
    names = sorted(state.pending) if which == "all" else [which]
    unknown = [n for n in names if n not in state.pending]
    if unknown:
        known = ", ".join(sorted(state.pending)) or "none"
        raise SlurmError(f"no pending record {which!r} in sweep {state.sweep}; pending records: {known}")
    lines = [ln for ln in pending_lines(state) if ln.split()[1] in names]
    for n in names:
        state.pending.pop(n)
    return lines


def hold_live(diff: Diff, rows: Sequence[JobRow], backend: Backend) -> None:
    """Hold the retries and requeues of ``diff`` that the queue shows queued or running."""
    again = {s.job_id for s in diff.retry + diff.requeue}
    ids = {r.slurm_id: r.job_id for r in rows if r.job_id in again and r.slurm_id}
    if not ids:
        return
    try:
        live = backend.live(sorted(ids))
    except SlurmError as exc:
        diff.hold(set(ids.values()), f"not resubmitted: squeue could not say whether it was requeued ({exc})")
        return
    for sid, info in live.items():
        if sid in ids and info.state in ACTIVE:
            diff.hold({ids[sid]}, f"not resubmitted: SLURM requeued it, squeue shows it {info.state}")
