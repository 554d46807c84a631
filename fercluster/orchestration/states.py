"""fercluster's job states and their groups, defined once.

A job's state is what ``status`` shows and ``status --json`` writes. SLURM's own words (REQUEUED,
NODE_FAIL, ...) are mapped onto these in ``slurm.parse.map_state``; a locally run job gets them
from ``local_backend``.
"""

from __future__ import annotations

PENDING = "PENDING"  # queued (a requeued job after pre-emption or a time-out is PENDING again)
RUNNING = "RUNNING"
COMPLETED = "COMPLETED"  # its job.json exists, whatever SLURM says
FAILED = "FAILED"
CANCELLED = "CANCELLED"
TIMEOUT = "TIMEOUT"
PREEMPTED = "PREEMPTED"
NOT_SUBMITTED = "NOT_SUBMITTED"  # never submitted, or a local run that stopped (it resumes)

STATES = (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, PREEMPTED, NOT_SUBMITTED)  # display order
ACTIVE = (PENDING, RUNNING)  # queued or running: left alone by sweep, cancelled by cancel
ENDED_BADLY = (FAILED, CANCELLED, TIMEOUT, PREEMPTED)  # resubmitted by --retry-failed, shown by --failed
