"""One lock helper: an exclusive ``flock`` on a lock file, held for the length of a ``with`` block.

The holder writes its pid, host and start time into the lock file, so a process that finds the
lock taken can say who holds it. ``flock`` locks are released by the kernel when their holder
exits, however it exits: a lock file left behind by a crash never blocks anyone.

``claim`` holds across hosts (login nodes sharing one file system), where flock may be node-local:
an exclusively created file with host, pid and process start time, and stale-claim detection.

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
from typing import Any, Iterator

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
# v3 and later, Lustre, GPFS), so ``claim`` arbitrates between hosts; the holder refreshes the
# file's time (a heartbeat) so that a claim left by a host that died goes stale.
HEARTBEAT_S = 15.0
STALE_S = 120.0  # a claim of another host not refreshed for this long is left from a crash


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


@contextlib.contextmanager
def claim(path: str | os.PathLike[str], *, timeout_s: float | None = None, what: str = "",
          stale_s: float = STALE_S) -> Iterator[None]:  # fmt: skip
    """Hold ``path`` by creating it exclusively (host, pid, process start, start time in it).

    A claim left behind is taken over when it is stale: its process is gone (same host: by pid
    and process start time) or, from another host, its heartbeat is older than ``stale_s``.
    ``timeout_s`` as ``file_lock``; then ``LockBusy`` names the holder.
    """
    path = Path(path)
    deadline = None if timeout_s is None else time.monotonic() + max(0.0, timeout_s)
    while not _create(path, what):
        seen = _observe(path)
        if seen is not None and _stale(path, stale_s):
            _take_over(path, seen)
            continue
        if deadline is not None and time.monotonic() >= deadline:
            raise _busy(path, timeout_s or 0.0, what)
        time.sleep(POLL_S)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, stop), daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        if holder(path).get("pid") == os.getpid() and holder(path).get("host") == socket.gethostname():
            path.unlink(missing_ok=True)


def _create(path: Path, what: str) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    except OSError as exc:
        raise LockError(f"cannot create the lock file {path}{_for(what)}: {exc.strerror or exc}") from None
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": started,
              "process_start": process_start(os.getpid()), "token": uuid.uuid4().hex}  # fmt: skip
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)
    return True


Observation = tuple[int, bytes]  # a claim file as seen: its inode and its content


def _observe(path: Path) -> Observation | None:
    """The claim file's inode and content; None when it is gone."""
    try:
        with open(path, "rb") as f:
            return os.fstat(f.fileno()).st_ino, f.read()
    except FileNotFoundError:
        return None


def _stale(path: Path, stale_s: float) -> bool:
    rec = holder(path)
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False  # gone meanwhile: try to create it again
    if rec.get("host") == socket.gethostname() and isinstance(rec.get("pid"), int):
        return not same_process(rec["pid"], rec.get("process_start"))
    return age > stale_s  # another host's (or unreadable): only its heartbeat tells


def _take_over(path: Path, seen: Observation) -> bool:
    """Remove the stale claim ``seen``, and only it; True if it was removed.

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
        if _observe(aside) == seen:
            return True
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)  # a live claim: put back (its holder's fencing check sees a loss otherwise)
        return False
    finally:
        aside.unlink(missing_ok=True)


def _before_take_over(path: Path) -> None:
    """A hook between the stale check and the takeover: tests put a pause here to order a race."""


def _heartbeat(path: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            os.utime(path)
        except OSError:
            return
