"""What a Ray Tune search leaves behind: live status, ``trials.parquet`` and ``best.json``.

- ``jobs/<sweep>/tune/status/<data set>.json``: written by ``StatusCallback`` on the driver while
  the Tuner runs (trials by state, best so far); ``fercluster status`` reads it without Ray.
- ``results/<sweep>/tune/trials.parquet``: one row per trial and evaluation.
- ``results/<sweep>/tune/best.json``: the best k overall and per data set (the grid's
  ``k: from_tune <sweep>`` reads its ``"k"``).

A trial's score is its best validation accuracy over its evaluations (the checkpoint the job
itself would select); ties go to the trial that trained longer, then to the earlier trial.
A trial "stopped by ASHA" ended without error before its last iteration.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Ray's Callback is the base class; imported here because only the driver imports this module.
from ray.tune import Callback

from fercluster import fmt
from fercluster.atomic import write_json, write_parquet
from fercluster.orchestration.store.records import Reader
from fercluster.orchestration.store.vocabulary import COMPLETED, FAILED, STOPPED, from_ray
from fercluster.train.record import read_progress

TRIAL_COLUMNS = [
    "dataset",
    "fold",
    "trial_id",
    "iteration",
    "val_acc",
    "test_acc",
    "train_loss",
    "train_acc",
    "wall_time",
    "state",
    "stopped_by_asha",
    "job_id",
    "nodes",
]


class StatusCallback(Callback):
    """Writes the search's status file and prints one line per finished trial.

    Its state is derived from the trials Ray passes to every hook, so it stays right after
    ``Tuner.restore`` (the callback itself comes back from the pickled Tuner, empty).
    ``printer`` (anything with ``print``, e.g. a rich Console; None: silent) is left out of that
    pickle: after a restore the driver attaches its own again.
    """

    def __init__(
        self, path: Path, dataset: str, iterations: int, params: list[str], every_s: float = 1.0, printer: Any = None
    ):
        self.path, self.dataset, self.iterations = Path(path), dataset, iterations
        self.params, self.every_s = params, every_s
        self.printer = printer
        self._last = 0.0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "printer": None}

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self._last >= self.every_s:
            self.write(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(trial, failed=False)
        self.write(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(trial, failed=True)
        self.write(trials)

    # No on_experiment_end: after a Ctrl-C Ray marks every trial TERMINATED in memory; the driver
    # writes the final status from the state saved on disk instead (``write_status``).

    def write(self, trials: list) -> None:
        self._last = time.monotonic()
        write_status(self.path, self.dataset, trials, self.iterations, self.params, finished=False)

    def _say(self, trial: Any, failed: bool) -> None:
        if self.printer is None:
            return
        row = trial_summary(trial, self.iterations, self.params)
        params = " ".join(f"{p}={row[p]:.4g}" for p in self.params if isinstance(row[p], float))
        if failed:
            what = "[red]failed[/red]"
        elif row["iteration"] < self.iterations:  # (the trial's status is not TERMINATED yet here)
            what = f"stopped by ASHA at {row['iteration']}/{self.iterations}"
        else:
            what = f"completed {row['iteration']}/{self.iterations}"
        self.printer.print(
            f"  {self.dataset} trial {row['trial_id']} {params}: {what}, best val {fmt.pct(row['best_val_acc'])}"
        )


def write_status(path: Path, dataset: str, trials: list, iterations: int, params: list[str], finished: bool) -> None:
    rows = [trial_summary(t, iterations, params) for t in trials]
    write_json(path, status_document(dataset, rows, iterations, finished))


def trial_summary(trial: Any, iterations: int, params: list[str]) -> dict[str, Any]:
    """One trial as plain data: state, sampled parameters, last and best validation accuracy."""
    last = _REPORTED.keyed(trial.last_result or {})
    it = int(last.iteration or 0)
    stopped_early = str(trial.status) == "TERMINATED" and it < iterations
    config = {"fold": None, **dict.fromkeys(params), **trial.config}  # Ray's sampled parameters
    row = {
        "trial_id": trial.trial_id,
        "state": from_ray(str(trial.status), stopped_early),
        "fold": config["fold"],
        "iteration": it,
        "val_acc": fmt.number(last.val_acc),
        "test_acc": fmt.number(last.test_acc),
        "best_val_acc": fmt.number(_best_val(trial)),
        "stopped_by_asha": stopped_early,
        "node": last.node,  # where it last reported from
    }
    for p in params:
        row[p] = fmt.number(config[p])
    return row


@dataclass(frozen=True)  # no slots: records.Reader builds it
class Reported:
    """What a trial reported last (``trial.py``'s ``tune.report``), as Ray keeps it in ``last_result``
    (with Ray's own keys besides, left out); none yet: the defaults."""

    iteration: int | None = 0
    val_acc: float | None = None
    test_acc: float | None = None
    node: str | None = None


_REPORTED = Reader(Reported)


def _best_val(trial: Any) -> Any:
    """The best ``val_acc`` a trial reported (Ray's ``metric_analysis``: per metric, its max, min, ...)."""
    analysis = trial.metric_analysis
    return analysis["val_acc"]["max"] if "val_acc" in analysis and "max" in analysis["val_acc"] else None


def status_document(dataset: str, rows: list[dict[str, Any]], iterations: int, finished: bool) -> dict[str, Any]:
    by_state = dict(Counter(row["state"] for row in rows))
    scored = [r for r in rows if r["best_val_acc"] is not None]
    best = max(scored, key=lambda r: (r["best_val_acc"], r["iteration"]), default=None)
    return {
        "dataset": dataset,
        "iterations": iterations,
        "updated": time.time(),
        "finished": finished,
        "by_state": by_state,
        "best": best,
        "trials": rows,
    }


def trial_rows(
    result_grid: Any, dataset: str, iterations: int, params: list[str], trials_dir: Path
) -> list[dict[str, Any]]:
    """Every evaluation of every trial of one Tuner's ``ResultGrid``.

    Ray gives the trials, their sampled parameters and errors; the evaluations come from each
    trial's own ``metrics.parquet`` (the job's record, complete across resumes: Ray's copy loses
    the evaluations made after its last saved checkpoint when a search is interrupted).
    """
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for result in result_grid:
        trial_id = Path(result.path).name  # trial directories are named by trial id
        path = Path(trials_dir) / trial_id / "metrics.parquet"
        if not path.exists():
            continue  # failed before its first evaluation: only Ray's error file tells
        frame = pd.read_parquet(path).drop_duplicates(subset="iteration", keep="last").sort_values("iteration")
        if frame.empty:
            continue
        last_it = int(frame["iteration"].iloc[-1])
        errored = result.error is not None
        state = FAILED if errored else (COMPLETED if last_it >= iterations else STOPPED)
        job_id = _job_id(Path(trials_dir) / trial_id)
        nodes = ",".join(trial_nodes(Path(trials_dir) / trial_id))
        for rec in frame.to_dict("records"):
            row = {c: rec[c] for c in TRIAL_COLUMNS if c in rec}
            row.update(
                dataset=dataset,
                trial_id=trial_id,
                fold=int(result.config["fold"]),
                state=state,
                stopped_by_asha=state == STOPPED,
                job_id=job_id,
                nodes=nodes,
            )
            for p in params:
                row[p] = float(result.config[p])
            rows.append(row)
    return rows


def trial_nodes(run_dir: Path) -> list[str]:
    """The SLURM nodes (else hosts) a trial ran on, in the order of its attempts (``attempts.jsonl``)."""
    from fercluster.orchestration.tune.trial import ATTEMPTS

    nodes: dict[str, None] = {}
    try:
        lines = (run_dir / ATTEMPTS).read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            attempt = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a killed worker
        attempt = {"node": None, "host": None, **attempt}  # trial.py writes both; a host without SLURM: no node
        node = attempt["node"] or attempt["host"]
        if node:
            nodes[str(node)] = None
    return list(nodes)


def _job_id(run_dir: Path) -> str | None:
    progress = read_progress(run_dir)
    return progress.job_id or None if progress is not None else None


def write_trials(path: Path, rows: list[dict[str, Any]], params: list[str]) -> Path:
    import pandas as pd

    columns = TRIAL_COLUMNS[:3] + params + TRIAL_COLUMNS[3:]
    frame = pd.DataFrame(rows, columns=columns)
    frame["iteration"] = frame["iteration"].astype("int64")
    frame["fold"] = frame["fold"].astype("int64")
    frame["stopped_by_asha"] = frame["stopped_by_asha"].astype(bool)
    for col in ["val_acc", "test_acc", "train_loss", "train_acc", "wall_time", *params]:
        frame[col] = frame[col].astype("float64")
    write_parquet(path, frame)
    return path


def best_of(rows: list[dict[str, Any]], params: list[str]) -> dict[str, Any] | None:
    """The best trial of some rows (one data set): its parameters and scores."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    frame = frame[frame["state"].map(from_ray) != FAILED]  # (files of earlier versions say ERROR)
    frame = frame[frame["val_acc"].notna()]
    if frame.empty:
        return None
    order = {t: i for i, t in enumerate(dict.fromkeys(frame["trial_id"]))}
    scores = []
    for trial_id, group in frame.groupby("trial_id", sort=False):
        peak = group.loc[group["val_acc"].idxmax()]  # idxmax: first maximum, the earlier checkpoint
        scores.append(((float(peak["val_acc"]), int(group["iteration"].max()), -order[trial_id]), peak, group))
    _, peak, group = max(scores, key=lambda s: s[0])
    config = {p: float(peak[p]) for p in params}
    return {
        "k": config["k"] if "k" in config else None,
        "val_acc": float(peak["val_acc"]),
        "test_acc": fmt.number(peak["test_acc"]),
        "iteration": int(peak["iteration"]),
        "trial_id": str(peak["trial_id"]),
        "fold": int(peak["fold"]),
        "trained_iterations": int(group["iteration"].max()),
        "config": config,
    }


def write_best(path: Path, rows: list[dict[str, Any]], datasets: list[str], params: list[str]) -> dict[str, Any]:
    """``best.json``: per data set, and at the top level the first data set of ``tune.datasets``."""
    per_dataset = {}
    for name in datasets:
        best = best_of([r for r in rows if r["dataset"] == name], params)
        if best is not None:
            per_dataset[name] = best
    first = next((per_dataset[n] for n in datasets if n in per_dataset), None)
    document = {
        "k": first["k"] if first else None,
        "val_acc": first["val_acc"] if first else None,
        "config": first["config"] if first else None,
        "dataset": next((n for n in datasets if n in per_dataset), None),
        "per_dataset": per_dataset,
        "rule": "per data set: the trial with the best validation accuracy at any evaluation; "
        "top level: the first data set of tune.datasets",
        "written": time.time(),
    }
    write_json(path, document)
    return document
