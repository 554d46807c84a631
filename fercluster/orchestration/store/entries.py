"""The entries of ``state.json``, typed: a job, an array, a pending submission, the aggregation job,
the config of the last run. Frozen: an update is a new entry (``dataclasses.replace``).

Each has ``to_dict`` (the writer's form, as ``state.json`` holds it) and ``from_dict`` (the reader:
what any schema so far wrote, missing keys taking their defaults; ``records.Reader``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from fercluster.orchestration.store.records import Reader

TRAIN, AGGREGATE = "train", "aggregate"  # the kinds of a pending submission


@dataclass(frozen=True)  # no slots: records.Reader builds it
class JobEntry:
    """A job as the coordinator submitted it (``removed`` keeps these for jobs pruned from the config)."""

    slurm_ids: tuple[str, ...] = ()  # every submission's SLURM id, latest last
    submissions: int = 0
    retries: int = 0  # resubmissions after it ended badly (--retry-failed)
    requeues: int = 0  # resubmissions after a pre-emption (no retry used)
    array: str | None = None  # the array's job name, and its task index in it
    task: int | None = None
    submitted: float | None = None
    code: str | None = None  # what its latest submission runs: a snapshot hash, or "live"
    # what status needs once the job leaves the config
    dataset: str | None = None
    fold: int | None = None
    variant: str | None = None
    seed: int | None = None
    run_dir: str | None = None
    local: Mapping[str, Any] | None = None  # a local run: {pid, host, started, process_start, ended}

    @property
    def slurm_id(self) -> str | None:
        return self.slurm_ids[-1] if self.slurm_ids else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "slurm_ids": list(self.slurm_ids),
            "submissions": self.submissions,
            "retries": self.retries,
            "requeues": self.requeues,
        }
        for name in ("array", "task", "submitted", "code", "dataset", "fold", "variant", "seed", "run_dir", "local"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JobEntry:
        return _JOB.keyed(d)


@dataclass(frozen=True)  # no slots: records.Reader builds it
class ArrayEntry:
    """A submitted SLURM array: task i runs ``job_ids[i]``."""

    slurm_id: str
    job_ids: tuple[str, ...]
    submitted: float | None = None
    code: str | None = None
    throttle: int | None = None  # its %K (array_parallelism share)

    def to_dict(self) -> dict[str, Any]:
        return {
            "slurm_id": self.slurm_id,
            "job_ids": list(self.job_ids),
            "submitted": self.submitted,
            "code": self.code,
            "throttle": self.throttle,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ArrayEntry:
        return _ARRAY.keyed(d)


@dataclass(frozen=True)  # no slots: records.Reader builds it
class PendingEntry:
    """A submission written BEFORE sbatch: a crash after sbatch leaves it, and the next run adopts
    the array by its job name."""

    job_ids: tuple[str, ...]
    kind: str = TRAIN  # TRAIN or AGGREGATE
    created: float | None = None
    retry: tuple[str, ...] = ()
    requeue: tuple[str, ...] = ()
    code: str | None = None
    after: tuple[str, ...] = ()  # AGGREGATE: the submissions it waits for

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_ids": list(self.job_ids),
            "created": self.created,
            "kind": self.kind,
            "retry": list(self.retry),
            "requeue": list(self.requeue),
            "code": self.code,
            "after": list(self.after),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PendingEntry:
        return _PENDING.keyed(d)


@dataclass(frozen=True)  # no slots: records.Reader builds it
class AggregateEntry:
    """The aggregation job, after every queued or running training job."""

    name: str
    slurm_id: str | None
    submitted: float | None = None
    after: tuple[str, ...] = ()
    code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "slurm_id": self.slurm_id,
            "submitted": self.submitted,
            "after": list(self.after),
            "code": self.code,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AggregateEntry:
        return _AGGREGATE.keyed(d)


@dataclass(frozen=True)  # no slots: records.Reader builds it
class ConfigEntry:
    """The config of the last run: its YAML file and ``--set`` overrides (status and a re-run use them)."""

    path: str | None = None
    overrides: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "overrides": list(self.overrides)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConfigEntry:
        return _CONFIG.keyed(d)


# each record's reader (records.Reader: the fast way to build frozen records)
_JOB = Reader(JobEntry)
_ARRAY = Reader(ArrayEntry)
_PENDING = Reader(PendingEntry)
_AGGREGATE = Reader(AggregateEntry)
_CONFIG = Reader(ConfigEntry)
