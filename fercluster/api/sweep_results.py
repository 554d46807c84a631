"""A sweep's results as pandas DataFrames, for notebooks: ``results(config or results folder)``.

Read from the run directories as they are (``results/<sweep>/runs/<job id>/``), so it works while
the sweep runs. A complete job (``job.json`` written) is known from the run index
(``orchestration.store.index``, shared with ``status``): its job.json and whether its files read
(the aggregation's own reader, ``fercluster.analysis.collect``) are read once, when they appear or
change. A job still running contributes its ``progress.json`` and the evaluations of its
``metrics.parquet`` so far. Nothing asks SLURM (``fercluster.status`` does). Metrics and
predictions are read on first use, activations (large) per job on request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fercluster.analysis import tables
from fercluster.analysis.collect import ALL_METRIC_COLUMNS, JobResult, PlannedJob, read_runs
from fercluster.api.frames import param_row, typed, with_params
from fercluster.api.tune_results import TuneResults, tune_results
from fercluster.config import SweepConfig
from fercluster.errors import AnalysisError
from fercluster.orchestration.store import many_records
from fercluster.orchestration.store.index import RunEntry, RunIndex
from fercluster.orchestration.store.vocabulary import COMPLETED, UNREADABLE, from_progress
from fercluster.train.record import ProgressRecord, read_job_record, read_progress

JOB_KEYS = ["job_id", "dataset", "fold", "variant", "seed", "k"]  # every frame's job columns
JOB_COLUMNS = [*JOB_KEYS, "state", "iteration", "val_acc", "test_acc", "selected_iteration"]
PREDICTION_COLUMNS = ["image_id", "label", "prediction", "probs"]
ATTEMPT_COLUMNS = ["attempt", "slurm_id", "node", "host", "start", "end", "ended", "ended_by", "from_iteration",
                   "iteration", "detail"]  # fmt: skip


@dataclass
class _Job:
    """One job of the results: its identity and run directory, what was read of it."""

    job_id: str
    run_path: str | Path  # its run directory (a Path made on use: 10,000 of them cost a tenth of a second)
    keys: dict[str, Any]  # dataset, fold, variant, seed, k (None where not known yet)
    entry: RunEntry | None = None  # complete (job.json exists): the run index's entry
    progress: ProgressRecord | None = None  # not complete: its progress.json, if any
    train: dict[str, Any] | None = None  # its training settings (the spec's JSON), for params.*

    @property
    def run_dir(self) -> Path:
        return Path(self.run_path)

    @property
    def complete(self) -> bool:
        """Complete and readable (its files are in the tables)."""
        return self.entry is not None and not self.broken

    @property
    def broken(self) -> str:
        """Complete but unreadable: why ("" otherwise)."""
        return (self.entry.broken or self.entry.unreadable or "") if self.entry is not None else ""


class Results:
    """A sweep's results: ``jobs``, ``metrics``, ``predictions``, ``accuracy``, ``kl`` (DataFrames)
    and ``activations(job_id)``. Accuracies are fractions (0-1), as the jobs record them, except in
    ``accuracy``, the report's table, which is in percent. Build it with ``fercluster.results``; it is
    a snapshot (each frame is read once, on first use): call ``results`` again for newer ones."""

    def __init__(
        self,
        results_dir: Path,
        jobs: list[_Job],
        kinds: dict[str, tuple[str, int]],
        sweep: str,
        jobs_dir: Path | None = None,
    ):
        self.results_dir = Path(results_dir)
        self.jobs_dir = jobs_dir  # the coordinator's folder (state.json, known.json): None for a results folder
        self.sweep = sweep
        self._jobs = jobs
        self._by_id = {j.job_id: j for j in jobs}
        self._kinds = kinds

    def __repr__(self) -> str:
        done = sum(j.complete for j in self._jobs)
        return f"<Results of sweep {self.sweep!r}: {len(self._jobs)} jobs, {done} complete, in {self.results_dir}>"

    @property
    def skipped(self) -> list[dict[str, Any]]:
        """Complete jobs whose files cannot be read: ``{job_id, run_dir, reason}`` (left out)."""
        return [{"job_id": j.job_id, "run_dir": str(j.run_dir), "reason": j.broken} for j in self._jobs if j.broken]

    @cached_property
    def jobs(self) -> pd.DataFrame:
        """One row per job: job_id, dataset, fold, variant, seed, k, state (COMPLETED, RUNNING,
        FAILED, NOT_SUBMITTED or UNREADABLE, from the run directory: ``store.vocabulary``),
        iteration (reached), val_acc and test_acc (selected checkpoint when complete, best so far
        while running), selected_iteration, then its training settings as ``params.*``
        (``api.frames``; unknown for a job of a results folder)."""
        rows = []
        for j in self._jobs:
            e, p = j.entry, j.progress
            if e is not None and not j.broken:
                rows.append((*_keys(j), COMPLETED, e.iterations, e.val_acc, e.test_acc, e.selected_iteration))
            elif p is not None and not j.broken:
                rows.append((*_keys(j), from_progress(p.state), p.iteration, p.shown_val, p.shown_test, None))
            else:
                rows.append((*_keys(j), UNREADABLE if j.broken else from_progress(None), None, None, None, None))
        frame = typed(pd.DataFrame(rows, columns=JOB_COLUMNS))
        return with_params(frame, (param_row(j.train, j.keys["k"]) for j in self._jobs))

    @cached_property
    def attempts(self) -> pd.DataFrame:
        """Every attempt of every job (long format): the job columns, then attempt (1, 2, ...),
        slurm_id, node, host, start and end (epoch seconds), ended (completed, node failure,
        requeue, pre-emption, time-out, stalled, failed, cancelled; "" while it runs or when
        nothing says), ended_by (job, coordinator, slurm, inferred), from_iteration, iteration
        (reached) and detail. From each job's history.jsonl (a complete job's: the run index) with
        the sweep's submissions and SLURM's last known word (``orchestration.watch.attempts``)."""
        from fercluster.orchestration.watch.attempts import sweep_attempts

        states = self.jobs.set_index("job_id")["state"]
        jobs = ((j.job_id, str(j.run_path), states[j.job_id]) for j in self._jobs)
        found = sweep_attempts(self.jobs_dir, self.sweep, self.results_dir, jobs)
        keys = {j.job_id: _keys(j) for j in self._jobs}
        rows = [(*keys[job_id], *a.to_row()[:-1]) for job_id, atts in found.items() for a in atts]
        frame = pd.DataFrame(rows, columns=[*JOB_KEYS, *ATTEMPT_COLUMNS])
        return typed(frame).astype({"attempt": "int64"})

    @cached_property
    def metrics(self) -> pd.DataFrame:
        """Every evaluation of every job (long format): the job columns, then iteration, train_loss,
        train_acc, val_acc, test_acc, wall_time (the rows of each job's metrics.parquet)."""
        parts = []
        for j in self._jobs:
            if j.complete or (j.progress is not None and not j.broken):
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
            if j.complete:
                columns = _read_parquet(j.run_dir / "predictions.parquet", PREDICTION_COLUMNS)
                if columns is not None:
                    parts.append((j, columns))
        return _long(parts, PREDICTION_COLUMNS).astype({"label": "int64", "prediction": "int64"})

    @cached_property
    def accuracy(self) -> pd.DataFrame:
        """The report's accuracy table (``fercluster.analysis.tables``): per data set and variant,
        test accuracy in percent, mean and sample std over folds, folds done / planned, the
        paper's number and the difference, and the prior art the paper quotes (``source``)."""
        complete = [j.run_dir for j in self._jobs if j.complete]
        done = [r for r in read_runs(complete) if isinstance(r, JobResult)]
        planned = [
            PlannedJob(k["dataset"], int(k["fold"]), k["variant"], int(k["seed"]), j.job_id, j.run_dir)
            for j in self._jobs
            if (k := j.keys)["dataset"] is not None
        ]
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
        if not job.complete:
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
        if source.tune is not None:
            return tune_results(source)
        with many_records():
            return _from_config(source)
    folder = Path(source)
    if not (folder / "runs").is_dir():
        hint = " (a config file: read it with fercluster.load_config first)" if folder.is_file() else ""
        raise AnalysisError(
            f"{folder} is not a sweep's results folder (no runs/ inside){hint}; "
            "give results/<sweep> or a config, e.g. fercluster.results(fercluster.load_config('configs/smoke.yaml'))"
        )
    with many_records():
        return _from_folder(folder)


def _from_config(cfg: SweepConfig) -> Results:
    from fercluster.orchestration.submit.plan import expand
    from fercluster.train.seeds import resolve_k

    specs = expand(cfg)
    index = RunIndex(cfg.results_dir)
    entries = index.refresh((s.job_id, s.run_dir) for s in specs)
    jobs = []
    trains: dict[int, dict[str, Any]] = {}  # a data set's jobs share one Train: dumped once
    for spec in specs:
        keys = {"dataset": spec.dataset, "fold": spec.fold, "variant": spec.variant, "seed": spec.seed, "k": None}
        train = trains.get(id(spec.train)) or trains.setdefault(id(spec.train), spec.train.model_dump(mode="json"))
        job = _Job(spec.job_id, spec.run_dir, keys, entries[spec.job_id], train=train)
        if job.entry is None:
            job.progress = read_progress(spec.run_dir)
        keys["k"] = job.entry.k if job.entry is not None and job.entry.k is not None else resolve_k(spec)
        jobs.append(job)
    _check_files(index, jobs)
    kinds = {name: (d.kind, d.classes) for name, d in cfg.datasets.items()}
    return Results(cfg.results_dir, jobs, kinds, cfg.name, cfg.jobs_dir)


def _from_folder(folder: Path) -> Results:
    with os.scandir(folder / "runs") as found:
        run_dirs = sorted(Path(d.path) for d in found if d.is_dir())
    index = RunIndex(folder)
    entries = index.refresh((d.name, os.fspath(d)) for d in run_dirs)
    jobs, kinds = [], {}
    for run_dir in run_dirs:
        entry = entries[run_dir.name]
        keys: dict[str, Any] = {"dataset": None, "fold": None, "variant": None, "seed": None, "k": None}
        job = _Job(run_dir.name, run_dir, keys, entry)
        if entry is not None and not entry.broken:
            keys.update(dataset=entry.dataset, fold=entry.fold, variant=entry.variant, seed=entry.seed, k=entry.k)
            kinds[entry.dataset] = (entry.kind, entry.classes)
            job.train = _train_of(run_dir)
        elif entry is None:
            job.progress = read_progress(run_dir)
            if job.progress is None:
                continue  # an empty or foreign folder: not a job's
        jobs.append(job)
    _check_files(index, jobs)
    jobs.sort(key=_place)  # the plan's order as far as the folder tells it; jobs not complete last
    return Results(folder, jobs, kinds, folder.name)


def _train_of(run_dir: Path) -> dict[str, Any] | None:
    """A complete job's training settings from its ``job.json`` (params.* of a results folder, which
    has no plan to take them from; the run index keeps only what status shows)."""
    record, _ = read_job_record(run_dir)
    train = record.spec.get("train") if record is not None else None
    return dict(train) if isinstance(train, dict) else None


def _check_files(index: RunIndex, jobs: list[_Job]) -> None:
    """Read, once per job.json, whether a complete job's files read (the aggregation's own reader);
    the outcome is kept in the run index (``unreadable``), so the next call does not read them."""
    todo = [j for j in jobs if j.entry is not None and not j.entry.broken and j.entry.unreadable is None]
    for job, outcome in zip(todo, read_runs([j.run_dir for j in todo], metric_columns=ALL_METRIC_COLUMNS), strict=True):
        index.checked(job.job_id, outcome["reason"] if isinstance(outcome, dict) else "")
        job.entry = index.entries.get(job.job_id, job.entry)
    index.save()


def _place(job: _Job) -> tuple[Any, ...]:
    k = job.keys
    if k["dataset"] is None:
        return (1, "", 0, 0, 0, job.job_id)
    return (0, k["dataset"], k["fold"], tables.VARIANT_ORDER.get(k["variant"], 9), k["seed"], job.job_id)


def _keys(job: _Job) -> tuple[Any, ...]:
    k = job.keys
    return (job.job_id, k["dataset"], k["fold"], k["variant"], k["seed"], k["k"])


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
