"""An in-memory SLURM (``FakeBackend``) for the tests and ``fercluster bench orchestration``.

Ids count up from 1000, states are set by hand (``set_state``), and ``query`` renders sacct's (or,
with ``sacct_ok = False``, squeue's) text and parses it, so the parsing cost is real. Faults:
``sbatch_faults`` (each sbatch takes the next: ``refuse``, ``timeout`` before or ``lost`` after
submitting), ``max_submit_jobs`` (a QOS MaxSubmitJobsPerUser over this user's queued and running
tasks), ``squeue_states`` (what squeue shows where it differs from sacct: a requeue just made), ``reasons``
(SLURM's pending reason of a task).
``simulate.SimSlurm`` is this fake driven by a scheduler on a virtual clock (the simulation test).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from fercluster.errors import SlurmError
from fercluster.orchestration.backend import (
    JobInfo,
    PartialLookup,
    Submission,
    SubmitLimit,
    SubmitRefused,
    Submitted,
)
from fercluster.orchestration.slurm import parse as slurm_parse
from fercluster.orchestration.slurm.parse import SlurmInfo
from fercluster.orchestration.slurm.resources import submission_parameters
from fercluster.orchestration.store.vocabulary import ACTIVE


@dataclass(frozen=True)
class Sent:
    """One submission the fake took: what was asked, the ids it got, what sbatch would have got."""

    submission: Submission
    ids: tuple[str, ...]
    params: dict[str, Any]  # slurm.resources.submission_parameters: the one mapping, checked as it is

    @property
    def name(self) -> str:
        return self.submission.name

    @property
    def args(self) -> tuple[Any, ...]:
        return self.submission.args


class FakeBackend:
    """In-memory SLURM: a ``Backend`` whose submissions are recorded, never run."""

    name = "fake"

    def __init__(self, max_array: int = 1001, crash_after_sbatch: bool = False) -> None:
        self.max_array = max_array
        self.crash_after_sbatch = crash_after_sbatch
        self.calls: Counter[str] = Counter()
        self.next_id = 1000
        self.states: dict[str, str] = {}  # per-task id -> SLURM state word
        self.names: dict[str, str] = {}  # job name -> base id
        self.submitted: list[Sent] = []  # one entry per sbatch
        self.adopted: list[tuple[str, str]] = []  # (name, id) of each submission adopted after a crash
        self.sacct_ok = True  # False: accounting is off (every sacct fails)
        self.last_queue_ok = False
        self.failing: set[str] = set()  # commands that fail now ("sacct", "squeue"): an outage
        self.lag: set[str] = set()  # ids sacct does not show yet (accounting lags behind)
        self.last_error = ""
        self.tres = "billing=1,cpu=1,gres/gpu=1,mem=4G,node=1"  # AllocTRES of every job (each runs 60 s)
        self.lookup_error = ""  # set: find fails with this (squeue and sacct do not answer)
        self.last_source = ""
        self.user = "me"
        self.foreign: list[tuple[str, str, str]] = []  # other users' jobs: (id, name, user)
        self.sbatch_faults: list[str] = []  # per sbatch, in turn: "refuse", "timeout" (not in), "lost" (in)
        self.max_submit_jobs: int | None = None  # QOS MaxSubmitJobsPerUser: this user's live tasks
        self.squeue_states: dict[str, str] = {}  # squeue's view where it differs from sacct's
        self.reasons: dict[str, str] = {}  # SLURM's Reason of a pending task (default None)

    def max_tasks(self) -> int:
        self.calls["scontrol"] += 1
        return self.max_array

    def submit(self, submission: Submission) -> Submitted:
        """Recorded (``submitted``, ``params``: what sbatch would get), never run."""
        self.calls["sbatch"] += 1
        fault = self.sbatch_faults.pop(0) if self.sbatch_faults else ""
        if fault == "refuse":
            raise SubmitRefused(f"sbatch failed for {submission.name}: sbatch: error: Invalid account or partition")
        if fault == "timeout":
            raise SlurmError(f"sbatch for {submission.name} did not answer")
        self._check_limit(submission)
        base = str(self.next_id)
        self.next_id += 1
        ids = slurm_parse.task_ids(base, submission.n_tasks)
        for sid in ids:
            self.states[sid] = "PENDING"
        self.names[submission.name] = base
        self.submitted.append(Sent(submission, tuple(ids), submission_parameters(submission)))
        if self.crash_after_sbatch:
            self.crash_after_sbatch = False
            raise KeyboardInterrupt("simulated crash between sbatch and recording the job id")
        if fault == "lost":
            raise SlurmError(f"sbatch for {submission.name}: Socket timed out on send/recv operation")
        return Submitted(base, tuple(ids))

    def _check_limit(self, submission: Submission) -> None:
        if self.max_submit_jobs is None:
            return
        mine = {s for s in self.states if s not in {f[0] for f in self.foreign}}
        live = sum(1 for s in mine if slurm_parse.map_state(self.states[s]) in ACTIVE)
        if live + submission.n_tasks > self.max_submit_jobs:
            raise SubmitLimit(
                f"sbatch failed for {submission.name}: sbatch: error: QOSMaxSubmitJobPerUserLimit",
                slurm_parse.submit_limit("QOSMaxSubmitJobPerUserLimit") or "",
            )

    def adopt(self, submission: Submission, submission_id: str) -> Submitted:
        self.adopted.append((submission.name, submission_id))
        return Submitted(submission_id, tuple(slurm_parse.task_ids(submission_id, submission.n_tasks)))

    def submissions_of(self, ids: Sequence[str]) -> list[str]:
        return slurm_parse.arrays_of(ids)

    def find(self, names: Sequence[str]) -> dict[str, str]:
        """This user's newest submission of each name; other users' jobs of the same name ignored.
        Without accounting only the queue answers: submissions with a task queued or running."""
        self.calls["squeue"] += 1
        if self.lookup_error:
            raise SlurmError(self.lookup_error)
        found = {n: self.names[n] for n in names if n in self.names}
        if self.sacct_ok and "sacct" not in self.failing:
            return found
        queued = {n: b for n, b in found.items() if any(self._in_queue(s, b) for s in self.states)}
        if len(queued) == len(names):
            return queued
        self.calls["sacct"] += 1
        raise PartialLookup(self._sacct_error(), queued)

    def _sacct_error(self) -> str:
        """sacct's error: on a site without accounting (``sacct_ok`` False), or slurmdbd down."""
        if not self.sacct_ok:
            return "sacct failed: sacct: error: Slurm accounting storage is disabled"
        return "sacct failed: slurmdbd not reachable"

    def _in_queue(self, sid: str, base: str) -> bool:
        return slurm_parse.array_id(sid) == base and slurm_parse.map_state(self.states[sid]) in ACTIVE

    def live(self, ids: Sequence[str]) -> dict[str, JobInfo]:
        """squeue's view of ``ids`` (``squeue_states`` where set): one call."""
        self.last_error = ""
        return {sid: info.job_info() for sid, info in self._squeue(list(ids)).items()}

    def add_foreign(self, n: int, names: Sequence[str] = (), user: str = "other") -> None:
        """``n`` jobs of other users (the first ones named ``names``): the busy cluster around us."""
        for i in range(n):
            sid = str(self.next_id)
            self.next_id += 1
            self.foreign.append((sid, names[i] if i < len(names) else f"job{i}", user))
            self.states[sid] = "RUNNING" if i % 3 else "PENDING"

    def set_state(self, slurm_ids: Sequence[str], state: str) -> None:
        for sid in slurm_ids:
            self.states[sid] = state

    def query(self, slurm_ids: Sequence[str]) -> dict[str, JobInfo]:
        """As ``SlurmBackend.query``: one sacct for the ids; one squeue for the ids it lacks
        (``lag``) or for all of them when sacct fails (``sacct_ok``, ``failing``)."""
        return {sid: info.job_info() for sid, info in self._sacct(slurm_ids).items()}

    def _sacct(self, slurm_ids: Sequence[str]) -> dict[str, SlurmInfo]:
        self.last_error, self.last_queue_ok = "", False
        if not slurm_ids:
            return {}
        self.calls["sacct"] += 1
        if not self.sacct_ok or "sacct" in self.failing:
            self.last_error = self._sacct_error()
            self.last_source = "squeue"
            return self._squeue(slurm_ids)
        self.last_source = "sacct"
        lines = []
        for s in slurm_ids:
            state = self.states.get(s)
            if state is not None and s not in self.lag:
                node = "localhost" if state != "PENDING" else "None assigned"
                lines.append(f"{s}|{state}|0:0|00:01:00|{node}|{self.reasons.get(s, 'None')}|{self.tres}|60")
        infos = slurm_parse.parse_sacct("\n".join(lines))
        return slurm_parse.with_queue(slurm_ids, infos, self._squeue)

    def _squeue(self, slurm_ids: Sequence[str]) -> dict[str, SlurmInfo]:
        self.calls["squeue"] += 1
        if "squeue" in self.failing:
            self.last_error = "; ".join(e for e in (self.last_error, "squeue failed: rate limit") if e)
            return {}
        self.last_queue_ok = True
        view = {**self.states, **self.squeue_states}
        text = "\n".join(f"{s}|{view[s]}|0:01|localhost|{self.reasons.get(s, 'None')}" for s in slurm_ids if s in view)
        return slurm_parse.parse_squeue(text)

    def requeue(self, slurm_ids: Sequence[str]) -> None:
        """As ``scontrol requeue``: each running id is queued again under the same id."""
        self.calls["scontrol"] += 1
        for sid in slurm_ids:
            if self.states.get(sid) == "RUNNING":
                self.states[sid] = "PENDING"

    def cancel(self, slurm_ids: Sequence[str]) -> None:
        self.calls["scancel"] += 1
        for sid in slurm_ids:
            targets = [s for s in self.states if s == sid or slurm_parse.array_id(s) == sid]
            for t in targets:
                if slurm_parse.map_state(self.states[t]) in ACTIVE:
                    self.states[t] = "CANCELLED"
