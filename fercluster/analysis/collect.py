"""Read a sweep's run directories: what is planned, what is complete, what is broken.

A job counts as complete when its ``job.json`` exists (written last by the job). Its
``metrics.parquet`` and ``predictions.parquet`` are read here; a job whose files are missing or
unreadable is listed in ``skipped`` with the reason and left out, never fatal.

Reading 10,000 jobs is bound by the per-file cost, not by the bytes: each file is read whole in one
call and parsed from memory (about 3x cheaper than pyarrow opening the path), job.json goes
through orjson when it is installed, only the needed columns are decoded, and opening job.json
doubles as the completeness test. Anything the fast path rejects is read again the original way,
so a broken job gets exactly the same reason. Nothing is cached between calls.
"""

from __future__ import annotations

import errno
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import orjson
import pyarrow as _pa

from fercluster.config import SweepConfig
from fercluster.train.record import REQUIRED

METRIC_COLUMNS = ("iteration", "val_acc", "test_acc", "wall_time")  # what the tables and curves need
ALL_METRIC_COLUMNS = ("iteration", "train_loss", "train_acc", "val_acc", "test_acc", "wall_time")  # the file's
PREDICTION_COLUMNS = ("label", "prediction")
CHUNK = 256  # run directories per thread task


@dataclass
class JobResult:
    """One completed job: its job.json and the columns the tables and curves need."""

    job_id: str
    run_dir: Path
    spec: dict[str, Any]  # JobSpec dict
    info: dict[str, Any]  # job.json
    metrics: dict[str, np.ndarray]  # iteration, val_acc, test_acc, wall_time (or the columns asked for), float64
    labels: np.ndarray  # test labels of the selected checkpoint
    predictions: np.ndarray  # its predictions

    @property
    def key(self) -> tuple[str, int, str, int]:
        return (self.spec["dataset"], int(self.spec["fold"]), self.spec["variant"], int(self.spec["seed"]))


@dataclass
class PlannedJob:
    dataset: str
    fold: int
    variant: str
    seed: int
    job_id: str
    run_dir: Path

    @property
    def key(self) -> tuple[str, int, str, int]:
        return (self.dataset, self.fold, self.variant, self.seed)


@dataclass
class Collection:
    results: list[JobResult]
    planned: list[PlannedJob]
    missing: list[dict[str, Any]]  # planned jobs without job.json
    skipped: list[dict[str, Any]]  # complete jobs left out: {job_id, run_dir, reason}
    extra: list[str] = field(default_factory=list)  # complete run dirs not in the plan (ignored)


def planned_jobs(cfg: SweepConfig) -> list[PlannedJob]:
    """The sweep's jobs, from ``fercluster.orchestration.submit.plan.expand``."""
    from fercluster.orchestration.submit.plan import expand

    return [PlannedJob(s.dataset, int(s.fold), s.variant, int(s.seed), s.job_id, Path(s.run_dir)) for s in expand(cfg)]


def read_job(run_dir: Path, metric_columns: Sequence[str] = METRIC_COLUMNS) -> JobResult:
    """Read one complete run directory; raises ValueError/OSError with the reason if it is broken."""
    base = os.fspath(run_dir) + os.sep
    return _read_job(run_dir, base, _load_json(run_dir, base), tuple(metric_columns))


def _read_job(run_dir: Path, base: str, info: Any, metric_columns: tuple[str, ...] = METRIC_COLUMNS) -> JobResult:
    import pyarrow.parquet as pq

    if not isinstance(info, dict) or not isinstance(info.get("spec"), dict):
        raise ValueError("job.json has no 'spec' mapping")
    lacking = [key for key in REQUIRED if key not in info]
    if lacking:  # as train.record says for sweep and status: a failed job
        raise ValueError(f"corrupt job.json (lacks {', '.join(lacking)}); --retry-failed reruns it")
    spec = info["spec"]
    job_id = str(info.get("job_id", ""))
    if job_id != run_dir.name or spec.get("job_id", job_id) != job_id:
        raise ValueError(f"job.json says job {job_id!r} (spec {spec.get('job_id')!r}) but lies in {run_dir.name}")
    metrics = _read_columns(pq, run_dir, base, "metrics.parquet", metric_columns)
    preds = _read_columns(pq, run_dir, base, "predictions.parquet", PREDICTION_COLUMNS)
    return JobResult(
        job_id=job_id,
        run_dir=run_dir,
        spec=spec,
        info=info,
        metrics={k: metrics[k].astype(np.float64) for k in metric_columns},
        labels=preds["label"].astype(np.int64),
        predictions=preds["prediction"].astype(np.int64),
    )


def _load_json(run_dir: Path, base: str, data: bytes | None = None) -> Any:
    """``json.loads((run_dir / "job.json").read_text())``, through orjson (several times faster).

    orjson is strict JSON; whatever it rejects (NaN, which ``json.dumps`` writes for a missing
    validation accuracy, infinities, broken files) and any read error go through the original
    call, so the values and the error messages are the same either way.
    """
    try:
        if data is None:
            with open(base + "job.json", "rb") as f:
                data = f.read()
        return orjson.loads(data)
    except (OSError, orjson.JSONDecodeError):
        pass
    return json.loads((run_dir / "job.json").read_text())


def _read_columns(pq: Any, run_dir: Path, base: str, name: str, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    # Fast path: one read() of the whole (small) file, parsed from memory: ParquetFile on a path
    # costs about three times as much per file (file system resolution, pre-buffered reads).
    try:
        with open(base + name, "rb") as f:
            data = f.read()
        table = pq.ParquetFile(_pa.py_buffer(data)).read(columns=list(columns), use_threads=False)
    except Exception:  # missing, a directory, corrupt: the path reader gives the same reasons as ever
        table = _read_table(pq, run_dir / name, columns)
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in columns}


def _read_table(pq: Any, path: Path, columns: tuple[str, ...]) -> Any:
    if not path.exists():
        raise ValueError(f"{path.name} is missing")
    try:
        return pq.ParquetFile(path).read(columns=list(columns), use_threads=False)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise ValueError(f"{path.name} is unreadable ({type(exc).__name__}: {str(exc)[:120]})") from None


_ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)  # what Path.exists() reads as "no"


def _try_read_complete(
    run_dir: Path, metric_columns: tuple[str, ...] = METRIC_COLUMNS
) -> JobResult | dict[str, Any] | None:
    """The job of a run directory, ``{job_id, run_dir, reason}`` if its files are broken, None if it
    holds no job.json (not complete).

    Opening job.json decides both, one system call fewer per job than ``exists()`` then read.
    """
    base = os.fspath(run_dir) + os.sep
    try:
        with open(base + "job.json", "rb") as f:
            data = f.read()
    except OSError as exc:
        if exc.errno in _ABSENT:
            return None
        data = None  # e.g. a directory named job.json: exists, and the reader reports why it is broken
    try:
        return _read_job(run_dir, base, _load_json(run_dir, base, data), metric_columns)
    except (ValueError, OSError, KeyError, json.JSONDecodeError) as exc:
        return {"job_id": run_dir.name, "run_dir": str(run_dir), "reason": str(exc)}


def _read_chunk(
    run_dirs: list[Path], metric_columns: tuple[str, ...] = METRIC_COLUMNS
) -> list[JobResult | dict[str, Any] | None]:
    return [_try_read_complete(d, metric_columns) for d in run_dirs]


def collect(
    cfg: SweepConfig,
    workers: int | None = None,
    plan: list[PlannedJob] | None = None,
    metric_columns: Sequence[str] = METRIC_COLUMNS,
) -> Collection:
    """Every complete job of the sweep, the planned jobs still missing, the broken ones skipped.

    ``plan``: the result of ``planned_jobs(cfg)`` when the caller already has it.
    ``metric_columns``: the columns of metrics.parquet to read (``ALL_METRIC_COLUMNS``: all of them).
    """
    planned = plan if plan is not None else planned_jobs(cfg)
    runs = cfg.results_dir / "runs"
    wanted = {p.job_id for p in planned}
    extra = (
        sorted(d.name for d in runs.glob("*") if d.name not in wanted and (d / "job.json").exists())
        if runs.is_dir()
        else []
    )
    outcomes = [o for o in read_runs([p.run_dir for p in planned], workers, metric_columns) if o is not None]
    results = [o for o in outcomes if isinstance(o, JobResult)]
    skipped = [o for o in outcomes if isinstance(o, dict)]
    done_keys = {r.key for r in results}
    broken = {s["job_id"] for s in skipped}
    missing = [
        {"dataset": p.dataset, "fold": p.fold, "variant": p.variant, "seed": p.seed, "job_id": p.job_id}
        for p in planned
        if p.key not in done_keys and p.job_id not in broken
    ]
    return Collection(results, planned, missing, skipped, extra)


def read_runs(
    run_dirs: list[Path], workers: int | None = None, metric_columns: Sequence[str] = METRIC_COLUMNS
) -> list[JobResult | dict[str, Any] | None]:
    """Read the run directories in order, by a few threads over chunks of them: per directory its
    ``JobResult``, ``{job_id, run_dir, reason}`` if it is complete but broken, None if not complete.

    Threads only pay where the files are slow to reach (a network file system): on a local disk
    the parse holds the GIL and threads only fight over it, so they are few, each given a chunk
    (not one future per job), and a small sweep is read in this thread.
    """
    read = partial(_read_chunk, metric_columns=tuple(metric_columns))
    workers = max(1, workers or min(4, os.cpu_count() or 1))
    if workers == 1 or len(run_dirs) <= CHUNK:
        return read(run_dirs)
    chunks = [run_dirs[i : i + CHUNK] for i in range(0, len(run_dirs), CHUNK)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [o for part in pool.map(read, chunks) for o in part]
