"""The package's code: its files, their content hash, and the read-only snapshots that jobs import.

A sweep's jobs run the code it was submitted with. ``fercluster sweep`` copies the package once
per distinct content to ``jobs/<sweep>/code/<hash>/fercluster/`` (files read-only, ``SNAPSHOT.json``
beside the package), and each job's sbatch script puts that folder first on ``PYTHONPATH``
(``slurm.resources.code_setup``), so the job, its requeues and its retries import the snapshot
whatever happens to the checkout meanwhile.

The files: from git when the package is a git checkout (tracked files as they are in the working
tree, uncommitted changes included, plus untracked files git does not ignore); otherwise every file
of the installed package folder. ``__pycache__`` and ``*.pyc`` never count. The hash: SHA-256 over
each file's path and content, in path order, cut to ``HASH_LEN`` hex digits; so a snapshot hashes
the same as the checkout it was copied from, and ``fingerprint()`` names the code a process runs,
wherever it came from (job.json records it, local runs included).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from fercluster.atomic import atomic_dir, umask, write_json
from fercluster.errors import CodeError

HASH_LEN = 10
SNAPSHOT_FILE = "SNAPSHOT.json"  # beside the package in a snapshot folder
ENV = "FERCLUSTER_CODE"  # set by a job's sbatch script: the snapshot folder the job must import
READ_ONLY = 0o444
GIT_TIMEOUT_S = 30


def package_dir() -> Path:
    """The folder of the ``fercluster`` package this process imported."""
    return Path(__file__).resolve().parent  # this module lies at the package's top


@dataclass(frozen=True)
class CodeFiles:
    """The files of a package's source, read once (hashing and copying see the same bytes)."""

    package: Path  # the package folder they were read from
    source: str  # "git" (a checkout's tracked and untracked-not-ignored files) or "folder"
    contents: Mapping[str, bytes]  # path relative to the package's parent ("fercluster/config.py") -> bytes

    @property
    def hash(self) -> str:
        return content_hash(self.contents)


def content_hash(contents: Mapping[str, bytes]) -> str:
    digest = hashlib.sha256()
    for rel in sorted(contents):
        digest.update(rel.encode() + b"\0" + hashlib.sha256(contents[rel]).digest())
    return digest.hexdigest()[:HASH_LEN]


def _counted(rel: str) -> bool:
    parts = rel.split("/")
    return "__pycache__" not in parts and not rel.endswith((".pyc", ".pyo"))


def _git(package: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(package), *args], capture_output=True, timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.decode(errors="surrogateescape") if proc.returncode == 0 else None


def _git_files(package: Path) -> list[str] | None:
    """Files under ``package`` that git tracks or would track; None when git does not track it."""
    tracked = _git(package, "ls-files", "-z", "--cached", "--", ".")
    if not tracked:  # not a checkout, no git, or the package is ignored there (a venv inside a repo)
        return None
    others = _git(package, "ls-files", "-z", "--others", "--exclude-standard", "--", ".") or ""
    names = {n for n in (tracked + others).split("\0") if n}
    return sorted(n for n in names if (package / n).is_file())  # a deleted tracked file is gone


def _folder_files(package: Path) -> list[str]:
    return sorted(str(p.relative_to(package)) for p in package.rglob("*") if p.is_file())


def code_files(package: Path | None = None) -> CodeFiles:
    """The source of ``package`` (default: the imported ``fercluster``), from git when it is a checkout."""
    package = Path(package or package_dir()).resolve()
    names = _git_files(package)
    source = "git" if names is not None else "folder"
    if names is None:
        names = _folder_files(package)
    prefix = package.name
    contents = {}
    for name in names:
        rel = f"{prefix}/{name}"
        if _counted(rel):
            contents[rel] = (package / name).read_bytes()
    if not contents:
        raise CodeError(f"no source files found in {package}: cannot snapshot the code jobs run")
    return CodeFiles(package=package, source=source, contents=contents)


def commit(package: Path) -> str | None:
    """The checkout's commit, with ``-dirty`` when it has uncommitted changes; None outside git."""
    head = _git(package, "rev-parse", "HEAD")
    if head is None:
        return None
    dirty = _git(package, "status", "--porcelain", "--untracked-files=no")
    return head.strip() + ("-dirty" if dirty else "")


# -- snapshots --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    hash: str
    path: Path  # the folder to put first on PYTHONPATH: holds the package and SNAPSHOT.json
    created: bool  # made by this call (False: a snapshot of the same content was there already)


def read_snapshot(folder: Path) -> dict[str, Any] | None:
    """The ``SNAPSHOT.json`` of a snapshot folder, or None when there is none (or it is not one)."""
    try:
        record = json.loads((Path(folder) / SNAPSHOT_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and record.get("hash") else None


def make_snapshot(root: Path, files: CodeFiles | None = None) -> Snapshot:
    """Copy the code (``files``, default: the running package's) to ``root/<hash>/``, once per hash.

    Written atomically (a folder appears complete or not at all); files are read-only. A snapshot
    of the same hash already there is kept as it is, not copied again.
    """
    files = files or code_files()
    digest = files.hash
    target = Path(root).absolute() / digest
    if (read_snapshot(target) or {}).get("hash") == digest:
        return Snapshot(digest, target, created=False)
    record = {
        "hash": digest,
        "source": files.source,
        "origin": str(files.package),
        "commit": commit(files.package) if files.source == "git" else None,
        "version": _version(),
        "files": len(files.contents),
        "created": time.time(),
    }
    with atomic_dir(target) as tmp:
        for rel, data in files.contents.items():
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            os.chmod(dest, READ_ONLY & ~umask())
        write_json(tmp / SNAPSHOT_FILE, record, mode=READ_ONLY & ~umask())
    return Snapshot(digest, target, created=True)


def running_snapshot() -> dict[str, Any] | None:
    """The record of the snapshot this process imported ``fercluster`` from; None for a checkout."""
    folder = package_dir().parent
    record = read_snapshot(folder)
    return {**record, "path": str(folder)} if record is not None else None


def current_hash() -> str:
    """The content hash of the imported package's folder as it is now (a checkout's files may have
    changed since this process imported them; ``fingerprint`` is the hash at the first call)."""
    record = running_snapshot()
    return str(record["hash"]) if record is not None else code_files().hash


@functools.cache
def fingerprint() -> str:
    """The content hash of the code this process runs (computed once: the code it imported first)."""
    return current_hash()


def code_record() -> dict[str, Any]:
    """What ``job.json`` says about the code: its hash, the snapshot folder (None when the job
    imported a checkout or an installed package: ``slurm.code: live`` or local mode), the package
    folder it imported (``fercluster.__file__``) and the commit."""
    record = running_snapshot()
    return {
        "hash": fingerprint(),
        "snapshot": record["path"] if record else None,
        "package": str(package_dir()),
        "commit": record.get("commit") if record else commit(package_dir()),
    }


def check_imported_snapshot() -> None:
    """In a job whose sbatch script named a snapshot (``ENV``): fail unless it imported that one."""
    expected = os.environ.get(ENV)
    if not expected:
        return
    want = Path(expected).resolve() / "fercluster"
    if package_dir() != want:
        raise CodeError(
            f"this job should run the code snapshot {expected} but imported fercluster from {package_dir()} "
            f"(is a folder holding fercluster/ first on sys.path?); it stopped before running other code"
        )


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("fercluster")
    except metadata.PackageNotFoundError:
        return "unknown"
