"""What ``status`` last heard from SLURM about a sweep: ``jobs/<sweep>/known.json``.

- ``states``: the last state SLURM gave for each of the sweep's ids, with when. When the query
  fails (slurmdbd down, a rate limit) ``status`` shows these, marked stale with the reason,
  instead of asking the cluster something larger.
- ``costs``: a completed job's final cost from sacct (asked once, in the refresh's one query).
  Not in the run index (``store.index``): that one is rebuilt from the run folders, and SLURM's
  accounting is not in them.

Its own file, not ``state.json``: ``status`` runs without the sweep's lock, and ``state.json`` is
``sweep``'s, written under it. Written atomically; a file that does not parse, or of another
schema, is started afresh (what it held is asked again).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import orjson

from fercluster.orchestration.backend import JobInfo
from fercluster.orchestration.store.index import write_cache
from fercluster.orchestration.store.records import Reader
from fercluster.orchestration.store.vocabulary import ENDED_BADLY

FILE = "known.json"
SCHEMA = 2  # 1: written without the field, with a "done" map (its records now live in the run index)


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True)  # no slots: records.Reader builds 10,000 at each status
class FinalCost:
    """A completed job's cost, from SLURM's record of its last run."""

    slurm_id: str
    gpu_hours: float | None  # None: SLURM keeps no accounting of it
    cpu_hours: float | None


class _Costs(dict[str, FinalCost]):
    """Job id -> final cost; notes when one is set (``status`` sets them), so an unchanged file is not rewritten."""

    changed = False

    def __setitem__(self, job_id: str, cost: FinalCost) -> None:
        self.changed = self.changed or job_id not in self or self[job_id] != cost
        super().__setitem__(job_id, cost)


RESTAMP_S = 60.0  # a state SLURM repeats is stamped anew (``at``) at most this often: no rewrite per refresh


@dataclass
class Known:
    path: Path
    # SLURM id -> last answer; as read, each stays the file's list until asked for (``last``):
    # a refresh of 10,000 jobs needs few of them, and building them all costs a tenth of a second
    states: dict[str, KnownInfo | list[Any]] = field(default_factory=dict)
    costs: _Costs = field(default_factory=_Costs)  # job id -> its final cost
    changed: bool = False  # states differ from the file's (``save_known`` writes only then)

    def remember(self, infos: Mapping[str, JobInfo], now: float | None = None) -> None:
        now = time.time() if now is None else now
        for sid, info in infos.items():
            failure = info.failure_reason() if info.state in ENDED_BADLY else ""
            new = [info.state, info.node, info.reason, info.elapsed_s, failure, now, info.gpu_hours, info.cpu_hours]
            old = self.states.get(sid)
            if old is not None:
                old = _as_list(old)
                if old[:5] + old[6:] == new[:5] + new[6:] and now - old[5] < RESTAMP_S:
                    continue  # SLURM says what it said a moment ago
            self.states[sid] = KnownInfo(*new)
            self.changed = True

    def last(self, slurm_id: str) -> KnownInfo | None:
        """What SLURM last said of ``slurm_id`` (None: never asked, or never answered)."""
        info = self.states.get(slurm_id)
        if isinstance(info, list):
            info = self.states[slurm_id] = KnownInfo(*info)
        return info

    def to_dict(self) -> dict[str, Any]:
        final = {c.slurm_id for c in self.costs.values()}  # what a completed job's run left: kept in costs
        states = {sid: _as_list(k) for sid, k in self.states.items() if sid not in final}
        costs = {j: [c.slurm_id, c.gpu_hours, c.cpu_hours] for j, c in self.costs.items()}
        return {"schema": SCHEMA, "states": states, "costs": costs}


def cost(known: Known) -> dict[str, Any]:
    """GPU-hours and CPU-hours the sweep's SLURM jobs used, every run counted (failed and retried
    ones too: the allocation paid for them): per SLURM id its last known figure, a completed
    job's final one in place of the last seen while it ran."""
    per_id = {sid: tuple(_as_list(k)[6:8]) for sid, k in known.states.items()}
    per_id.update({c.slurm_id: (c.gpu_hours, c.cpu_hours) for c in known.costs.values()})
    gpu = sum(g for g, _ in per_id.values() if g is not None)
    cpu = sum(c for _, c in per_id.values() if c is not None)
    return {"gpu_hours": round(gpu, 2), "cpu_hours": round(cpu, 2), "runs": len(per_id)}


def _as_list(k: KnownInfo | list[Any]) -> list[Any]:
    if isinstance(k, list):
        return k
    return [k.state, k.node, k.reason, k.elapsed_s, k.failure, k.at, k.gpu_hours, k.cpu_hours]


def load_known(jobs_dir: Path) -> Known:
    path = Path(jobs_dir) / FILE
    try:
        with open(path, "rb") as f:
            data = orjson.loads(f.read())
        data = {"costs": {}, **data}  # a file without costs (schema 1)
        states = {sid: list(fields) for sid, fields in data["states"].items() if len(fields) == 8}
        costs = _Costs((j, _COST.row(c)) for j, c in data["costs"].items())
        return Known(path, states, costs)
    except (OSError, orjson.JSONDecodeError, TypeError, AttributeError, KeyError):
        return Known(path, changed=True)  # started afresh: rewritten


_COST = Reader(FinalCost)


def save_known(known: Known) -> None:
    """Write ``known.json`` when what it holds changed (never create a sweep's folder just to remember states)."""
    unchanged = not known.changed and not known.costs.changed and known.path.exists()
    if not unchanged and known.path.parent.is_dir():
        write_cache(known.path, orjson.dumps(known.to_dict()) + b"\n")
        known.changed = known.costs.changed = False
