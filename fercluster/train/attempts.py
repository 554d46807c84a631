"""The history of a job's attempts: ``history.jsonl`` in its run directory, one JSON line per event.

Every run of a job (the first start, a requeue, a retry, a local run resumed) is an attempt. The
job appends ``start`` as it begins (SLURM id, node, host, pid, the time on its node's clock),
``resumed`` once it has restored its checkpoint (the iteration it starts from) and ``end`` when
it ends in a way it can see: ``completed``; ``failed`` (an exception); ``time-out`` (SIGUSR2,
SLURM's warning before the time limit) or ``requeue`` (another SIGUSR2: submitit requeues the job
either way; ``signal_ending``); ``pre-emption`` (SIGTERM); ``cancelled`` (Ctrl-C of a local run). A job killed outright (a
node failure, a hang) writes no end: ``sweep --requeue-stalled`` writes ``stalled`` for the
attempt it requeues (``by: coordinator``, which wins over what the job writes after), and the
store's readers infer the rest from SLURM's record (``orchestration.watch.attempts``).

Appended, never rewritten: each line is one small write, so a reader sees whole lines, or a last
line cut short by a killed writer (skipped). Light: no torch. Ray Tune trials keep their own
``attempts.jsonl`` beside it (``orchestration.tune.trial``). One type per line (``HistoryLine``)
and per attempt (``Attempt``), one writer (``append``), one reader (``read_history``).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import time
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

FILE = "history.jsonl"
SCHEMA = 1  # in every line
START, RESUMED, END = "start", "resumed", "end"  # the events of an attempt
# how an attempt ended ("" while it runs, or when nothing says)
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
REQUEUE, PREEMPTION, TIME_OUT = "requeue", "pre-emption", "time-out"
NODE_FAILURE, STALLED = "node failure", "stalled"
ENDINGS = (COMPLETED, NODE_FAILURE, REQUEUE, PREEMPTION, TIME_OUT, STALLED, FAILED, CANCELLED)
# who said how it ended: the job itself, the coordinator (a stalled requeue), SLURM's record, or
# inferred (an attempt that wrote no end and was followed by a start of the same SLURM id)
BY_JOB, BY_COORDINATOR, BY_SLURM, INFERRED = "job", "coordinator", "slurm", "inferred"


@dataclass(frozen=True, slots=True)
class HistoryLine:
    """One line of ``history.jsonl``."""

    event: str  # START, RESUMED or END
    attempt: str  # the attempt's token (new for every start); "" for an end whose start is unknown
    time: float  # epoch seconds, on the writer's clock
    slurm_id: str = ""
    node: str = ""
    host: str = ""
    pid: int | None = None
    iteration: int | None = None  # RESUMED: restored from; END: reached
    ended: str = ""  # END: one of ENDINGS
    by: str = BY_JOB
    detail: str = ""  # END: the signal, the error (one line)
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        out = {"event": self.event, "attempt": self.attempt, "time": self.time}
        out.update({f.name: v for f in _LINE_FIELDS[3:-1] if (v := getattr(self, f.name)) != f.default})
        return {**out, "schema": self.schema}

    @classmethod
    def from_dict(cls, data: Any) -> HistoryLine | None:
        """The line, or None when it is not one (a foreign or cut line)."""
        if not isinstance(data, Mapping) or data.get("event") not in (START, RESUMED, END):
            return None
        names = {f.name for f in _LINE_FIELDS}
        try:
            line = cls(**{k: v for k, v in data.items() if k in names})
            return replace(line, time=float(line.time), attempt=str(line.attempt))
        except (TypeError, ValueError):
            return None


_LINE_FIELDS = fields(HistoryLine)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One run of a job, as its history (and, in the store's readers, SLURM) tells it."""

    number: int  # 1, 2, ... in the order they started
    slurm_id: str = ""  # "" for a local run
    node: str = ""
    host: str = ""
    start: float | None = None  # epoch seconds (the node's clock); None: it never wrote its start
    end: float | None = None
    ended: str = ""  # one of ENDINGS; "" while it runs or when nothing says
    ended_by: str = ""  # BY_JOB, BY_COORDINATOR, BY_SLURM or INFERRED
    from_iteration: int | None = None  # restored from its checkpoint (0: from the start)
    iteration: int | None = None  # reached (at its end, else the last known)
    detail: str = ""
    token: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in _ATTEMPT_FIELDS}

    def to_row(self) -> list[Any]:
        return [getattr(self, f.name) for f in _ATTEMPT_FIELDS]

    @classmethod
    def from_row(cls, row: list[Any] | tuple[Any, ...]) -> Attempt:
        return cls(*row)


_ATTEMPT_FIELDS = fields(Attempt)


def append(run_dir: str | os.PathLike[str], line: HistoryLine) -> None:
    """Add ``line`` to the run directory's history (one write; the folder is created if needed)."""
    os.makedirs(run_dir, exist_ok=True)
    data = (json.dumps(line.to_dict()) + "\n").encode()
    fd = os.open(os.path.join(run_dir, FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_history(run_dir: str | os.PathLike[str]) -> tuple[Attempt, ...]:
    """The attempts the run directory's history holds, in the order they started (() without one).

    An end by the coordinator wins over the job's own (it is why the job stopped); otherwise the
    first end of an attempt counts. The iteration reached is the highest any end gave."""
    try:
        with open(os.path.join(run_dir, FILE), "rb") as f:
            raw = f.read().decode(errors="replace").splitlines()
    except OSError:  # none yet (or not readable): no history to show
        return ()
    attempts: dict[str, Attempt] = {}
    for text in raw:
        try:
            line = HistoryLine.from_dict(json.loads(text))
        except ValueError:
            line = None  # a line cut short by a killed writer
        if line is not None:
            key = line.attempt or f"?{line.slurm_id}"
            attempts[key] = _merge(attempts.get(key) or Attempt(len(attempts) + 1, token=line.attempt), line)
    return tuple(attempts.values())


def _merge(a: Attempt, line: HistoryLine) -> Attempt:
    if line.event == START:
        return replace(a, slurm_id=line.slurm_id, node=line.node, host=line.host, start=line.time)
    if line.event == RESUMED:
        return replace(a, from_iteration=line.iteration)
    reached = max((i for i in (a.iteration, line.iteration) if i is not None), default=None)
    a = replace(a, iteration=reached, slurm_id=a.slurm_id or line.slurm_id)
    if a.ended and not (line.by == BY_COORDINATOR and a.ended_by != BY_COORDINATOR):
        return a
    return replace(a, end=line.time, ended=line.ended, ended_by=line.by, detail=line.detail)


def slurm_job_id(env: Mapping[str, str] | None = None) -> str:
    """This process's SLURM job id (an array task's own, ``<array>_<task>``); "" outside SLURM."""
    env = os.environ if env is None else env
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID", "")


TIME_LIMIT_WARNING_S = 15 * 60  # SIGUSR2 this close to the job's end time is SLURM's time-limit warning


def signal_ending(signum: int, now: float | None = None, env: Mapping[str, str] | None = None) -> str:
    """How an attempt stopped by ``signum`` ended: SIGUSR2 within ``TIME_LIMIT_WARNING_S`` of the
    job's end time (``SLURM_JOB_END_TIME``, set by SLURM 23.02 and later) is a time-out, another
    SIGUSR2 a requeue (a pre-emption notice; submitit requeues the job either way), SIGTERM a
    pre-emption."""
    env = os.environ if env is None else env
    if signum != signal.SIGUSR2:
        return PREEMPTION
    end = env.get("SLURM_JOB_END_TIME", "")
    now = time.time() if now is None else now
    return TIME_OUT if end.isdigit() and now >= int(end) - TIME_LIMIT_WARNING_S else REQUEUE


class Recorder:
    """The lines of this attempt, written by the job's main process (``enabled``); a line that
    cannot be written is dropped (the history is worth less than the training it describes)."""

    def __init__(self, run_dir: str | os.PathLike[str], enabled: bool = True) -> None:
        self.run_dir, self.enabled = run_dir, enabled
        self.token = secrets.token_hex(6)
        self.iteration: int | None = None  # the last iteration the job reported (``reached``)
        self.ended = False

    def start(self) -> None:
        from fercluster.train.distributed import node_name  # torch: only on the job side

        host = socket.gethostname()
        self._write(HistoryLine(START, self.token, time.time(), slurm_job_id(), node_name(), host, os.getpid()))

    def resumed(self, iteration: int) -> None:
        self.iteration = iteration
        self._write(HistoryLine(RESUMED, self.token, time.time(), iteration=iteration))

    def reached(self, iteration: int) -> None:
        self.iteration = iteration

    def end(self, ended: str, detail: str = "") -> None:
        """Once per attempt: later calls (an error raised after a signal's end) are ignored."""
        if self.ended:
            return
        self.ended = True
        line = HistoryLine(END, self.token, time.time(), iteration=self.iteration, ended=ended, detail=detail[:300])
        self._write(line)

    def _write(self, line: HistoryLine) -> None:
        if not self.enabled:
            return
        try:
            append(self.run_dir, line)
        except OSError:
            pass
