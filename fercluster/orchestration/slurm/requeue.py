"""The submitit wrapper of ``run_job`` that requeues a pre-empted or timed-out job.

It lives on the SLURM side of the code, not in ``fercluster.train``, so that the job side
imports without submitit; ``run_job`` itself is imported when the job runs (on the node).
"""

from __future__ import annotations

from typing import Any

import submitit

from fercluster.train.spec import JobSpec


class JobCheckpointable(submitit.helpers.Checkpointable):
    """``executor.submit(JobCheckpointable(), spec)`` runs ``run_job(spec)`` and requeues on SIGUSR2.

    The job saves ``checkpoint.pt`` at the step boundary after the signal, then hands the signal to
    submitit, which calls ``checkpoint`` below and requeues; the requeued job resumes from the file.
    """

    def __call__(self, spec: JobSpec | dict, **kwargs: Any) -> dict:
        from fercluster.train.job import run_job

        return run_job(spec, **kwargs)

    def checkpoint(self, spec: JobSpec | dict, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        # The state is on disk (checkpoint.pt); resubmitting the same call resumes from it.
        return submitit.helpers.DelayedSubmission(type(self)(), spec, **kwargs)
