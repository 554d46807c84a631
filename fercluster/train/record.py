"""The two records a job writes into its run directory, typed: ``job.json`` and ``progress.json``.

One type, one reader and one writer each, here on the job side (the lowest layer that writes
them; ``fercluster.orchestration.store`` re-exports them, and the job side never imports the
orchestration). Frozen dataclasses, not pydantic models: ``status`` reads 10,000 of them per
call, and a dataclass is built in a fraction of a model's validation time.

``job.json`` is written last: present means the job is complete. One reader for every place that
asks (the job itself, ``sweep``, ``status``, ``--dry-run``, ``results``), so they all agree: a
record that is absent means not complete; one that does not parse, lacks a required field or has
another status is a FAILED job with the reason, rerun by ``sweep --retry-failed`` (the job moves
the broken record aside and trains again). Light: no torch.

Schema: ``"schema": 1`` in both files. Files written before the field existed (schema 0) have the
same fields and are read as they are.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

import orjson

from fercluster.atomic import write_json

FILE = "job.json"
PROGRESS_FILE = "progress.json"
SCHEMA = 1
REQUIRED = ("status", "val_acc", "test_acc")  # what status shows and the aggregation needs first
SELECTIONS = ("best_val", "best_test", "last")  # the checkpoints a job may record in "selections"


def number(value: Any) -> float | None:
    """A JSON number as a float; None for anything else (a bool, a string, null)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class Selection:
    """One checkpoint a job could report: its iteration and accuracies there."""

    iteration: int | None
    val_acc: float | None
    test_acc: float | None


@dataclass(frozen=True, slots=True)
class JobRecord:
    """``job.json``: what a completed job ran and reached (accuracies are fractions, 0-1)."""

    job_id: str
    status: str
    val_acc: float | None  # at the selected checkpoint
    test_acc: float | None
    selected_iteration: int | None = None
    k: float | None = None
    seed: int | None = None
    selection: str | None = None  # how the checkpoint was chosen
    host: str = ""
    nodes: tuple[str, ...] = ()  # where each rank ran
    code: Mapping[str, Any] | None = None  # the code snapshot it ran: {"hash", ...}
    timings: Mapping[str, float] = field(default_factory=dict)  # seconds: total_s, ...
    spec: Mapping[str, Any] = field(default_factory=dict)  # the JobSpec as a dict
    selections: Mapping[str, Selection] | None = None  # best_val, best_test, last (when written)
    extra: Mapping[str, Any] = field(default_factory=dict)  # the rest: packages, device, ...
    schema: int = SCHEMA

    @property
    def node(self) -> str:
        """Its nodes, each once, or its host."""
        return ",".join(dict.fromkeys(self.nodes)) if self.nodes else self.host

    @property
    def code_hash(self) -> str | None:
        return str(self.code["hash"]) if isinstance(self.code, Mapping) and self.code.get("hash") else None

    @property
    def elapsed_s(self) -> float | None:
        return number(self.timings.get("total_s"))

    @property
    def iterations(self) -> int | None:
        train = self.spec.get("train")
        return _int(train.get("iterations")) if isinstance(train, Mapping) else None

    def to_dict(self) -> dict[str, Any]:
        out = {**self.extra}
        for f in fields(self):
            if f.name not in ("extra", "selections", "nodes"):
                out[f.name] = getattr(self, f.name)
        out["nodes"] = list(self.nodes)
        if self.selections is not None:
            out["selections"] = {
                k: {"iteration": s.iteration, "val_acc": s.val_acc, "test_acc": s.test_acc}
                for k, s in self.selections.items()
            }
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobRecord:
        """The record of a parsed ``job.json`` of any schema so far (0: without the field)."""
        names = {f.name for f in fields(cls)}
        nodes = data.get("nodes")
        timings = data.get("timings")
        spec = data.get("spec")
        return cls(
            job_id=str(data.get("job_id", "")),
            status=str(data["status"]),
            val_acc=number(data["val_acc"]),
            test_acc=number(data["test_acc"]),
            selected_iteration=_int(data.get("selected_iteration")),
            k=number(data.get("k")),
            seed=_int(data.get("seed")),
            selection=data.get("selection"),
            host=str(data.get("host") or ""),
            nodes=tuple(str(n) for n in nodes) if isinstance(nodes, list) else (),
            code=data.get("code") if isinstance(data.get("code"), Mapping) else None,
            timings=timings if isinstance(timings, Mapping) else {},
            spec=spec if isinstance(spec, Mapping) else {},
            selections=_selections(data.get("selections")),
            extra={k: v for k, v in data.items() if k not in names},
        )


def _selections(raw: Any) -> dict[str, Selection] | None:
    if not isinstance(raw, Mapping):
        return None
    return {
        key: Selection(_int(s.get("iteration")), number(s.get("val_acc")), number(s.get("test_acc")))
        for key, s in raw.items()
        if key in SELECTIONS and isinstance(s, Mapping)
    }


@dataclass(frozen=True, slots=True)
class ProgressRecord:
    """``progress.json``: where a job is, rewritten at every evaluation."""

    job_id: str = ""
    state: str = ""  # the job's own word: running, completed (job.json comes next) or failed
    iteration: int | None = None
    iterations: int | None = None
    val_acc: float | None = None  # at the last evaluation
    test_acc: float | None = None
    best_val_acc: float | None = None
    best_test_acc: float | None = None
    sec_per_iter: float | None = None
    updated: float | None = None
    error: str | None = None
    schema: int = SCHEMA

    @property
    def shown_val(self) -> float | None:
        """The accuracy status and results show for a job not complete: best so far, else last."""
        return self.best_val_acc if self.best_val_acc is not None else self.val_acc

    @property
    def shown_test(self) -> float | None:
        return self.best_test_acc if self.best_test_acc is not None else self.test_acc

    @property
    def failure(self) -> str:
        """Why the job stopped, when it says it failed ("" otherwise)."""
        return str(self.error)[:300] if self.state == "failed" and self.error else ""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProgressRecord:
        num = ("val_acc", "test_acc", "best_val_acc", "best_test_acc", "sec_per_iter", "updated")
        return cls(
            job_id=str(data.get("job_id") or ""),
            state=str(data.get("state") or ""),
            iteration=_int(data.get("iteration")),
            iterations=_int(data.get("iterations")),
            error=None if data.get("error") is None else str(data["error"]),
            **{k: number(data.get(k)) for k in num},
        )


# -- readers ---------------------------------------------------------------------------------------
def _load(path: str) -> Any:
    """The file's JSON; orjson first (several times faster), the json module for what orjson
    rejects (NaN, written by older versions), so values and error messages stay the same."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def read_job_record(run_dir: str | os.PathLike[str]) -> tuple[JobRecord | None, str]:
    """``(record, "")`` for a complete job, ``(None, "")`` when there is no ``job.json``,
    ``(None, reason)`` when it is broken."""
    try:
        data = _load(os.path.join(run_dir, FILE))
    except (FileNotFoundError, NotADirectoryError):
        return None, ""
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError and UnicodeDecodeError
        return None, f"corrupt job.json ({type(exc).__name__}: {str(exc)[:120]}); --retry-failed reruns it"
    return parse_job_record(data)


def parse_job_record(data: Any) -> tuple[JobRecord | None, str]:
    """A parsed ``job.json`` checked and typed: ``(record, "")`` or ``(None, why it is broken)``."""
    if not isinstance(data, dict):
        return None, f"corrupt job.json (a JSON {type(data).__name__}, not an object); --retry-failed reruns it"
    lacking = [key for key in REQUIRED if key not in data]
    if lacking:
        return None, f"corrupt job.json (lacks {', '.join(lacking)}); --retry-failed reruns it"
    if data["status"] != "completed":
        return None, f"corrupt job.json (status {data['status']!r}, not 'completed'); --retry-failed reruns it"
    if int(data.get("schema", 0) or 0) > SCHEMA:
        return None, f"job.json has schema {data['schema']}, newer than this fercluster's {SCHEMA}: upgrade it"
    return JobRecord.from_dict(data), ""


def read_progress(run_dir: str | os.PathLike[str]) -> ProgressRecord | None:
    """The job's ``progress.json``; None when there is none yet or it cannot be read (it is
    rewritten atomically at every evaluation: the next read sees a whole one)."""
    try:
        data = _load(os.path.join(run_dir, PROGRESS_FILE))
    except (OSError, ValueError):
        return None
    return ProgressRecord.from_dict(data) if isinstance(data, dict) else None


# -- writers ---------------------------------------------------------------------------------------
def _finite(obj: Any) -> Any:
    """JSON has no NaN: null instead."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_job_record(run_dir: str | os.PathLike[str], record: JobRecord) -> None:
    """``job.json``, written last and atomically: its presence means the job completed."""
    write_json(os.path.join(run_dir, FILE), _finite(record.to_dict()))


def write_progress(run_dir: str | os.PathLike[str], record: ProgressRecord) -> None:
    write_json(os.path.join(run_dir, PROGRESS_FILE), _finite(record.to_dict()))
