"""SLURM as a ``Backend``: sbatch through submitit, states from sacct (``squeue --me -j`` as fallback).

``SlurmBackend`` submits (a ``train`` submission as one array, through ``executor.BoundedExecutor``:
sbatch bounded in time), finds this user's arrays by job name after a crash and adopts them
(writing submitit's pickles they miss), answers one batched state query for the sweep's ids (never a
cluster-wide one), cancels and requeues (``scontrol requeue``: ``sweep --requeue-stalled``); ``calls``
counts the commands it ran. Build it with
``orchestration.backends.backend_for(cfg)``. ``allocation_live`` asks
whether one allocation (a Ray Tune search) is still queued or running.
"""

from __future__ import annotations

import contextlib
import getpass
import io
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from fercluster.errors import SlurmError
from fercluster.orchestration.backend import (
    JobInfo,
    PartialLookup,
    Submission,
    SubmitLimit,
    SubmitRefused,
    Submitted,
)
from fercluster.orchestration.slurm import parse as slurm_parse
from fercluster.orchestration.slurm import sbatch_watch
from fercluster.orchestration.slurm.parse import SlurmInfo
from fercluster.orchestration.slurm.resources import submission_parameters
from fercluster.orchestration.store.vocabulary import ACTIVE


class SlurmBackend:
    name = "slurm"

    def __init__(
        self, folder: Path, timeout_s: float = 120.0, max_timeout_requeues: int = 3, sbatch_timeout_s: float = 60.0
    ) -> None:
        self.folder = Path(folder).absolute()  # jobs/<sweep>/submitit; one sub-folder per job
        self.timeout_s = timeout_s
        self.max_timeout_requeues = max_timeout_requeues  # slurm.max_timeout_requeues
        # sbatch retries by itself while the controller refuses jobs (MaxJobCount reached, busy):
        # bounded, so that a sweep ends with its summary instead of waiting minutes per array
        self.sbatch_timeout_s = sbatch_timeout_s
        self.calls: Counter[str] = Counter()
        self.last_source = ""
        self.last_error = ""  # why the last query could not see every id ("" when it could)
        self.last_queue_ok = False  # squeue answered the last query (JobQuery)
        self.user = getpass.getuser()  # lookups and queries are scoped to this user
        self.config_text = ""  # ``scontrol show config``, once read (``max_tasks``)

    # -- commands ----------------------------------------------------------------------------
    def _run(self, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        self.calls[argv[0]] += 1
        if shutil.which(argv[0]) is None:
            raise SlurmError(f"{argv[0]} not found on PATH: is this a SLURM login node? (use --local to run here)")
        try:
            proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            raise SlurmError(f"{' '.join(argv[:3])} ... did not answer within {self.timeout_s:.0f} s") from None
        if check and proc.returncode != 0:
            raise SlurmError(
                f"{' '.join(argv[:3])} ... failed (exit {proc.returncode}): {_last_line(proc.stderr, 500)}"
            )
        return proc

    def _ask(self, argv: Sequence[str]) -> str:
        """A query's stdout; ``SlurmError`` when it fails or times out (never an empty answer)."""
        proc = self._run(argv, check=False)
        if proc.returncode != 0:
            raise SlurmError(
                f"{' '.join(argv[:3])} ... failed (exit {proc.returncode}): {_last_line(proc.stderr, 300)}"
            )
        return proc.stdout

    def max_tasks(self) -> int:
        self.config_text = self._run(["scontrol", "show", "config"]).stdout  # MaxJobCount, for sbatch's refusals
        return slurm_parse.parse_max_array_size(self.config_text)

    def _executor(self, sub: Submission) -> Any:
        from fercluster.orchestration.slurm.executor import BoundedExecutor

        ex = BoundedExecutor(self.folder / "%j", self.max_timeout_requeues, self.sbatch_timeout_s)
        ex.update_parameters(**submission_parameters(sub))
        return ex

    def _sbatch_error(self, name: str, exc: Exception) -> SlurmError:
        """A ``SubmitLimit`` when sbatch says (or, by timing out, suggests) a limit; else a ``SlurmError``."""
        text, cause = str(exc).strip()[-500:], exc.__cause__
        code = cause.returncode if isinstance(cause, subprocess.CalledProcessError) else None
        if code in (sbatch_watch.REFUSED, sbatch_watch.REFUSED_UNSURE):  # stopped at its first retry
            said = next((ln for ln in text.splitlines() if "retrying" in ln or "queue full" in ln), text)
            limit = slurm_parse.job_count_limit(self.config_text)
            text = (
                f"sbatch for {name}: SLURM refuses new jobs ({said.strip().removeprefix('sbatch: error: ')}): "
                f"{limit} is reached; stopped at sbatch's first retry instead of waiting {self.sbatch_timeout_s:.0f} s"
            )
            return SubmitLimit(text, limit, definite=code == sbatch_watch.REFUSED)
        timed_out = code in (124, 137)  # the bound (timeout(1)'s codes)
        if timed_out:
            text = (
                f"sbatch for {name} did not finish within {self.sbatch_timeout_s:.0f} s (SLURM kept refusing "
                "it: the cluster's job limit MaxJobCount, a QOS limit, or a busy controller)"
            )
        else:
            text = f"sbatch failed for {name}: {text}"
            if "Unable to contact slurm controller" in text:
                text += " (slurmctld is down or unreachable; `scontrol ping` says when it answers)"
        # sbatch exited with its error: nothing went in; a time-out or a lost reply ("timed out"): unknown
        definite = isinstance(cause, subprocess.CalledProcessError) and not timed_out and "timed out" not in text
        limit = slurm_parse.submit_limit(text)
        if limit:
            return SubmitLimit(text, limit, definite=definite)
        return SubmitRefused(text) if definite else SlurmError(text)

    def submit(self, submission: Submission) -> Submitted:
        """One sbatch: an array of ``fn(arg)`` per arg (``train``) or one job ``fn(*args)``."""
        ex = self._executor(submission)
        self.calls["sbatch"] += 1
        try:
            # submitit also prints a failed sbatch's stderr; its error carries it, said once by the caller
            with contextlib.redirect_stderr(io.StringIO()):
                if submission.kind == "train":
                    ids = [job.job_id for job in ex.map_array(submission.fn, list(submission.args))]
                else:
                    ids = [ex.submit(submission.fn, *submission.args).job_id]
        except Exception as exc:  # submitit wraps sbatch's failure in its own error types
            raise self._sbatch_error(submission.name, exc) from None
        return Submitted(slurm_parse.array_id(ids[0]), tuple(ids))

    def adopt(self, submission: Submission, submission_id: str) -> Submitted:
        """Write the submitted pickles a ``train`` array found after a crash is missing (sbatch ran,
        the pickles were not moved in place yet): its tasks then run ``fn(arg)``."""
        ids = slurm_parse.task_ids(submission_id, submission.n_tasks)
        if submission.kind == "train":
            self._repair_pickles(ids, submission)
        return Submitted(submission_id, tuple(ids))

    def _repair_pickles(self, slurm_ids: list[str], sub: Submission) -> int:
        from submitit.core.utils import DelayedSubmission, JobPaths

        written = 0
        for sid, arg in zip(slurm_ids, sub.args, strict=True):
            paths = JobPaths(self.folder / "%j", job_id=sid)
            if paths.submitted_pickle.exists():
                continue
            paths.folder.mkdir(parents=True, exist_ok=True)
            delayed = DelayedSubmission(sub.fn, arg)
            delayed.set_timeout(sub.resources.time_min, self.max_timeout_requeues)
            delayed.dump(paths.submitted_pickle)
            written += 1
        return written

    def submissions_of(self, ids: Sequence[str]) -> list[str]:
        return slurm_parse.arrays_of(ids)

    def find(self, names: Sequence[str]) -> dict[str, str]:
        """SLURM job id of each array among ``names`` (job names) that THIS user submitted.

        squeue (``--me``), then accounting (``-u``) for the names squeue does not show; the newest
        array wins when a name was submitted more than once. A lookup that fails (an error, a
        time-out) raises ``SlurmError``: it is never taken for "not found".
        """
        if not names:
            return {}
        found: dict[str, str] = {}
        argv = ["squeue", "--me", "-h", "-t", "all", "--name=" + ",".join(names), "-o", "%F|%j|%u"]
        _newest(found, self._ask(argv), set(names), self.user)
        missing = [n for n in names if n not in found]
        if missing:
            argv = [
                "sacct",
                "-X",
                "--parsable2",
                "--noheader",
                "-S",
                "2000-01-01",
                "-u",
                self.user,
                "--name=" + ",".join(missing),
                "--format=JobID,JobName,User",
            ]
            try:
                _newest(found, self._ask(argv), set(missing), self.user)
            except SlurmError as exc:  # the queue answered, accounting did not: say what is known
                raise PartialLookup(str(exc), found) from None
        return found

    def live(self, ids: Sequence[str]) -> dict[str, JobInfo]:
        """ONE ``squeue --me -j`` for the arrays of ``ids``; ``SlurmError`` when it does not answer."""
        self.last_error = ""
        if not ids:
            return {}
        infos = self._queue(slurm_parse.arrays_of(ids))
        if self.last_error:
            raise SlurmError(self.last_error)
        return {sid: infos[sid].job_info() for sid in ids if sid in infos}

    def query(self, slurm_ids: Sequence[str]) -> dict[str, JobInfo]:
        """State of the sweep's ``slurm_ids`` from ONE batched sacct (``-j`` those ids only).

        Ids sacct does not show (accounting lags, or is off) are asked of ONE ``squeue --me -j``
        for their arrays; when sacct fails (an error, a time-out, a rate limit) that squeue is the
        only fallback, and ``last_error`` says why: ids neither answers are left out, and the
        monitor shows their last known state, marked stale. Nothing cluster-wide is ever run.
        Ids sacct says ended in a way SLURM may requeue (``parse.REQUEUED_AFTER``: a node failure)
        ride in that squeue too: when the queue has them again, its state wins (sacct lags it by
        seconds, and a requeued job is not FAILED).
        """
        return {sid: info.job_info() for sid, info in self._infos(slurm_ids).items()}

    def _infos(self, slurm_ids: Sequence[str]) -> dict[str, SlurmInfo]:
        self.last_error, self.last_queue_ok = "", False
        if not slurm_ids:
            return {}
        bases = slurm_parse.arrays_of(slurm_ids)
        try:
            text = self._ask(
                ["sacct", "-j", ",".join(bases), "--parsable2", "--noheader", f"--format={slurm_parse.SACCT_FORMAT}"]
            )
        except SlurmError as exc:
            self.last_error = str(exc)
            self.last_source = "squeue"
            return self._queue(bases)
        self.last_source = "sacct"
        infos = slurm_parse.parse_sacct(text)
        return slurm_parse.with_queue(slurm_ids, infos, lambda ids: self._queue(slurm_parse.arrays_of(ids)))

    def _queue(self, bases: Sequence[str]) -> dict[str, SlurmInfo]:
        """``squeue --me -j <bases>``: this user's given jobs only ({} when squeue fails too)."""
        argv = ["squeue", "--me", "-h", "-r", "-t", "all", "-j", ",".join(bases), "-o", slurm_parse.SQUEUE_FORMAT]
        try:
            infos = slurm_parse.parse_squeue(self._ask(argv))
        except SlurmError as exc:
            if "Invalid job id" in str(exc):  # every id has left slurmctld: it knows none of them
                self.last_queue_ok = True
                return {}
            self.last_error = f"{self.last_error}; {exc}" if self.last_error else str(exc)
            return {}
        self.last_queue_ok = True
        return infos

    def cancel(self, slurm_ids: Sequence[str]) -> None:
        if slurm_ids:
            self._run(["scancel", *slurm_ids])

    def requeue(self, slurm_ids: Sequence[str]) -> None:
        """ONE ``scontrol requeue`` of these jobs (array tasks by their own ids): SLURM ends each run
        (SIGTERM, then SIGKILL) and queues it again under the same id."""
        if slurm_ids:
            self._run(["scontrol", "requeue", ",".join(slurm_ids)])


def _last_line(stderr: str, limit: int) -> str:
    """A SLURM command's error, on one line: its last line says what went wrong (sacct without
    slurmdbd: "sacct: error: Problem talking to the database: Connection refused")."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1][-limit:] if lines else "(no message)"


def _newest(found: dict[str, str], text: str, names: set[str], user: str) -> None:
    """Lines ``id|name|user``: per name, the highest (newest) array id of ``user``."""
    for line in text.splitlines():
        jid, name, owner = (line.split("|") + ["", ""])[:3]
        jid = slurm_parse.array_id(jid.strip())
        if name not in names or owner.strip() != user or not jid.isdigit():
            continue  # another user's job of the same name (an identical sweep) is never adopted
        if name not in found or int(jid) > int(found[name]):
            found[name] = jid


def allocation_live(slurm_id: str | None, timeout_s: float = 30.0) -> bool | None:
    """Whether SLURM still has the allocation queued or running (one ``squeue`` call).

    None when it cannot tell (no id, or ``squeue`` does not answer): callers then trust their files.
    """
    if not slurm_id:
        return None
    try:
        out = subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", str(slurm_id), "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return None
    return any(slurm_parse.map_state(line) in ACTIVE for line in out.stdout.splitlines() if line.strip())
