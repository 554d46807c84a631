"""One row per job: its state from the run directory plus ONE batched query per refresh.

Rules, in order: a job whose ``job.json`` exists is COMPLETED, whatever SLURM says (FAILED, with
the reason, when it does not parse or lacks fields: ``train.record``); a job with a
SLURM id gets SLURM's state (a requeued job is PENDING or RUNNING); any other job is asked of
``LocalBackend`` (alive local run: RUNNING; otherwise NOT_SUBMITTED). A job SLURM calls COMPLETED
without ``job.json`` is FAILED; a job SLURM no longer knows is FAILED ('lost'), never RUNNING
forever; a job SLURM could not be asked about (``backend.last_error``) shows its last known state
(``known``), marked stale, and is never taken for lost.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from fercluster import fmt
from fercluster.errors import ConfigError
from fercluster.orchestration.backend import JobInfo, JobQuery, base_id
from fercluster.orchestration.known import Known, KnownInfo
from fercluster.orchestration.local_backend import LocalBackend
from fercluster.orchestration.state import SweepState
from fercluster.orchestration.states import (
    ACTIVE,
    CANCELLED,
    COMPLETED,
    ENDED_BADLY,
    FAILED,
    NOT_SUBMITTED,
    PENDING,
    STATES,
)
from fercluster.train.record import read_job_record
from fercluster.train.seeds import resolve_k
from fercluster.train.spec import JobSpec


@dataclass
class JobRow:
    job_id: str
    dataset: str
    fold: int
    variant: str
    seed: int
    state: str
    slurm_id: str | None = None
    iteration: int | None = None
    iterations: int | None = None
    k: float | None = None  # the job's init scale (as drawn from its identity, or recorded by the job)
    val_acc: float | None = None  # best validation accuracy so far (the final one when done)
    test_acc: float | None = None
    elapsed: float | None = None  # seconds
    node: str = ""
    reason: str = ""
    retries: int = 0
    submissions: int = 0
    run_dir: str = ""
    code: str | None = None  # the code it ran (job.json) or its latest submission runs: a snapshot hash or "live"
    gpu_hours: float | None = None  # its latest run's cost (sacct's AllocTRES x ElapsedRaw)
    cpu_hours: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _ROW_FIELDS}  # flat: asdict's deep copy is slow


_ROW_FIELDS = tuple(f.name for f in fields(JobRow))


def read_json(path: str | Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def job_rows(
    specs: Sequence[JobSpec],
    state: SweepState,
    backend: JobQuery | None,
    extra_ids: Sequence[str] = (),
    infos_out: dict[str, JobInfo] | None = None,
    known: Known | None = None,
) -> list[JobRow]:
    """Rows for ``specs`` (plan order). ``backend=None``: no SLURM query (local only).

    ``extra_ids`` (e.g. the aggregation job) ride along in the same query; their answers land
    in ``infos_out``. Every ``job.json`` is parsed (a broken one is a failed job, for the diff
    too) unless ``known`` (``status``) has it already: completed jobs' records are read once.
    ``known`` also gives the last known states, shown marked stale for ids the query could not
    see (``backend.last_error``); it is updated with this refresh's answers.
    """
    rows = [_base_row(spec, state, known) for spec in specs]
    open_rows = [r for r in rows if r.state == ""]
    # completed jobs whose final cost is not known yet ride along, once (status only)
    costless = [r for r in rows if known is not None and r.state == COMPLETED and r.slurm_id and r.gpu_hours is None]
    ask = [r.slurm_id for r in open_rows + costless if r.slurm_id] + list(extra_ids)
    infos: Mapping[str, JobInfo] = backend.query(ask) if (ask and backend is not None) else {}
    error = backend.last_error if (ask and backend is not None) else ""
    if known is not None:
        known.remember(infos)
    if infos_out is not None:
        infos_out.update({i: infos[i] for i in extra_ids if i in infos})
        if error and known is not None:
            infos_out.update({i: known.states[i] for i in extra_ids if i not in infos and i in known.states})
    for row in costless:
        _final_cost(row, infos.get(row.slurm_id or ""), known)
    here = LocalBackend(state.jobs).query([r.job_id for r in open_rows if not r.slurm_id])
    known_arrays = {base_id(sid) for sid in infos if "_" in sid}
    for row in open_rows:
        if row.slurm_id and error and row.slurm_id not in infos:
            _apply_stale(row, known.states.get(row.slurm_id) if known else None, error)
        elif row.slurm_id:
            _apply_slurm(row, infos.get(row.slurm_id), backend is not None, known_arrays)
        else:
            _apply(row, here[row.job_id])
    return rows


def _final_cost(row: JobRow, info: JobInfo | None, known: Known | None) -> None:
    """A completed job's cost from SLURM's record of its run, kept with its job.json in ``known``."""
    row.gpu_hours, row.cpu_hours = (info.gpu_hours, info.cpu_hours) if info is not None else (None, None)
    done = known.done.get(row.job_id) if known is not None else None
    if done is not None and row.gpu_hours is not None and info is not None and info.state not in ACTIVE:
        done.update(gpu_hours=row.gpu_hours, cpu_hours=row.cpu_hours, slurm_id=row.slurm_id)


def _apply_stale(row: JobRow, last: KnownInfo | None, error: str) -> None:
    """SLURM could not be asked about this job: its last known state, marked stale (never "lost")."""
    if last is None:
        row.state, row.reason = PENDING, f"unknown: SLURM did not answer ({error})"
        return
    _apply(row, last)
    when = time.strftime("%H:%M:%S", time.localtime(last.at))
    row.reason = f"stale (last known {when}; {error})" + (f"; {row.reason}" if row.reason else "")


def _base_row(spec: JobSpec, state: SweepState, known: Known | None = None) -> JobRow:
    """The row from the run directory: COMPLETED if ``job.json`` exists, else state "" (ask).

    A completed job that ``known`` has is not read again (a completed job does not change)."""
    rec = state.jobs.get(spec.job_id, {})
    row = JobRow(
        spec.job_id,
        spec.dataset,
        spec.fold,
        spec.variant,
        spec.seed,
        state="",
        slurm_id=state.slurm_id(spec.job_id),
        iterations=spec.train.iterations or None,
        retries=rec.get("retries", 0),
        submissions=rec.get("submissions", 0),
        run_dir=spec.run_dir,
        code=rec.get("code"),
    )
    cached = known.done.get(spec.job_id) if known is not None else None
    if cached is not None and cached.get("run_dir") == spec.run_dir:
        row.state, row.iteration = COMPLETED, row.iterations
        for key in ("k", "val_acc", "test_acc", "node", "elapsed", "gpu_hours", "cpu_hours"):
            setattr(row, key, cached.get(key))
        row.code = cached.get("code") or row.code
        return row
    done, broken = read_job_record(spec.run_dir)
    row.k = _k(spec, done)
    if broken:  # a record that does not parse or lacks fields: failed, here as in sweep and --dry-run
        row.state, row.reason = FAILED, broken
        return row
    if done is not None:
        row.state = COMPLETED
        row.iteration = row.iterations
        row.val_acc, row.test_acc = fmt.number(done.get("val_acc")), fmt.number(done.get("test_acc"))
        nodes = done.get("nodes")
        row.node = ",".join(dict.fromkeys(nodes)) if isinstance(nodes, list) and nodes else str(done.get("host") or "")
        ran = done.get("code")
        row.code = str(ran["hash"]) if isinstance(ran, dict) and ran.get("hash") else row.code
        row.elapsed = (
            fmt.number((done.get("timings") or {}).get("total_s")) if isinstance(done.get("timings"), dict) else None
        )
        if known is not None:
            known.done[spec.job_id] = {"run_dir": spec.run_dir, "k": row.k, "val_acc": row.val_acc,
                                       "test_acc": row.test_acc, "node": row.node, "elapsed": row.elapsed,
                                       "code": row.code}  # fmt: skip
        return row
    progress = read_json(os.path.join(spec.run_dir, "progress.json"))
    if progress is not None:
        row.iteration = progress.get("iteration")
        row.val_acc = fmt.number(progress.get("best_val_acc", progress.get("val_acc")))
        row.test_acc = fmt.number(progress.get("best_test_acc", progress.get("test_acc")))
        if progress.get("state") == "failed" and progress.get("error"):
            row.reason = str(progress["error"])[:300]
    return row


def _k(spec: JobSpec, done: dict[str, Any] | None) -> float | None:
    """The k the job recorded when it is complete, else the one it draws (None if not known yet)."""
    recorded = fmt.number((done or {}).get("k"))
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
    if info is None and "_" in (row.slurm_id or "") and base_id(row.slurm_id) in known_arrays:
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


def counts(rows: Sequence[JobRow]) -> dict[str, int]:
    out = {s: 0 for s in STATES}
    for r in rows:
        out[r.state] = out.get(r.state, 0) + 1
    return {k: v for k, v in out.items() if v}


# -- details of failed jobs (only for `status --failed`) -------------------------------------------
def submitit_paths(submitit_folder: Path, slurm_id: str) -> Any:
    from submitit.core.utils import JobPaths

    return JobPaths(Path(submitit_folder).absolute() / "%j", job_id=slurm_id)


def failure_details(submitit_folder: Path, row: JobRow, tail_lines: int = 20) -> dict[str, str]:
    """The exception (from submitit's result pickles) and the tail of the job's logs.

    A job of several tasks (DDP ranks) has a result pickle per task: the error shown is the one
    written first, the rank that failed (the others then fail in a collective or are killed by
    srun), with that task's log.
    """
    out = {"exception": "", "log_tail": "", "log": ""}
    if not row.slurm_id:
        return out
    task = 0
    errors = _task_errors(submitit_paths(submitit_folder, row.slurm_id).folder, row.slurm_id)
    if errors:
        _, task, message = min(errors)
        out["exception"] = message if task == 0 else f"task {task}: {message}"
    paths = submitit_paths(submitit_folder, row.slurm_id)
    if task:
        from submitit.core.utils import JobPaths

        paths = JobPaths(paths.folder.parent / "%j", job_id=row.slurm_id, task_id=task)
    for log in (paths.stderr, paths.stdout):
        if log.exists():
            text = log.read_text(errors="replace").splitlines()
            if text:
                out["log"] = str(log)
                out["log_tail"] = "\n".join(text[-tail_lines:])
                break
    return out


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
