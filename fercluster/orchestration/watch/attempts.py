"""A job's attempts as ``status --json``, ``fercluster.results()`` and the report show them: its
``history.jsonl`` (``train.attempts``, written by the job, and by ``sweep --requeue-stalled``)
merged with what the coordinator knows.

- A SLURM id the coordinator submitted (``state.json``) that never wrote a start is an attempt too
  (it ended before the job began: a launch failure, an error at import), ended as SLURM said.
- An attempt that wrote no end and was followed by a start of the same SLURM id was killed without
  a signal it could act on and started again by SLURM: a node failure (``inferred``; SLURM's
  warnings before a time limit or a pre-emption are signals the job writes an end for itself).
- An earlier SLURM id's attempt without an end ended as SLURM last said (``known.json``).
- The last attempt without an end is running while its job is active; else it ended as the job
  did (COMPLETED: completed; SLURM's NODE_FAIL, TIMEOUT, PREEMPTED, CANCELLED, FAILED).
- The iteration an attempt without an end reached: what the next one resumed from, or for the
  last one its progress.json's.

Attempts are read per job shown in detail (``status --json``, ``results().attempts``, the
report); a complete job's come from the run index (``store.index``), read once with its job.json.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Sequence

from fercluster.errors import StoreError
from fercluster.orchestration.store.entries import JobEntry
from fercluster.orchestration.store.index import RunIndex
from fercluster.orchestration.store.known import Known, load_known
from fercluster.orchestration.store.snapshot import JobRow
from fercluster.orchestration.store.state import load_state
from fercluster.orchestration.store.vocabulary import (
    ACTIVE,
    CANCELLED,
    COMPLETED,
    FAILED,
    PREEMPTED,
    TIMEOUT,
)
from fercluster.orchestration.watch.stall import stall_line
from fercluster.train import attempts as a_
from fercluster.train.attempts import Attempt, HistoryLine, read_history

_ENDINGS = {COMPLETED: a_.COMPLETED, TIMEOUT: a_.TIME_OUT, PREEMPTED: a_.PREEMPTION, CANCELLED: a_.CANCELLED}


def ending(state: str, reason: str = "") -> str:
    """How a run ended, from the job's state and SLURM's reason ("" while active or unknown)."""
    if state == FAILED:
        return a_.NODE_FAILURE if reason.startswith("node failure") else a_.FAILED
    return _ENDINGS.get(state, "")


def job_attempts(
    history: Sequence[Attempt],
    entry: JobEntry | None,
    known: Known | None,
    state: str = "",
    reason: str = "",
    iteration: int | None = None,
) -> tuple[Attempt, ...]:
    """The job's attempts, numbered in submission order (see the module doc). ``state``, ``reason``
    and ``iteration``: the job's now (its status row; "" when not known, as for ``results``)."""
    submitted = entry.slurm_ids if entry is not None else ()
    seen = {a.slurm_id for a in history}
    found = [*history, *(Attempt(0, slurm_id=sid) for sid in submitted if sid not in seen)]
    if len(found) > len(history) or len(submitted) > 1:  # in submission order (a sort is rarely needed)
        rank = {sid: i for i, sid in enumerate(submitted)}
        found = [found[i] for i in sorted(range(len(found)), key=lambda i: (rank.get(found[i].slurm_id, len(rank)), i))]
    for i, att in enumerate(found):
        later = found[i + 1 :]
        if not att.ended:
            att = _ended(att, later, known, state, reason)
        if att.iteration is None and att.start is not None:
            att = replace(att, iteration=later[0].from_iteration if later else iteration)
        found[i] = att if att.number == i + 1 else replace(att, number=i + 1)
    return tuple(found)


def _ended(att: Attempt, later: list[Attempt], known: Known | None, state: str, reason: str) -> Attempt:
    if att.slurm_id and any(b.slurm_id == att.slurm_id for b in later):
        detail = "it wrote no end and SLURM started it again"
        return replace(att, ended=a_.NODE_FAILURE, ended_by=a_.INFERRED, detail=detail)
    if later:  # an earlier submission: as SLURM last said of it
        last = known.last(att.slurm_id) if known is not None and att.slurm_id else None
        word = ending(last.state, last.failure) if last is not None else ""
        return replace(att, ended=word, ended_by=a_.BY_SLURM if word else "")
    word = "" if state in ACTIVE else ending(state, reason)
    if not word:
        return att  # running (or queued again): not ended yet, or nothing says how it ended
    return replace(att, ended=word, ended_by=a_.INFERRED if state == COMPLETED else a_.BY_SLURM)


def sweep_attempts(
    jobs_dir: Path | None, sweep: str, results_dir: Path, jobs: Iterable[tuple[str, str, str]]
) -> dict[str, tuple[Attempt, ...]]:
    """Attempts of ``(job id, run dir, its state)`` jobs, for ``results`` and the report: complete
    jobs' through the run index, with the sweep's ``state.json`` and ``known.json`` when
    ``jobs_dir`` is given (no SLURM query: SLURM's word is what the last ``status`` heard)."""
    entries: dict[str, JobEntry] = {}
    known = None
    if jobs_dir is not None:
        try:
            state = load_state(Path(jobs_dir), sweep)
            entries, known = {**state.removed, **state.jobs}, load_known(Path(jobs_dir))
        except StoreError:  # the job side's history alone
            pass
    index = RunIndex(results_dir)
    out = {
        job_id: job_attempts(index.history(job_id, run_dir), entries.get(job_id), known, job_state)
        for job_id, run_dir, job_state in jobs
    }
    index.save()
    return out


def end_stalled(row: JobRow, now: float | None = None) -> None:
    """End the job's running attempt as ``stalled`` in its history (``sweep --requeue-stalled``; the
    job, hung, cannot): the last attempt of its SLURM id without an end, or one of its own when the
    job never wrote a start. A line that cannot be written is left out: the requeue itself is
    counted in ``state.json``."""
    running = [a for a in read_history(row.run_dir) if a.slurm_id == row.slurm_id and not a.ended]
    line = HistoryLine(
        a_.END,
        running[-1].token if running else "",
        time.time() if now is None else now,
        slurm_id=row.slurm_id or "",
        iteration=row.iteration,
        ended=a_.STALLED,
        by=a_.BY_COORDINATOR,
        detail=stall_line(row),
    )
    try:
        a_.append(row.run_dir, line)
    except OSError:
        pass
