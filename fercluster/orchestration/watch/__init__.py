"""Watching: what a sweep's jobs are doing, read from their run directories and ONE query.

- ``monitor``: ``JobRow``, ``job_rows`` (one row per job), ``cannot_start`` (jobs SLURM will not
  start by waiting), ``log_tail``.
- ``status``: ``snapshot(cfg, backend)`` (what ``status --json`` prints), ``cancel`` (under the lock),
  ``watch_interval``.
- ``cost``: ``sweep_cost`` (GPU-hours, CPU-hours, requeues of a sweep: ``status``, the report).
- ``progress``: ``job_progress`` (the progress bar of a training job).
- ``stall``: ``mark`` (RUNNING jobs whose progress has not moved for ``slurm.stall_min``).
- ``attempts``: ``job_attempts`` (a job's history of attempts with what the coordinator knows),
  ``end_stalled`` (``sweep --requeue-stalled``'s end of the attempt it requeues).
"""
