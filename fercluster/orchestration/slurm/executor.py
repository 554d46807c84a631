"""submitit's ``SlurmExecutor`` with sbatch under a time bound: ``BoundedExecutor``, the project's own.

sbatch retries by itself while the controller refuses jobs (MaxJobCount reached, a busy
controller); bounded, a sweep ends with its summary instead of waiting minutes per array. Every
sbatch runs through ``sbatch_watch.py``, which also stops it at its first "sleeping and retrying":
the cluster refuses new jobs, said at once instead of after the bound.
submitit builds the sbatch command in ``_make_submission_command``, its hook for that; it submits
an array through a fresh ``SlurmExecutor`` of its own, so the array path is restated here, as in
submitit 1.5, with a copy of THIS executor. submitit's classes are never modified.
"""

from __future__ import annotations

import sys
import typing as tp
import uuid
from pathlib import Path

from submitit.core.utils import DelayedSubmission, JobPaths
from submitit.slurm.slurm import SlurmExecutor, SlurmJob

KILL_AFTER_S = 5  # SIGKILL this long after the SIGTERM at the bound
WATCH = Path(__file__).with_name("sbatch_watch.py")


class BoundedExecutor(SlurmExecutor):
    """A ``SlurmExecutor`` whose every sbatch (single jobs and arrays) runs under ``timeout``."""

    # sbatch sleeps this long after its first "sleeping and retrying" before it asks again: stopped
    # within half of it, it surely sent nothing more (``sbatch_watch``)
    first_retry_sleep_s = 1.0

    def __init__(self, folder: Path | str, max_num_timeout: int = 3, sbatch_timeout_s: float = 60.0) -> None:
        super().__init__(folder, max_num_timeout=max_num_timeout)
        self.sbatch_timeout_s = sbatch_timeout_s

    def _make_submission_command(self, submission_file_path: Path) -> list[str]:
        command = super()._make_submission_command(submission_file_path)
        bound = str(max(1, round(self.sbatch_timeout_s)))
        sure = str(self.first_retry_sleep_s / 2)
        return [sys.executable, "-I", str(WATCH), bound, str(KILL_AFTER_S), sure, *command]

    def _internal_process_submissions(self, delayed_submissions: list[DelayedSubmission]) -> list[tp.Any]:
        if len(delayed_submissions) == 1:  # a single job: submitit's path, through this class's command
            return super()._internal_process_submissions(delayed_submissions)
        return self._submit_array(delayed_submissions)

    def _submit_array(self, delayed: list[DelayedSubmission]) -> list[SlurmJob[tp.Any]]:
        """One sbatch for an array, as ``SlurmExecutor._internal_process_submissions`` does it."""
        folder = JobPaths.get_first_id_independent_folder(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        timeout_min = self.parameters.get("time", 5)
        pickles = []
        for d in delayed:
            path = folder / f"{uuid.uuid4().hex}.pkl"
            d.set_timeout(timeout_min, self.max_num_timeout)
            d.dump(path)
            pickles.append(path)
        array_ex = type(self)(self.folder, self.max_num_timeout, self.sbatch_timeout_s)  # other jobs stay single
        array_ex.update_parameters(**self.parameters)
        array_ex.parameters["map_count"] = len(delayed)
        self._throttle()
        first = array_ex._submit_command(self._submitit_command_str)
        tasks = list(range(first.num_tasks))
        jobs: list[SlurmJob[tp.Any]] = [
            SlurmJob(folder=self.folder, job_id=f"{first.job_id}_{a}", tasks=tasks) for a in range(len(delayed))
        ]
        for job, path in zip(jobs, pickles, strict=True):
            job.paths.move_temporary_file(path, "submitted_pickle")
        return jobs
