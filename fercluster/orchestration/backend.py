"""What the coordinator, the monitor and ``status`` need from wherever jobs run: ``Backend``.

In fercluster's own terms: a ``Submission`` (a name, what to run, ``Resources``, what it waits
for, the code it imports) goes in, a ``Submitted`` (its id and one id per task) comes out; a query
answers ``JobInfo`` records; ``find`` and ``adopt`` recover what a crash left submitted but not
recorded. How a scheduler spells any of it (sbatch flags, submitit's pickles, SLURM's numeric ids)
stays behind the implementation:

- ``slurm.backend.SlurmBackend``: sbatch through submitit, sacct/squeue/scontrol.
- ``fake.FakeBackend``: in memory, for tests and ``fercluster bench orchestration``.
- ``local_backend.LocalBackend``: jobs run here by ``sweep --local`` (the query side only).

``backends.backend_for(cfg)`` is the one way to build the SLURM one from a config.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Protocol, Sequence, runtime_checkable

from fercluster.errors import SlurmError

if TYPE_CHECKING:
    from fercluster.config import Slurm


@dataclass(frozen=True)
class JobInfo:
    """One job as its backend sees it now (or last saw it: ``known.KnownInfo``)."""

    state: str  # one of ``states.STATES``
    node: str = ""
    reason: str = ""  # why it is pending (SLURM's Reason) or what stopped it
    elapsed_s: float | None = None
    failure: str = ""  # one line, for a job that ended badly ("" otherwise)
    gpu_hours: float | None = None  # GPUs allocated x time run (None: not known)
    cpu_hours: float | None = None

    def failure_reason(self) -> str:
        return self.failure or f"state {self.state}"


@dataclass(frozen=True)
class Resources:
    """What one job of a submission asks for. ``training(cfg.slurm)`` and ``aggregation(cfg.slurm)``
    derive it from the config; ``slurm.resources.submitit_parameters`` is its one mapping to sbatch."""

    time_min: int = 60
    nodes: int = 1
    gpus_per_node: int = 0
    gpu_type: str | None = None
    tasks_per_node: int = 1  # processes per node (one per GPU for DDP)
    ranks: bool = True  # the tasks are ranks of one job: one that dies ends the others
    cpus_per_task: int = 1
    mem_gb: float | None = None
    mem_per_gpu_gb: float | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclusive: bool = False
    signal_delay_s: int = 120  # the job is told this long before its time limit
    throttle: int | None = None  # at most this many tasks of the submission at once (arrays)
    setup: tuple[str, ...] = ()  # shell lines run before the job (the site's)
    extra: tuple[tuple[str, str], ...] = ()  # more scheduler flags, passed as given

    @property
    def processes(self) -> int:
        """How many processes one job runs as (``JobSpec.processes``; DDP when > 1)."""
        return self.nodes * self.tasks_per_node

    @classmethod
    def training(cls, slurm: Slurm) -> Resources:
        """A training job under ``slurm``: one task per GPU of each node, or one per node without GPUs."""
        return cls(
            time_min=slurm.time_min,
            nodes=slurm.nodes,
            gpus_per_node=slurm.gpus_per_node,
            gpu_type=slurm.gpu_type,
            tasks_per_node=max(1, slurm.gpus_per_node),
            cpus_per_task=slurm.cpus_per_task,
            mem_gb=slurm.mem_gb,
            mem_per_gpu_gb=slurm.mem_per_gpu_gb,
            partition=slurm.partition,
            account=slurm.account,
            qos=slurm.qos,
            constraint=slurm.constraint,
            exclusive=slurm.exclusive,
            signal_delay_s=slurm.signal_delay_s,
            setup=tuple(slurm.setup),
            extra=tuple(slurm.extra.items()),
        )

    @classmethod
    def aggregation(cls, slurm: Slurm) -> Resources:
        """The aggregation job: one node, no GPU, on ``slurm.aggregate``'s partition, QOS, account,
        time, CPUs and memory (each unset one: the training job's; its time: 30 minutes)."""
        agg = slurm.aggregate
        pick = {k: getattr(agg, k) for k in ("partition", "qos", "account", "cpus_per_task", "mem_gb")}
        return replace(
            cls.training(slurm),
            nodes=1,
            gpus_per_node=0,
            gpu_type=None,
            tasks_per_node=1,
            mem_per_gpu_gb=None,
            exclusive=False,
            time_min=agg.time_min,
            **{k: v for k, v in pick.items() if v is not None},
        )

    def one_task_per_node(self) -> Resources:
        """Not ranks: one task per node that shares the node's GPUs (a Ray node, a check)."""
        return replace(self, tasks_per_node=1, ranks=False)


Kind = Literal["train", "aggregate", "search"]


@dataclass(frozen=True)
class Submission:
    """One submission. ``train``: one task per element of ``args``, each running ``fn(arg)`` (an
    array); ``aggregate`` and ``search``: ONE job running ``fn(*args)``."""

    name: str  # how the scheduler knows it: a crash's orphan is found again by it (``find``)
    kind: Kind
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    resources: Resources
    after: tuple[str, ...] = ()  # submission or task ids it starts after, however they end (afterany)
    code_dir: Path | None = None  # the code snapshot the job imports; None: whatever is installed

    @property
    def n_tasks(self) -> int:
        return len(self.args) if self.kind == "train" else 1


@dataclass(frozen=True)
class Submitted:
    id: str  # the submission's id (SLURM: the array's, or the single job's)
    tasks: tuple[str, ...] = field(default=())  # one id per task, in the order of ``Submission.args``


class SubmitRefused(SlurmError):
    """The scheduler answered a submission with an error: nothing of it was submitted.

    A ``SlurmError`` from ``submit`` that is not one of these (a time-out, a reply lost) leaves it
    unknown whether the submission went in: its pending record stays until recovery settles it.
    """


class SubmitLimit(SlurmError):
    """The scheduler refused a submission because a limit is reached; what went in before stands.
    ``definite``: sbatch said so (nothing was submitted); False when only suggested (a time-out)."""

    def __init__(self, message: str, limit: str, definite: bool = True) -> None:
        super().__init__(message)
        self.limit = limit  # which limit, in words ("the QOS limit on jobs submitted per user ...")
        self.definite = definite


NO_ACCOUNTING = "accounting storage is disabled"  # sacct's error on a site without accounting (lower case)


class PartialLookup(SlurmError):
    """``find`` could ask the queue but not the accounting: ``found`` is what the queue (which
    shows this user's queued, running and recently ended jobs) showed; the other names are unknown.
    ``disabled``: the site has no accounting at all (sacct said so), not an outage that passes."""

    def __init__(self, message: str, found: dict[str, str]) -> None:
        super().__init__(message)
        self.found = found
        self.disabled = NO_ACCOUNTING in message.lower()


def refused(exc: BaseException) -> bool:
    """Whether a ``submit`` error says for sure that nothing was submitted."""
    return isinstance(exc, SubmitRefused) or (isinstance(exc, SubmitLimit) and exc.definite)


@runtime_checkable
class JobQuery(Protocol):
    """The query side: the state of jobs by id, in ONE call per refresh."""

    name: str
    calls: Counter[str]  # commands run, by name (sbatch, sacct, squeue, ...)
    last_source: str  # what answered the last query (sacct, squeue, local)
    last_error: str  # why the last query could not see every id (the monitor shows them stale); "" if it could
    # the queue (squeue) answered the last query: an id it did not show is not queued or running, even
    # where accounting did not answer (the monitor: ended, unseen; not stale)
    last_queue_ok: bool

    def query(self, ids: Sequence[str]) -> Mapping[str, JobInfo]: ...


@runtime_checkable
class Backend(JobQuery, Protocol):
    """A scheduler: submit, find submissions by name after a crash and adopt them, cancel."""

    def max_tasks(self) -> int:
        """The most tasks one ``train`` submission may hold (SLURM: MaxArraySize)."""
        ...

    def submit(self, submission: Submission) -> Submitted:
        """Submit; ``SubmitLimit`` when a limit refuses it, ``SlurmError`` for other failures."""
        ...

    def find(self, names: Sequence[str]) -> dict[str, str]:
        """The id of each submission among ``names`` that the scheduler knows (this user's, the newest);
        ``PartialLookup`` when only the queue answered, ``SlurmError`` when nothing did."""
        ...

    def live(self, ids: Sequence[str]) -> dict[str, JobInfo]:
        """What the queue alone (SLURM: one ``squeue --me -j``) says of these ids now: a job
        requeued by SLURM is PENDING here while accounting may still show how it ended."""
        ...

    def adopt(self, submission: Submission, submission_id: str) -> Submitted:
        """Take over ``submission``, found as ``submission_id`` after a crash: write what it is
        missing to run (SLURM: submitit's pickles), return its task ids."""
        ...

    def submissions_of(self, ids: Sequence[str]) -> list[str]:
        """The submissions holding these submission or task ids, each once, oldest first."""
        ...

    def cancel(self, ids: Sequence[str]) -> None: ...

    def requeue(self, ids: Sequence[str]) -> None:
        """Put these running jobs back in the queue, each under its own id (SLURM: one ``scontrol
        requeue``); they start again and resume from their checkpoint. ``SlurmError`` when refused."""
        ...
