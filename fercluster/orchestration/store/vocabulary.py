"""fercluster's job states and their groups, defined once.

Every state a person or a program sees (``status``, ``status --json``, ``fercluster.results().jobs``,
the Tune tables, the report) is one of ``STATES``. Other words are mapped onto these here or at
the one place that reads them: SLURM's (REQUEUED, NODE_FAIL, ...) in ``slurm.parse.map_state``,
Ray Tune's (``from_ray``), a search's record (``from_search``), a job's own ``progress.json``
(``from_progress``). README's table of states is checked against this module by a test.
"""

from __future__ import annotations

from typing import Any

PENDING = "PENDING"  # queued (a requeued job after pre-emption or a time-out is PENDING again)
RUNNING = "RUNNING"
COMPLETED = "COMPLETED"  # its job.json exists, whatever SLURM says
FAILED = "FAILED"  # also: a broken job.json, a Ray trial that raised (Ray's ERROR)
CANCELLED = "CANCELLED"
TIMEOUT = "TIMEOUT"
PREEMPTED = "PREEMPTED"
NOT_SUBMITTED = "NOT_SUBMITTED"  # never submitted (or never started), or a local run that stopped (it resumes)
UNREADABLE = "UNREADABLE"  # results: complete, but its files cannot be read (left out of the tables)
STOPPED = "STOPPED"  # Tune: stopped early by the scheduler (ASHA), not a failure
INTERRUPTED = "INTERRUPTED"  # Tune: a search stopped before its end (run the command again to resume it)

# The four tables below keep `# fmt: skip`: the formatter would give each state a line of its own,
# while a table of states reads better as the few lines it is.
# in display order
STATES = (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, PREEMPTED, NOT_SUBMITTED, UNREADABLE, STOPPED,
          INTERRUPTED)  # fmt: skip
ACTIVE = (PENDING, RUNNING)  # queued or running: left alone by sweep, cancelled by cancel
ENDED_BADLY = (FAILED, CANCELLED, TIMEOUT, PREEMPTED)  # resubmitted by --retry-failed, shown by --failed
ENDED_WELL = (COMPLETED, STOPPED)  # finished as planned
GROUPS = {"active": ACTIVE, "ended well": ENDED_WELL, "ended badly": ENDED_BADLY,
          "not started": (NOT_SUBMITTED,), "needs a look": (UNREADABLE, INTERRUPTED)}  # fmt: skip

STYLE = {PENDING: "yellow", RUNNING: "cyan", COMPLETED: "green", STOPPED: "green", FAILED: "red", CANCELLED: "red",
         TIMEOUT: "red", PREEMPTED: "magenta", NOT_SUBMITTED: "dim", UNREADABLE: "red", INTERRUPTED: "yellow"}  # fmt: skip

_RAY = {"PENDING": PENDING, "PAUSED": PENDING, "RUNNING": RUNNING, "ERROR": FAILED, "TERMINATED": COMPLETED}
_SEARCH = {"not_started": NOT_SUBMITTED, "submitted": PENDING, "running": RUNNING, "completed": COMPLETED,
           "interrupted": INTERRUPTED, "failed": FAILED}  # fmt: skip
_PROGRESS = {"running": RUNNING, "completed": RUNNING, "failed": FAILED}  # completed: job.json comes next


def from_ray(state: str, stopped_early: bool = False) -> str:
    """A Ray Tune trial's state: TERMINATED is COMPLETED, or STOPPED when ASHA ended it early."""
    if state == "TERMINATED":
        return STOPPED if stopped_early else COMPLETED
    return _RAY.get(state, state if state in STATES else FAILED)


def from_search(state: Any) -> str:
    """A search's record (``tune/search.json``: running, completed, ...); none yet: NOT_SUBMITTED."""
    return _SEARCH.get(str(state or "not_started").lower(), FAILED)


def from_progress(progress_state: str | None) -> str:
    """A job that is not complete, by its own ``progress.json`` (None: it wrote none yet)."""
    if not progress_state:
        return NOT_SUBMITTED
    return _PROGRESS.get(progress_state, RUNNING)
