"""SLURM's pending reasons that waiting never clears (``never_starts``): a job that stays PENDING
with one of these is shown as one that cannot start, with why and what to do.

From SLURM's "Job Reason Codes" (squeue's %r, sacct's Reason). The reasons that clear as other jobs
end (Priority, Resources, Dependency, JobArrayTaskLimit, QOSMaxJobsPerUserLimit, AssocMaxJobsLimit,
every Grp* limit, ...) are not here: such a job only waits its turn.
"""

from __future__ import annotations

import re

_FIX = "cancel it (`fercluster cancel`), fix the config, then `fercluster sweep --retry-failed`"
_NEVER_STARTS = {
    "BadConstraints": f"its requirements can never be met (slurm.constraint, gpu_type, extra): {_FIX}",
    "PartitionConfig": f"it breaks a limit of its partition (slurm.partition and the resources asked): {_FIX}",
    "PartitionTimeLimit": f"its time limit exceeds its partition's: lower slurm.time_min or change slurm.partition; {_FIX}",
    "PartitionNodeLimit": f"its node count is outside its partition's limits, or those nodes are down (slurm.nodes): {_FIX}",
    "PartitionDown": "its partition is down: an administrator must bring it up (or change slurm.partition)",
    "PartitionInactive": "its partition is inactive: an administrator must activate it (or change slurm.partition)",
    "InvalidAccount": f"its account is invalid (slurm.account): {_FIX}",
    "InvalidQOS": f"its QOS is invalid (slurm.qos): {_FIX}",
    "AccountNotAllowed": f"its account may not use the partition (slurm.account, slurm.partition): {_FIX}",
    "QOSNotAllowed": f"its QOS is not allowed for its account or partition (slurm.qos): {_FIX}",
    "MaxMemPerLimit": f"its memory exceeds the per-CPU or per-node maximum (slurm.mem_gb): {_FIX}",
    "DependencyNeverSatisfied": "a job it waits for can never satisfy its dependency: cancel it and run `sweep` again",
    "ReservationDeleted": f"its reservation no longer exists: {_FIX}",
    "JobHeldAdmin": "an administrator holds it",
    "JobHeldUser": "it is held: `scontrol release ID` lets it start",
    "JobHoldMaxRequeue": "held after too many requeues (MAX_BATCH_REQUEUE): `scontrol release ID`, or cancel it",
}
_PER_JOB_LIMIT = re.compile(r"^(Assoc|QOS)Max\w*Per(Job|Node)|^QOSMin")  # e.g. QOSMaxGRESPerJob, QOSMinGRES


def never_starts(reason: str) -> str | None:
    """Why a pending job with SLURM's ``reason`` (squeue's %r, sacct's Reason) will not start by
    waiting, in words, with what to do; None when waiting may start it."""
    word, _, detail = reason.strip().partition(",")
    word = word.strip()
    if word in _NEVER_STARTS:
        return _NEVER_STARTS[word]
    if _PER_JOB_LIMIT.search(word):
        return f"it asks for more (or less) per job than its QOS or association allows (`sacctmgr show qos`): {_FIX}"
    if word == "ReqNodeNotAvail" and "UnavailableNodes:" in detail and detail.split("UnavailableNodes:")[1].strip():
        nodes = detail.split("UnavailableNodes:")[1].strip()
        return f"nodes it needs are DOWN, DRAINED or not responding ({nodes}): an administrator must return them"
    return None
