"""One row per job: its state from the run directory plus ONE batched SLURM query per refresh.

Rules, in order: a job whose ``job.json`` exists is COMPLETED, whatever SLURM says; a job never
submitted is NOT_SUBMITTED; otherwise SLURM's state (a requeued job is PENDING or RUNNING). A job
SLURM calls COMPLETED without ``job.json`` is FAILED; a job SLURM no longer knows is FAILED
('lost'), never RUNNING forever. Local runs record their pid: alive is RUNNING, dead is not.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

from fercluster.orchestration import slurm_parse
from fercluster.orchestration.slurm_parse import SlurmInfo
from fercluster.orchestration.state import SweepState
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
    val_acc: float | None = None  # best validation accuracy so far (the final one when done)
    test_acc: float | None = None
    elapsed: float | None = None  # seconds
    node: str = ""
    reason: str = ""
    retries: int = 0
    submissions: int = 0
    run_dir: str = ""

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


def _num(value: Any) -> float | None:
    if isinstance(value, (int, float)) and value == value:  # drops NaN
        return float(value)
    return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def job_rows(specs: Sequence[JobSpec], state: SweepState, backend: Any | None,
             extra_ids: Sequence[str] = (), infos_out: dict[str, SlurmInfo] | None = None,
             details: bool = True) -> list[JobRow]:
    """Rows for ``specs`` (plan order). ``backend=None``: no SLURM query (local only).

    ``extra_ids`` (e.g. the aggregation job) ride along in the same query; their answers land
    in ``infos_out``. ``details=False`` skips reading accuracies from completed jobs (the diff
    only needs to know they are done).
    """
    rows = [_base_row(spec, state, details) for spec in specs]
    ask = [r.slurm_id for r in rows if r.state == "" and r.slurm_id] + list(extra_ids)
    infos: dict[str, SlurmInfo] = backend.query(ask) if (ask and backend is not None) else {}
    if infos_out is not None:
        infos_out.update({i: infos[i] for i in extra_ids if i in infos})
    known_arrays = {sid.split("_")[0] for sid in infos if "_" in sid}
    for row in rows:
        if row.state == "":
            _apply_slurm(row, infos.get(row.slurm_id or ""), backend is not None, known_arrays)
    return rows


def _base_row(spec: JobSpec, state: SweepState, details: bool = True) -> JobRow:
    rec = state.jobs.get(spec.job_id, {})
    row = JobRow(spec.job_id, spec.dataset, spec.fold, spec.variant, spec.seed, state="",
                 slurm_id=state.slurm_id(spec.job_id), iterations=int(spec.train.get("iterations", 0)) or None,
                 retries=rec.get("retries", 0), submissions=rec.get("submissions", 0), run_dir=spec.run_dir)
    done_path = os.path.join(spec.run_dir, "job.json")
    done = read_json(done_path) if details else ({} if os.path.exists(done_path) else None)
    if done is not None:
        row.state = "COMPLETED"
        row.iteration = row.iterations
        row.val_acc, row.test_acc = _num(done.get("val_acc")), _num(done.get("test_acc"))
        row.node = str(done.get("host") or "")
        row.elapsed = _num((done.get("timings") or {}).get("total_s")) if isinstance(done.get("timings"), dict) else None
        return row
    progress = read_json(os.path.join(spec.run_dir, "progress.json"))
    if progress is not None:
        row.iteration = progress.get("iteration")
        row.val_acc = _num(progress.get("best_val_acc", progress.get("val_acc")))
        row.test_acc = _num(progress.get("best_test_acc", progress.get("test_acc")))
        if progress.get("state") == "failed" and progress.get("error"):
            row.reason = str(progress["error"])[:300]
    local = rec.get("local")
    if row.slurm_id is None and local:
        alive = local.get("host") == socket.gethostname() and pid_alive(int(local.get("pid", 0)))
        row.state = "RUNNING" if alive and not local.get("ended") else "NOT_SUBMITTED"
        row.node = local.get("host", "") if alive else ""
        if row.state == "NOT_SUBMITTED" and row.iteration:
            row.reason = f"local run stopped at iteration {row.iteration}; resumes from its checkpoint"
    elif row.slurm_id is None:
        row.state = "NOT_SUBMITTED"
    return row


def _apply_slurm(row: JobRow, info: SlurmInfo | None, asked: bool, known_arrays: set[str] = frozenset()) -> None:
    if info is None and not asked:
        row.state, row.reason = "PENDING", row.reason or "SLURM not queried"
        return
    if info is None and "_" in (row.slurm_id or "") and row.slurm_id.split("_")[0] in known_arrays:
        # SLURM keeps no record of an array task cancelled before it started: its siblings are
        # known, it is not, and it never wrote progress -> it was cancelled while pending.
        row.state = "CANCELLED" if row.iteration is None else "FAILED"
        row.reason = row.reason or "cancelled while pending (SLURM keeps no record of such array tasks)"
        if row.iteration is not None:
            row.reason = f"lost: SLURM no longer knows this task; it stopped at iteration {row.iteration}"
        return
    if info is None:
        row.state = "FAILED"
        row.reason = row.reason or "lost: SLURM no longer knows this job and it left no job.json"
        return
    row.state = info.state
    row.node = info.node
    row.elapsed = slurm_parse.elapsed_seconds(info.elapsed)
    if row.state == "COMPLETED":  # no job.json (checked before): the function did not finish
        row.state = "FAILED"
        row.reason = row.reason or "SLURM says COMPLETED but the job wrote no job.json (see its log)"
    elif row.state in ("FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED"):
        why = slurm_parse.failure_reason(info)
        row.reason = f"{why}; {row.reason}" if row.reason else why
    elif row.state == "PENDING" and info.reason not in ("", "None"):
        row.reason = info.reason


def counts(rows: Sequence[JobRow]) -> dict[str, int]:
    out = {s: 0 for s in slurm_parse.STATES}
    for r in rows:
        out[r.state] = out.get(r.state, 0) + 1
    return {k: v for k, v in out.items() if v}


# -- details of failed jobs (only for `status --failed`) -------------------------------------------
def submitit_paths(submitit_folder: Path, slurm_id: str) -> Any:
    from submitit.core.utils import JobPaths

    return JobPaths(Path(submitit_folder).absolute() / "%j", job_id=slurm_id)


def failure_details(submitit_folder: Path, row: JobRow, tail_lines: int = 20) -> dict[str, str]:
    """The exception (from submitit's result pickle) and the tail of the job's logs."""
    out = {"exception": "", "log_tail": "", "log": ""}
    if not row.slurm_id or row.slurm_id == "local":
        return out
    paths = submitit_paths(submitit_folder, row.slurm_id)
    if paths.result_pickle.exists():
        try:
            import cloudpickle

            with paths.result_pickle.open("rb") as f:
                outcome, payload = cloudpickle.load(f)
            if outcome == "error":
                lines = [ln for ln in str(payload).strip().splitlines() if ln.strip()]
                out["exception"] = lines[-1] if lines else str(payload)
        except Exception as exc:  # a corrupt pickle is itself worth reporting
            out["exception"] = f"(result pickle unreadable: {exc})"
    for log in (paths.stderr, paths.stdout):
        if log.exists():
            text = log.read_text(errors="replace").splitlines()
            if text:
                out["log"] = str(log)
                out["log_tail"] = "\n".join(text[-tail_lines:])
                break
    return out
