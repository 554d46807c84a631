"""The progress bar of a training job, one look for ``sweep --local`` and ``fercluster job``.

Columns: description, bar, iteration / total, an accuracy field (the task's ``acc``, empty when
unset), elapsed, remaining. rich is imported inside, so importing this module costs nothing.
"""

from __future__ import annotations

from typing import Any

from fercluster import fmt


def job_progress(console: Any = None, transient: bool = False) -> Any:
    """A ``rich.progress.Progress`` with the job bar's columns; add tasks with ``acc=...`` to fill that column."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _field_column("acc"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    return Progress(*columns, console=console, transient=transient)


def accuracy_text(row: dict[str, Any]) -> str:
    """What the ``acc`` field shows for an evaluation row: validation accuracy, else test accuracy."""
    val = fmt.acc(row.get("val_acc"))
    return f"val {val}" if val != "-" else f"test {fmt.acc(row.get('test_acc'))}"


def _field_column(name: str) -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class FieldColumn(ProgressColumn):
        """A task's field ``name`` as text; empty for tasks without it."""

        def render(self, task: Any) -> Text:
            return Text(str(task.fields.get(name, "")))

    return FieldColumn()
