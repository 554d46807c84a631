"""One row per job: its state from the run directory plus ONE batched query per refresh.

Rules, in order: a job whose ``job.json`` exists is COMPLETED, whatever SLURM says (FAILED, with
the reason, when it does not parse or lacks fields: ``train.record``); a job with a
SLURM id gets SLURM's state (a requeued job is PENDING or RUNNING); any other job is asked of
``LocalBackend`` (alive local run: RUNNING; otherwise NOT_SUBMITTED). A job SLURM calls COMPLETED
without ``job.json`` is FAILED; a job SLURM no longer knows is FAILED ('lost'), never RUNNING
forever; a job SLURM could not be asked about (``backend.last_error``) shows its last known state
(``known``), marked stale, and is never taken for lost. But where only accounting failed (a site
without it, slurmdbd down) and the queue answered (``backend.last_queue_ok``), a job the queue
does not show is not queued or running: with no ``job.json`` and no ended state known, it ended
unseen (it left squeue before anyone looked) and is FAILED, with what its ``history.jsonl`` says
of that run; ``sweep --retry-failed`` reruns it. Otherwise such a job would wait for ever.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from fercluster.errors import ConfigError
from fercluster.orchestration.backend import JobInfo, JobQuery
from fercluster.orchestration.local.backend import KEY as LOCAL_KEY
from fercluster.orchestration.local.backend import LocalBackend
from fercluster.orchestration.slurm.parse import array_id
from fercluster.orchestration.slurm.reasons import never_starts
from fercluster.orchestration.store.entries import JobEntry
from fercluster.orchestration.store.index import RunIndex
from fercluster.orchestration.store.known import FinalCost, Known, KnownInfo
from fercluster.orchestration.store.snapshot import CannotStart, Failure, JobRow
from fercluster.orchestration.store.state import SweepState
from fercluster.orchestration.store.vocabulary import (
    ACTIVE,
    CANCELLED,
    COMPLETED,
    ENDED_BADLY,
    FAILED,
    NOT_SUBMITTED,
    PENDING,
    STATES,
)
from fercluster.train.attempts import read_history
from fercluster.train.record import read_progress
from fercluster.train.seeds import resolve_k
from fercluster.train.spec import JobSpec


def job_rows(
    specs: Sequence[JobSpec],
    state: SweepState,
    backend: JobQuery | None,
    extra_ids: Sequence[str] = (),
    infos_out: dict[str, JobInfo] | None = None,
    known: Known | None = None,
    index: RunIndex | None = None,
) -> list[JobRow]:
    """Rows for ``specs`` (plan order). ``backend=None``: no SLURM query (local only).

    ``extra_ids`` (e.g. the aggregation job) ride along in the same query; their answers land
    in ``infos_out``. A complete job is read from ``index`` (``store.index``: its job.json is read
    again only when it changed; a broken one is a failed job, for the diff too). ``known``
    (``status``) gives the last known states, shown marked stale for ids the query could not see
    (``backend.last_error``); it is updated with this refresh's answers and final costs.
    """
    own = index is None
    index = index if index is not None else RunIndex(results_dir_of(specs))
    rows = [_base_row(spec, state, index, known) for spec in specs]
    if own:
        index.save()
    open_rows = [r for r in rows if r.state == ""]
    # completed jobs whose final cost is not known yet ride along, once (status only)
    costless = [
        r for r in rows if r.state == COMPLETED and r.slurm_id and known is not None and _cost_unknown(r, known)
    ]
    ask = [r.slurm_id for r in open_rows + costless if r.slurm_id] + list(extra_ids)
    infos: Mapping[str, JobInfo] = backend.query(ask) if (ask and backend is not None) else {}
    error = backend.last_error if (ask and backend is not None) else ""
    queue_ok = bool(ask and backend is not None and getattr(backend, "last_queue_ok", False))
    if known is not None:
        known.remember(infos)
    if infos_out is not None:
        infos_out.update(_extra_infos(extra_ids, infos, known if error else None, queue_ok))
    for row in costless:
        _final_cost(row, infos.get(row.slurm_id or ""), known)
    locals_ = {r.job_id: {LOCAL_KEY: e.local} for r in open_rows if (e := state.jobs.get(r.job_id)) and e.local}
    here = LocalBackend(locals_).query([r.job_id for r in open_rows if not r.slurm_id])
    known_arrays = {array_id(sid) for sid in infos if array_id(sid) != sid}  # arrays with a task seen
    for row in open_rows:
        if row.slurm_id and error and row.slurm_id not in infos:
            _apply_unanswered(row, known.last(row.slurm_id) if known else None, error, queue_ok)
        elif row.slurm_id:
            _apply_slurm(row, infos.get(row.slurm_id), backend is not None, known_arrays)
        else:
            _apply(row, here[row.job_id])
    return rows


def _extra_infos(
    ids: Sequence[str], infos: Mapping[str, JobInfo], known: Known | None, queue_ok: bool
) -> dict[str, Any]:
    """The answers for ``ids``; where the query could not see one (``known`` given), its last known
    state, unless the queue answered and shows it has ended since (it was queued or running)."""
    out: dict[str, Any] = {i: infos[i] for i in ids if i in infos}
    for i in ids:
        last = known.last(i) if known is not None and i not in infos else None
        if last is not None and not (queue_ok and last.state in ACTIVE):
            out[i] = last
    return out


def results_dir_of(specs: Sequence[JobSpec]) -> str:
    """The results folder of the specs' run directories (``results/<sweep>``: runs/<job id>'s parent's)."""
    return os.path.dirname(os.path.dirname(specs[0].run_dir)) if specs else os.devnull


def _cost_unknown(row: JobRow, known: Known) -> bool:
    final = known.costs.get(row.job_id)
    return final is None or final.slurm_id != row.slurm_id


def _final_cost(row: JobRow, info: JobInfo | None, known: Known | None) -> None:
    """A completed job's cost from SLURM's record of its run, kept in ``known``: asked once, once
    SLURM has ended the job (a site without accounting answers no cost: that is kept too)."""
    if info is None:
        return
    row.gpu_hours, row.cpu_hours = info.gpu_hours, info.cpu_hours
    if known is not None and row.slurm_id and info.state not in ACTIVE:
        known.costs[row.job_id] = FinalCost(row.slurm_id, row.gpu_hours, row.cpu_hours)


def _apply_stale(row: JobRow, last: KnownInfo | None, error: str) -> None:
    """SLURM could not be asked about this job: its last known state, marked stale (never "lost")."""
    if last is None:
        row.state, row.reason = PENDING, f"unknown: SLURM did not answer ({error})"
        return
    _apply(row, last)
    when = time.strftime("%H:%M:%S", time.localtime(last.at))
    row.reason = f"stale (last known {when}; {error})" + (f"; {row.reason}" if row.reason else "")


def _apply_unanswered(row: JobRow, last: KnownInfo | None, error: str, queue_ok: bool) -> None:
    """A job the query did not answer for: ended unseen where the queue answered without it (and
    nothing says it ended otherwise), else its last known state, stale."""
    if queue_ok and (last is None or last.state in ACTIVE):
        _apply_unseen(row, error)
    else:
        _apply_stale(row, last, error)


def _apply_unseen(row: JobRow, error: str) -> None:
    """Not in the queue (it answered), no ``job.json``, accounting silent: it ended unseen, badly."""
    runs = [a for a in read_history(row.run_dir) if a.slurm_id == row.slurm_id] if row.run_dir else []
    said = f"; its history says: {runs[-1].ended}" + (f" ({runs[-1].detail})" if runs[-1].detail else "") if (
        runs and runs[-1].ended) else ""  # fmt: skip
    row.state = FAILED
    row.reason = (
        f"ended unseen: squeue no longer shows it, it wrote no job.json, and accounting did not answer ({error}), "
        f"so how it ended is not known{said}; `sweep --retry-failed` reruns it"
        + (f"; {row.reason}" if row.reason else "")
    )


def _base_row(spec: JobSpec, state: SweepState, index: RunIndex, known: Known | None = None) -> JobRow:
    """The row from the run directory: COMPLETED if ``job.json`` exists, else state "" (ask)."""
    entry = state.jobs.get(spec.job_id) or _NO_ENTRY
    row = JobRow(
        spec.job_id,
        spec.dataset,
        spec.fold,
        spec.variant,
        spec.seed,
        state="",
        slurm_id=entry.slurm_id,
        iterations=spec.train.iterations or None,
        retries=entry.retries,
        requeues=entry.requeues,
        submissions=entry.submissions,
        run_dir=spec.run_dir,
        code=entry.code,
    )
    done = index.entry(spec.job_id, spec.run_dir)
    if done is not None and done.broken:  # a record that does not parse or lacks fields: failed, everywhere
        row.k, row.state, row.reason = _k(spec, None), FAILED, done.broken
    elif done is not None:
        row.state, row.iteration, row.k = COMPLETED, row.iterations, _k(spec, done.k)
        row.val_acc, row.test_acc, row.node, row.elapsed = done.val_acc, done.test_acc, done.node, done.elapsed_s
        row.code = done.code or row.code
        final = known.costs.get(spec.job_id) if known is not None else None
        if final is not None and final.slurm_id == row.slurm_id:
            row.gpu_hours, row.cpu_hours = final.gpu_hours, final.cpu_hours
    else:
        row.k = _k(spec, None)
        progress = read_progress(spec.run_dir)
        if progress is not None:
            row.iteration, row.val_acc, row.test_acc = progress.iteration, progress.shown_val, progress.shown_test
            row.reason = progress.failure
            row.progress_at, row.sec_per_iter = progress.updated, progress.sec_per_iter
    return row


_NO_ENTRY = JobEntry()


def _k(spec: JobSpec, recorded: float | None) -> float | None:
    """The k the job recorded when it is complete, else the one it draws (None if not known yet)."""
    if recorded is not None:
        return recorded
    try:
        return resolve_k(spec)
    except ConfigError:  # a removed job's stand-in, whose settings are gone
        return None


def _apply_slurm(row: JobRow, info: JobInfo | None, asked: bool, known_arrays: set[str] = frozenset()) -> None:
    if info is None and not asked:
        row.state, row.reason = PENDING, row.reason or "SLURM not queried"
        return
    sid = row.slurm_id or ""
    if info is None and array_id(sid) != sid and array_id(sid) in known_arrays:
        # SLURM keeps no record of an array task cancelled before it started: its siblings are
        # known, it is not, and it never wrote progress -> it was cancelled while pending.
        row.state = CANCELLED if row.iteration is None else FAILED
        row.reason = row.reason or "cancelled while pending (SLURM keeps no record of such array tasks)"
        if row.iteration is not None:
            row.reason = f"lost: SLURM no longer knows this task; it stopped at iteration {row.iteration}"
        return
    if info is None:
        row.state = FAILED
        row.reason = row.reason or "lost: SLURM no longer knows this job and it left no job.json"
        return
    _apply(row, info)


def _apply(row: JobRow, info: JobInfo) -> None:
    row.state = info.state
    row.gpu_hours, row.cpu_hours = info.gpu_hours, info.cpu_hours
    row.node = info.node
    row.elapsed = info.elapsed_s
    if row.state == COMPLETED:  # no job.json (checked before): the function did not finish
        row.state = FAILED
        row.reason = row.reason or "SLURM says COMPLETED but the job wrote no job.json (see its log)"
    elif row.state in ENDED_BADLY:
        why = info.failure_reason()
        row.reason = f"{why}; {row.reason}" if row.reason else why
    elif row.state == PENDING and info.reason not in ("", "None"):
        row.reason = info.reason
    elif row.state == NOT_SUBMITTED and info.reason and row.iteration:
        row.reason = f"{info.reason} at iteration {row.iteration}; resumes from its checkpoint"


def cannot_start(rows: Sequence[JobRow]) -> tuple[CannotStart, ...]:
    """The pending jobs SLURM will not start however long they wait, grouped by SLURM's reason."""
    groups: dict[str, list[JobRow]] = {}
    for row in rows:
        if row.state == PENDING and row.slurm_id and never_starts(row.reason) is not None:
            groups.setdefault(row.reason, []).append(row)
    return tuple(
        CannotStart(
            reason, never_starts(reason) or "", tuple(r.job_id for r in group), tuple(r.slurm_id or "" for r in group)
        )
        for reason, group in groups.items()
    )


def counts(rows: Sequence[JobRow]) -> dict[str, int]:
    out = {s: 0 for s in STATES}
    for r in rows:
        out[r.state] = out.get(r.state, 0) + 1
    return {k: v for k, v in out.items() if v}


# -- details of failed jobs (only for `status --failed`) -------------------------------------------
def submitit_paths(submitit_folder: Path, slurm_id: str) -> Any:
    from submitit.core.utils import JobPaths

    return JobPaths(Path(submitit_folder).absolute() / "%j", job_id=slurm_id)


def failure_details(submitit_folder: Path, row: JobRow, tail_lines: int = 20) -> Failure:
    """The exception (from submitit's result pickles) and the tail of the job's logs.

    A job of several tasks (DDP ranks) has a result pickle per task: the error shown is the one
    written first, the rank that failed (the others then fail in a collective or are killed by
    srun), with that task's log.
    """
    if not row.slurm_id:
        return Failure()
    task, exception = 0, ""
    errors = _task_errors(submitit_paths(submitit_folder, row.slurm_id).folder, row.slurm_id)
    if errors:
        _, task, message = min(errors)
        exception = message if task == 0 else f"task {task}: {message}"
    paths = submitit_paths(submitit_folder, row.slurm_id)
    if task:
        from submitit.core.utils import JobPaths

        paths = JobPaths(paths.folder.parent / "%j", job_id=row.slurm_id, task_id=task)
    for log in (paths.stderr, paths.stdout):
        if log.exists():
            text = log_tail(log, tail_lines)
            if text:
                return Failure(exception, "\n".join(text), str(log))
    return Failure(exception)


TAIL_CHUNK = 8192
TAIL_MAX_BYTES = 256 * 1024  # a log of very long lines: at most this much of its end is read


def log_tail(path: Path, lines: int, max_bytes: int = TAIL_MAX_BYTES) -> list[str]:
    """The last ``lines`` lines of a log, read backwards from its end in chunks (a job's log can
    be gigabytes: it is never read whole); a line cut at ``max_bytes`` is left out."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        start, data = end, b""
        while start > 0 and end - start < max_bytes and data.count(b"\n") <= lines:
            step = min(TAIL_CHUNK, start, max_bytes - (end - start))
            start -= step
            f.seek(start)
            data = f.read(step) + data
    text = data.decode("utf-8", errors="replace").splitlines()
    if start > 0 and text:  # the first line read began before ``start``: cut, left out
        text = text[1:]
    return text[-lines:] if lines > 0 else []


def _task_errors(folder: Path, slurm_id: str) -> list[tuple[float, int, str]]:
    """(written at, task, last line of the traceback) of every task that ended with an error."""
    out = []
    for path in folder.glob(f"{slurm_id}_*_result.pkl"):
        task = path.name[len(slurm_id) + 1 : -len("_result.pkl")]
        if not task.isdigit():
            continue
        try:
            import cloudpickle

            with path.open("rb") as f:
                outcome, payload = cloudpickle.load(f)
            mtime = path.stat().st_mtime
        except Exception as exc:  # a corrupt pickle is itself worth reporting
            out.append((float("inf"), int(task), f"(result pickle unreadable: {exc})"))
            continue
        if outcome == "error":
            lines = [ln for ln in str(payload).strip().splitlines() if ln.strip()]
            out.append((mtime, int(task), lines[-1] if lines else str(payload)))
    return out
