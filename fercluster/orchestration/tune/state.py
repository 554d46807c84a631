"""Where a Ray Tune search keeps its state, and what ``fercluster status`` reads (no Ray needed).

``jobs/<sweep>/tune/search.json``: the search's state (running, completed, interrupted, failed,
submitted), host and pid of the driver or the SLURM id, and the fingerprint of the settings it ran
with; ``jobs/<sweep>/tune/status/<data set>.json``: trials by state and the best so far, written by
the driver while the Tuner runs; ``jobs/<sweep>/tune/asha/<data set>.json``: ASHA's rungs;
``jobs/<sweep>/ray/``: Ray's own experiment folders.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from fercluster import fmt
from fercluster.atomic import write_json
from fercluster.config import SweepConfig
from fercluster.errors import ConfigError
from fercluster.lock import file_lock, same_process
from fercluster.orchestration.slurm.backend import allocation_live
from fercluster.orchestration.store.records import Reader
from fercluster.orchestration.store.vocabulary import ACTIVE, INTERRUPTED, from_ray, from_search


# -- places --------------------------------------------------------------------------------------
def state_dir(cfg: SweepConfig) -> Path:
    return Path(cfg.jobs_dir).absolute() / "tune"


def storage_dir(cfg: SweepConfig) -> Path:
    return Path(cfg.jobs_dir).absolute() / "ray"


def results_dir(cfg: SweepConfig) -> Path:
    return Path(cfg.results_dir).absolute() / "tune"


def status_path(cfg: SweepConfig, dataset: str) -> Path:
    return state_dir(cfg) / "status" / f"{dataset}.json"


def asha_path(cfg: SweepConfig, dataset: str) -> Path:
    """ASHA's rungs of a data set's search (``scheduler.PersistentASHA``); outside Ray's experiment
    folder, which Ray overwrites with its own copies on a restore."""
    return state_dir(cfg) / "asha" / f"{dataset}.json"


def fingerprint(cfg: SweepConfig) -> str:
    """A hash of everything that changes the search's trials (not SLURM resources)."""
    t = cfg.tune
    assert t is not None
    blob = {
        "tune": t.model_dump(mode="json", exclude={"max_concurrent", "cpus_per_trial", "gpus_per_trial"}),
        "datasets": {n: cfg.datasets[n].model_dump(mode="json") for n in t.datasets},
        "train": {n: cfg.train_for(n).model_dump(mode="json", exclude={"device"}) for n in t.datasets},
    }
    return hashlib.sha1(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


SEARCH_SCHEMA = 1  # search.json written before the field: the same fields, read as they are


@dataclass(frozen=True)  # no slots: records.Reader builds it
class SearchRecord:
    """``tune/search.json``: where and how the search runs, and how it ended."""

    state: str = "not_started"  # not_started, submitted, running, completed, interrupted, failed (``from_search``)
    mode: str | None = None  # "slurm" (an allocation) or "local" (a driver on this or another host)
    host: str | None = None  # the driver's host, pid and start time (epoch s, ``lock.process_start``):
    pid: int | None = None  # together they name one process, a pid the kernel reused is another
    pid_start: float | None = None
    slurm_id: str | None = None  # the allocation
    ray_address: str | None = None
    code: str | None = None  # the code snapshot the allocation runs
    fingerprint: str | None = None  # ``fingerprint(cfg)`` of the settings it ran with
    submitted: float | None = None
    started: float | None = None
    finished: float | None = None
    summary: Mapping[str, Any] | None = None  # the driver's summary when it ended (trials, errors, ...)
    pending: Mapping[str, Any] | None = None  # an allocation sbatch begun, not yet recorded: {name, created}
    retries: int = 0  # --retry-failed rounds begun (``retry``), at most slurm.max_retries
    retry_errored: tuple[str, ...] = ()  # data sets whose next restore resumes their errored trials
    schema: int = SEARCH_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}


_SEARCH = Reader(SearchRecord)


def load_search(cfg: SweepConfig) -> SearchRecord:
    """The search's record (a fresh one when there is none, or it does not parse: the search starts over)."""
    try:
        return _SEARCH.keyed(json.loads((state_dir(cfg) / "search.json").read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return SearchRecord()


def save_search(cfg: SweepConfig, record: SearchRecord) -> None:
    write_json(state_dir(cfg) / "search.json", record.to_dict())


def read_search(cfg: SweepConfig) -> dict[str, Any]:
    """The record as the dict it is written as (for callers that merge it; prefer ``load_search``)."""
    return load_search(cfg).to_dict()


def completed(cfg: SweepConfig) -> dict[str, Any] | None:
    record = load_search(cfg)
    best = results_dir(cfg) / "best.json"
    if record.state != "completed" or record.fingerprint != fingerprint(cfg) or not best.exists():
        return None
    if record.retry_errored:  # a --retry-failed round to run: not done yet
        return None
    return {**(record.summary or {}), "state": "completed", "best": json.loads(best.read_text()), "skipped": True}


def check_fingerprint(cfg: SweepConfig) -> None:
    old = load_search(cfg).fingerprint
    if old and old != fingerprint(cfg) and storage_dir(cfg).exists():
        raise ConfigError(
            f"the tune: or train: settings of sweep {cfg.name!r} changed since its search started "
            f"(fingerprint {old} -> {fingerprint(cfg)}); Ray would restore the old search. Put the old "
            f"settings back, give the sweep a new name, or delete {storage_dir(cfg)}, {state_dir(cfg)} "
            f"and {results_dir(cfg)} to start over"
        )


@contextlib.contextmanager
def search_lock(cfg: SweepConfig) -> Iterator[None]:
    """Hold the search's lock: one driver per search (a second one fails at once, naming the first)."""
    from fercluster.orchestration.store.state import ensure_dir

    with file_lock(ensure_dir(state_dir(cfg)) / ".lock", timeout_s=0, what=f"search {cfg.name}"):
        yield


# -- status ---------------------------------------------------------------------------------------
def tune_status(cfg: SweepConfig) -> dict[str, Any] | None:
    """The search at a glance, from its files (no Ray): None when the config has no ``tune:``.

    ``state`` (``store.vocabulary.from_search``): NOT_SUBMITTED, PENDING (on SLURM, not running
    yet), RUNNING, COMPLETED, INTERRUPTED (also: a local driver that died, or an allocation that
    SLURM no longer runs) or FAILED. ``by_state``: trial counts by state (``from_ray``: Ray's
    TERMINATED is COMPLETED, or STOPPED by ASHA; its ERROR is FAILED). ``best``: per data set, the best trial so far. ``slurm_id``: the allocation, if any.
    A search on SLURM costs one ``squeue`` call while it is SUBMITTED or RUNNING.
    """
    if cfg.tune is None:
        return None
    record = load_search(cfg)
    state = from_search(record.state)
    if state in ACTIVE and not _alive(record):
        state = INTERRUPTED
    by_state: dict[str, int] = {}
    best: dict[str, Any] = {}
    trials: list[dict[str, Any]] = []
    for name in cfg.tune.datasets:
        doc = _read_json(status_path(cfg, name))
        if doc is None:
            continue
        doc = {"trials": [], "best": None, **doc}  # what a status file leaves out
        for row in doc["trials"]:
            row = trial_row(row)
            key = from_ray(row["state"], bool(row["stopped_by_asha"]))
            by_state[key] = by_state.get(key, 0) + 1
            trials.append({**row, "state": key, "dataset": name})
        if doc["best"]:
            best[name] = trial_row(doc["best"])
    return {
        "sweep": cfg.name,
        "state": state,
        "slurm_id": record.slurm_id,
        "by_state": by_state,
        "trials": trials,
        "best": best,
        "updated": record.finished or record.started,
        "best_path": str(results_dir(cfg) / "best.json"),
        "code": record.code,
    }


# what a trial's row in a status file may leave out (``results.trial_summary`` writes them)
_TRIAL: dict[str, Any] = {
    "stopped_by_asha": False,
    "k": None,
    "iteration": 0,
    "val_acc": None,
    "best_val_acc": None,
    "test_acc": None,
    "node": None,
}


def trial_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's row of a status file, with every field ``status`` shows."""
    return {**_TRIAL, **row}


def _alive(record: SearchRecord) -> bool:
    if record.mode == "slurm":
        return allocation_live(record.slurm_id) is not False
    return _driver_alive(record)


def _driver_alive(record: SearchRecord) -> bool:
    """Whether the driver still runs: its pid is alive here and started when the record says (a
    record without a start time, from an earlier version, is judged by the pid alone)."""
    if record.host != socket.gethostname():
        return True  # another machine's driver: this host's process table says nothing of it; trust the record
    return record.pid is not None and same_process(int(record.pid), record.pid_start)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def status_table(status: dict[str, Any]) -> Any:
    """A rich Table of ``tune_status(cfg)`` for ``fercluster status``: one row per trial, best first."""
    from rich.table import Table

    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(status["by_state"].items())) or "no trials yet"
    best = "; ".join(
        f"{d}: k={b['k']:.3g} ({fmt.pct(b['best_val_acc'])} val)"
        for d, b in status["best"].items()
        if b["k"] is not None
    )
    title = f"search {status['sweep']}: {status['state']}" + (
        f" (SLURM {status['slurm_id']}, code {status['code'] or '-'})" if status["slurm_id"] else ""
    )
    table = Table(title=title, caption=f"{counts}" + (f"; best so far: {best}" if best else ""))
    for col in ("data set", "trial", "k", "state", "iteration", "val acc", "best val", "test acc", "node"):
        table.add_column(col, justify="right" if col in ("k", "iteration") or "acc" in col or "val" in col else "left")
    rows = sorted(status["trials"], key=lambda r: -(r["best_val_acc"] or -1))
    for r in rows:
        state = from_ray(r["state"], bool(r["stopped_by_asha"]))
        k = r["k"]
        table.add_row(
            r["dataset"],
            r["trial_id"],
            "-" if k is None else f"{k:.3g}",
            state,
            str(r["iteration"]),
            fmt.pct(r["val_acc"]),
            fmt.pct(r["best_val_acc"]),
            fmt.pct(r["test_acc"]),
            str(r["node"] or ""),
        )
    return table
