"""What the coordinator, the monitor and ``status`` need from wherever jobs run: ``Backend``.

Implementations: ``slurm.backend.SlurmBackend`` (sbatch through submitit, sacct/squeue/scontrol),
``fake.FakeBackend`` (in memory, for tests and ``fercluster bench orchestration``) and
``local_backend.LocalBackend`` (jobs run here by ``sweep --local``; the query side only).

Ids are the backend's own: SLURM's ``<array id>_<task>`` (or a plain job id for a single job);
``base_id`` and ``task_ids`` convert between an array and its tasks.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable


def base_id(slurm_id: str) -> str:
    """``"123_4"`` -> ``"123"`` (an array task's array); other ids unchanged."""
    return slurm_id.split("_")[0]


def task_ids(base: str, n: int) -> list[str]:
    """Per-task SLURM ids of a submission of ``n`` jobs (submitit sends one job without an array)."""
    return [base] if n == 1 else [f"{base}_{i}" for i in range(n)]


class JobInfo(Protocol):
    """One job as its backend sees it (``slurm.parse.SlurmInfo``, ``local_backend.LocalInfo``)."""

    @property
    def state(self) -> str: ...  # one of ``states.STATES``

    @property
    def node(self) -> str: ...

    @property
    def reason(self) -> str: ...  # why it is pending (SLURM's Reason) or what stopped it

    @property
    def elapsed_s(self) -> float | None: ...

    def failure_reason(self) -> str: ...  # one line, for a job that ended badly


@runtime_checkable
class JobQuery(Protocol):
    """The query side: the state of jobs by id, in ONE call per refresh."""

    name: str
    calls: Counter[str]  # commands run, by name (sbatch, sacct, squeue, ...)
    last_source: str  # what answered the last query (sacct, squeue, local)
    last_error: str  # why the last query could not see every id (the monitor shows them stale); "" if it could

    def query(self, ids: Sequence[str]) -> Mapping[str, JobInfo]: ...


@runtime_checkable
class Backend(JobQuery, Protocol):
    """A scheduler: submit arrays (and single jobs), find arrays by name after a crash, cancel."""

    def max_array_size(self) -> int: ...

    def submit_array(self, fn: Callable[..., Any], args: list[Any], params: dict[str, Any]) -> list[str]:
        """One submission running ``fn(arg)`` for each of ``args``; returns the per-task ids."""
        ...

    def submit_one(self, fn: Callable[..., Any], args: tuple[Any, ...], params: dict[str, Any]) -> str: ...

    def repair_pickles(self, ids: list[str], fn: Callable[..., Any], args: list[Any], timeout_min: int) -> int:
        """Write what an adopted orphan submission is missing to run ``fn(arg)``; returns how many."""
        ...

    def find_by_name(self, names: Sequence[str]) -> dict[str, str]:
        """The id of each submission among ``names`` (job names) that the scheduler knows."""
        ...

    def cancel(self, ids: Sequence[str]) -> None: ...
