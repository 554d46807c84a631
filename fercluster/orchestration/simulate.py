"""A model of SLURM for the simulation test: ``SimSlurm``, a ``FakeBackend`` whose jobs run.

What ``FakeBackend`` answers from states set by hand, this one derives from a scheduler
(``scheduler_model.Scheduler``: a virtual clock, tasks that wait, start, run and end, node
failures, requeues, pre-emption, time-outs; see its docstring). This module is SLURM's command
line as the coordinator meets it (``tests/orchestration/test_simulation.py`` drives both):

- sbatch: an array per ``train`` submission (``%K`` throttle, ``afterany``), a single job
  otherwise; ``sbatch_faults`` (``refuse``, ``timeout`` before or ``lost`` after submitting),
  ``crash_after_sbatch``, QOS ``MaxSubmitJobsPerUser`` counting array tasks (``SubmitLimit``),
  ``MaxArraySize``.
- sacct: off where the site has no accounting (``Site.accounting``), down in an outage
  (``failing``: ``sacct``), lagging behind new jobs (``Scheduler.acct_lag_s``) and behind SLURM's
  requeues; then squeue answers for the ids it lacks.
- squeue (``--me``): this user's tasks, an ended one for ``Site.min_job_age_s``; down with
  ``squeue``; ``find`` is squeue then ``sacct -u`` (other users' jobs of the same name, from
  ``add_twin``, are never found).
- scontrol requeue (``sweep --requeue-stalled``): a running task is queued again under its id.
- a slurmctld outage (``failing``: ``slurmctld``): sbatch (refused: it cannot connect), squeue,
  scontrol and scancel fail; ``refuse_queries``: the next n queries fail (a rate limit).
- ``on_call``: a hook run once as a command starts (a second coordinator on another login node,
  ``tests/orchestration/sim_harness.py``); ``guard``: asked before every sbatch (does this host
  hold the lock?); ``log``: every command with the ids or job names it
  named, the time and the host; ``origins``: the host of each submission; ``violations``: what
  SLURM would have refused (scancel of another user's job) and what ``guard`` objected to.

Not modelled: the submitted callables (nothing is unpickled or run: a completed task writes the
job's ``job.json``, a completed aggregation job ``aggregated.json``, nothing else), a job's own requeue on USR2 beyond time-outs, accounting
records that disappear (an array task cancelled while pending keeps its CANCELLED record),
partitions and priorities (tasks start in submission order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from fercluster.errors import SlurmError
from fercluster.orchestration.backend import (
    JobInfo,
    PartialLookup,
    Resources,
    Submission,
    SubmitLimit,
    SubmitRefused,
    Submitted,
)
from fercluster.orchestration.fake import FakeBackend, Sent
from fercluster.orchestration.scheduler_model import Scheduler, Site, Task
from fercluster.orchestration.slurm import parse as slurm_parse
from fercluster.orchestration.slurm.parse import SlurmInfo
from fercluster.orchestration.slurm.resources import submission_parameters

CTLD = {"sbatch", "squeue", "scontrol", "scancel"}  # what a slurmctld outage stops (sacct asks slurmdbd)


@dataclass(frozen=True)
class Call:
    """One command as it was run: its name, the ids or job names it named, when, from which host."""

    command: str  # sbatch, sacct, squeue, find (squeue/sacct by name), scontrol, scancel
    named: tuple[str, ...]
    at: float
    host: str


class SimSlurm(FakeBackend):
    """``FakeBackend`` whose submissions become tasks of ``sched``, a scheduler on a virtual clock."""

    def __init__(self, site: Site = Site()) -> None:
        super().__init__(max_array=site.max_array)
        self.site = site
        self.sched = Scheduler(site, self.states, self.squeue_states)
        self.sacct_ok = site.accounting
        self.max_submit_jobs = site.max_submit_jobs
        self.log: list[Call] = []
        self.host = "login1"  # the login node running commands now (a second coordinator sets its own)
        self.origins: list[str] = []  # per entry of ``submitted``: the host whose sbatch it was
        self.refuse_queries = 0  # the next this many queries fail (a rate limit)
        self.on_call: dict[str, Callable[[], None]] = {}  # command -> a hook run once, as it starts
        self.guard: Callable[[], str] | None = None  # asked at each sbatch: why it should not happen ("": fine)
        self.violations: list[str] = []
        self.refused: set[str] = set()  # job names of submissions sbatch refused for sure (nothing went in)
        self.unanswered: set[str] = set()  # ids of submissions that went in while their sbatch gave no id back

    def mine(self) -> list[Task]:
        return [t for t in self.sched.tasks.values() if t.user == self.user]

    # -- sbatch ------------------------------------------------------------------------------
    def submit(self, submission: Submission) -> Submitted:
        self.calls["sbatch"] += 1
        self._note("sbatch", (submission.name,))
        wrong = self.guard() if self.guard is not None else ""
        if wrong:
            self.violations.append(f"sbatch of {submission.name} from {self.host}: {wrong}")
        fault = self.sbatch_faults.pop(0) if self.sbatch_faults else ""
        if fault == "timeout":
            raise SlurmError(f"sbatch for {submission.name} did not answer")
        refusal = self._refusal(submission, fault)
        if refusal is not None:
            self.refused.add(submission.name)
            raise refusal
        ids = self._enqueue(submission, self.user)
        self.submitted.append(Sent(submission, tuple(ids), submission_parameters(submission)))
        self.origins.append(self.host)
        if self.crash_after_sbatch or fault == "lost":
            self.unanswered.add(slurm_parse.array_id(ids[0]))
        if self.crash_after_sbatch:
            self.crash_after_sbatch = False
            raise KeyboardInterrupt("simulated crash between sbatch and recording the job id")
        if fault == "lost":
            raise SlurmError(f"sbatch for {submission.name}: Socket timed out on send/recv operation")
        return Submitted(slurm_parse.array_id(ids[0]), tuple(ids))

    def _refusal(self, submission: Submission, fault: str) -> SlurmError | None:
        """What sbatch answers with an error (nothing goes in); None when it takes the submission."""
        say = f"sbatch failed for {submission.name}: sbatch: error:"
        if "sbatch" in self._failing():
            return SubmitRefused(f"{say} Batch job submission failed: Unable to contact slurm controller")
        if fault == "refuse":
            return SubmitRefused(f"{say} Invalid account or partition")
        if submission.n_tasks > self.max_array:
            return SubmitRefused(f"{say} Batch job submission failed: Invalid job array specification")
        live = sum(1 for t in self.mine() if t.active)
        if self.max_submit_jobs is not None and live + submission.n_tasks > self.max_submit_jobs:
            limit = slurm_parse.submit_limit("QOSMaxSubmitJobPerUserLimit") or ""
            return SubmitLimit(f"{say} QOSMaxSubmitJobPerUserLimit", limit)
        return None

    def _enqueue(self, submission: Submission, user: str) -> list[str]:
        base = str(self.next_id)
        self.next_id += 1
        ids = slurm_parse.task_ids(base, submission.n_tasks)
        res = submission.resources
        self.sched.enqueue(base, ids, submission.name, submission.kind, submission.args, user, submission.after,
                           res.throttle)  # fmt: skip
        if user == self.user:
            self.names[submission.name] = base
        return ids

    def max_tasks(self) -> int:
        self.calls["scontrol"] += 1
        self._note("scontrol", ())
        if "scontrol" in self._failing():
            raise SlurmError("scontrol show config failed: Unable to contact slurm controller")
        return self.max_array

    # -- queries -----------------------------------------------------------------------------
    def find(self, names: Sequence[str]) -> dict[str, str]:
        """squeue ``--me --name``, then ``sacct -u me --name`` for the rest (the newest of each name)."""
        self.calls["squeue"] += 1
        self._note("find", tuple(names))
        if self.lookup_error or not self._answers("squeue"):
            raise SlurmError(self.lookup_error or "squeue failed: Socket timed out on send/recv operation")
        mine = [t for t in self.mine() if t.name in names]
        queued = _newest(t for t in mine if self.sched.in_queue(t))
        if len(queued) == len(names):
            return queued
        self.calls["sacct"] += 1
        if not self._answers("sacct"):
            raise PartialLookup(self._sacct_error(), queued)
        return {**_newest(t for t in mine if self.sched.in_accounting(t)), **queued}

    def live(self, ids: Sequence[str]) -> dict[str, JobInfo]:
        self.last_error = ""
        infos = self._squeue(list(ids))
        if self.last_error:
            raise SlurmError(self.last_error)
        return {sid: info.job_info() for sid, info in infos.items()}

    def _sacct(self, slurm_ids: Sequence[str]) -> dict[str, SlurmInfo]:
        self.last_error, self.last_queue_ok = "", False
        if not slurm_ids:
            return {}
        self.calls["sacct"] += 1
        self._note("sacct", tuple(slurm_ids))
        if not self._answers("sacct"):
            self.last_error = self._sacct_error()
            self.last_source = "squeue"
            return self._squeue(slurm_ids)
        self.last_source = "sacct"
        lines = []
        for t in self._named(slurm_ids):
            if self.sched.in_accounting(t):
                lines.append(f"{t.sid}|{self.states[t.sid]}|{t.exit_code}|{self._elapsed(t)}|"
                             f"{t.node or 'None assigned'}|None|{self.tres}|{self._secs(t)}")  # fmt: skip
        infos = slurm_parse.parse_sacct("\n".join(lines))
        return slurm_parse.with_queue(slurm_ids, infos, self._squeue)

    def _squeue(self, slurm_ids: Sequence[str]) -> dict[str, SlurmInfo]:
        if not slurm_ids:
            return {}
        self.calls["squeue"] += 1
        self._note("squeue", tuple(slurm_ids))
        if not self._answers("squeue"):
            self.last_error = "; ".join(e for e in (self.last_error, "squeue failed: Socket timed out") if e)
            return {}
        self.last_queue_ok = True
        rows = [t for t in self._named(slurm_ids) if self.sched.in_queue(t)]
        text = "\n".join(f"{t.sid}|{self.sched.queue_word(t)}|{self._elapsed(t)}|{t.node}|None" for t in rows)
        return slurm_parse.parse_squeue(text)

    def _named(self, ids: Sequence[str]) -> list[Task]:
        """This user's tasks that ``ids`` name (a task id, or a submission's id for all its tasks)."""
        wanted = set(ids)
        return [t for t in self.mine() if t.sid in wanted or t.base in wanted]

    def _answers(self, command: str) -> bool:
        """Whether this query gets an answer (not down, accounting on, not rate-limited)."""
        if command in self._failing() or (command == "sacct" and not self.sacct_ok):
            return False
        if self.refuse_queries:
            self.refuse_queries -= 1
            return False
        return True

    def _failing(self) -> set[str]:
        return self.failing | (CTLD if "slurmctld" in self.failing else set())

    def _note(self, command: str, named: tuple[str, ...]) -> None:
        self.log.append(Call(command, named, self.sched.now, self.host))
        hook = self.on_call.pop(command, None)
        if hook is not None:
            hook()

    def _secs(self, t: Task) -> int:
        """The run's time so far (or its length, ended), in seconds."""
        return int((t.ended or self.sched.now) - t.started) if t.started is not None else 0

    def _elapsed(self, t: Task) -> str:
        """``_secs`` as sacct's Elapsed and squeue's %M print it."""
        secs = self._secs(t)
        return f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"

    # -- scontrol requeue, scancel -----------------------------------------------------------
    def _control(self, command: str, slurm_ids: Sequence[str], what: str) -> None:
        """Count and log a controller command; ``SlurmError`` in a slurmctld outage."""
        self.calls[command] += 1
        self._note(command, tuple(slurm_ids))
        if command in self._failing():
            raise SlurmError(f"{what} failed: Unable to contact slurm controller")

    def requeue(self, slurm_ids: Sequence[str]) -> None:
        """``scontrol requeue``: each running task of ours among ``slurm_ids`` is queued again, same id."""
        self._control("scontrol", slurm_ids, "scontrol requeue")
        wanted = set(slurm_ids)
        for t in [t for t in self.sched.tasks.values() if t.sid in wanted and t.user == self.user]:
            self.sched.requeue(t)

    def cancel(self, slurm_ids: Sequence[str]) -> None:
        self._control("scancel", slurm_ids, "scancel")
        wanted = set(slurm_ids)
        for t in list(self.sched.tasks.values()):
            if t.active and (t.sid in wanted or t.base in wanted):
                if t.user != self.user:
                    self.violations.append(f"scancel {t.sid} of user {t.user}")
                    continue  # SLURM refuses: not ours
                self.sched.cancel(t)

    def set_state(self, slurm_ids: Sequence[str], state: str) -> None:
        raise NotImplementedError("SimSlurm's states come from its scheduler: use its events (sched.fail, ...)")

    # -- other users -------------------------------------------------------------------------
    def add_foreign(self, n: int, names: Sequence[str] = (), user: str = "other") -> None:
        for i in range(n):
            self.add_twin(names[i] if i < len(names) else f"job{i}", user)

    def add_twin(self, name: str, user: str = "other") -> str:
        """A job of another user named ``name`` (one of ours: a colleague runs the same sweep)."""
        sid = self._enqueue(Submission(name, "search", print, (), Resources()), user)[0]
        self.foreign.append((sid, name, user))
        return sid


def _newest(tasks: Iterable[Task]) -> dict[str, str]:
    out: dict[str, str] = {}
    for t in tasks:
        if t.name not in out or int(t.base) > int(out[t.name]):
            out[t.name] = t.base
    return out
