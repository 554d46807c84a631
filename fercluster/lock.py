"""One lock helper: an exclusive ``flock`` on a lock file, held for the length of a ``with`` block.

The holder writes its pid, host and start time into the lock file, so a process that finds the
lock taken can say who holds it. ``flock`` locks are released by the kernel when their holder
exits, however it exits: a lock file left behind by a crash never blocks anyone.

``claim`` holds across hosts (login nodes sharing one file system), where flock may be node-local:
an exclusively created file (``O_EXCL``) with host, pid, process start time and a random token.

- Heartbeat: the holder rewrites the file's content with a growing counter every ``HEARTBEAT_S``;
  a failed write (an NFS hiccup) is counted and retried at the next beat.
- Staleness: a claim of this host is stale when its process is gone (pid and process start time).
  A claim of another host is stale when its content has not changed for ``STALE_S`` seconds
  measured on the waiter's own monotonic clock; no clock is ever compared with a file's mtime, so
  clock skew between login nodes or NFS attribute caching cannot make a live claim look stale.
- Takeover: the stale claim is renamed to a name unique to the taker (atomic: one of several
  takers wins), and what was renamed is compared (inode and content) with what was judged stale;
  a claim that turns out to be another's, live, is linked back (``link`` never replaces a file).
- Fencing: ``claim`` yields a ``Lease``; its ``check()``, called before each submission, raises
  ``LockLost`` when the file is no longer this holder's (inode and token) or when the heartbeat
  has not been written for ``stale_s / 2`` (others may already take the claim for stale).

Some cluster file systems cannot lock (Lustre mounted ``noflock``, NFS without lockd): there the
lock raises a ``LockError`` that says so, instead of a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from fercluster.errors import FerclusterError

POLL_S = 0.2  # how often a waiter with a timeout tries again
# flock's answers on a file system that cannot lock (EOPNOTSUPP and ENOTSUP are one value on Linux)
UNSUPPORTED = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})


class LockError(FerclusterError):
    """A lock that cannot be taken: held by another process, or not supported where it lives."""


class LockBusy(LockError):
    """Another process holds the lock (after waiting ``timeout_s``); ``holder`` is what it recorded."""

    def __init__(self, message: str, path: Path, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.path = path
        self.holder = holder


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], *, timeout_s: float | None = None, what: str = "") -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created with its folders if missing).

    ``timeout_s``: None waits as long as it takes; 0 tries once; > 0 waits up to that many
    seconds. Then ``LockBusy`` names the holder (pid, host, since when), the lock file and what to
    do. ``what``: the work the lock protects, for messages ("sweep demo", "preparing data set ck").
    ``LockError`` where the file system cannot lock.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise LockError(f"cannot open the lock file {path}{_for(what)}: {exc.strerror or exc}") from None
    try:
        _acquire(fd, path, timeout_s, what)
        _record(fd)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # before unlocking: the next holder writes its own record
    finally:
        os.close(fd)  # closing releases the lock


def _acquire(fd: int, path: Path, timeout_s: float | None, what: str) -> None:
    if timeout_s is None:
        _flock(fd, path, what, blocking=True)
        return
    deadline = time.monotonic() + max(0.0, timeout_s)
    while not _flock(fd, path, what, blocking=False):
        if time.monotonic() >= deadline:
            raise _busy(path, timeout_s, what)
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())) or 0.01)


def _flock(fd: int, path: Path, what: str, blocking: bool) -> bool:
    """True once locked; False if another process holds it (non-blocking only)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if not blocking and exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        if exc.errno in UNSUPPORTED:
            raise LockError(
                f"cannot lock {path}{_for(what)}: the file system does not support file locks "
                f"({exc.strerror or errno.errorcode.get(exc.errno, exc.errno)}); put {path.parent} on one that "
                "does (a local disk, Lustre mounted with -o flock, NFS with its lock service running)"
            ) from None
        raise


def _record(fd: int) -> None:
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)


def holder(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What the lock's holder recorded: ``pid``, ``host``, ``started`` (ISO time); {} if unreadable.

    A lock file written by an older version holds only a pid.
    """
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return {}
    try:
        record = json.loads(text)
    except ValueError:
        return {}
    if isinstance(record, int):
        return {"pid": record}
    return record if isinstance(record, dict) else {}


def _busy(path: Path, timeout_s: float, what: str) -> LockBusy:
    rec = holder(path)
    pid, host = rec.get("pid", "?"), rec.get("host", "?")
    since = f" since {rec['started']}" if rec.get("started") else ""
    waited = f" (waited {timeout_s:g} s)" if timeout_s > 0 else ""
    return LockBusy(
        f"{what + ': ' if what else ''}the lock {path} is held by process {pid} on host {host}{since}{waited}; "
        f"wait for it to finish, or stop it (kill {pid} on {host}): the lock is freed when it exits",
        path,
        rec,
    )


def _for(what: str) -> str:
    return f" ({what})" if what else ""


# -- a lock that holds across hosts: an exclusively created file ---------------------------------
# flock is node-local on NFS mounted local_lock and on Lustre localflock: two login nodes sharing
# one home would both get it. Creating a file with O_EXCL is atomic on a shared file system (NFS
# v3 and later, Lustre, GPFS), so ``claim`` arbitrates between hosts; the holder rewrites the
# file's content (a heartbeat counter) so that a claim left by a host that died stops changing.
HEARTBEAT_S = 15.0
STALE_S = 120.0  # a claim of another host that has not changed for this long is left from a crash
_clock = time.monotonic  # every interval of the claim is measured here, never against the file's mtime
_sleep = time.sleep


class LockLost(LockError):
    """The claim this process held was taken over, or its heartbeat failed for long enough that it may be."""


def process_start(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds, from /proc); None where that is unknown.

    With the pid it names one process: a pid the kernel reused has another start time."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22
        boot = next(int(ln.split()[1]) for ln in Path("/proc/stat").read_text().splitlines() if ln.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def same_process(pid: int, start: float | None) -> bool:
    """Whether ``pid`` is alive here and is the process that started at ``start`` (when known)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = process_start(pid)
    return start is None or now is None or abs(now - start) < 2.0


class Lease:
    """A held claim: its heartbeat and the fencing check.

    ``check()`` before each action the claim protects (each sbatch): it raises ``LockLost`` when
    the claim file is no longer this one (same inode, same token), or when the heartbeat has not
    written for half of ``stale_s`` (others may already judge the claim stale). ``lost`` says why.
    """

    def __init__(self, path: Path, fd: int, record: dict[str, Any], stale_s: float) -> None:
        self.path, self.record, self.stale_s = path, record, stale_s
        self.beats = 0  # heartbeats written
        self.failures = 0  # heartbeats that failed (each retried at the next beat)
        self.lost: str | None = None
        self._fd, self._ino = fd, os.fstat(fd).st_ino
        self._last_ok = _clock()
        self._mutex = threading.Lock()  # a beat's write and a check's read do not interleave

    def beat(self) -> bool:
        """Write one heartbeat (the counter in the file changes, so others see the holder alive)."""
        with self._mutex:
            try:
                if not self._mine():
                    self.lost = self.lost or f"the claim {self.path} was taken over by {holder(self.path) or 'nobody'}"
                    return False
                data = (json.dumps({**self.record, "beat": self.beats + 1}) + "\n").encode()
                os.pwrite(self._fd, data, 0)
                os.ftruncate(self._fd, len(data))
            except OSError as exc:
                self.failures += 1
                self._expire(f" (last error: {exc.strerror or exc})")
                return False
            self.beats += 1
            self._last_ok = _clock()
            return True

    def owned(self) -> bool:
        """Whether this process still holds the claim (see ``check``)."""
        with self._mutex:
            try:
                mine = self._mine()
            except OSError:
                mine = False
            self._expire("")
            return mine and self.lost is None

    def check(self) -> None:
        """Raise ``LockLost`` unless this process still holds the claim: call before each submission."""
        if not self.owned():
            why = self.lost or f"the claim {self.path} is gone or is another's ({holder(self.path) or 'none'})"
            raise LockLost(
                f"{why}; stopped before submitting more, so that two sweeps do not submit at once: "
                "run the sweep again once the other one is done"
            )

    def _mine(self) -> bool:
        try:
            ino = os.stat(self.path).st_ino
        except FileNotFoundError:
            return False
        return ino == self._ino and holder(self.path).get("token") == self.record["token"]

    def _expire(self, why: str) -> None:
        silent = _clock() - self._last_ok
        if self.lost is None and silent > self.stale_s / 2:
            self.lost = f"the heartbeat of the claim {self.path} has not been written for {silent:.0f} s{why}"


@contextlib.contextmanager
def claim(
    path: str | os.PathLike[str], *, timeout_s: float | None = None, what: str = "", stale_s: float = STALE_S
) -> Iterator[Lease]:
    """Hold ``path`` by creating it exclusively (host, pid, process start, token in it); yield a ``Lease``.

    A claim left behind is taken over when it is stale: its process is gone (same host: by pid
    and process start time) or, from another host, its content has not changed for ``stale_s``
    seconds as measured here. ``timeout_s`` as ``file_lock``; then ``LockBusy`` names the holder.
    """
    path = Path(path)
    deadline = None if timeout_s is None else _clock() + max(0.0, timeout_s)
    first: tuple[Observation, float] | None = None  # the claim as first seen unchanged, and when
    while (lease := _create(path, what, stale_s)) is None:
        seen = _observe(path)
        if seen is None:
            continue  # gone meanwhile: create it again
        if first is None or first[0] != seen:
            first = (seen, _clock())
        if _stale(seen, _clock() - first[1], stale_s):
            _take_over(path, lambda aside, seen=seen: aside == seen)
            continue
        if deadline is not None and _clock() >= deadline:
            raise _busy(path, timeout_s or 0.0, what)
        _sleep(POLL_S)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(lease, stop, min(HEARTBEAT_S, stale_s / 4)), daemon=True)
    beat.start()
    try:
        yield lease
    finally:
        stop.set()
        beat.join()
        _take_over(path, lambda aside: aside[0] == lease._ino)  # remove it if it is still this one
        os.close(lease._fd)


def _create(path: Path, what: str, stale_s: float) -> Lease | None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return None
    except OSError as exc:
        raise LockError(f"cannot create the lock file {path}{_for(what)}: {exc.strerror or exc}") from None
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": started,
        "process_start": process_start(os.getpid()),
        "token": uuid.uuid4().hex,
    }
    try:
        os.write(fd, (json.dumps({**record, "beat": 0}) + "\n").encode())
    except OSError:
        os.close(fd)
        raise
    return Lease(path, fd, record, stale_s)


Observation = tuple[int, bytes]  # a claim file as seen: its inode and its content


def _observe(path: Path) -> Observation | None:
    """The claim file's inode and content; None when it is gone."""
    try:
        with open(path, "rb") as f:
            return os.fstat(f.fileno()).st_ino, f.read()
    except FileNotFoundError:
        return None


def _stale(seen: Observation, unchanged_s: float, stale_s: float) -> bool:
    """Whether the claim ``seen``, unchanged for ``unchanged_s`` seconds (measured here), is left from a crash."""
    try:
        rec = json.loads(seen[1])
    except ValueError:
        rec = {}  # mid-write or foreign: only its changing tells
    if isinstance(rec, dict) and rec.get("host") == socket.gethostname() and isinstance(rec.get("pid"), int):
        return not same_process(rec["pid"], rec.get("process_start"))
    return unchanged_s >= stale_s  # another host's: its heartbeat stopped changing it


def _take_over(path: Path, match: Callable[[Observation], bool]) -> bool:
    """Remove the claim at ``path`` if it is the one ``match`` accepts; True if removed.

    Between judging a claim stale and removing it, another process may have taken it over and
    put its own live claim there. So the claim is renamed to a name of this process's own (one
    atomic step: of several hosts doing so at once, one rename wins), and what was renamed is
    compared with what was judged: if it is another claim, it is linked back (``link`` never
    replaces a file), else removed.
    """
    _before_take_over(path)
    aside = path.with_name(f"{path.name}.stale-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    try:
        seen = _observe(aside)
        if seen is not None and match(seen):
            return True
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)  # a live claim: put back (its holder's fencing check sees a loss otherwise)
        return False
    finally:
        aside.unlink(missing_ok=True)


def _before_take_over(path: Path) -> None:
    """A hook between the stale check and the takeover: tests put a pause here to order a race."""


def _heartbeat(lease: Lease, stop: threading.Event, every_s: float) -> None:
    """Beat until stopped; a failed beat (an NFS hiccup) is retried at the next, never ends the loop."""
    while not stop.wait(every_s):
        lease.beat()
