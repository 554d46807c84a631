"""What the sweep commands share on screen: the console, the jobs table and the counts line."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Sequence

from fercluster import fmt
from fercluster.orchestration.store.vocabulary import STYLE as STATE_STYLE

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from fercluster.config import SweepConfig
    from fercluster.orchestration.backend import Backend
    from fercluster.orchestration.store.snapshot import JobRow

COLUMNS = (
    "job",
    "data set",
    "fold",
    "variant",
    "seed",
    "k",
    "state",
    "iter",
    "val",
    "test",
    "elapsed",
    "node",
    "SLURM id",
    "code",
)
RIGHT = ("fold", "seed", "k", "iter", "val", "test", "elapsed")  # numbers: aligned right


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160)  # pipes: wide rows, no wrap


def backend(cfg: SweepConfig) -> Backend:
    """The sweep's SLURM backend (``fercluster.api``'s; the tests put the fake one here)."""
    from fercluster.api.sweeps import slurm_backend

    return slurm_backend(cfg)


def jobs_table(
    rows: Sequence[JobRow], title: str = "", actions: dict[str, str] | None = None, limit: int = 500
) -> Table:
    """One row per job (the first ``limit``), with an ``action`` column when ``actions`` is given."""
    from rich.table import Table

    table = Table(title=title, show_lines=False, header_style="bold")
    cols = list(COLUMNS) + (["action"] if actions is not None else [])
    for c in cols:
        table.add_column(c, justify="right" if c in RIGHT else "left")
    for row in rows[:limit]:
        cells = _cells(row)
        if actions is not None:
            cells.append(actions.get(row.job_id, ""))
        table.add_row(*cells)
    if len(rows) > limit:
        table.caption = f"{len(rows) - limit} more rows not shown (use --json)"
    return table


def _cells(row: JobRow) -> list[str]:
    style = STATE_STYLE.get(row.state, "")
    return [
        row.job_id,
        row.dataset,
        str(row.fold),
        row.variant,
        str(row.seed),
        "-" if row.k is None else f"{row.k:.3f}",
        f"[{style}]{row.state}[/]" + (f" [red]stalled {fmt.duration(row.since_progress_s)}[/]" if row.stalled else ""),
        f"{'-' if row.iteration is None else row.iteration}/{row.iterations or '?'}",
        fmt.acc(row.val_acc),
        fmt.acc(row.test_acc),
        fmt.duration(row.elapsed),
        row.node or "-",
        row.slurm_id or "-",
        row.code or "-",
    ]


def counts_line(counts: dict[str, int]) -> str:
    return "  ".join(f"[{STATE_STYLE.get(k, '')}]{k}[/] {v}" for k, v in counts.items())
