"""The scheduler inside ``simulate.SimSlurm``: tasks that wait, start, run and end on a virtual clock.

``Scheduler.step(seconds)`` moves the clock on; in between, events end a run at once. Each task
has its truth (``Task.phase``) and the words SLURM shows of it: ``states`` (sacct's view, shared
with ``FakeBackend.states``) and ``squeue_states`` (squeue's, where it differs: a requeue that
accounting has not caught up with). What it models:

- Starting: a pending task starts once every submission or task it waits for (``afterany``) has
  ended, its array has fewer than ``%K`` (``throttle``) tasks running, and a slot is free on a
  node that is up (``NODES``, ``Site.slots_per_node``; other users' jobs take slots too).
- Ending: a run lasts ``Site.run_s`` and completes, writing the ``job.json`` its ``JobSpec`` (or
  its dict form) names, as the job would (an aggregation job: the sweep's ``aggregated.json``,
  ``submit.aggregate.record_aggregated``). Events end it now instead: ``finish``, ``fail``,
  ``time_out`` (submitit requeues it ``Site.max_timeout_requeues`` times, then TIMEOUT),
  ``preempt`` (``PreemptMode=CANCEL``: PREEMPTED; ``REQUEUE``: pending again, sacct showing
  PREEMPTED a while), ``node_fail`` (the node is DOWN for a while; its tasks end NODE_FAIL or,
  with ``JobRequeue``, are requeued: squeue shows PENDING while sacct says NODE_FAIL for
  ``Site.requeue_lag_s``), ``launch`` (a start that shows ``CONFIGURING`` or ``POWER_UP_NODE``
  while its node boots, ``Site.boot_s``, then runs; or ``LAUNCH_FAILED`` for a few seconds, then
  SLURM requeues it). A training run writes its ``progress.json`` as it starts; ``hang`` stops it
  (no more progress, no end of its own) until ``unhang`` or ``requeue`` (``scontrol requeue``: queued
  again under its id, counted in ``Task.stall_requeues``).
- Accounting: a new task is in sacct only ``acct_lag_s`` after its submission.
- ``twice``: every submission of a job while another task of the same job (same user) was queued
  or running: what the coordinator must never do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fercluster.orchestration.submit.aggregate import record_aggregated
from fercluster.train.record import ProgressRecord, write_progress

NODES = ("n1", "n2", "n3")
EPOCH = 1_800_000_000.0  # the virtual clock's wall time at 0 (2027): fixed, so every run is the same


@dataclass(frozen=True)
class Site:
    """What one simulated cluster is like (fixed for a program)."""

    accounting: bool = True  # slurmdbd configured; False: sacct always fails, squeue answers alone
    max_array: int = 1001  # MaxArraySize
    max_submit_jobs: int | None = None  # QOS MaxSubmitJobsPerUser (array tasks count)
    requeue_on_node_fail: bool = True  # JobRequeue=1: SLURM requeues a job whose node failed
    preempt_requeue: bool = False  # PreemptMode=REQUEUE (else CANCEL: the job ends PREEMPTED)
    min_job_age_s: float = 300.0  # MinJobAge: how long squeue still shows an ended job
    slots_per_node: int = 2
    run_s: float = 100.0  # how long one run of a task takes
    requeue_lag_s: float = 5.0  # sacct shows how a requeued run ended this long after squeue shows it PENDING
    boot_s: float = 60.0  # a task started on a powered-down node shows CONFIGURING or POWER_UP_NODE this long
    max_timeout_requeues: int = 3  # submitit requeues a job that reached its time limit this often


@dataclass
class Task:
    """One task (an array element or a single job) and its life; ``phase`` is the truth."""

    sid: str
    base: str  # its submission's id
    name: str
    user: str
    kind: str  # train, aggregate, search
    job_id: str  # the fercluster job it runs ("" for the aggregation job and others' jobs)
    run_dir: str
    submitted: float
    after: tuple[str, ...] = ()
    throttle: int | None = None
    phase: str = "pending"  # pending, starting, running, ended
    word: str = "PENDING"  # SLURM's state word now
    exit_code: str = "0:0"
    node: str = ""
    started: float | None = None
    ends: float | None = None  # when the current run (or start) is over
    ended: float | None = None
    restarts: int = 0  # requeued by SLURM (node failure, pre-emption, time-out, failed launch)
    timeouts: int = 0
    hung: bool = False  # its run makes no progress (a DDP collective that never returns): it never ends by itself
    stall_requeues: int = 0  # ``scontrol requeue`` of it while it ran (``sweep --requeue-stalled``)

    @property
    def active(self) -> bool:
        return self.phase != "ended"


class Scheduler:
    """The tasks of every user, the clock, the nodes; ``states``/``squeue_states``: what SLURM shows."""

    def __init__(self, site: Site, states: dict[str, str], squeue_states: dict[str, str]) -> None:
        self.site = site
        self.states, self.squeue_states = states, squeue_states
        self.now = 0.0  # virtual seconds since EPOCH
        self.tasks: dict[str, Task] = {}  # in submission order
        self.down: dict[str, float] = {}  # node -> when it is back
        self.acct_lag_s = 0.0
        self.twice: list[str] = []
        self._acct: dict[str, tuple[float, str]] = {}  # sid -> (until, what sacct shows meanwhile; "": nothing)

    def time(self) -> float:
        return EPOCH + self.now

    def enqueue(self, base: str, ids: list[str], name: str, kind: str, args: tuple[Any, ...], user: str,
                after: tuple[str, ...], throttle: int | None) -> None:  # fmt: skip
        """A submission's tasks join the queue (``args``: one per task of a ``train`` array)."""
        for i, sid in enumerate(ids):
            job_id, run_dir = _job_of(args[i]) if kind == "train" else ("", _jobs_dir_of(args, kind))
            live = [o.sid for o in self.tasks.values() if job_id and o.job_id == job_id and o.user == user and o.active]
            if live:
                self.twice.append(f"job {job_id} submitted as {sid} while {live[0]} is {self.tasks[live[0]].word}")
            self.tasks[sid] = Task(sid, base, name, user, kind, job_id, run_dir, self.now, after, throttle)
            self.states[sid] = "PENDING"
            if self.acct_lag_s:
                self._acct[sid] = (self.now + self.acct_lag_s, "")

    def in_queue(self, t: Task) -> bool:
        """Whether squeue shows ``t``: queued or running, or ended less than MinJobAge ago."""
        return t.active or (t.ended is not None and self.now - t.ended < self.site.min_job_age_s)

    def in_accounting(self, t: Task) -> bool:
        return self._acct.get(t.sid, (0.0, "-"))[1] != ""

    def queue_word(self, t: Task) -> str:
        return self.squeue_states.get(t.sid, t.word)

    # -- time --------------------------------------------------------------------------------
    def step(self, seconds: float) -> None:
        """Move the clock on by ``seconds``: runs end, sacct catches up, nodes return, tasks start."""
        end = self.now + seconds
        while True:
            self._tick()
            upcoming = [t.ends for t in self.tasks.values() if t.active and t.ends is not None]
            upcoming += [u for u, _ in self._acct.values()] + list(self.down.values())
            later = [u for u in upcoming if self.now < u <= end]
            if not later:
                break
            self.now = min(later)
        self.now = end
        self._tick()

    def idle(self, user: str) -> bool:
        """Nothing of ``user``'s is queued or running."""
        return not any(t.active for t in self.tasks.values() if t.user == user)

    def _tick(self) -> None:
        for sid, (until, _) in list(self._acct.items()):
            if until <= self.now:
                del self._acct[sid]
                self.states[sid] = self.tasks[sid].word
                self.squeue_states.pop(sid, None)
        self.down = {n: u for n, u in self.down.items() if u > self.now}
        for t in list(self.tasks.values()):
            if t.active and t.ends is not None and t.ends <= self.now:
                if t.phase == "running":
                    self.finish(t)
                elif t.word == "LAUNCH_FAILED":
                    self._requeue(t, "")
                else:
                    self._run(t)
        for t in self.ready():
            node = self._node_for(t)
            if node:  # the tasks started before it may have taken the slot
                t.node, t.started = node, self.now
                self._run(t)

    def _run(self, t: Task) -> None:
        """``t`` runs now: a training job writes its ``progress.json`` as it starts (as the job does)."""
        self._set(t, "RUNNING", "running", ends=self.now + self.site.run_s)
        if t.kind == "train" and t.run_dir:
            rec = ProgressRecord(t.job_id, "running", 0, 100, sec_per_iter=1.0, updated=self.time())
            Path(t.run_dir).mkdir(parents=True, exist_ok=True)
            write_progress(t.run_dir, rec)

    def ready(self) -> list[Task]:
        """The pending tasks that could start now (dependencies ended, throttle and a slot free)."""
        return [t for t in self.tasks.values() if t.phase == "pending" and self._node_for(t)]

    def running(self, user: str) -> list[Task]:
        return [t for t in self.tasks.values() if t.phase == "running" and t.user == user]

    def _node_for(self, t: Task) -> str:
        """The node ``t`` would start on now ("" when it cannot start)."""
        if t.after and any(d.active for d in self.tasks.values() if d.sid in t.after or d.base in t.after):
            return ""
        busy = [s for s in self.tasks.values() if s.phase in ("starting", "running")]
        if t.throttle is not None and sum(s.base == t.base for s in busy) >= t.throttle:
            return ""
        nodes = [s.node for s in busy]
        free = [n for n in NODES if n not in self.down and nodes.count(n) < self.site.slots_per_node]
        return free[0] if free else ""

    # -- events ------------------------------------------------------------------------------
    def finish(self, t: Task) -> None:
        """``t``'s run ends now, complete: the job wrote its ``job.json`` before it exited (an
        aggregation job: ``aggregated.json``)."""
        if t.kind == "aggregate" and t.run_dir:
            record_aggregated(Path(t.run_dir), t.sid)
        elif t.run_dir:
            run = Path(t.run_dir)
            run.mkdir(parents=True, exist_ok=True)
            record = {"job_id": t.job_id, "status": "completed", "val_acc": 0.5, "test_acc": 0.6}
            (run / "job.json").write_text(json.dumps(record))
        self._end(t, "COMPLETED", "0:0")

    def hang(self, t: Task) -> None:
        """``t``'s run stops making progress: it writes nothing more and never ends by itself."""
        t.hung, t.ends = True, None

    def unhang(self, t: Task) -> None:
        """``t``'s run moves again (and ends, complete, ``run_s`` later)."""
        if t.hung and t.phase == "running":
            t.hung, t.ends = False, self.now + self.site.run_s

    def requeue(self, t: Task) -> None:
        """``scontrol requeue``: a running ``t`` is queued again under its id (it restarts from its checkpoint)."""
        if t.phase in ("starting", "running"):
            t.stall_requeues += 1
            t.hung = False
            self._requeue(t, "")

    def fail(self, t: Task) -> None:
        self._end(t, "FAILED", "1:0")

    def cancel(self, t: Task) -> None:
        self._end(t, "CANCELLED", "0:15")

    def time_out(self, t: Task) -> None:
        """``t`` reaches its time limit: submitit requeues it (USR2, checkpoint) until it may not."""
        if t.timeouts < self.site.max_timeout_requeues:
            t.timeouts += 1
            self._requeue(t, "")
        else:
            self._end(t, "TIMEOUT", "0:0")

    def preempt(self, t: Task) -> None:
        if self.site.preempt_requeue:
            self._requeue(t, "PREEMPTED")
        else:
            self._end(t, "PREEMPTED", "0:15")

    def node_fail(self, node: str, down_s: float = 300.0) -> None:
        """``node`` goes DOWN for ``down_s``: its tasks end NODE_FAIL, or SLURM requeues them."""
        self.down[node] = self.now + down_s
        for t in [t for t in self.tasks.values() if t.node == node and t.phase in ("starting", "running")]:
            if self.site.requeue_on_node_fail:
                self._requeue(t, "NODE_FAIL")
            else:
                self._end(t, "NODE_FAIL", "0:0")

    def launch(self, t: Task, word: str) -> None:
        """``t`` gets a node now and shows ``word``: CONFIGURING or POWER_UP_NODE while the node boots
        (then it runs), LAUNCH_FAILED for ``requeue_lag_s`` (then SLURM requeues it)."""
        node = self._node_for(t)
        if node and t.phase == "pending":
            t.node, t.started = node, self.now
            wait = self.site.requeue_lag_s if word == "LAUNCH_FAILED" else self.site.boot_s
            self._set(t, word, "starting", ends=self.now + wait)

    def _requeue(self, t: Task, acct_word: str) -> None:
        """SLURM puts ``t`` back in the queue; sacct shows ``acct_word`` (how the run ended) a while."""
        t.restarts += 1
        t.node, t.started = "", None
        self._set(t, "PENDING", "pending", ends=None)
        if acct_word:
            self._acct[t.sid] = (self.now + self.site.requeue_lag_s, acct_word)
            self.states[t.sid] = acct_word
            self.squeue_states[t.sid] = "PENDING"

    def _end(self, t: Task, word: str, exit_code: str) -> None:
        t.exit_code, t.ended = exit_code, self.now
        self._set(t, word, "ended", ends=None)

    def _set(self, t: Task, word: str, phase: str, ends: float | None) -> None:
        t.word, t.phase, t.ends = word, phase, ends
        self.squeue_states.pop(t.sid, None)
        if self._acct.get(t.sid, (0.0, "-"))[1]:  # in accounting (a lag of a requeue ends): sacct sees it now
            self._acct.pop(t.sid, None)
            self.states[t.sid] = word


def _jobs_dir_of(args: tuple[Any, ...], kind: str) -> str:
    """The sweep's jobs folder, from an aggregation job's config (a dict); "" for other jobs."""
    cfg = args[0] if kind == "aggregate" and args and isinstance(args[0], dict) else {}
    jobs = cfg.get("paths", {}).get("jobs")
    return str(Path(jobs) / cfg["name"]) if jobs and cfg.get("name") else ""


def _job_of(arg: Any) -> tuple[str, str]:
    """(job id, run dir) of a submitted arg: a ``JobSpec``, or its dict form (older code snapshot)."""
    if isinstance(arg, dict):
        return str(arg.get("job_id", "")), str(arg.get("run_dir", ""))
    return str(getattr(arg, "job_id", "")), str(getattr(arg, "run_dir", ""))
