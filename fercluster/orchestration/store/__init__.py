"""The run store: one typed handle on a sweep's folders, the files in them and who writes each.

::

    jobs/<sweep>/                          the coordinator's side (paths.jobs)
    ├── state.json        SweepState       sweep, under the lock: jobs, arrays, pending, aggregate,
    │                                      removed, config (entries.py; "version": 1)
    ├── known.json        Known            status: SLURM's last answers, final costs ("schema": 2)
    ├── aggregated.json                    the aggregation job, as it ends complete: its SLURM id
    │                                      (submit/aggregate.py: evidence once SLURM forgets it)
    ├── .lock, .claim                      sweep's lock (this host, every host)
    ├── submitit/<slurm id>_*              submitit: pickles, logs, result pickles (slurm/ only)
    ├── code/<hash>/                       code snapshots the jobs import (submit/snapshots.py)
    └── tune/search.json, tune/status/     a Ray Tune search (orchestration/tune/state.py)
    results/<sweep>/                       the jobs' side (paths.results)
    ├── index.json        RunIndex         status and results: complete runs, read once (a cache)
    ├── runs/<job id>/
    │   ├── job.json      JobRecord        the job, last: present = complete (train/record.py)
    │   ├── progress.json ProgressRecord   the job, at its start and each evaluation (train/record.py)
    │   ├── history.jsonl Attempt          the job, appended at each start and end of an attempt; the
    │   │                                  coordinator, a stalled requeue (train/attempts.py)
    │   ├── metrics.parquet, predictions.parquet, activations.parquet, model.pt, checkpoint
    └── report/                            the aggregation job

Every record is a frozen dataclass with one reader and one writer and a schema number; files of
earlier versions are read and migrated by the reader. A file that does not read is a
``StoreError`` naming the file and the fix (``known.json`` and ``index.json`` are caches: they are
rebuilt instead). The job side (``fercluster.train``) writes ``job.json``, ``progress.json`` and
``history.jsonl`` and never imports this package, so their types live in ``fercluster.train.record``
and ``fercluster.train.attempts`` and are re-exported here. Job states: ``vocabulary``.
"""

import contextlib
import gc
from typing import Iterator

from fercluster.train.attempts import Attempt, read_history
from fercluster.train.record import JobRecord, ProgressRecord, Selection, read_job_record, read_progress

__all__ = [
    "Attempt",
    "JobRecord",
    "ProgressRecord",
    "Selection",
    "many_records",
    "read_history",
    "read_job_record",
    "read_progress",
]


@contextlib.contextmanager
def many_records() -> Iterator[None]:
    """Pause the cyclic garbage collector while tens of thousands of records are read: they all
    stay alive, so each collection it would start in the meantime walks them all for nothing
    (a fifth of a warm ``status`` on 10,000 jobs). Reference counting still frees what it can."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
