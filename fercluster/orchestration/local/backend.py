"""Jobs run on this machine by ``sweep --local``, seen through the query side of ``Backend``.

Local mode records, per job in ``state.json``, ``{"local": {pid, host, started, process_start,
ended}}`` (``mark_started``, ``mark_ended``). ``LocalBackend.query`` turns those records into
states: a run whose process (its pid, with the same process start time) is alive on this host and
has not ended is RUNNING; any other job (a run that
stopped, or never ran) is NOT_SUBMITTED, and resumes from its checkpoint when run again.

Only the query side of ``Backend`` (``backend.JobQuery``): local mode runs its jobs itself, one at
a time in its own process, so there is nothing to submit, no array to find by name after a crash
and nothing to cancel (stopping ``sweep --local`` with Ctrl-C stops its job). Ids are fercluster
job ids: a local run has no other.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from typing import Any, Mapping, Sequence

from fercluster.errors import SlurmError
from fercluster.lock import process_start, same_process
from fercluster.orchestration.backend import JobInfo
from fercluster.orchestration.store.vocabulary import NOT_SUBMITTED, RUNNING

KEY = "local"  # the key of a job's record in state.json


def mark_started(rec: dict[str, Any]) -> None:
    """Record in a job's state record that this process runs it now."""
    rec[KEY] = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.time(),
        "process_start": process_start(os.getpid()),
    }


def mark_ended(rec: dict[str, Any]) -> None:
    rec[KEY]["ended"] = time.time()


class LocalBackend:
    """States of locally run jobs from the records of ``state.jobs`` (job id -> record)."""

    name = "local"

    def __init__(self, jobs: Mapping[str, dict[str, Any]]) -> None:
        self.jobs = jobs
        self.calls: Counter[str] = Counter()
        self.last_source = ""
        self.last_error = ""  # local records always answer
        self.last_queue_ok = True

    def requeue(self, ids: Sequence[str]) -> None:
        """Refused: a local run is no queued job. Stop ``sweep --local`` (Ctrl-C) and run it again."""
        raise SlurmError(
            "a local run cannot be requeued: stop `fercluster sweep --local` (Ctrl-C) and run it again; "
            "the job resumes from its checkpoint"
        )

    def query(self, ids: Sequence[str]) -> dict[str, JobInfo]:
        """An answer for every id: RUNNING (alive here) or NOT_SUBMITTED (reason set if a run stopped)."""
        self.last_source = "local"
        host = socket.gethostname()
        out = {}
        for job_id in ids:
            run = (self.jobs.get(job_id) or {}).get(KEY)
            if not run:
                out[job_id] = JobInfo(NOT_SUBMITTED)
                continue
            # by pid AND process start time: a pid the kernel reused for another process is not the run
            alive = run.get("host") == host and same_process(int(run.get("pid", 0)), run.get("process_start"))
            state = RUNNING if alive and not run.get("ended") else NOT_SUBMITTED
            reason = "" if state == RUNNING else "local run stopped"
            out[job_id] = JobInfo(state, node=run.get("host", "") if alive else "", reason=reason, failure=reason)
        return out
