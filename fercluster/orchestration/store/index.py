"""The run index: what each complete run directory's ``job.json`` says, read once.

``results/<sweep>/index.json`` keeps, per job id, the fields ``status`` and ``results`` show of a
complete job (``RunEntry``), with the ``(mtime_ns, size)`` of the ``job.json`` it was read from.
A completed job does not change, so the next call reads only what can have changed: one
``os.stat`` per job tells whether its ``job.json`` is the one indexed; a new, replaced or removed
one is read again (or dropped). The stat and not a listing: a listing misses a record replaced in
place (``--retry-failed`` moves a broken one aside, the rerun writes a new one), a stat costs
about as much per job and needs no directory read.

A cache, never a second truth: everything in it comes from the run folders. A missing index, one
that does not parse, or one of another schema is rebuilt from them (the first, cold read). SLURM's
accounting of a job is not in the run folders, so it is not here but in ``known.json``.
``unreadable``: whether ``results`` could read the job's Parquet files, None until it looked.
``attempts``: the job's ``history.jsonl`` (``train.attempts``), read the first time it is asked for.
"""

from __future__ import annotations

import operator
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import orjson

from fercluster.atomic import umask
from fercluster.orchestration.store.records import Reader
from fercluster.train.attempts import Attempt, read_history
from fercluster.train.record import FILE as JOB_FILE
from fercluster.train.record import JobRecord, read_job_record

FILE = "index.json"
SCHEMA = 2  # 1: without attempts


@dataclass(frozen=True)  # no slots: records.Reader builds it
class RunEntry:
    """A complete job's ``job.json`` as status and results show it (``broken``: why it does not read)."""

    job_id: str
    signature: tuple[int, int]  # its job.json's (mtime_ns, size)
    broken: str = ""  # not "": a FAILED job, with this reason (the rest is empty)
    unreadable: str | None = None  # results: why its Parquet files do not read ("" they do; None: not looked)
    dataset: str | None = None
    fold: int | None = None
    variant: str | None = None
    seed: int | None = None
    kind: str = ""
    classes: int = 0
    k: float | None = None
    val_acc: float | None = None
    test_acc: float | None = None
    selected_iteration: int | None = None
    iterations: int | None = None
    node: str = ""
    elapsed_s: float | None = None
    code: str | None = None  # the code snapshot hash it ran
    # its history.jsonl (``Attempt`` rows), read on first request (``RunIndex.history``); None: not yet
    attempts: tuple[tuple[Any, ...], ...] | None = None

    @classmethod
    def of(cls, job_id: str, signature: tuple[int, int], record: JobRecord | None, broken: str) -> RunEntry:
        if record is None:
            return cls(job_id, signature, broken or "job.json does not read")
        spec = {**_SPEC, **record.spec}  # what a spec leaves out takes these
        return cls(
            job_id,
            signature,
            "",
            None,
            spec["dataset"],
            spec["fold"],
            spec["variant"],
            spec["seed"],
            str(spec["kind"] or ""),
            int(spec["classes"] or 0),
            record.k,
            record.val_acc,
            record.test_acc,
            record.selected_iteration,
            record.iterations,
            record.node,
            record.elapsed_s,
            record.code_hash,
        )

    def to_row(self) -> list[Any]:
        return list(_FIELDS(self))

    @classmethod
    def from_row(cls, row: list[Any]) -> RunEntry:
        row[1] = tuple(row[1])  # JSON has no tuples
        if len(row) == len(_RUN.names) and row[-1] is not None:
            row[-1] = tuple(tuple(a) for a in row[-1])
        return _RUN.row(row)


_RUN = Reader(RunEntry)
_FIELDS = operator.attrgetter(*_RUN.names)
_SPEC: dict[str, Any] = {"dataset": None, "fold": None, "variant": None, "seed": None, "kind": "", "classes": 0}


def signature(run_dir: str) -> tuple[int, int] | None:
    """``(mtime_ns, size)`` of the run directory's ``job.json``; None when it has none."""
    try:
        st = os.stat(f"{run_dir}/{JOB_FILE}")  # not os.path.join: 10,000 per status
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_mtime_ns, st.st_size)


class RunIndex:
    """The index of one sweep's results folder; ``refresh`` brings it in line with the run folders."""

    def __init__(self, results_dir: str | os.PathLike[str]) -> None:
        self.path = Path(results_dir) / FILE
        self.entries: dict[str, RunEntry] = {}
        self.dirty = False
        self.read_now: list[str] = []  # job ids whose job.json the last refresh read
        self.seen: set[str] = set()  # job ids whose job.json this index has checked (``entry``)
        try:
            with open(self.path, "rb") as f:
                data = orjson.loads(f.read())
            if {"schema": None, **data}["schema"] == SCHEMA:
                self.entries = {row[0]: RunEntry.from_row(row) for row in data["runs"]}
        except (OSError, orjson.JSONDecodeError, AttributeError, KeyError, TypeError, IndexError):
            self.entries = {}  # rebuilt from the run folders

    def entry(self, job_id: str, run_dir: str) -> RunEntry | None:
        """The job's entry when it is complete (its job.json exists, readable or not), else None."""
        sig = signature(run_dir)
        old = self.entries.get(job_id)
        self.seen.add(job_id)
        if sig is None:
            if old is not None:
                del self.entries[job_id]
                self.dirty = True
            return None
        if old is not None and old.signature == sig:
            return old
        record, broken = read_job_record(run_dir)
        if record is None and not broken:  # removed between the stat and the read
            return None
        new = RunEntry.of(job_id, sig, record, broken)
        self.entries[job_id] = new
        self.read_now.append(job_id)
        self.dirty = True
        return new

    def history(self, job_id: str, run_dir: str) -> tuple[Attempt, ...]:
        """The job's attempts (its ``history.jsonl``): a complete job's are read once and kept (its
        history changes no more); read on request only, so that a plain ``status`` never reads them."""
        entry = self.entries.get(job_id) if job_id in self.seen else self.entry(job_id, run_dir)
        if entry is None:
            return read_history(run_dir)
        if entry.attempts is None:
            rows = tuple(tuple(a.to_row()) for a in read_history(run_dir))
            entry = self.entries[job_id] = replace(entry, attempts=rows)
            self.dirty = True
        return tuple(Attempt.from_row(a) for a in entry.attempts or ())

    def refresh(self, runs: Iterable[tuple[str, str]]) -> dict[str, RunEntry | None]:
        """``{job id: entry or None}`` for ``(job id, run dir)`` pairs, in their order."""
        self.read_now = []
        return {job_id: self.entry(job_id, run_dir) for job_id, run_dir in runs}

    def checked(self, job_id: str, unreadable: str) -> None:
        """Record what ``results`` found of the job's Parquet files ("" when they read)."""
        old = self.entries.get(job_id)
        if old is not None and old.unreadable != unreadable:
            self.entries[job_id] = replace(old, unreadable=unreadable)
            self.dirty = True

    def save(self) -> None:
        """Write the index when it changed and the results folder exists (never create it)."""
        if self.dirty and self.path.parent.is_dir():
            rows = [e.to_row() for e in self.entries.values()]
            try:
                write_cache(self.path, orjson.dumps({"schema": SCHEMA, "runs": rows}) + b"\n")
            except OSError:
                return  # a read-only results folder: the next call reads the files again
            self.dirty = False


def write_cache(path: Path, data: bytes) -> None:
    """Write a cache file (the run index, ``known.json``) atomically, as ``atomic.write_bytes`` does,
    but without its fsync: after a crash the file may be an older one or empty, and a cache that is
    stale is brought in line, one that does not parse is rebuilt. The fsync, on a busy shared disk,
    was the slowest part of a ``status`` that changed anything."""
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~umask())
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
