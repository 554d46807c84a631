"""The coordinator against a model of SLURM, by deterministic simulation (issue 18).

``SweepMachine`` is a Hypothesis ``RuleBasedStateMachine``. A program is a site
(``scheduler_model.Site``: accounting or not, MaxArraySize, MaxSubmitJobsPerUser, requeue on node
failure, PreemptMode; and the sweep's ``array_parallelism`` and ``max_retries``) and a sequence of
steps: user actions (``sweep``, ``retry_failed``, ``prune`` and ``requeue_stalled``: ``sweep`` with those flags;
``status``, ``cancel``, ``edit_grid``; a second login node's sweep, one that takes the lock over
from a frozen holder, two racing for a claim a crashed login node left), scheduler events (``advance`` the clock, ``end_run``
with finish/fail/time-out/pre-emption, ``node_fail``, ``launch`` showing odd state words, ``hang``: a
run that stops making progress) and faults
(``sbatch_fault``, ``outage`` of slurmdbd, slurmctld or squeue, ``rate_limit``, ``accounting_lag``,
``twin``: another user's job of one of our names). After every step (``invariants``):

- no job is ever queued or running in two submissions at once (checked at each sbatch);
- retries and requeues are counted exactly: each job's recorded SLURM ids are the model's tasks of
  that job, in order, and its retries and requeues are those of them that followed a failure and a
  pre-emption, plus the ``scontrol requeue`` of its stalled runs (so a retry always runs something
  new, and no completed job is submitted again);
- ``sweep --requeue-stalled`` requeues only hung runs, and every run hung past ``slurm.stall_min``
  when SLURM answers;
- after a sweep that submitted all it meant to, every queued or running training job of the sweep
  has an aggregation job waiting after it (afterany), on ``slurm.aggregate``'s resources;
- no cluster-wide query: every sacct, squeue and scancel names this user's ids, every lookup by
  name names this sweep's job names;
- ``status`` answers, whatever is down (its rule);
- another user's job is never cancelled; a second login node never submits while a live holder
  has the lock.

``teardown`` heals: the faults stop (the site stays as it is), then at most ``HEAL_ROUNDS`` plain
sweeps, each followed by the cluster running until idle, must leave every job COMPLETED or ended
badly where the model ended it badly, with no pending record and an aggregation job that ran after
the last training task; then ``--retry-failed`` rounds bring every job to COMPLETED or to its
retry limit. On failure Hypothesis prints the shortest program it found.

The ``test_repro_defect_*`` tests are the issue's reproductions as fixed programs (``play``).
CI runs ``CI_PROGRAMS`` programs (seconds); ``pytest -m slow tests/orchestration/test_simulation.py``
runs ``SLOW_PROGRAMS`` (``FERCLUSTER_SIM_PROGRAMS`` overrides both counts).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from orch_helpers import SWEEP_KW, make_config
from sim_harness import Hosts

from fercluster.errors import SlurmError
from fercluster.lock import LockBusy, LockError
from fercluster.orchestration.scheduler_model import Site, Task
from fercluster.orchestration.simulate import SimSlurm
from fercluster.orchestration.store.state import load_state, state_path
from fercluster.orchestration.store.vocabulary import CANCELLED, COMPLETED, ENDED_BADLY, FAILED, TIMEOUT
from fercluster.orchestration.submit.coordinator import SweepResult, run_sweep
from fercluster.orchestration.submit.plan import expand
from fercluster.orchestration.watch.status import cancel as cancel_sweep
from fercluster.orchestration.watch.status import snapshot

GRIDS = {  # the grid edits a program makes (4, 6 and 2 jobs; each shares jobs with the others)
    "base": [{"dataset": "ckplus", "folds": [0, 1], "variants": ["none", "AD"]}],
    "more": [{"dataset": "ckplus", "folds": [0, 1, 2], "variants": ["none", "AD"]}],
    "fewer": [{"dataset": "ckplus", "folds": [0], "variants": ["none", "AD"]}],
}
FINAL = (COMPLETED, FAILED, CANCELLED, TIMEOUT)  # where plain sweeps leave a job (PREEMPTED: they requeue it)
SKEWS = (-700.0, 0.0, 700.0)  # a login node's clock against the other's: beyond STALE_S and pending_bound_s
SITES = st.builds(
    Site,
    accounting=st.booleans(),
    max_array=st.sampled_from([1001, 2]),
    max_submit_jobs=st.sampled_from([None, 3]),
    requeue_on_node_fail=st.booleans(),
    preempt_requeue=st.booleans(),
)
AGGREGATE = {"partition": "cpu", "qos": "short", "time_min": 20}  # slurm.aggregate of the simulated sweep
HEAL_ROUNDS = 8
STALL_MIN = 10  # slurm.stall_min of the simulated sweep (a healthy run lasts Site.run_s, 100 s)
# What the simulation found that is not fixed yet: each is excused where it shows (``SweepMachine.gaps``),
# and has a test_gap_* reproduction below, marked xfail(strict): once it is fixed, remove it from here.
KNOWN_GAPS = frozenset({
    "unseen-run",  # no accounting: a lost sbatch whose array ran and left squeue before the next sweep
    # is taken as never submitted; its runs are not recorded (a failed job then reruns, no retry counted)
    "preempted-unseen",  # no accounting, PreemptMode=CANCEL: a pre-emption that left squeue before a sweep or
    # status heard of it ended unseen: FAILED, and its rerun (--retry-failed) counts as a retry, not a requeue
})  # fmt: skip
STEPS = 25  # steps per program
CI_PROGRAMS = 150
SLOW_PROGRAMS = 2000
STEPS_RUN: Counter[str] = Counter()  # rules run by the programs so far (test_simulation: every rule runs)
QUERIES_PER_ACTION = 6  # sacct, squeue and lookups one user action may run (one refresh, a lookup, one live)


def step(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A rule: ``ok`` is False until the invariants after it have passed (``teardown`` heals only then)."""

    @functools.wraps(fn)
    def run(self: SweepMachine, **kw: Any) -> Any:
        self.ok = False
        STEPS_RUN[fn.__name__] += 1
        return fn(self, **kw)

    return run


class SweepMachine(RuleBasedStateMachine):
    """One sweep, one simulated cluster, the user and the faults; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory(prefix="fc-sim-")
        self.root = Path(self._tmp.name)
        self._stack = contextlib.ExitStack()
        self.model: SimSlurm | None = None
        self.ok = False
        self.checked_calls = 0
        self.clean = False  # the last sweep submitted all it meant to: the aggregation job must be in place
        self.clean_planned: set[str] = set()  # the jobs that sweep saw in the config
        self.epoch: dict[str, int] = {}  # job id -> the first submission id of its current life (after a prune)
        self.cancelled_at = 0  # the first submission id after the user's last `cancel` of the whole sweep
        self.gaps = KNOWN_GAPS
        self.error: BaseException | None = None  # why the last sweep stopped
        self.requeued_unseen: set[str] = set()  # tasks in a requeue sacct had not caught up with at a clean sweep
        self.removed_seen: set[str] = set()

    # -- set-up ------------------------------------------------------------------------------
    @initialize(site=SITES, parallelism=st.sampled_from([4, 1]), max_retries=st.sampled_from([1, 2]))
    def start(self, site: Site, parallelism: int = 4, max_retries: int = 1) -> None:
        self.model = SimSlurm(site)
        self.hosts = Hosts(self.model)
        self._stack.enter_context(self.hosts.patched())
        self.slurm = {"array_parallelism": parallelism, "max_retries": max_retries, "code": "live", "partition": "gpu",
                      "aggregate": AGGREGATE, "stall_min": STALL_MIN}  # fmt: skip
        self.cfg = make_config(self.root, grid=GRIDS["base"], slurm=self.slurm)
        self.model.add_foreign(2)  # a busy cluster: two other users' jobs take slots
        self.ok = True

    def teardown(self) -> None:
        try:
            if self.ok and self.model is not None:
                self._heal()
        finally:
            self._stack.close()
            self._tmp.cleanup()

    # -- user actions ------------------------------------------------------------------------
    @rule()
    @step
    def sweep(self) -> None:
        self._sweep("")

    @rule()
    @step
    def retry_failed(self) -> None:
        self._sweep("--retry-failed")

    @rule()
    @step
    def requeue_stalled(self) -> None:
        """``sweep --requeue-stalled``: what has made no progress for ``slurm.stall_min`` is requeued
        (same SLURM id, a requeue counted), and nothing else is."""
        hung = {t.sid for t in self.model.mine() if t.hung and t.phase == "running"}
        stalled = {t.sid for t in self.model.mine() if t.hung and t.phase == "running"
                   and self.model.sched.now - (t.started or 0.0) > 60 * STALL_MIN + 1}  # fmt: skip
        before = {t.sid: t.stall_requeues for t in self.model.mine()}
        calm = not self.model.failing and not self.model.refuse_queries  # SLURM answers every query
        result = self._sweep("--requeue-stalled")
        requeued = {t.sid for t in self.model.mine() if t.stall_requeues > before.get(t.sid, 0)}
        assert requeued <= hung, f"requeued {sorted(requeued - hung)}: not stalled"
        if calm and result is not None and not result.requeue_error:
            assert requeued >= stalled, f"stalled and not requeued: {sorted(stalled - requeued)}"

    @rule(flags=st.sampled_from(["--prune", "--retry-failed --prune"]))
    @step
    def prune(self, flags: str) -> None:
        self._sweep(flags)

    @rule()
    @step
    def status(self) -> None:
        """``status`` answers whatever is down, with a row per planned job, and changes nothing."""
        sent = (self.model.calls["sbatch"], self.model.calls["scancel"])
        snap = snapshot(self.cfg, self.model)
        assert sum(snap.counts.values()) == len(self._planned()), snap.counts
        assert (self.model.calls["sbatch"], self.model.calls["scancel"]) == sent

    @rule(job=st.sampled_from([None, 0, 1, 2]))
    @step
    def cancel(self, job: int | None = None) -> None:
        """``cancel`` (the sweep, or its ``job``-th job); afterwards nothing of what it cancelled runs."""
        which = self._planned()[job % len(self._planned())] if job is not None else None
        lagging = set(self.model.squeue_states) if "cancel-requeued" in self.gaps else set()
        try:
            cancel_sweep(self.cfg, self.model, which)
        except SlurmError:
            return  # scancel did not answer: one line, nothing else changed
        if which is None:
            self.cancelled_at = self.model.next_id
        self.requeued_unseen |= lagging  # (the gap) left running, with no aggregation job after them
        if which is None and not load_state(self.cfg.jobs_dir, self.cfg.name).pending:
            ours = [t for t in self.model.mine() if t.name.startswith(f"fc-{self.cfg.name}-") and t.sid not in lagging]
            live = [t.sid for t in ours if t.active]
            assert not live, f"cancel left {live} queued or running"

    @rule(grid=st.sampled_from(sorted(GRIDS)))
    @step
    def edit_grid(self, grid: str) -> None:
        self.cfg = make_config(self.root, grid=GRIDS[grid], slurm=self.slurm)

    # -- login nodes sharing the jobs folder -------------------------------------------------
    @rule(skew_s=st.sampled_from(SKEWS))
    @step
    def second_login_node(self, skew_s: float) -> None:
        """During our sweep's first sbatch a sweep starts on login2 (its clock ``skew_s`` ahead of
        ours): ours is alive (its heartbeat beats), so login2's waits, gives up and submits nothing."""

        def rival() -> None:
            sent = len(self.model.submitted)
            outcome = self._rival(skew_s)
            assert outcome == "busy" and len(self.model.submitted) == sent, f"login2's sweep {outcome} beside ours"

        self.model.on_call["sbatch"] = rival
        try:
            self._sweep("")
        finally:
            self.model.on_call.clear()

    @rule(skew_s=st.sampled_from(SKEWS))
    @step
    def frozen_holder(self, skew_s: float) -> None:
        """Our sweep freezes in its first query (no heartbeat) for longer than STALE_S: a sweep on
        login2 takes the claim over and runs; ours must then submit nothing (fencing)."""

        theirs: list[bytes] = []

        def rival() -> None:
            self.model.on_call.clear()
            self.hosts.stalled.add("login1")
            try:
                self._rival(skew_s)
            finally:
                self.hosts.stalled.discard("login1")
            path = state_path(self.cfg.jobs_dir)
            theirs.append(path.read_bytes() if path.exists() else b"")

        self.model.on_call.update(sacct=rival, scontrol=rival)
        try:
            self._sweep("")
        finally:
            self.model.on_call.clear()
        if theirs and "fenced-overwrite" in self.gaps:  # (the gap) ours wrote after losing the claim:
            path = state_path(self.cfg.jobs_dir)  # what login2 recorded, back
            path.write_bytes(theirs[0]) if theirs[0] else path.unlink(missing_ok=True)

    @rule()
    @step
    def takeover_race(self) -> None:
        """login3 died holding the claim. Our sweep finds it stale and, between that check and its
        takeover, login2 takes it over and holds it; login2's sweep runs in our first sbatch if ours
        got in too (else after ours gave up). Only the holder may submit."""
        claim = self.cfg.jobs_dir / ".claim"
        if claim.exists():
            return
        claim.parent.mkdir(parents=True, exist_ok=True)
        dead = {"pid": 4242, "host": "login3", "started": "2027-01-15T08:00:00+00:00", "token": "dead", "beat": 3}
        claim.write_text(json.dumps(dead) + "\n")
        ran: list[str] = []
        with contextlib.ExitStack() as login2:

            def login2_takes_it() -> None:
                login2.enter_context(self.hosts.holding("login2", self.cfg.jobs_dir))
                self.model.on_call["sbatch"] = lambda: ran.append(self._rival(0.0))

            self.hosts.on_take_over = login2_takes_it
            try:
                self._sweep("")
            finally:
                self.model.on_call.clear()
                self.hosts.on_take_over = None
            if "login2" in self.hosts.held and not ran:
                self._rival(0.0)

    def _rival(self, skew_s: float) -> str:
        """A sweep on login2: "ran", "busy" (it gave up waiting for the lock) or "failed" (one line)."""
        with self.hosts.as_host("login2", skew_s):
            try:
                run_sweep(self.cfg, self.model, **SWEEP_KW)
            except LockBusy:
                return "busy"
            except (SlurmError, LockError, KeyboardInterrupt):
                return "failed"
        return "ran"

    # -- scheduler events --------------------------------------------------------------------
    @rule(seconds=st.sampled_from([10.0, 60.0, 300.0, 900.0]))
    @step
    def advance(self, seconds: float) -> None:
        self.model.sched.step(seconds)

    @rule(i=st.integers(0, 7), end=st.sampled_from(["finish", "fail", "time_out", "preempt"]))
    @step
    def end_run(self, i: int, end: str) -> None:
        """The ``i``-th running task of ours ends now: ``end`` (``time_out``: submitit requeues it)."""
        running = self.model.sched.running(self.model.user)
        if running:
            getattr(self.model.sched, end)(running[i % len(running)])

    @rule(i=st.integers(0, 7))
    @step
    def hang(self, i: int) -> None:
        """Our ``i``-th running training task stops making progress (it never ends by itself)."""
        running = [t for t in self.model.sched.running(self.model.user) if t.kind == "train"]
        if running:
            self.model.sched.hang(running[i % len(running)])

    @rule(i=st.integers(0, 7))
    @step
    def node_fail(self, i: int) -> None:
        """The node of our ``i``-th running task fails (every task on it: requeued or NODE_FAIL)."""
        running = self.model.sched.running(self.model.user)
        if running:
            self.model.sched.node_fail(running[i % len(running)].node)

    @rule(i=st.integers(0, 7), word=st.sampled_from(["CONFIGURING", "POWER_UP_NODE", "LAUNCH_FAILED"]))
    @step
    def launch(self, i: int, word: str) -> None:
        """The ``i``-th of our tasks that can start starts showing ``word`` (LAUNCH_FAILED: SLURM requeues it)."""
        ready = [t for t in self.model.sched.ready() if t.user == self.model.user]
        if ready:
            self.model.sched.launch(ready[i % len(ready)], word)

    # -- faults ------------------------------------------------------------------------------
    @rule(fault=st.sampled_from(["refuse", "timeout", "lost", "crash"]), skip=st.integers(0, 2))
    @step
    def sbatch_fault(self, fault: str, skip: int = 0) -> None:
        """The sbatch after the next ``skip`` ones is refused, times out before submitting, loses
        its reply, or the sweep dies after it (``crash``: the next one)."""
        if fault == "crash":
            self.model.crash_after_sbatch = True
        else:
            self.model.sbatch_faults += [""] * skip + [fault]

    @rule(service=st.sampled_from(["slurmdbd", "slurmctld", "squeue"]), down=st.booleans())
    @step
    def outage(self, service: str, down: bool) -> None:
        name = "sacct" if service == "slurmdbd" else service
        (self.model.failing.add if down else self.model.failing.discard)(name)

    @rule(queries=st.integers(1, 3))
    @step
    def rate_limit(self, queries: int) -> None:
        self.model.refuse_queries = queries

    @rule(seconds=st.sampled_from([0.0, 90.0]))
    @step
    def accounting_lag(self, seconds: float) -> None:
        self.model.sched.acct_lag_s = seconds

    @rule(i=st.integers(0, 7))
    @step
    def twin(self, i: int) -> None:
        """Another user submits a job named as one of ours (or as a pending record of ours)."""
        names = sorted({t.name for t in self.model.mine()} | set(load_state(self.cfg.jobs_dir, self.cfg.name).pending))
        if names:
            self.model.add_twin(names[i % len(names)])

    # -- helpers -----------------------------------------------------------------------------
    def _sweep(self, flags: str) -> SweepResult | None:
        kw = {"retry_failed": "--retry-failed" in flags, "prune": "--prune" in flags,
              "requeue_stalled": "--requeue-stalled" in flags}  # fmt: skip
        self.clean, self.error = False, None
        lagging = set(self.model.squeue_states)
        try:
            result = run_sweep(self.cfg, self.model, **kw, **SWEEP_KW)
        except (SlurmError, LockError, KeyboardInterrupt) as exc:  # one line for the user (or the simulated crash)
            self.error = exc
            return None
        self.clean = not result.submit_error and not result.recovery_error
        self.clean_planned = set(self._planned())
        if self.clean and "aggregate-requeued" in self.gaps:
            self.requeued_unseen |= lagging
        return result

    def _planned(self) -> list[str]:
        return [s.job_id for s in expand(self.cfg)]

    def _attempts(self, job_id: str, recorded: tuple[str, ...] | None = None) -> list[Task]:
        """The model's runs of ``job_id`` in its current life; with ``recorded`` (the state's ids) and
        the "unseen-run" gap, without those of lost submissions the state could not know."""
        start = self.epoch.get(job_id, 0)
        tasks = [t for t in self.model.mine() if t.job_id == job_id and int(t.base) >= start]
        if recorded is not None and "unseen-run" in self.gaps and not self.model.site.accounting:
            tasks = [t for t in tasks if t.sid in recorded or t.base not in self.model.unanswered]
        return tasks

    def _unseen_preemptions(self) -> bool:
        """The "preempted-unseen" gap applies: no accounting, and pre-emption cancels."""
        site = self.model.site
        return "preempted-unseen" in self.gaps and not site.accounting and not site.preempt_requeue

    def _gone(self, job_id: str) -> bool:
        """The "unknown-forever" gap: without accounting, SLURM can no longer say how the job's last run ended."""
        last = self._attempts(job_id)[-1:]
        site, now = self.model.site, self.model.sched.now
        return (
            "unknown-forever" in self.gaps and not site.accounting and bool(last) and not last[0].active
            and now - (last[0].ended or 0.0) >= site.min_job_age_s
        )  # fmt: skip

    # -- invariants --------------------------------------------------------------------------
    @invariant()
    def invariants(self) -> None:
        self.check()

    def check(self) -> None:
        if self.model is None:
            return
        assert not self.model.sched.twice, self.model.sched.twice
        assert not self.model.violations, self.model.violations
        self._check_counts()
        pending = load_state(self.cfg.jobs_dir, self.cfg.name).pending
        assert not set(pending) & self.model.refused, f"pending records of refused sbatches: {sorted(pending)}"
        if self.clean:
            self._check_aggregate()
        self._check_queries()
        self.ok = True

    def _check_counts(self) -> None:
        """Each job's recorded ids are the model's tasks of it; retries and requeues counted exactly."""
        state = load_state(self.cfg.jobs_dir, self.cfg.name)
        for job_id in set(state.removed) - set(state.jobs) - self.removed_seen:  # pruned: a new life if re-added
            self.epoch[job_id] = self.model.next_id
        self.removed_seen = set(state.removed) - set(state.jobs)
        pending = {j for rec in state.pending.values() for j in rec.job_ids}
        for job_id in {t.job_id for t in self.model.mine() if t.job_id} | set(state.jobs):
            entry = state.jobs.get(job_id)
            recorded = entry.slurm_ids if entry else ()
            tasks = self._attempts(job_id, recorded)
            ids = tuple(t.sid for t in tasks)
            labels = [_label(prev) for prev in tasks[:-1]]
            assert "rerun" not in labels, f"job {job_id}: submitted again after it completed ({ids})"
            if job_id in pending:  # its latest submission may be in SLURM, not yet in the state
                assert ids[: len(recorded)] == recorded and len(ids) - len(recorded) <= 1, (job_id, recorded, ids)
                continue
            assert recorded == ids, f"job {job_id}: the state records {recorded}, SLURM ran it as {ids}"
            if entry is not None:
                got = (entry.retries, entry.requeues, entry.submissions)
                stalls = sum(t.stall_requeues for t in tasks)  # requeued under the same id: no new task
                want = (labels.count("retry"), labels.count("requeue") + stalls, len(ids))
                if self._unseen_preemptions():  # (the gap) a requeue may be counted as a retry
                    shift = want[1] - got[1]
                    want = (want[0] + shift, got[1], len(ids)) if 0 <= shift <= labels.count("requeue") else want
                assert got == want, f"job {job_id} ({ids}): (retries, requeues, submissions) {got}, expected {want}"

    def _check_aggregate(self) -> None:
        """Every queued or running training job of the sweep (as the last sweep saw its config: a job
        edited out of it is in no report) has an aggregation job waiting after it."""
        planned = self.clean_planned
        live = [t for t in self.model.mine() if t.kind == "train" and t.active and t.job_id in planned]
        waiting = [t for t in self.model.mine() if t.kind == "aggregate" and t.phase == "pending"]
        for t in [t for t in live if t.sid not in self.requeued_unseen]:
            assert any(t.base in a.after or t.sid in a.after for a in waiting), (
                f"{t.sid} ({t.word}) has no aggregation job after it; waiting: {[(a.sid, a.after) for a in waiting]}"
            )
        for a in waiting:
            params = next(s for s in self.model.submitted if s.ids[0] == a.sid).params
            asked = {k: params.get(k) for k in ("partition", "qos", "time", "gpus_per_node")}
            assert asked == {"partition": "cpu", "qos": "short", "time": 20, "gpus_per_node": None}, params

    def _check_queries(self) -> None:
        """No cluster-wide query: every command names ids (or job names) of ours; a few per action."""
        mine = {t.sid for t in self.model.mine()} | {t.base for t in self.model.mine()}
        calls = self.model.log[self.checked_calls :]
        for call in calls:
            if call.command in ("sacct", "squeue", "scancel") or (call.command == "scontrol" and call.named):
                assert call.named and set(call.named) <= mine, call
            if call.command == "find":
                assert call.named and all(n.startswith(f"fc-{self.cfg.name}-") for n in call.named), call
        per_host = {
            h: sum(c.command in ("sacct", "squeue", "find") for c in calls if c.host == h) for h in self.hosts.skew
        }
        assert all(n <= QUERIES_PER_ACTION for n in per_host.values()), per_host
        self.checked_calls = len(self.model.log)

    # -- healing -----------------------------------------------------------------------------
    def _heal(self) -> None:
        """The faults stop: plain sweeps bring every job to an end SLURM agrees with, then retries."""
        m = self.model
        m.sbatch_faults.clear()
        m.crash_after_sbatch, m.refuse_queries, m.sched.acct_lag_s = False, 0, 0.0
        m.failing.clear()
        for t in m.mine():  # hung runs move again
            m.sched.unhang(t)
        for _ in range(HEAL_ROUNDS):
            if self._settled():
                break
            self._round("")
        self._assert_settled()
        for _ in range(self.cfg.slurm.max_retries + 1):
            self._round("--retry-failed")
        state = load_state(self.cfg.jobs_dir, self.cfg.name)
        for row in snapshot(self.cfg, m).jobs:
            if row.state != COMPLETED and not self._gone(row.job_id):
                exhausted = state.jobs[row.job_id].retries >= self.cfg.slurm.max_retries
                assert row.state in ENDED_BADLY and exhausted, (row.job_id, row.state, row.reason)

    def _round(self, flags: str) -> None:
        """One sweep (it must not fail), then the cluster runs until nothing of ours is queued or running."""
        m = self.model
        result = self._sweep(flags)
        assert result is not None, "a sweep failed after the faults stopped"
        self.check()
        for _ in range(30):
            if m.sched.idle(m.user):
                break
            m.sched.step(600.0)
        m.sched.step(self.cfg.slurm.pending_bound_s)  # the user comes back later
        self.check()

    def _settled(self) -> bool:
        state = load_state(self.cfg.jobs_dir, self.cfg.name)
        rows = snapshot(self.cfg, self.model).jobs
        idle = self.model.sched.idle(self.model.user)
        final = all(r.state in FINAL or self._gone(r.job_id) for r in rows)
        return idle and not state.pending and final and not self._unreported()

    def _assert_settled(self) -> None:
        """No job lost: each COMPLETED, or ended badly where the model ended its last run badly; no
        pending record; an aggregation job ran after the last training task ended."""
        state = load_state(self.cfg.jobs_dir, self.cfg.name)
        assert not state.pending, f"pending records left: {sorted(state.pending)}"
        for row in snapshot(self.cfg, self.model).jobs:
            last = self._attempts(row.job_id)[-1:]
            assert (
                row.state == COMPLETED
                or self._gone(row.job_id)
                or (row.state in ENDED_BADLY and last and last[0].word not in ("COMPLETED", "PREEMPTED"))
                or (row.state == FAILED and last and last[0].word == "PREEMPTED" and self._unseen_preemptions())
            ), f"job {row.job_id} is {row.state} ({row.reason}); its runs: {[(t.sid, t.word) for t in last]}"
        for t, waited in self._unreported():
            raise AssertionError(
                f"no aggregation job ran after {t.sid} ended; after it: {[(a.sid, a.word) for a in waited]}"
            )

    def _unreported(self) -> list[tuple[Task, list[Task]]]:
        """Training runs no completed aggregation job started after (with the aggregation jobs that
        waited for them), the gap "report-missed" excused: each must be in a report once healed."""
        planned = set(self._planned())
        train = [t for t in self.model.mine() if t.kind == "train" and t.job_id in planned
                 and int(t.base) >= self.cancelled_at and t.sid not in self.requeued_unseen]  # fmt: skip
        aggs = [t for t in self.model.mine() if t.kind == "aggregate"]
        out = []
        for t in train:
            if any(a.word == "COMPLETED" and (a.started or 0.0) >= (t.ended or 0.0) for a in aggs):
                continue  # its results are in a report
            waited = [a for a in aggs if t.base in a.after or t.sid in a.after]
            # (the gap) none was queued after it, or the ones queued after it ended badly
            excused = "report-missed" in self.gaps and all(a.word not in ("COMPLETED", "CANCELLED") for a in waited)
            if not excused:
                out.append((t, waited))
        return out


def _label(prev: Task) -> str:
    """What the submission after ``prev`` (the job's run before it) is: a retry, a requeue, ..."""
    if prev.active:
        return "twice"
    if prev.word == "PREEMPTED":
        return "requeue"
    return "rerun" if prev.word == "COMPLETED" else "retry"


CI = settings(
    max_examples=int(os.environ.get("FERCLUSTER_SIM_PROGRAMS", CI_PROGRAMS)),
    stateful_step_count=STEPS,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def test_simulation() -> None:
    STEPS_RUN.clear()
    run_state_machine_as_test(SweepMachine, settings=CI)
    rules = {n for n in dir(SweepMachine) if getattr(getattr(SweepMachine, n), "hypothesis_stateful_rule", None)}
    assert rules <= set(STEPS_RUN), f"rules no CI program ran: {sorted(rules - set(STEPS_RUN))}"


@pytest.mark.slow
@pytest.mark.skipif(
    "FERCLUSTER_SIM_PROGRAMS" not in os.environ,
    reason="draws new programs each run (not deterministic): run it with FERCLUSTER_SIM_PROGRAMS=2000",
)
def test_simulation_thousands_of_programs() -> None:
    many = int(os.environ.get("FERCLUSTER_SIM_PROGRAMS", SLOW_PROGRAMS))
    run_state_machine_as_test(SweepMachine, settings=settings(CI, max_examples=many, derandomize=False))


# -- the reproductions, as fixed programs ---------------------------------------------------
def play(
    site: Site, *steps: tuple[str, dict[str, Any]], heal: bool = True, gaps: frozenset[str] = KNOWN_GAPS, **start: Any
) -> SweepMachine:
    """Run ``steps`` (rule name, arguments) on a fresh machine, the invariants after each, then heal;
    ``gaps``: the known gaps excused."""
    machine = SweepMachine()
    machine.gaps = gaps
    try:
        machine.start(site=site, **start)
        machine.check()
        for name, kw in steps:
            getattr(machine, name)(**kw)
            machine.check()
    except BaseException:
        machine.ok = False
        raise
    finally:
        machine.ok = machine.ok and heal
        machine.teardown()
    return machine


def run(name: str, **kw: Any) -> tuple[str, dict[str, Any]]:
    return name, kw


SWEEP, RETRY = run("sweep"), run("retry_failed")


def test_repro_defect_2_a_retry_never_adopts_an_ended_array_of_its_jobs() -> None:
    """The same job fails, is retried (its retry waits for the array), fails again; the second
    retry's sbatch times out: the next run must not take the first retry's (ended) array for it."""
    play(Site(), SWEEP, run("advance", seconds=10.0), run("end_run", i=0, end="fail"), RETRY,
         run("advance", seconds=100.0), run("end_run", i=0, end="fail"), run("sbatch_fault", fault="timeout"),
         RETRY, RETRY, max_retries=2)  # fmt: skip


def test_repro_defect_3_without_accounting_a_timed_out_sbatch_does_not_hold_its_jobs_for_ever() -> None:
    """sacct is off and one sbatch timed out: three re-runs hold the jobs; once the record is older
    than slurm.pending_bound_s and squeue does not show it, the jobs go in (teardown: healed)."""
    play(Site(accounting=False), run("sbatch_fault", fault="timeout"), SWEEP, SWEEP, SWEEP, SWEEP)


def test_repro_defect_3_a_refused_sbatch_leaves_no_pending_record() -> None:
    play(Site(accounting=False), run("sbatch_fault", fault="refuse"), SWEEP)


def test_repro_defect_4_and_5_two_login_nodes_take_over_a_dead_ones_claim() -> None:
    """login3 died holding the claim; login2 takes it over between our stale check and our takeover."""
    play(Site(), SWEEP, run("edit_grid", grid="more"), run("takeover_race"))


def test_repro_defect_5_a_holder_frozen_past_the_stale_time_submits_nothing() -> None:
    play(Site(), SWEEP, run("advance", seconds=10.0), run("edit_grid", grid="more"), run("frozen_holder", skew_s=0.0))


def test_repro_defect_5_a_login_node_whose_clock_is_ahead_does_not_take_a_live_claim() -> None:
    play(Site(), SWEEP, run("edit_grid", grid="more"), run("second_login_node", skew_s=700.0))


def test_repro_defect_6_an_aggregation_job_follows_a_failed_aggregation_sbatch() -> None:
    """The arrays went in, the aggregation job's sbatch was refused: the next run submits one."""
    play(Site(), run("sbatch_fault", fault="refuse", skip=1), SWEEP, SWEEP)


def test_repro_defect_7_the_aggregation_job_asks_for_slurm_aggregate_resources() -> None:
    play(Site(), SWEEP)


def test_repro_defect_8_a_submit_limit_below_the_array_size_splits_the_array() -> None:
    """MaxSubmitJobsPerUser 3, an array of 4: three runs, then healed (every job completes)."""
    play(Site(max_submit_jobs=3), SWEEP, SWEEP, SWEEP)


def test_repro_defect_9_a_job_shown_in_an_unknown_state_word_is_not_retried() -> None:
    play(Site(), SWEEP, run("launch", i=0, word="POWER_UP_NODE"), RETRY, run("launch", i=0, word="LAUNCH_FAILED"),
         RETRY)  # fmt: skip


def test_repro_defect_13_a_job_slurm_requeued_after_a_node_failure_is_not_retried() -> None:
    """sacct still says NODE_FAIL, squeue already PENDING (requeued): --retry-failed leaves it."""
    play(Site(requeue_on_node_fail=True), SWEEP, run("advance", seconds=10.0), run("node_fail", i=0), RETRY)


# -- what the simulation found that is not fixed yet (KNOWN_GAPS) ------------------------------------
def gap(name: str) -> pytest.MarkDecorator:
    assert name in KNOWN_GAPS
    return pytest.mark.xfail(
        strict=True, raises=AssertionError, reason=f"gap {name}: found by the simulation, not fixed yet"
    )


def play_strict(site: Site, *steps: tuple[str, dict[str, Any]], **start: Any) -> None:
    """``play`` with no gap excused."""
    play(site, *steps, gaps=frozenset(), **start)


@gap("unseen-run")
def test_gap_unseen_run_without_accounting_a_lost_arrays_runs_are_not_recorded() -> None:
    play_strict(Site(accounting=False), run("sbatch_fault", fault="lost"), SWEEP, run("advance", seconds=900.0), SWEEP)


def test_repro_unknown_forever_without_accounting_a_failed_job_that_left_squeue_is_retried() -> None:
    """No accounting; a job failed and left squeue before a sweep saw it. squeue answered and does
    not show it, it wrote no job.json: it ended unseen (FAILED), and --retry-failed reruns it (before:
    "unknown" for ever, never retried)."""
    play_strict(Site(accounting=False), SWEEP, run("advance", seconds=10.0), run("end_run", i=0, end="fail"),
                run("advance", seconds=900.0), RETRY)  # fmt: skip


def test_repro_cancel_requeued_cancel_reaches_a_job_slurm_just_requeued() -> None:
    play_strict(Site(preempt_requeue=True, max_array=2), SWEEP, run("advance", seconds=10.0), run("cancel", job=0),
                run("end_run", i=0, end="preempt"), run("cancel", job=None))  # fmt: skip


def test_repro_aggregate_requeued_a_new_aggregation_job_waits_for_a_job_slurm_just_requeued() -> None:
    play_strict(Site(max_array=2), SWEEP, run("advance", seconds=10.0), run("node_fail", i=0),
                run("edit_grid", grid="more"), SWEEP)  # fmt: skip


def test_repro_fenced_overwrite_a_fenced_holder_writes_nothing_over_the_new_holders_records() -> None:
    play_strict(Site(), SWEEP, run("advance", seconds=10.0), run("edit_grid", grid="more"),
                run("frozen_holder", skew_s=0.0))  # fmt: skip


def test_repro_report_missed_an_aggregation_job_after_arrays_that_ended_before_the_next_sweep() -> None:
    play_strict(Site(), run("sbatch_fault", fault="refuse", skip=1), SWEEP, run("advance", seconds=900.0), SWEEP)


def test_repro_aggregate_orphan_an_adopted_aggregation_job_cancels_the_one_it_replaced() -> None:
    """An aggregation job's sbatch reply was lost; the next run finds it by name and records it:
    the one it replaced is cancelled (before: both waited, and ``cancel`` left the old one queued)."""
    play_strict(Site(accounting=False), RETRY, run("rate_limit", queries=1), run("sbatch_fault", fault="lost"), RETRY,
                RETRY, run("cancel", job=None))  # fmt: skip


def test_repro_aggregate_failed_unseen_without_accounting_a_failed_aggregation_job_is_replaced() -> None:
    """Found by the slow run: no accounting, and the aggregation job (after a lock takeover) failed
    and left squeue before a sweep saw it. SLURM cannot say how it ended; ``aggregated.json`` does
    not name it, so the next sweep submits another (before: no report, ever)."""
    play(Site(accounting=False), RETRY, run("frozen_holder", skew_s=-700.0), run("end_run", i=0, end="fail"),
         run("takeover_race"))  # fmt: skip


@gap("preempted-unseen")
def test_gap_preempted_unseen_without_accounting_an_unseen_preemption_is_rerun_as_a_retry() -> None:
    play_strict(Site(accounting=False, preempt_requeue=False), SWEEP, run("advance", seconds=10.0),
                run("end_run", i=0, end="preempt"), run("advance", seconds=900.0), SWEEP)  # fmt: skip


def test_repro_report_after_an_unseen_array_without_accounting_the_jobs_it_completed_are_reported() -> None:
    """Found by the slow run: no accounting, the array's sbatch lost its reply, and the array ran and
    left squeue before the next sweep (the gap unseen-run: never recorded). Its jobs wrote job.json;
    with no array recorded, no aggregation job was ever submitted (before: no report)."""
    play(Site(accounting=False), run("sbatch_fault", fault="lost"), RETRY, run("takeover_race"))


def test_repro_stalled_a_hung_run_is_requeued_under_its_id_and_counted_as_a_requeue() -> None:
    """Deliver 5 in the simulation: a run hangs; before slurm.stall_min nothing is requeued, after
    it `sweep --requeue-stalled` requeues it (same SLURM id, one requeue counted: checked by the
    invariants), and the job completes once healed."""
    machine = play(Site(), SWEEP, run("advance", seconds=10.0), run("hang", i=0), run("requeue_stalled"),
                   run("advance", seconds=900.0), run("requeue_stalled"))  # fmt: skip
    assert sum(t.stall_requeues for t in machine.model.mine()) == 1


def test_repro_outage_in_an_accounting_outage_a_lost_submission_is_held_not_dropped() -> None:
    """Found by the slow run: slurmdbd is down (the site has accounting), a retry's sbatch lost its
    reply, and the array ran and left squeue. The bound for sites without accounting dropped its
    record, so the job ran again; now the record waits until sacct answers, then is adopted."""
    play(Site(accounting=True), SWEEP, run("advance", seconds=10.0), run("end_run", i=0, end="fail"),
         run("outage", service="slurmdbd", down=True), run("sbatch_fault", fault="lost"), RETRY,
         run("advance", seconds=900.0), RETRY, RETRY)  # fmt: skip


def test_repro_unseen_jobs_an_array_run_unseen_after_the_report_gets_another_aggregation_job() -> None:
    """Found by the slow run: no accounting; the report of a first array was built, then a second
    array's reply was lost and it ran unseen (gap unseen-run). Its jobs' job.json, which no recorded
    run explains, call for an aggregation job; then they are recorded (before: never reported)."""
    play(Site(accounting=False, max_array=2, max_submit_jobs=3, preempt_requeue=True),
         run("sbatch_fault", fault="refuse", skip=2), SWEEP, run("sbatch_fault", fault="lost"),
         run("takeover_race"), run("takeover_race"))  # fmt: skip


def test_repro_aggregate_pending_no_aggregation_job_beside_an_unsettled_submission() -> None:
    """Found by the slow run: squeue down, an array's reply lost (its record held), a sweep submitted
    an aggregation job after the live arrays only; the held array ran after it, never reported. Now
    no aggregation job goes in while a record is unsettled: the next sweep, once it is, submits one."""
    play(Site(accounting=False, max_submit_jobs=3), run("requeue_stalled"), run("outage", service="squeue", down=True),
         run("sbatch_fault", fault="lost"), run("frozen_holder", skew_s=-700.0), run("requeue_stalled"))  # fmt: skip
