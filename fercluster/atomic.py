"""Atomic writes of files and folders: build under a temporary name beside the target, then rename
(then fsync the folder, so that the rename itself is on disk).

A reader never sees half a file or half a folder; a crash (or a full disk) leaves the old target or
none, plus at most a stray ``.tmp-*`` (or ``.old-*``) entry that is never mistaken for the real one.
Modes follow the process umask (as ``open`` and ``mkdir`` would) unless the caller asks for one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator


def umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` sets it).

    Setting and restoring it would race with other threads creating files in between.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _mode(mode: int | None, full: int) -> int:
    return full & ~umask() if mode is None else mode


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary file path beside ``target``; on success fsync it and rename it over ``target``.

    ``mode``: the file's permissions; default 0o666 less the umask, as for a file made by ``open``
    (``mkstemp`` would leave it private). On any exception the temporary file is removed and
    ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{target.name}.", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _mode(mode, 0o666))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_dir(target.parent)


def sync_dir(folder: str | os.PathLike[str]) -> None:
    """fsync a folder, so that a rename into it survives a crash of the machine (the file's own
    fsync does not cover its name). Skipped where the platform cannot open or sync a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # EINVAL/ENOTSUP: some file systems do not sync folders
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES, errno.EROFS):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; on success swap it in as ``target``.

    ``mode``: the folder's permissions; default 0o777 less the umask, as for ``mkdir``. An existing
    ``target`` is replaced only once the new folder is complete (moved aside, the new one renamed in,
    the old one deleted; put back if the rename fails). On any exception the temporary folder is
    removed and ``target`` is left untouched. Callers decide beforehand whether ``target`` may be
    replaced at all.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}.", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, _mode(mode, 0o777))  # mkdtemp makes it private
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    sync_dir(target.parent)


def _swap_in(tmp: Path, target: Path) -> None:
    if not target.exists() and not target.is_symlink():
        os.rename(tmp, target)
        return
    old = target.parent / f".old-{target.name}.{uuid.uuid4().hex[:8]}"
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def write_bytes(target: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> None:
    with atomic_path(target, mode=mode) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike[str], text: str, *, mode: int | None = None) -> None:
    write_bytes(target, text.encode("utf-8"), mode=mode)


def write_json(target: str | os.PathLike[str], obj: Any, *, mode: int | None = None) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", mode=mode)


def write_with(target: str | os.PathLike[str], writer: Callable[[Path], None], *, mode: int | None = None) -> None:
    """Call ``writer(tmp_path)`` and move the result into place atomically."""
    with atomic_path(target, mode=mode) as tmp:
        writer(tmp)


def write_parquet(target: str | os.PathLike[str], frame: Any, *, mode: int | None = None) -> None:
    """Write a pandas DataFrame (or pyarrow Table) to Parquet atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    write_with(target, lambda tmp: pq.write_table(table, tmp), mode=mode)
