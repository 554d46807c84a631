"""The coordinator's state: ``jobs/<sweep>/state.json``; the file system is the database.

Per job: its SLURM id(s) (latest last), submission count, retries, array name and task index, and
the code its latest submission runs (``code``: a snapshot hash, or ``live``; ``snapshots``).
Per array: its deterministic job name, SLURM id, job ids (task i runs job_ids[i]) and code.
``pending``: submissions written BEFORE sbatch; a crash after sbatch leaves one here, and the next
run finds the array by its job name and adopts it. ``config``: the config file and ``--set``
overrides of the last run (``status`` and a re-run without ``--set`` use them). Writes are
atomic; a lock file keeps two ``sweep`` commands from submitting the same jobs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from fercluster.atomic import write_text
from fercluster.errors import SlurmError
from fercluster.lock import claim, file_lock

VERSION = 1
DIR_MODE = 0o750  # submitit loads pickles from these folders: never world-writable


@dataclass
class SweepState:
    sweep: str
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    arrays: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    aggregate: dict[str, Any] | None = None
    removed: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the config of the last run: {"path": its YAML file, "overrides": [key=value, ...]}; status and a
    # re-run without --set use these overrides
    config: dict[str, Any] | None = None

    # -- queries -----------------------------------------------------------------------------
    def slurm_id(self, job_id: str) -> str | None:
        rec = self.jobs.get(job_id)
        ids = rec.get("slurm_ids") if rec else None
        return ids[-1] if ids else None

    # -- updates -----------------------------------------------------------------------------
    def record_array(
        self,
        name: str,
        array_id: str,
        job_ids: list[str],
        retry_ids: set[str],
        summaries: dict[str, dict[str, Any]] | None = None,
        code: str | None = None,
        requeue_ids: set[str] = frozenset(),
    ) -> None:
        """Jobs ``job_ids`` now run as tasks 0..n-1 of SLURM array ``array_id``, on ``code``.

        ``summaries``: per job, what status needs once the job leaves the config (data set, ...).
        ``requeue_ids``: jobs resubmitted after a pre-emption (counted as requeues, not retries).
        """
        now = time.time()
        self.arrays[name] = {"slurm_id": array_id, "job_ids": list(job_ids), "submitted": now, "code": code}
        for task, job_id in enumerate(job_ids):
            rec = self.jobs.setdefault(job_id, {"slurm_ids": [], "submissions": 0, "retries": 0})
            rec.update((summaries or {}).get(job_id, {}))
            rec["slurm_ids"].append(f"{array_id}_{task}" if len(job_ids) > 1 else array_id)
            rec["submissions"] += 1
            rec["retries"] += job_id in retry_ids
            rec["requeues"] = rec.get("requeues", 0) + (job_id in requeue_ids)
            rec["array"] = name
            rec["task"] = task
            rec["submitted"] = now
            rec["code"] = code
            rec.pop("local", None)
        self.pending.pop(name, None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "sweep": self.sweep,
            "jobs": self.jobs,
            "arrays": self.arrays,
            "pending": self.pending,
            "aggregate": self.aggregate,
            "removed": self.removed,
            "config": self.config,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SweepState":
        return cls(
            sweep=data["sweep"],
            jobs=data.get("jobs", {}),
            arrays=data.get("arrays", {}),
            pending=data.get("pending", {}),
            aggregate=data.get("aggregate"),
            removed=data.get("removed", {}),
            config=data.get("config"),
        )


def array_name(sweep: str, job_ids: list[str]) -> str:
    """A deterministic SLURM job name for an array: ``fc-<sweep>-<hash of its job ids>``."""
    digest = hashlib.sha1(",".join(job_ids).encode()).hexdigest()[:10]
    return f"fc-{sweep}-{digest}"


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (and parents) not world-writable; tighten it if it already exists."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    mode = path.stat().st_mode & 0o777
    if mode & 0o002 or mode & 0o020:
        os.chmod(path, mode & ~0o022)
    return path


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files and folders made inside (by submitit, and by the jobs: SLURM passes the umask on)
    are not writable by group or others; the user's stricter bits are kept."""
    old = os.umask(0o022)
    os.umask(old | 0o022)
    try:
        yield
    finally:
        os.umask(old)


def state_path(jobs_dir: Path) -> Path:
    return Path(jobs_dir) / "state.json"


def load_state(jobs_dir: Path, sweep: str) -> SweepState:
    path = state_path(jobs_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return SweepState(sweep=sweep)
    except json.JSONDecodeError as exc:
        raise SlurmError(
            f"{path} is not valid JSON ({exc}); it is only written atomically, so it was "
            "edited by hand: fix it or move it away (jobs will be found again by name)"
        ) from None
    if data.get("sweep") != sweep:
        raise SlurmError(f"{path} belongs to sweep {data.get('sweep')!r}, not {sweep!r}")
    return SweepState.from_dict(data)


def save_state(jobs_dir: Path, state: SweepState) -> None:
    ensure_dir(Path(jobs_dir))
    # compact: with 10,000 jobs the state is written twice per array and must stay fast
    write_text(state_path(jobs_dir), json.dumps(state.to_dict(), separators=(",", ":")) + "\n")


@contextlib.contextmanager
def sweep_lock(jobs_dir: Path, timeout_s: float = 600.0) -> Iterator[None]:
    """Hold ``jobs/<sweep>/.lock`` so that two ``sweep`` commands do not both submit.

    The second waits for the first (up to ``timeout_s``) and then sees its submissions. Also
    ``jobs/<sweep>/.claim`` (``lock.claim``): flock may hold on this host only (NFS ``local_lock``,
    Lustre ``localflock``), the claim holds for every login node sharing the folder.
    """
    ensure_dir(Path(jobs_dir))
    what = f"sweep {Path(jobs_dir).name}"
    with file_lock(Path(jobs_dir) / ".lock", timeout_s=timeout_s, what=what):  # this host
        with claim(Path(jobs_dir) / ".claim", timeout_s=timeout_s, what=what):  # every host
            yield
