"""What ``status`` last knew about a sweep's jobs: ``jobs/<sweep>/known.json``.

Two things, kept between refreshes so that a refresh costs little and an outage shows something:

- ``states``: the last state SLURM gave for each of the sweep's ids, with when. When the query
  fails (slurmdbd down, a rate limit) ``status`` shows these, marked stale with the reason,
  instead of asking the cluster something larger.
- ``done``: what a completed job's ``job.json`` said (accuracies, host, code), read once, and its
  final cost from sacct (asked once, in the refresh's one query): a completed job does not change,
  so its files are not read again.
- ``cost``: GPU-hours and CPU-hours summed over the sweep's runs (``status``, the report).

Its own file, not ``state.json``: ``status`` runs without the sweep's lock, and ``state.json`` is
``sweep``'s, written under it. Written atomically; a file that does not parse is started afresh.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from fercluster.atomic import write_text
from fercluster.orchestration.backend import JobInfo

FILE = "known.json"


@dataclass(frozen=True)
class KnownInfo:
    """A ``backend.JobInfo`` remembered from an earlier refresh."""

    state: str
    node: str = ""
    reason: str = ""
    elapsed_s: float | None = None
    failure: str = ""
    at: float = 0.0  # when SLURM said so (epoch seconds)
    gpu_hours: float | None = None  # its cost so far (sacct's AllocTRES x ElapsedRaw)
    cpu_hours: float | None = None

    def failure_reason(self) -> str:
        return self.failure or f"state {self.state}"


@dataclass
class Known:
    path: Path
    states: dict[str, KnownInfo] = field(default_factory=dict)  # SLURM id -> last answer
    done: dict[str, dict[str, Any]] = field(default_factory=dict)  # job id -> what job.json said

    def remember(self, infos: Mapping[str, JobInfo], now: float | None = None) -> None:
        now = time.time() if now is None else now
        for sid, info in infos.items():
            self.states[sid] = KnownInfo(info.state, info.node, info.reason, info.elapsed_s, info.failure, now,
                                         info.gpu_hours, info.cpu_hours)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        states = {
            sid: [k.state, k.node, k.reason, k.elapsed_s, k.failure, k.at, k.gpu_hours, k.cpu_hours]
            for sid, k in self.states.items()
        }
        return {"states": states, "done": self.done}


def cost(known: Known) -> dict[str, Any]:
    """GPU-hours and CPU-hours the sweep's SLURM jobs used, every run counted (failed and retried
    ones too: the allocation paid for them): per SLURM id its last known figure, a completed
    job's final one (recorded with its ``job.json``) in place of the last seen while it ran."""
    per_id = {sid: (k.gpu_hours, k.cpu_hours) for sid, k in known.states.items()}
    for rec in known.done.values():
        if rec.get("slurm_id") and rec.get("gpu_hours") is not None:
            per_id[rec["slurm_id"]] = (rec["gpu_hours"], rec.get("cpu_hours"))
    gpu = sum(g for g, _ in per_id.values() if g is not None)
    cpu = sum(c for _, c in per_id.values() if c is not None)
    return {"gpu_hours": round(gpu, 2), "cpu_hours": round(cpu, 2), "runs": len(per_id)}


def load_known(jobs_dir: Path) -> Known:
    path = Path(jobs_dir) / FILE
    try:
        data = json.loads(path.read_text())
        states = {sid: KnownInfo(*fields) for sid, fields in data.get("states", {}).items()}
        return Known(path, states, dict(data.get("done", {})))
    except (FileNotFoundError, json.JSONDecodeError, TypeError, AttributeError):
        return Known(path)


def save_known(known: Known) -> None:
    if known.path.parent.is_dir():  # never create a sweep's folder just to remember states
        write_text(known.path, json.dumps(known.to_dict(), separators=(",", ":")) + "\n")
