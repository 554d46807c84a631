"""What ``run_local``, ``aggregate`` and ``cancel`` return: frozen dataclasses, read as attributes.

Each has a short ``repr`` and ``to_dict()`` (plain JSON-able data, what the CLI prints with
``--json``), as ``Submission`` has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

# what ``analysis.report.aggregate``'s summary and ``run_local``'s counts may leave out
_SUMMARY: dict[str, Any] = {
    "complete": 0,
    "planned": 0,
    "missing": (),
    "skipped": (),
    "agreement": None,
    "agreement_shuffled": None,
}
_COUNTS: dict[str, Any] = {
    "jobs": 0,
    "ran": 0,
    "skipped": 0,
    "left_to_slurm": 0,
    "failed": 0,
    "train_s": 0.0,
    "total_s": 0.0,
    "aggregate": None,
}


@dataclass(frozen=True)
class Aggregation:
    """A sweep's report, written by ``aggregate`` (``results/<sweep>/report``)."""

    sweep: str
    complete: int  # jobs whose results went into the report
    planned: int
    missing: tuple[Any, ...]  # planned jobs not complete (as summary.json lists them)
    skipped: tuple[Any, ...]  # complete jobs whose files could not be read, and why
    agreement: float | None  # filters' agreement with the planted AU regions (synthetic data only)
    agreement_shuffled: float | None  # the same with shuffled labels (the chance level)
    accuracy: pd.DataFrame = field(repr=False)  # the accuracy table (percent), as ``Results.accuracy``
    report: Path = field(default=Path())  # report.html
    paths: Mapping[str, Path] = field(default_factory=dict, repr=False)  # every file written, by name
    summary: Mapping[str, Any] = field(default_factory=dict, repr=False)  # summary.json's content

    def __repr__(self) -> str:
        return (
            f"<Aggregation of sweep {self.sweep!r}: {self.complete} of {self.planned} jobs complete, "
            f"{len(self.missing)} missing, {len(self.skipped)} skipped; report {self.report}>"
        )

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> Aggregation:
        """From ``analysis.report.aggregate``'s result (summary.json, ``paths`` and ``table``)."""
        data = dict(summary)
        table, paths = data.pop("table"), {k: Path(v) for k, v in data.pop("paths").items()}
        read = {**_SUMMARY, **data}  # what a summary leaves out
        return cls(
            sweep=read["sweep"],
            complete=int(read["complete"]),
            planned=int(read["planned"]),
            missing=tuple(read["missing"] or ()),
            skipped=tuple(read["skipped"] or ()),
            agreement=read["agreement"],
            agreement_shuffled=read["agreement_shuffled"],
            accuracy=table,
            report=paths["report_html"],
            paths=paths,
            summary=data,
        )

    def to_dict(self) -> dict[str, Any]:
        """summary.json's content and ``paths`` (``aggregate --json``)."""
        return {**self.summary, "paths": {k: str(v) for k, v in self.paths.items()}}


@dataclass(frozen=True)
class LocalRun:
    """What ``run_local`` did: jobs by what happened to them, times, the report."""

    sweep: str
    jobs: int  # planned
    ran: int  # ran here now and completed
    skipped: int  # complete before
    left_to_slurm: int  # queued or running on SLURM: left alone
    failed: int  # ran here now and failed
    train_s: float  # seconds spent training
    total_s: float  # seconds in all, with the aggregation
    aggregation: Aggregation | None = field(default=None, repr=False)  # None: not run (a job failed, or nothing new)
    change: Any = field(default=None, repr=False)  # an OverrideChange, or None

    def __repr__(self) -> str:
        return (
            f"<LocalRun of sweep {self.sweep!r}: {self.jobs} jobs; ran {self.ran}, skipped {self.skipped} done, "
            f"failed {self.failed}, left to SLURM {self.left_to_slurm}; {self.total_s:.1f} s; report {self.report}>"
        )

    @property
    def report(self) -> Path | None:
        """The report written by this run's aggregation (None when it did not aggregate)."""
        return self.aggregation.report if self.aggregation is not None else None

    @classmethod
    def from_summary(cls, sweep: str, summary: Mapping[str, Any], change: Any = None) -> LocalRun:
        """From ``orchestration.local.run_local``'s counts and times."""
        read = {**_COUNTS, **summary}  # what the counts leave out
        return cls(
            sweep=sweep,
            **{k: int(read[k]) for k in ("jobs", "ran", "skipped", "left_to_slurm", "failed")},
            train_s=float(read["train_s"]),
            total_s=float(read["total_s"]),
            aggregation=Aggregation.from_summary(read["aggregate"]) if read["aggregate"] is not None else None,
            change=change,
        )

    def to_dict(self) -> dict[str, Any]:
        keys = ("sweep", "jobs", "ran", "skipped", "left_to_slurm", "failed", "train_s", "total_s")
        out: dict[str, Any] = {k: getattr(self, k) for k in keys}
        out["report"] = str(self.report) if self.report else None
        out["change"] = self.change.to_dict() if self.change is not None else None
        return out


@dataclass(frozen=True)
class Cancelled:
    """What ``cancel`` did: the SLURM ids it cancelled (``by_array``: the same, summed up by array)."""

    sweep: str
    slurm_ids: tuple[str, ...]
    by_array: str  # e.g. "array 1000 (2 tasks), job 1001"; "-" when none

    def __repr__(self) -> str:
        return f"<Cancelled {len(self.slurm_ids)} SLURM jobs of sweep {self.sweep!r}: {self.by_array}>"

    @classmethod
    def of(cls, sweep: str, slurm_ids: Sequence[str]) -> Cancelled:
        from fercluster.orchestration.watch.status import by_array

        return cls(sweep, tuple(slurm_ids), by_array(slurm_ids))

    def __len__(self) -> int:
        return len(self.slurm_ids)

    def to_dict(self) -> dict[str, Any]:
        return {"sweep": self.sweep, "slurm_ids": list(self.slurm_ids), "by_array": self.by_array}
