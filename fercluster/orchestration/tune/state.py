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
import os
import socket
from pathlib import Path
from typing import Any, Iterator

from fercluster import fmt
from fercluster.config import SweepConfig
from fercluster.errors import ConfigError
from fercluster.lock import file_lock
from fercluster.orchestration.slurm.backend import allocation_live
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


def read_search(cfg: SweepConfig) -> dict[str, Any]:
    try:
        return json.loads((state_dir(cfg) / "search.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def completed(cfg: SweepConfig) -> dict[str, Any] | None:
    record = read_search(cfg)
    best = results_dir(cfg) / "best.json"
    if record.get("state") != "completed" or record.get("fingerprint") != fingerprint(cfg) or not best.exists():
        return None
    return {**record.get("summary", {}), "state": "completed", "best": json.loads(best.read_text()), "skipped": True}


def check_fingerprint(cfg: SweepConfig) -> None:
    record = read_search(cfg)
    old = record.get("fingerprint")
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
    record = read_search(cfg)
    state = from_search(record.get("state"))
    if state in ACTIVE and not _alive(record):
        state = INTERRUPTED
    by_state: dict[str, int] = {}
    best: dict[str, Any] = {}
    trials: list[dict[str, Any]] = []
    for name in cfg.tune.datasets:
        doc = _read_json(status_path(cfg, name))
        if doc is None:
            continue
        for row in doc.get("trials", []):
            key = from_ray(row["state"], bool(row.get("stopped_by_asha")))
            by_state[key] = by_state.get(key, 0) + 1
            trials.append({**row, "state": key, "dataset": name})
        if doc.get("best"):
            best[name] = doc["best"]
    return {"sweep": cfg.name, "state": state, "slurm_id": record.get("slurm_id"), "by_state": by_state,
            "trials": trials, "best": best, "updated": record.get("finished") or record.get("started"),
            "best_path": str(results_dir(cfg) / "best.json"), "code": record.get("code")}  # fmt: skip


def _alive(record: dict[str, Any]) -> bool:
    if record.get("mode") == "slurm":
        return allocation_live(record.get("slurm_id")) is not False
    return _driver_alive(record)


def _driver_alive(record: dict[str, Any]) -> bool:
    if record.get("host") != socket.gethostname():
        return True  # another machine's driver: cannot tell, trust the record
    try:
        os.kill(int(record.get("pid", -1)), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def status_table(status: dict[str, Any]) -> Any:
    """A rich Table of ``tune_status(cfg)`` for ``fercluster status``: one row per trial, best first."""
    from rich.table import Table

    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(status["by_state"].items())) or "no trials yet"
    best = "; ".join(f"{d}: k={b.get('k'):.3g} ({fmt.pct(b.get('best_val_acc'))} val)"
                     for d, b in status["best"].items() if b.get("k") is not None)  # fmt: skip
    title = f"search {status['sweep']}: {status['state']}" + (
        f" (SLURM {status['slurm_id']}, code {status.get('code') or '-'})" if status["slurm_id"] else ""
    )
    table = Table(title=title, caption=f"{counts}" + (f"; best so far: {best}" if best else ""))
    for col in ("data set", "trial", "k", "state", "iteration", "val acc", "best val", "test acc", "node"):
        table.add_column(col, justify="right" if col in ("k", "iteration") or "acc" in col or "val" in col else "left")
    rows = sorted(status["trials"], key=lambda r: -(r.get("best_val_acc") or -1))
    for r in rows:
        state = from_ray(r["state"], bool(r.get("stopped_by_asha")))
        k = r.get("k")
        table.add_row(r["dataset"], r["trial_id"], "-" if k is None else f"{k:.3g}", state, str(r.get("iteration", 0)),
                      fmt.pct(r.get("val_acc")), fmt.pct(r.get("best_val_acc")), fmt.pct(r.get("test_acc")),
                      str(r.get("node") or ""))  # fmt: skip
    return table
