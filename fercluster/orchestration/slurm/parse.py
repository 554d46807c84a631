"""Text of SLURM commands (sacct, squeue, scontrol) parsed into one shape, ``SlurmInfo``.

Pure functions over strings, so that every format is tested without a cluster. Array task ids
keep SLURM's spelling ``<array id>_<task>``; a pending range (``123_[4-9%2]``) is expanded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from fercluster.orchestration.backend import JobInfo
from fercluster.orchestration.store.vocabulary import (
    ACTIVE,
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    PREEMPTED,
    RUNNING,
    TIMEOUT,
)

# SLURM's state words -> fercluster's states (``fercluster.orchestration.store.vocabulary``).
# Every job state of squeue(1) and sacct(1) "JOB STATE CODES", and the state flags squeue prints
# in their place (slurm.h ``JOB_*`` flags). A word not here is not final: ``map_state`` counts it
# as PENDING (active; ``job_info`` puts the word in the reason), never FAILED, so that no retry
# starts a second copy of a job SLURM still holds.
_SLURM_TO_STATE = {
    # queued, or held, or being set up: SLURM still has it
    "PENDING": PENDING,  # PD
    "REQUEUED": PENDING,  # RQ: a requeue (pre-emption, timeout with checkpoint) is not a failure
    "REQUEUE_HOLD": PENDING,  # RH
    "REQUEUE_FED": PENDING,  # RF
    "CONFIGURING": PENDING,  # CF: allocated, nodes booting
    "POWER_UP_NODE": PENDING,  # flag: allocated, waiting for powered-down nodes
    "LAUNCH_FAILED": PENDING,  # flag: the launch failed and SLURM requeues the job itself
    "RECONFIG_FAIL": PENDING,  # flag: node reconfiguration failed, SLURM requeues the job
    "EXPEDITING": PENDING,  # flag: requeued for expedited start
    "SUSPENDED": PENDING,  # S
    "STOPPED": PENDING,  # ST
    "RESV_DEL_HOLD": PENDING,  # RD
    # running, or ending (not yet final)
    "RUNNING": RUNNING,  # R
    "COMPLETING": RUNNING,  # CG
    "RESIZING": RUNNING,  # RS
    "SIGNALING": RUNNING,  # SI
    "STAGE_OUT": RUNNING,  # SO
    "UPDATE_DB": RUNNING,  # flag: its end is being sent to the accounting database
    # final
    "COMPLETED": COMPLETED,  # CD
    "CANCELLED": CANCELLED,  # CA
    "REVOKED": CANCELLED,  # RV: run on another cluster of a federation
    "TIMEOUT": TIMEOUT,  # TO
    "PREEMPTED": PREEMPTED,  # PR
    "FAILED": FAILED,  # F
    "NODE_FAIL": FAILED,  # NF
    "BOOT_FAIL": FAILED,  # BF
    "OUT_OF_MEMORY": FAILED,  # OOM
    "DEADLINE": FAILED,  # DL
    "SPECIAL_EXIT": FAILED,  # SE
}
UNKNOWN_STATE = PENDING  # a word not above: active, not final (see above)
# Ends after which SLURM may requeue the job itself (JobRequeue=1, PreemptMode=REQUEUE): for a few
# seconds accounting still says how the run ended while squeue already shows it PENDING again.
REQUEUED_AFTER = frozenset({"NODE_FAIL", "BOOT_FAIL", "PREEMPTED"})


def with_queue(
    slurm_ids: Sequence[str], infos: dict[str, SlurmInfo], queue: Callable[[list[str]], dict[str, SlurmInfo]]
) -> dict[str, SlurmInfo]:
    """sacct's ``infos`` completed by the queue, in ONE ``queue`` call: for the ids accounting lacks
    (it lags) and for those it says ended in a way SLURM may requeue (``REQUEUED_AFTER``), which the
    queue, where it shows them queued or running again, overrules. ``SlurmBackend`` and the fakes
    share it, so the simulation runs the same rule."""
    missing = [s for s in slurm_ids if s not in infos]
    recheck = [s for s in slurm_ids if s in infos and state_word(infos[s].raw_state) in REQUEUED_AFTER]
    if not missing and not recheck:
        return infos
    queued = queue(missing + recheck)
    requeued = {s: queued[s] for s in recheck if s in queued and queued[s].state in ACTIVE}
    return {**queued, **infos, **requeued}


_OOM = "out of memory (killed by the OOM killer): raise slurm.mem_gb (or slurm.mem_per_gpu_gb)"
# SLURM reports an OOM kill as ExitCode 0:125: slurm.h's dummy signal SIG_OOM (253) less the 128 flag
SIG_OOM = 125
_REASONS = {
    "OUT_OF_MEMORY": _OOM,
    "NODE_FAIL": "node failure",
    "BOOT_FAIL": "node failed to boot",
    "TIMEOUT": "time limit reached: raise slurm.time_min",
    "DEADLINE": "deadline reached",
    "PREEMPTED": "pre-empted (SIGTERM); the next `sweep` requeues it from its checkpoint, no retry used",
    "CANCELLED": "cancelled (scancel or an administrator)",
    "REVOKED": "revoked by a federated cluster",
}

_SIGNALS = {9: "SIGKILL", 15: "SIGTERM", 11: "SIGSEGV", 6: "SIGABRT", 2: "SIGINT", 7: "SIGBUS", 12: "SIGUSR2"}


@dataclass(frozen=True)
class SlurmInfo:
    slurm_id: str  # "123" or "123_4"
    raw_state: str  # SLURM's word, e.g. "CANCELLED" (the "by 0" suffix dropped)
    exit_code: str = ""  # "code:signal" as sacct prints it
    elapsed: str = ""
    node: str = ""
    reason: str = ""  # SLURM's Reason column (pending reason), or one we derive
    source: str = "sacct"  # which command said so
    alloc_tres: str = ""  # sacct's AllocTRES, e.g. "billing=4,cpu=4,gres/gpu=1,mem=16G,node=1"
    elapsed_raw: int | None = None  # sacct's ElapsedRaw, seconds

    @property
    def gpu_hours(self) -> float | None:
        """GPUs allocated x time run, in hours (None where sacct did not say)."""
        return _hours(tres_count(self.alloc_tres, "gres/gpu"), self.elapsed_raw)

    @property
    def cpu_hours(self) -> float | None:
        return _hours(tres_count(self.alloc_tres, "cpu"), self.elapsed_raw)

    @property
    def state(self) -> str:
        return map_state(self.raw_state)

    @property
    def elapsed_s(self) -> float | None:
        return elapsed_seconds(self.elapsed)

    def failure_reason(self) -> str:
        return failure_reason(self)

    def job_info(self) -> JobInfo:
        """fercluster's record of this job: its state, and for one that ended badly, why."""
        state = self.state
        failure = failure_reason(self) if state not in (*ACTIVE, COMPLETED) else ""
        reason = self.reason
        if not known_state(self.raw_state):
            reason = f"SLURM state {self.raw_state.strip() or '(none)'}, unknown to fercluster: counted as active"
        return JobInfo(state, self.node, reason, self.elapsed_s, failure, self.gpu_hours, self.cpu_hours)


def tres_count(tres: str, name: str) -> int | None:
    """How many of ``name`` (``cpu``, ``gres/gpu``) an AllocTRES string holds; 0 when absent from a
    non-empty string (no GPUs), None for an empty one (not known).

    GRES may come typed (``gres/gpu:a100=2``): the untyped total (``gres/gpu=2``) when SLURM gives
    it beside them, else the sum of the typed entries (never both: that would count twice).
    """
    if not tres.strip():
        return None
    total, typed = None, 0
    for item in tres.split(","):
        key, _, value = (part.strip() for part in item.partition("="))
        if not value.isdigit():
            continue
        if key == name:
            total = int(value)
        elif key.startswith(name + ":"):
            typed += int(value)
    return total if total is not None else typed


def _hours(count: int | None, seconds: int | None) -> float | None:
    return None if count is None or seconds is None else count * seconds / 3600.0


def state_word(raw: str) -> str:
    """SLURM's state word of ``raw`` ("CANCELLED by 0" -> "CANCELLED", "COMPLETED+" -> "COMPLETED")."""
    return raw.split()[0].rstrip("+").upper() if raw.strip() else "UNKNOWN"


def known_state(raw: str) -> bool:
    return state_word(raw) in _SLURM_TO_STATE


def map_state(raw: str) -> str:
    """fercluster's state for a SLURM state word; a word SLURM may add later is ``UNKNOWN_STATE`` (active)."""
    return _SLURM_TO_STATE.get(state_word(raw), UNKNOWN_STATE)


def failure_reason(info: SlurmInfo) -> str:
    """A one-line reason for a job that ended badly, from SLURM's view of it."""
    word = info.raw_state.split()[0].rstrip("+").upper() if info.raw_state else ""
    parts = []
    if word in _REASONS:
        parts.append(_REASONS[word])
    code, _, sig = info.exit_code.partition(":")  # ExitCode is exit:signal
    if sig.isdigit() and int(sig) == SIG_OOM:
        parts += [_OOM] if _OOM not in parts else []
    elif sig.isdigit() and int(sig):
        parts.append(f"killed by signal {sig} ({_SIGNALS.get(int(sig), 'signal')})")
    elif code.isdigit() and int(code):
        parts.append(f"exit code {code}")
    if info.reason and info.reason not in ("None", "(null)"):
        parts.append(info.reason)
    return "; ".join(parts) or f"SLURM state {info.raw_state}"


def task_ids(array_id: str, n: int) -> list[str]:
    """Per-task ids of a submission of ``n`` jobs (submitit sends one job without an array)."""
    return [array_id] if n == 1 else [f"{array_id}_{i}" for i in range(n)]


def array_id(slurm_id: str) -> str:
    """``"123_4"`` -> ``"123"`` (an array task's array); other ids unchanged."""
    return slurm_id.split("_")[0]


def arrays_of(slurm_ids: Sequence[str]) -> list[str]:
    """The arrays (or single jobs) of ``slurm_ids``, each once, oldest (lowest id) first."""
    return sorted({array_id(s) for s in slurm_ids}, key=int)


def expand_task_ids(slurm_id: str) -> list[str]:
    """``123_[0-3,7%2]`` -> ``123_0 .. 123_3, 123_7``; other ids unchanged."""
    m = re.fullmatch(r"(\d+)_\[([^\]]+)\]", slurm_id)
    if not m:
        return [slurm_id]
    base, body = m.group(1), m.group(2).split("%")[0]
    ids = []
    for part in body.split(","):
        lo, _, hi = part.partition("-")
        if not lo.isdigit():
            continue
        ids.extend(f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1))
    return ids


def _with_tasks(info: SlurmInfo) -> list[SlurmInfo]:
    ids = expand_task_ids(info.slurm_id)
    if len(ids) == 1 and ids[0] == info.slurm_id:
        return [info]
    return [replace(info, slurm_id=i) for i in ids]


SACCT_FORMAT = "JobID,State,ExitCode,Elapsed,NodeList,Reason,AllocTRES,ElapsedRaw"


def parse_sacct(text: str) -> dict[str, SlurmInfo]:
    """``sacct --parsable2 --noheader --format=JobID,State,ExitCode,Elapsed,NodeList,Reason,AllocTRES,ElapsedRaw``
    (the last two optional: the cost of each job).

    Step lines (``123_4.batch``, ``123_4.0``) are folded into their job: an OOM or a signal seen
    on a step is kept as the job's exit code or state when the allocation line hides it.
    """
    jobs: dict[str, SlurmInfo] = {}
    steps: dict[str, list[SlurmInfo]] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 2 or not fields[0].strip():
            continue
        fields += [""] * (8 - len(fields))
        jid, state, exit_code, elapsed, node, reason, tres, raw = (f.strip() for f in fields[:8])
        state = state.split(" by ")[0]
        info = SlurmInfo(
            jid,
            state,
            exit_code,
            elapsed,
            node if node != "None assigned" else "",
            reason,
            alloc_tres=tres,
            elapsed_raw=int(raw) if raw.isdigit() else None,
        )
        if "." in jid:
            steps.setdefault(jid.split(".")[0], []).append(info)
            continue
        for task in _with_tasks(info):
            jobs[task.slurm_id] = task
    for jid, step_infos in steps.items():
        job = jobs.get(jid)
        if job is None or job.state in (*ACTIVE, COMPLETED):
            continue
        for step in step_infos:
            word = step.raw_state.upper()
            if word.startswith("OUT_OF_MEMORY"):
                job = replace(job, raw_state="OUT_OF_MEMORY", exit_code=step.exit_code)
            elif step.exit_code.partition(":")[2] not in ("", "0") and job.exit_code.partition(":")[2] in ("", "0"):
                job = replace(job, exit_code=step.exit_code)
        jobs[jid] = job
    return jobs


SQUEUE_FORMAT = "%i|%T|%M|%N|%r"


def parse_squeue(text: str) -> dict[str, SlurmInfo]:
    """``squeue -t all -r -h -o '%i|%T|%M|%N|%r'`` (the fallback when accounting is off)."""
    jobs: dict[str, SlurmInfo] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 2 or not fields[0].strip():
            continue
        fields += [""] * (5 - len(fields))
        jid, state, elapsed, node, reason = (f.strip() for f in fields[:5])
        info = SlurmInfo(jid, state, "", elapsed, node, reason, source="squeue")
        for task in _with_tasks(info):
            jobs[task.slurm_id] = task
    return jobs


def parse_scontrol_jobs(text: str) -> dict[str, SlurmInfo]:
    """``scontrol show job -o``: one line of ``Key=Value`` pairs per job."""
    jobs: dict[str, SlurmInfo] = {}
    for line in text.splitlines():
        kv = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobId" not in kv:
            continue
        jid = kv["JobId"]
        if kv.get("ArrayJobId") and kv.get("ArrayTaskId"):
            jid = f"{kv['ArrayJobId']}_{kv['ArrayTaskId']}"
        info = SlurmInfo(
            jid,
            kv.get("JobState", "UNKNOWN"),
            kv.get("ExitCode", ""),
            kv.get("RunTime", ""),
            kv.get("NodeList", "") if kv.get("NodeList") != "(null)" else "",
            kv.get("Reason", ""),
            source="scontrol",
        )
        for task in _with_tasks(info):
            jobs[task.slurm_id] = task
    return jobs


def parse_max_array_size(text: str, default: int = 1001) -> int:
    """``MaxArraySize`` from ``scontrol show config`` (SLURM's default is 1001)."""
    return config_number(text, "MaxArraySize") or default


def config_number(text: str, key: str) -> int | None:
    """A number of ``scontrol show config`` (``MaxJobCount``, ...); None when it is not there."""
    m = re.search(rf"^\s*{key}\s*=\s*(\d+)", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def job_count_limit(config_text: str) -> str:
    """The cluster's MaxJobCount in words, with its value when ``scontrol show config`` gave it."""
    n = config_number(config_text, "MaxJobCount")
    return f"the cluster's job limit (MaxJobCount{f' = {n}' if n else ''}, every user's jobs together)"


def elapsed_seconds(text: str) -> float | None:
    """SLURM's ``[D-]HH:MM:SS`` / ``MM:SS`` as seconds."""
    if not text or text in ("INVALID", "UNLIMITED"):
        return None
    days, _, rest = text.rpartition("-")
    try:
        parts = [float(p) for p in rest.split(":")]
    except ValueError:
        return None
    secs = 0.0
    for p in parts:
        secs = secs * 60 + p
    return secs + (int(days) * 86400 if days else 0)


# sbatch's words for a submit limit (QOS, association, the cluster's MaxJobCount): what fits went in
_SUBMIT_LIMITS = {
    "QOSMaxSubmitJobPerUserLimit": "the QOS limit on jobs submitted per user (MaxSubmitJobsPerUser)",
    "QOSMaxSubmitJobPerAccountLimit": "the QOS limit on jobs submitted per account",
    "AssocMaxSubmitJobLimit": "the association's limit on submitted jobs (MaxSubmitJobs)",
    "MaxSubmitJob": "a submit limit (MaxSubmitJobs)",
    "Job violates accounting/QOS policy": "an accounting/QOS policy limit (sacctmgr show qos lists them)",
    "MaxJobCount": "the cluster's job limit (MaxJobCount)",
    "temporarily unable to accept job": "the cluster's job limit (MaxJobCount)",  # sbatch's words for it
    "job queue full": "the cluster's job limit (MaxJobCount)",
    "did not finish within": "the cluster refusing jobs while sbatch retried (a job or QOS limit?)",
}


def submit_limit(error: str) -> str | None:
    """Which submit limit an sbatch error says was reached (None: some other failure)."""
    return next((what for word, what in _SUBMIT_LIMITS.items() if word.lower() in error.lower()), None)
