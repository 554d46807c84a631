"""One lock helper: an exclusive ``flock`` on a lock file, held for the length of a ``with`` block.

The holder writes its pid, host and start time into the lock file, so a process that finds the
lock taken can say who holds it. ``flock`` locks are released by the kernel when their holder
exits, however it exits: a lock file left behind by a crash never blocks anyone.

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
import time
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
