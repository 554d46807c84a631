"""A sweep's results as pandas DataFrames, for notebooks: ``results(config or results folder)``.

Read from the run directories as they are (``results/<sweep>/runs/<job id>/``), so it works while
the sweep runs: a complete job (``job.json`` written) is read in full with the aggregation's own
reader (``fercluster.analysis.collect``, one pass, as fast as ``aggregate``); a job still running
contributes its ``progress.json`` and the evaluations of its ``metrics.parquet`` so far. Nothing
asks SLURM (``fercluster.status`` does). Predictions are read on first use, activations (large)
per job on request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fercluster.analysis import tables
from fercluster.analysis.collect import ALL_METRIC_COLUMNS, JobResult, PlannedJob, collect, read_runs
from fercluster.api.frames import param_row, typed, with_params
from fercluster.api.tune_results import TuneResults, tune_results
from fercluster.config import SweepConfig
from fercluster.errors import AnalysisError
from fercluster.orchestration.monitor import read_json
from fercluster.orchestration.states import NOT_SUBMITTED

JOB_KEYS = ["job_id", "dataset", "fold", "variant", "seed", "k"]  # every frame's job columns
JOB_COLUMNS = [*JOB_KEYS, "state", "iteration", "val_acc", "test_acc", "selected_iteration"]
PREDICTION_COLUMNS = ["image_id", "label", "prediction", "probs"]
# A job's state as its run directory tells it (the job's own account: no SLURM query).
COMPLETED, RUNNING, FAILED, UNREADABLE = "COMPLETED", "RUNNING", "FAILED", "UNREADABLE"
FROM_PROGRESS = {"running": RUNNING, "completed": RUNNING, "failed": FAILED}  # completed: job.json comes next


@dataclass
class _Job:
    """One job of the results: its identity and run directory, what was read of it."""

    job_id: str
    run_dir: Path
    keys: dict[str, Any]  # dataset, fold, variant, seed, k (None where not known yet)
    train: dict[str, Any] | None = None  # its training settings (the spec's), for params.*
    result: JobResult | None = None  # complete and readable
    broken: str = ""  # complete but unreadable: why
    progress: dict[str, Any] = field(default_factory=dict)


class Results:
    """A sweep's results: ``jobs``, ``metrics``, ``predictions``, ``accuracy``, ``kl`` (DataFrames)
    and ``activations(job_id)``. Accuracies are fractions (0-1), as the jobs record them, except in
    ``accuracy``, the report's table, which is in percent. Build it with ``fercluster.results``; it is
    a snapshot (each frame is read once, on first use): call ``results`` again for newer ones."""

    def __init__(self, results_dir: Path, jobs: list[_Job], kinds: dict[str, tuple[str, int]], sweep: str):
        self.results_dir = Path(results_dir)
        self.sweep = sweep
        self._jobs = jobs
        self._by_id = {j.job_id: j for j in jobs}
        self._kinds = kinds

    def __repr__(self) -> str:
        done = sum(j.result is not None for j in self._jobs)
        return f"<Results of sweep {self.sweep!r}: {len(self._jobs)} jobs, {done} complete, in {self.results_dir}>"

    @property
    def skipped(self) -> list[dict[str, Any]]:
        """Complete jobs whose files cannot be read: ``{job_id, run_dir, reason}`` (left out)."""
        return [{"job_id": j.job_id, "run_dir": str(j.run_dir), "reason": j.broken} for j in self._jobs if j.broken]

    @cached_property
    def jobs(self) -> pd.DataFrame:
        """One row per job: job_id, dataset, fold, variant, seed, k, state (COMPLETED, RUNNING,
        FAILED, NOT_SUBMITTED or UNREADABLE, from the run directory), iteration (reached), val_acc and
        test_acc (selected checkpoint when complete, best so far while running), selected_iteration,
        then its training settings as ``params.*`` (``api.frames``; unknown for a job of a results
        folder that has not completed)."""
        rows = []
        for j in self._jobs:
            r, p = j.result, j.progress
            if r is not None:
                train = r.spec.get("train") or {}
                rows.append((*_keys(j), COMPLETED, train.get("iterations"), _num(r.info.get("val_acc")),
                             _num(r.info.get("test_acc")), r.info.get("selected_iteration")))  # fmt: skip
            else:
                state = (
                    UNREADABLE if j.broken else FROM_PROGRESS.get(p.get("state"), NOT_SUBMITTED if not p else RUNNING)
                )
                rows.append((*_keys(j), state, p.get("iteration"), _num(p.get("best_val_acc", p.get("val_acc"))),
                             _num(p.get("best_test_acc", p.get("test_acc"))), None))  # fmt: skip
        frame = typed(pd.DataFrame(rows, columns=JOB_COLUMNS))
        return with_params(frame, (param_row(j.train, j.keys["k"]) for j in self._jobs))

    @cached_property
    def metrics(self) -> pd.DataFrame:
        """Every evaluation of every job (long format): the job columns, then iteration, train_loss,
        train_acc, val_acc, test_acc, wall_time (the rows of each job's metrics.parquet)."""
        parts = []
        for j in self._jobs:
            if j.result is not None:
                parts.append((j, j.result.metrics))
            elif j.progress and not j.broken:
                columns = _read_parquet(j.run_dir / "metrics.parquet", ALL_METRIC_COLUMNS)
                if columns is not None:
                    parts.append((j, columns))
        frame = _long(parts, ALL_METRIC_COLUMNS)
        return frame.astype({"iteration": "int64", **{c: "float64" for c in ALL_METRIC_COLUMNS[1:]}})

    @cached_property
    def predictions(self) -> pd.DataFrame:
        """The test predictions of every complete job's selected checkpoint (long format): the job
        columns, then image_id, label, prediction, probs (class probabilities)."""
        parts = []
        for j in self._jobs:
            if j.result is not None:
                columns = _read_parquet(j.run_dir / "predictions.parquet", PREDICTION_COLUMNS)
                if columns is not None:
                    parts.append((j, columns))
        return _long(parts, PREDICTION_COLUMNS).astype({"label": "int64", "prediction": "int64"})

    @cached_property
    def accuracy(self) -> pd.DataFrame:
        """The report's accuracy table (``fercluster.analysis.tables``): per data set and variant,
        test accuracy in percent, mean and sample std over folds, folds done / planned, the
        paper's number and the difference, and the prior art the paper quotes (``source``)."""
        done = [j.result for j in self._jobs if j.result is not None]
        planned = [PlannedJob(k["dataset"], int(k["fold"]), k["variant"], int(k["seed"]), j.job_id, j.run_dir)
                   for j in self._jobs if (k := j.keys)["dataset"] is not None]  # fmt: skip
        return tables.accuracy_table(tables.fold_table(done), planned, self._kinds)

    @cached_property
    def kl(self) -> dict[str, pd.DataFrame]:
        """The KL rankings of AUs per conv3 filter, by data set (filter, au, kl, rank), as the last
        aggregation wrote them (``report/kl_<dataset>.parquet``); empty before one has run."""
        found = sorted((self.results_dir / "report").glob("kl_*.parquet"))
        return {path.stem.removeprefix("kl_"): pd.read_parquet(path) for path in found}

    def activations(self, job_id: str) -> pd.DataFrame:
        """A complete job's conv3 activations (large: every training image x every filter): image_id,
        filter, value (spatial max of the post-ReLU map), y, x."""
        job = self._by_id.get(job_id)
        if job is None:
            raise AnalysisError(f"no job {job_id!r} in sweep {self.sweep}; the job ids are in .jobs['job_id']")
        if job.result is None:
            raise AnalysisError(
                f"job {job_id} is not complete (see .jobs): a job writes its activations when it completes"
            )
        return pd.read_parquet(job.run_dir / "activations.parquet")


def results(source: SweepConfig | str | Path) -> Results | TuneResults:
    """The results of a sweep, from its config (every planned job, complete or not) or from its
    results folder (``results/<sweep>``: every run directory in ``runs/``; a job not complete yet
    has no data set, fold, variant or seed there, as its spec is written when it ends, and the
    accuracy table's planned folds are the folds done). A config with a ``tune:`` section gives
    the search's trials (``TuneResults``)."""
    if isinstance(source, SweepConfig):
        return tune_results(source) if source.tune is not None else _from_config(source)
    folder = Path(source)
    if not (folder / "runs").is_dir():
        hint = " (a config file: read it with fercluster.load_config first)" if folder.is_file() else ""
        raise AnalysisError(
            f"{folder} is not a sweep's results folder (no runs/ inside){hint}; "
            "give results/<sweep> or a config, e.g. fercluster.results(fercluster.load_config('configs/smoke.yaml'))"
        )
    return _from_folder(folder)


def _from_config(cfg: SweepConfig) -> Results:
    from fercluster.orchestration.plan import expand
    from fercluster.train.seeds import resolve_k

    specs = expand(cfg)
    plan = [PlannedJob(s.dataset, int(s.fold), s.variant, int(s.seed), s.job_id, Path(s.run_dir)) for s in specs]
    col = collect(cfg, plan=plan, metric_columns=ALL_METRIC_COLUMNS)
    done = {r.job_id: r for r in col.results}
    broken = {s["job_id"]: s["reason"] for s in col.skipped}
    jobs = []
    for spec, p in zip(specs, plan, strict=True):
        keys = {"dataset": p.dataset, "fold": p.fold, "variant": p.variant, "seed": p.seed, "k": None}
        job = _Job(p.job_id, p.run_dir, keys, spec.train.model_dump(mode="json"), done.get(p.job_id),
                   broken.get(p.job_id, ""))  # fmt: skip
        if job.result is not None:
            keys["k"] = _num(job.result.info.get("k"))
            job.train = job.result.spec.get("train") or job.train
        else:
            keys["k"] = resolve_k(spec)
            job.progress = read_json(p.run_dir / "progress.json") or {}
        jobs.append(job)
    kinds = {name: (d.kind, d.classes) for name, d in cfg.datasets.items()}
    return Results(cfg.results_dir, jobs, kinds, cfg.name)


def _from_folder(folder: Path) -> Results:
    run_dirs = sorted(d for d in (folder / "runs").iterdir() if d.is_dir())
    outcomes = read_runs(run_dirs, metric_columns=ALL_METRIC_COLUMNS)
    jobs, kinds = [], {}
    for run_dir, outcome in zip(run_dirs, outcomes, strict=True):
        keys: dict[str, Any] = {"dataset": None, "fold": None, "variant": None, "seed": None, "k": None}
        job = _Job(run_dir.name, run_dir, keys)
        if isinstance(outcome, JobResult):
            job.result, spec = outcome, outcome.spec
            job.train = spec.get("train")
            keys.update({key: spec.get(key) for key in ("dataset", "fold", "variant", "seed")})
            keys["k"] = _num(outcome.info.get("k"))
            kinds[spec["dataset"]] = (spec.get("kind", ""), int(spec.get("classes", 0)))
        else:
            job.broken = outcome["reason"] if isinstance(outcome, dict) else ""
            job.progress = read_json(run_dir / "progress.json") or {}
            if outcome is None and not job.progress:
                continue  # an empty or foreign folder: not a job's
        jobs.append(job)
    jobs.sort(key=_place)  # the plan's order as far as the folder tells it; jobs not complete last
    return Results(folder, jobs, kinds, folder.name)


def _place(job: _Job) -> tuple[Any, ...]:
    k = job.keys
    if k["dataset"] is None:
        return (1, "", 0, 0, 0, job.job_id)
    return (0, k["dataset"], k["fold"], tables.VARIANT_ORDER.get(k["variant"], 9), k["seed"], job.job_id)


def _keys(job: _Job) -> tuple[Any, ...]:
    k = job.keys
    return (job.job_id, k["dataset"], k["fold"], k["variant"], k["seed"], k["k"])


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _read_parquet(path: Path, columns: list[str] | tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The columns of a run directory's Parquet file, None if it is missing or unreadable (a job
    writes its files atomically: a reader never sees half a file, but a file may not be there yet)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(os.fspath(path), columns=list(columns), use_threads=False)
    except Exception:  # missing, or written by an older version without a column: nothing to show
        return None
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in columns}


def _long(parts: list[tuple[_Job, dict[str, np.ndarray]]], columns: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """One frame of the jobs' rows: job columns repeated per row (a typed take), then ``columns``."""
    lengths = np.array([len(cols[columns[0]]) for _, cols in parts], dtype=np.int64)
    keys = typed(pd.DataFrame([_keys(j) for j, _ in parts], columns=JOB_KEYS))
    frame = keys.take(np.repeat(np.arange(len(parts)), lengths)).reset_index(drop=True)
    for c in columns:
        frame[c] = np.concatenate([cols[c] for _, cols in parts]) if parts else np.array([], dtype=object)
    return frame
