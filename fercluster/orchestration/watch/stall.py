"""Hung jobs: a RUNNING job whose progress has not moved for ``slurm.stall_min`` is stalled.

Whether progress moved is told by what the job writes, ``progress.json``'s ``updated``: the time,
on the job's own clock, of its last write (at the start of each attempt and at every evaluation:
``train.outputs.progress_started``, ``write_progress``). Not the file's mtime: on NFS that is the
server's clock, and attribute caching (``actimeo``) can show an old one. The time since is this
host's clock minus ``updated``, never below 0, and never more than SLURM's elapsed time of the
run (the controller's clock): a run that has not written yet, a requeued one for instance, is
measured from its own start, not from its earlier attempt's last write. Clock skew between the
node and this host adds to the first; the threshold's floor of 10 minutes keeps a skew of minutes
from taking a healthy job for a stalled one.

The threshold is ``Slurm.stall_after_s``: ``stall_min`` when set, else 3 evaluation intervals at
the job's time per iteration (measured by the job between two progress writes; before its first
measurement, the median of the sweep's other jobs), at least 10 minutes. A job with no measured
time and no measured neighbour is not judged. Stalled is a mark on RUNNING rows, not a state of
its own: SLURM still runs the job, so it stays active for every rule that reads states.
"""

from __future__ import annotations

import statistics
import time
from typing import Sequence

from fercluster import fmt
from fercluster.config import Slurm
from fercluster.orchestration.store.snapshot import JobRow
from fercluster.orchestration.store.vocabulary import COMPLETED, RUNNING
from fercluster.train.spec import JobSpec


def mark(rows: Sequence[JobRow], specs: Sequence[JobSpec], slurm: Slurm, now: float | None = None) -> list[JobRow]:
    """Fill in the RUNNING rows' time since progress and stall mark; the stalled rows."""
    now = time.time() if now is None else now
    every = {s.job_id: s.train.eval_every for s in specs}
    typical = sweep_rate(rows)
    for row in rows:
        if row.state != RUNNING or row.job_id not in every:
            continue
        row.since_progress_s = since_progress(row, now)
        row.stall_after_s = slurm.stall_after_s(every[row.job_id], row.sec_per_iter or typical)
        row.stalled = None not in (row.since_progress_s, row.stall_after_s) and (
            row.since_progress_s > row.stall_after_s  # type: ignore[operator]
        )
    return [r for r in rows if r.stalled]


def since_progress(row: JobRow, now: float) -> float | None:
    """Seconds since the job last wrote progress (see the module doc); None when nothing tells."""
    ages = []
    if row.progress_at is not None:
        ages.append(max(0.0, now - row.progress_at))
    if row.elapsed is not None:  # SLURM's time since this run started
        ages.append(max(0.0, row.elapsed))
    return min(ages) if ages else None


def sweep_rate(rows: Sequence[JobRow]) -> float | None:
    """The median seconds per iteration the sweep's jobs measured: running jobs' last interval,
    complete jobs' whole run (None when none has measured one)."""
    rates = [r.sec_per_iter for r in rows if r.state == RUNNING and r.sec_per_iter]
    rates += [r.elapsed / r.iterations for r in rows if r.state == COMPLETED and r.elapsed and r.iterations]
    return statistics.median(rates) if rates else None


def stall_line(row: JobRow) -> str:
    """``"no progress for 42:10 (stalled after 25:00)"``: what status shows of a stalled job."""
    return f"no progress for {fmt.duration(row.since_progress_s)} (stalled after {fmt.duration(row.stall_after_s)})"
