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
import os
import secrets
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import AbstractSet, Any, Iterator, Mapping, Sequence

import orjson

from fercluster.atomic import write_bytes
from fercluster.errors import StoreError
from fercluster.lock import Lease, claim, file_lock
from fercluster.orchestration.store.entries import AggregateEntry, ArrayEntry, ConfigEntry, JobEntry, PendingEntry

VERSION = 1
DIR_MODE = 0o750  # submitit loads pickles from these folders: never world-writable


@dataclass
class SweepState:
    """``state.json`` in memory: typed entries (frozen), replaced as the coordinator records work."""

    sweep: str
    jobs: dict[str, JobEntry] = field(default_factory=dict)
    arrays: dict[str, ArrayEntry] = field(default_factory=dict)
    pending: dict[str, PendingEntry] = field(default_factory=dict)
    aggregate: AggregateEntry | None = None
    removed: dict[str, JobEntry] = field(default_factory=dict)
    config: ConfigEntry | None = None  # the last run's config file and --set overrides
    # the sweep lock's lease this state was loaded under (never written): ``save_state`` checks it first
    lease: Lease | None = field(default=None, repr=False, compare=False)

    # -- queries -----------------------------------------------------------------------------
    def slurm_id(self, job_id: str) -> str | None:
        entry = self.jobs.get(job_id)
        return entry.slurm_id if entry else None

    # -- updates -----------------------------------------------------------------------------
    def record_array(
        self,
        name: str,
        array_id: str,
        job_ids: Sequence[str],
        retry_ids: AbstractSet[str],
        summaries: Mapping[str, Mapping[str, Any]] | None = None,
        code: str | None = None,
        requeue_ids: AbstractSet[str] = frozenset(),
        throttle: int | None = None,
    ) -> None:
        """Jobs ``job_ids`` now run as tasks 0..n-1 of SLURM array ``array_id``, on ``code``.

        ``summaries``: per job, what status needs once the job leaves the config (data set, ...).
        ``requeue_ids``: jobs resubmitted after a pre-emption (counted as requeues, not retries).
        """
        now = time.time()
        self.arrays[name] = ArrayEntry(array_id, tuple(job_ids), now, code, throttle)
        for task, job_id in enumerate(job_ids):
            old = self.jobs.get(job_id) or JobEntry()
            sid = f"{array_id}_{task}" if len(job_ids) > 1 else array_id
            self.jobs[job_id] = replace(
                old,
                **(summaries or {}).get(job_id, {}),
                slurm_ids=(*old.slurm_ids, sid),
                submissions=old.submissions + 1,
                retries=old.retries + (job_id in retry_ids),
                requeues=old.requeues + (job_id in requeue_ids),
                array=name,
                task=task,
                submitted=now,
                code=code,
                local=None,
            )
        self.pending.pop(name, None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "sweep": self.sweep,
            "jobs": {k: e.to_dict() for k, e in self.jobs.items()},
            "arrays": {k: e.to_dict() for k, e in self.arrays.items()},
            "pending": {k: e.to_dict() for k, e in self.pending.items()},
            "aggregate": self.aggregate.to_dict() if self.aggregate else None,
            "removed": {k: e.to_dict() for k, e in self.removed.items()},
            "config": self.config.to_dict() if self.config else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepState:
        """What any version so far wrote (1: the first; entries' missing keys take their defaults)."""
        data = {**_EMPTY, **data}  # the keys a file leaves out take their defaults
        job = JobEntry.from_dict
        return cls(
            sweep=data["sweep"],
            jobs={k: job(v) for k, v in (data["jobs"] or {}).items()},
            arrays={k: ArrayEntry.from_dict(v) for k, v in (data["arrays"] or {}).items()},
            pending={k: PendingEntry.from_dict(v) for k, v in (data["pending"] or {}).items()},
            aggregate=AggregateEntry.from_dict(data["aggregate"]) if data["aggregate"] else None,
            removed={k: job(v) for k, v in (data["removed"] or {}).items()},
            config=ConfigEntry.from_dict(data["config"]) if data["config"] else None,
        )


_EMPTY: dict[str, Any] = {
    "version": VERSION,
    "sweep": None,
    "jobs": {},
    "arrays": {},
    "pending": {},
    "aggregate": None,
    "removed": {},
    "config": None,
}


def array_name(sweep: str, job_ids: list[str], nonce: str | None = None) -> str:
    """A SLURM job name for one submission: ``fc-<sweep>-<hash of its job ids>-<nonce>``.

    The nonce (new for every submission unless given) makes the name this submission's alone: a
    retry of the same jobs never takes an earlier, ended array of theirs for itself.
    """
    digest = hashlib.sha1(",".join(job_ids).encode()).hexdigest()[:10]
    return f"fc-{sweep}-{digest}-{nonce or secrets.token_hex(4)}"


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


def load_state(jobs_dir: Path, sweep: str, lease: Lease | None = None) -> SweepState:
    """The sweep's ``state.json`` (an empty state when there is none); ``StoreError`` when it
    does not parse, belongs to another sweep, or was written by a newer fercluster. ``lease``:
    the ``sweep_lock`` it is loaded under; every ``save_state`` of it is fenced by that lease."""
    path = state_path(jobs_dir)
    fix = "it is only written atomically, so it was edited by hand: fix it, or move it away (jobs are found again by name)"
    try:
        with open(path, "rb") as f:
            data = orjson.loads(f.read())
    except FileNotFoundError:
        return SweepState(sweep=sweep, lease=lease)
    except (OSError, orjson.JSONDecodeError) as exc:
        raise StoreError(f"{path} is not valid JSON ({exc}); {fix}") from None
    header = {**_EMPTY, **data} if isinstance(data, dict) else {"sweep": None, "version": VERSION}
    if header["sweep"] != sweep:
        raise StoreError(
            f"{path} belongs to sweep {header['sweep']!r}, not {sweep!r}; give the sweep's own jobs folder"
        )
    if int(header["version"]) > VERSION:
        raise StoreError(f"{path} has version {header['version']}, newer than this fercluster's {VERSION}: upgrade it")
    try:
        return replace(SweepState.from_dict(data), lease=lease)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StoreError(f"{path} has an entry that does not read ({type(exc).__name__}: {exc}); {fix}") from None


def save_state(jobs_dir: Path, state: SweepState) -> None:
    """Write ``state.json`` atomically. Loaded under the sweep lock, only while the claim is still
    this process's (``state.lease.check()``): a holder whose claim was taken over raises
    ``LockLost`` and writes nothing over the new holder's records (else its jobs run twice)."""
    if state.lease is not None:
        state.lease.check()
    ensure_dir(Path(jobs_dir))
    # compact: with 10,000 jobs the state is written twice per array and must stay fast
    write_bytes(state_path(jobs_dir), orjson.dumps(state.to_dict()) + b"\n")


@contextlib.contextmanager
def sweep_lock(jobs_dir: Path, timeout_s: float = 600.0) -> Iterator[Lease]:
    """Hold ``jobs/<sweep>/.lock`` so that two ``sweep`` commands do not both submit.

    The second waits for the first (up to ``timeout_s``) and then sees its submissions. Also
    ``jobs/<sweep>/.claim`` (``lock.claim``): flock may hold on this host only (NFS ``local_lock``,
    Lustre ``localflock``), the claim holds for every login node sharing the folder. Yields the
    claim's ``Lease``: call ``lease.check()`` before each sbatch (it raises ``LockLost`` when
    another host has taken the claim over).
    """
    ensure_dir(Path(jobs_dir))
    what = f"sweep {Path(jobs_dir).name}"
    with file_lock(Path(jobs_dir) / ".lock", timeout_s=timeout_s, what=what):  # this host
        with claim(Path(jobs_dir) / ".claim", timeout_s=timeout_s, what=what) as lease:  # every host
            yield lease
