"""Which code each submission of a sweep runs: the code snapshots under ``jobs/<sweep>/code/``.

``slurm.code: snapshot`` (default): new jobs run a snapshot of the current code
(``fercluster.code.make_snapshot``, once per content); a job retried with ``--retry-failed`` reruns
on the snapshot of its latest submission (``--code current``: on the current code's); jobs of
different snapshots go in different arrays. ``slurm.code: live``: no snapshot, jobs import whatever
is installed when they start. The state records each job's code (``code``: a hash, or ``live``);
``code_status`` compares the sweep's latest snapshot with the checkout for ``fercluster status``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from fercluster import code
from fercluster.config import SweepConfig
from fercluster.errors import CodeError
from fercluster.orchestration.store.entries import AggregateEntry, ArrayEntry
from fercluster.orchestration.store.state import SweepState
from fercluster.train.spec import JobSpec

LIVE = "live"  # the code of a job that imports what is installed when it starts
RetryCode = Literal["submitted", "current"]


@dataclass(frozen=True)
class CodeChoice:
    key: str  # the snapshot's hash, or LIVE
    path: Path | None  # the snapshot folder (put first on PYTHONPATH); None: live


@dataclass
class CodePlan:
    """The code of one submission: its arrays grouped by code, and the aggregation job's."""

    current: CodeChoice  # what new jobs run
    groups: list[tuple[CodeChoice, list[JobSpec]]] = field(default_factory=list)
    aggregate: CodeChoice | None = None
    created: bool = False  # the current snapshot was made now (or, in a dry run, would be)
    earlier: dict[str, int] = field(default_factory=dict)  # jobs per code of earlier submissions
    note: str = ""  # said when this submission runs other code than earlier ones
    retry_code: RetryCode = "submitted"
    retried: frozenset[str] = frozenset()  # ids of the retried jobs among the groups
    dry_run: bool = False
    sent: dict[str, int] | None = None  # jobs per code that went in (None: before its sbatch, or a dry run)

    def summary(self) -> dict[str, Any]:
        groups = [
            {"code": c.key, "jobs": len(specs), "retried": sum(s.job_id in self.retried for s in specs)}
            for c, specs in self.groups
        ]
        return {
            "lines": [self._line(c, g["jobs"], g["retried"]) for (c, _), g in zip(self.groups, groups, strict=True)],
            "current": self.current.key,
            "path": str(self.current.path) if self.current.path else None,
            "created": self.created and not self.dry_run,  # a dry run creates nothing
            "would_create": self.created and self.dry_run,
            "retry_code": self.retry_code,
            "groups": groups,
            "aggregate": self.aggregate.key if self.aggregate else None,
            "earlier": self.earlier,
            "note": self.note,
        }

    def _line(self, choice: CodeChoice, n: int, retried: int) -> str:
        """What ``sweep`` says about one array's code: what went in, never more (an sbatch refused)."""
        verb = "would" if self.dry_run else "did"
        sent = n if self.sent is None else self.sent.get(choice.key, 0)
        if sent == 0 and not self.dry_run:
            return f"code: submitted none of the {n} jobs meant to run on {self._where(choice, 0)}"
        count = f"{sent} of {n}" if sent < n else f"{n}"
        if choice.key != self.current.key:
            return (
                f"code: {verb} rerun {count} failed jobs on snapshot {choice.key}, the code they were submitted with "
                "(--retry-failed --code current: on the current code)"
            )
        return f"code: {verb} run {count} jobs on {self._where(choice, retried)}"

    def _where(self, choice: CodeChoice, retried: int) -> str:
        if choice.key != self.current.key:
            return f"snapshot {choice.key}, the code they were submitted with"
        if choice.key == LIVE:
            where = "live code: each imports the code installed when it starts (slurm.code: live)"
        else:
            where = (
                f"snapshot {choice.key} of the current code ({'new' if self.created else 'existing'}: {choice.path})"
            )
        if retried and self.retry_code == "current":
            where += f"; {retried} of them failed jobs rerun on the current code (--code current)"
        elif retried:
            where += f"; {retried} of them failed jobs that recorded no snapshot"
        return where


def code_root(cfg: SweepConfig) -> Path:
    return Path(cfg.jobs_dir).absolute() / "code"


def current_code(cfg: SweepConfig, make: bool) -> tuple[CodeChoice, bool]:
    """The code new jobs run, and whether its snapshot is new; ``make=False`` only hashes (dry run)."""
    if cfg.slurm.code == "live":
        return CodeChoice(LIVE, None), False
    root = code_root(cfg)
    if make:
        snap = code.make_snapshot(root)
        return CodeChoice(snap.hash, snap.path), snap.created
    digest = code.code_files().hash
    return CodeChoice(digest, root / digest), code.read_snapshot(root / digest) is None


def recorded_code(cfg: SweepConfig, state: SweepState, job_id: str) -> CodeChoice | None:
    """The snapshot of a job's latest submission; None when it has none (live, or never recorded)."""
    entry = state.jobs.get(job_id)
    key = entry.code if entry is not None else None
    if not key or key == LIVE:
        return None
    path = code_root(cfg) / key
    if code.read_snapshot(path) is None:
        raise CodeError(
            f"job {job_id} ran code snapshot {key}, which is missing from {code_root(cfg)}; "
            "rerun it on the current code with --retry-failed --code current"
        )
    return CodeChoice(key, path)


def plan_code(
    cfg: SweepConfig,
    state: SweepState,
    submit: Sequence[JobSpec],
    retry: Sequence[JobSpec],
    retry_code: RetryCode = "submitted",
    make: bool = True,
) -> CodePlan:
    """Group the jobs of a submission by the code they run (see the module doc)."""
    if retry_code not in ("submitted", "current"):
        raise CodeError(f"--code: got {retry_code!r}; valid: 'submitted' (their snapshot) or 'current'")
    own = {s.job_id: recorded_code(cfg, state, s.job_id) for s in retry} if retry_code == "submitted" else {}
    uses_current = bool(submit) or any(c is None for c in own.values()) or (bool(retry) and retry_code == "current")
    needed = uses_current or not retry  # else only retries on their own snapshots (and the aggregation after them)
    current, created = current_code(cfg, make=make and needed)
    groups: dict[str, tuple[CodeChoice, list[JobSpec]]] = {}
    for spec in list(submit) + list(retry):
        choice = own.get(spec.job_id) or current
        groups.setdefault(choice.key, (choice, []))[1].append(spec)
    plan = CodePlan(
        current=current,
        groups=list(groups.values()),
        created=created and needed,
        retry_code=retry_code,
        retried=frozenset(s.job_id for s in retry),
        dry_run=not make,
    )
    plan.aggregate = current if current.key in groups or not groups else plan.groups[-1][0]
    plan.earlier = earlier_codes(state)
    others = sorted(set(plan.earlier) - {current.key})
    if current.key in groups and current.key != LIVE and others:
        ran = ", ".join(f"{k} ({plan.earlier[k]} jobs)" for k in others)
        plan.note = (
            f"sweep {cfg.name}: {len(groups[current.key][1])} jobs run code {current.key}, while earlier "
            f"submissions ran {ran}: its results mix code versions (`fercluster status` shows each job's)"
        )
    return plan


def earlier_codes(state: SweepState) -> dict[str, int]:
    """Jobs per code of their latest SLURM submission so far (jobs submitted before snapshots: live)."""
    found = Counter(str(e.code or LIVE) for e in state.jobs.values() if e.slurm_ids)
    return dict(found)


def latest_code(state: SweepState) -> str | None:
    """The code of the sweep's latest submission (an array or the aggregation job); None: none recorded."""
    subs: list[ArrayEntry | AggregateEntry] = [a for a in state.arrays.values() if a.code]
    if state.aggregate is not None and state.aggregate.code:
        subs.append(state.aggregate)
    return str(max(subs, key=lambda a: a.submitted or 0).code) if subs else None


def code_status(cfg: SweepConfig, state: SweepState, job_codes: Sequence[str | None]) -> dict[str, Any] | None:
    """The code lines of ``fercluster status``: the sweep's snapshot, its jobs by code, and whether
    the checkout now differs (with what re-running would then do). None: no submission recorded one."""
    latest = latest_code(state)
    if latest is None:
        return None
    by_code = dict(Counter(c for c in job_codes if c).most_common())
    out: dict[str, Any] = {"latest": latest, "jobs_by_code": by_code, "checkout": None, "differs": False}
    mixed = f"; jobs by code: {', '.join(f'{k} {n}' for k, n in by_code.items())}" if len(by_code) > 1 else ""
    if latest == LIVE:
        out["line"] = f"code: live (slurm.code: live): each job imports the code installed when it starts{mixed}"
        return out
    path = code_root(cfg) / latest
    out["path"] = str(path)
    out["checkout"] = checkout = code.current_hash()
    out["differs"] = checkout != latest
    out["line"] = f"code: snapshot {latest} ({path})" + ("" if out["differs"] else ", the same as the checkout") + mixed
    if out["differs"]:
        out["warning"] = (
            f"warning: the checkout's code now differs from snapshot {latest} (it hashes to {checkout}): "
            f"re-running `fercluster sweep` would submit missing jobs on {checkout}, `--retry-failed` would "
            f"rerun failed jobs on their snapshot, `--retry-failed --code current` on {checkout}"
        )
    return out
