"""The package's code: its files, their content hash, and the read-only snapshots that jobs import.

A sweep's jobs run the code it was submitted with. ``fercluster sweep`` copies the package once
per distinct content to ``jobs/<sweep>/code/<hash>/fercluster/`` (files read-only, ``SNAPSHOT.json``
beside the package), and each job's sbatch script puts that folder first on ``PYTHONPATH``
(``slurm.resources.code_setup``), so the job, its requeues and its retries import the snapshot
whatever happens to the checkout meanwhile.

The files: from git when the package is a git checkout (tracked files as they are in the working
tree, uncommitted changes included, plus untracked, not ignored files of the package's own kinds:
``*.py`` and the package data pyproject.toml declares); otherwise every file of the installed
package folder. ``__pycache__``, ``*.pyc`` and symbolic links (warned about) never count. The
hash: SHA-256 over each file's path and git blob id, in path order, cut to ``HASH_LEN`` hex
digits; git's index gives the ids of unedited tracked files, so only edited and untracked files
are read to hash (copying reads them all, checked against their ids). So a snapshot hashes
the same as the checkout it was copied from, and ``fingerprint()`` names the code a process runs,
wherever it came from (job.json records it, local runs included).
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import os
import subprocess
import time
import tomllib
import warnings
from dataclasses import dataclass, field
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
    """The files of a package's source, each named by its content's git blob id."""

    package: Path  # the package folder they were read from
    source: str  # "git" (a checkout's tracked files, and untracked ones of the package's kinds) or "folder"
    ids: Mapping[str, str]  # path relative to the package's parent ("fercluster/config.py") -> git blob id
    data: Mapping[str, bytes] = field(default_factory=dict)  # contents read already (edited, untracked files)

    @property
    def hash(self) -> str:
        return content_hash(self.ids)

    def read(self, rel: str) -> bytes:
        """The content of ``rel``, checked against its id (``CodeError`` if it changed since)."""
        data = self.data.get(rel)
        if data is None:
            data = (self.package.parent / rel).read_bytes()
        if blob_id(data) != self.ids[rel]:
            raise CodeError(
                f"{self.package.parent / rel} changed while the code was being copied; run the command again"
            )
        return data

    @property
    def contents(self) -> dict[str, bytes]:
        """Every file's content (reads them all: for copying and tests, not for hashing)."""
        return {rel: self.read(rel) for rel in self.ids}


def blob_id(data: bytes) -> str:
    """git's object id of a file's content (``git hash-object``): what ``git ls-files -s`` lists."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def content_hash(ids: Mapping[str, str]) -> str:
    """SHA-256 over each file's path and blob id, in path order."""
    digest = hashlib.sha256()
    for rel in sorted(ids):
        digest.update(rel.encode() + b"\0" + ids[rel].encode())
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


def _names(text: str) -> list[str]:
    return [n for n in text.split("\0") if n]


def _git_ids(package: Path) -> dict[str, str | None] | None:
    """Files under ``package`` -> their blob id from git's index (None: to be read: edited or untracked).

    Tracked files (git's stat cache says which were edited), and untracked, not ignored files only
    of the package's own kinds (``package_patterns``): a stray ``.env`` or notebook is never copied.
    Symbolic links are skipped with a warning (their targets may lie anywhere). None when git does
    not track the package."""
    staged = _git(package, "ls-files", "-s", "-z", "--", ".")
    if not staged:  # not a checkout, no git, or the package is ignored there (a venv inside a repo)
        return None
    ids: dict[str, str | None] = {}
    for entry in _names(staged):
        meta, _, name = entry.partition("\t")
        mode, oid = meta.split()[:2]
        if mode == "160000":
            continue  # a submodule: not part of the package's files
        ids[name] = oid if mode != "120000" and len(oid) == 40 else None  # a link (warned below); sha256 repos read
    for name in _names(_git(package, "ls-files", "-m", "-z", "--", ".") or ""):
        ids[name] = None
    patterns = package_patterns(package)
    for name in _names(_git(package, "ls-files", "--others", "--exclude-standard", "-z", "--", ".") or ""):
        if any(fnmatch.fnmatch(Path(name).name, p) for p in patterns):
            ids[name] = None
    return ids


def package_patterns(package: Path) -> tuple[str, ...]:
    """File names an untracked file must match to count: ``*.py`` and the package data the project's
    pyproject.toml declares for it (``[tool.setuptools.package-data]``)."""
    patterns = ["*.py"]
    try:
        project = tomllib.loads((package.parent / "pyproject.toml").read_text())
    except (OSError, ValueError):
        return tuple(patterns)
    data = project.get("tool", {}).get("setuptools", {}).get("package-data", {})
    patterns += [str(p) for key in (package.name, "*", "") for p in data.get(key, [])]
    return tuple(patterns)


def _folder_ids(package: Path) -> dict[str, str | None]:
    return {str(p.relative_to(package)): None for p in package.rglob("*") if p.is_file() or p.is_symlink()}


def code_files(package: Path | None = None) -> CodeFiles:
    """The source of ``package`` (default: the imported ``fercluster``), from git when it is a checkout.

    Only files git does not already name by id (edited, untracked, or outside git) are read."""
    package = Path(package or package_dir()).resolve()
    found = _git_ids(package)
    source = "git" if found is not None else "folder"
    if found is None:
        found = _folder_ids(package)
    ids, data = {}, {}
    for name, oid in sorted(found.items()):
        rel, path = f"{package.name}/{name}", package / name
        if not _counted(rel):
            continue
        if path.is_symlink():
            warnings.warn(
                f"{path} is a symbolic link: left out of the code snapshot (copy the file in instead)", stacklevel=2
            )
            continue
        if oid is None:
            if not path.is_file():
                continue  # a tracked file deleted in the working tree is gone
            data[rel] = path.read_bytes()
            oid = blob_id(data[rel])
        ids[rel] = oid
    if not ids:
        raise CodeError(f"no source files found in {package}: cannot snapshot the code jobs run")
    return CodeFiles(package=package, source=source, ids=ids, data=data)


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
        "files": len(files.ids),
        "created": time.time(),
    }
    with atomic_dir(target) as tmp:
        for rel in files.ids:
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(files.read(rel))
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
