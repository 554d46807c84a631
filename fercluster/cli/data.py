"""CLI commands: ``fercluster data prepare ckplus|tfd`` and ``fercluster data synth ckplus|tfd``.

A thin layer over ``fercluster.data``: the library reads and writes, this module prints counts.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Any

import typer


class CropMode(str, Enum):
    haar = "haar"
    landmarks = "landmarks"
    none = "none"


def prepare_ckplus_cmd(
    root: Path = typer.Argument(..., help="CK+ folder holding cohn-kanade-images/, Emotion/, FACS/, Landmarks/."),
    out: Path = typer.Option(..., "--out", help="Prepared folder to write (replaced atomically if it exists)."),
    crop: CropMode = typer.Option(
        CropMode.haar, "--crop", help="Face crop: haar (landmarks fallback), landmarks, none."
    ),
    classes: int = typer.Option(8, "--classes", help="8 (with neutral and contempt) or 6."),
) -> None:
    """Prepare CK+ as the authors did: first frame (neutral) + last three of each labelled sequence.

    Example: fercluster data prepare ckplus ~/data/CK+ --out data/prepared/ckplus --crop haar
    """
    if classes not in (6, 8):
        raise typer.BadParameter(f"got {classes}; CK+ has 8 or 6 classes", param_hint="--classes")
    from fercluster.data.ckplus import prepare_ckplus

    with _progress("reading CK+") as progress:
        data = prepare_ckplus(root, crop=crop.value, classes=classes, progress=progress)
    _write_and_report(data, out)


def prepare_tfd_cmd(
    matfile: Path = typer.Argument(..., help="TFD_96x96.mat (or TFD_48x48.mat, resized to 96), MATLAB v5."),
    out: Path = typer.Option(..., "--out", help="Prepared folder to write (replaced atomically if it exists)."),
) -> None:
    """Prepare TFD: the labelled images and the five official train/valid/test splits.

    Example: fercluster data prepare tfd ~/data/TFD_96x96.mat --out data/prepared/tfd
    """
    from fercluster.data.tfd import prepare_tfd

    with _progress("reading TFD") as progress:
        data = prepare_tfd(matfile, progress=progress)
    _write_and_report(data, out)


def synth_ckplus_cmd(
    root: Path = typer.Argument(..., help="New folder for the CK+-format tree."),
    subjects: int = typer.Option(40, "--subjects", min=1, help="Number of subjects."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed (same seed, same files)."),
    sequences: int = typer.Option(3, "--sequences", min=1, help="Sequences per subject."),
) -> None:
    """Write a synthetic CK+ (full frames, Emotion, FACS, Landmarks, au_regions.json).

    Example: fercluster data synth ckplus data/synthetic/ckplus --subjects 40 --seed 0
    """
    from fercluster.data import synth

    summary = synth.synth_ckplus(root, subjects=subjects, seed=seed, sequences_per_subject=sequences)
    _print_summary(f"synthetic CK+ written to {root}", summary)


def synth_tfd_cmd(
    matfile: Path = typer.Argument(..., help="The .mat file to write (sidecars go beside it)."),
    identities: int = typer.Option(40, "--identities", min=1, help="Number of identities."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed (same seed, same files)."),
    images: int = typer.Option(8, "--images", min=1, help="Labelled images per identity."),
    unlabelled: int = typer.Option(
        20, "--unlabelled", min=0, help="Extra unlabelled images (-1), as in the real file."
    ),
) -> None:
    """Write a synthetic TFD .mat (v5 layout) with <stem>.au_regions.json beside it.

    Example: fercluster data synth tfd data/synthetic/TFD_96x96.mat --identities 40 --seed 0
    """
    from fercluster.data import synth

    summary = synth.synth_tfd(
        matfile, identities=identities, seed=seed, images_per_identity=images, unlabelled=unlabelled
    )
    _print_summary(f"synthetic TFD written to {matfile}", summary)


def register(app: typer.Typer, bench: typer.Typer) -> None:
    data_app = typer.Typer(
        help="Data sets: prepare CK+ and TFD for training, generate synthetic ones.\n\n"
        "Example: fercluster data synth ckplus CK && fercluster data prepare ckplus CK --out PREPARED",
        no_args_is_help=True,
    )
    prepare_app = typer.Typer(
        help="Read a raw data set and write a prepared folder (manifest.parquet, images.npy, info.json).\n\n"
        "Example: fercluster data prepare tfd TFD_96x96.mat --out data/prepared/tfd",
        no_args_is_help=True,
    )
    synth_app = typer.Typer(
        help="Write a synthetic data set in the real files' formats.\n\n"
        "Example: fercluster data synth tfd data/synthetic/TFD_96x96.mat --identities 40",
        no_args_is_help=True,
    )
    data_app.add_typer(prepare_app, name="prepare")
    data_app.add_typer(synth_app, name="synth")
    app.add_typer(data_app, name="data")
    prepare_app.command("ckplus")(prepare_ckplus_cmd)
    prepare_app.command("tfd")(prepare_tfd_cmd)
    synth_app.command("ckplus")(synth_ckplus_cmd)
    synth_app.command("tfd")(synth_tfd_cmd)


class _progress:
    """A rich progress bar on stderr, fed by the library's ``progress(done, total)`` callback."""

    def __init__(self, description: str) -> None:
        self.description = description

    def __enter__(self) -> Any:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        self.bar = None
        if not console.is_terminal:  # logs and pipes get the counts only
            return lambda done, total: None
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        self.bar = Progress(*columns, console=console, transient=True)
        self.bar.__enter__()
        task = self.bar.add_task(self.description, total=None)
        return lambda done, total: self.bar.update(task, completed=done, total=total)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def _write_and_report(data: Any, out: Path) -> None:
    from rich.console import Console

    from fercluster.data.prepared import write_prepared

    write_prepared(out, data)
    console = Console(highlight=False)
    info = data.info
    console.print(f"[bold]{info['kind']}[/bold] prepared in {out}: {info['classes']} classes, crop {info['crop']}")
    console.print(_table(None, {k: {"": v} for k, v in data.counts.items()}, header=False))
    for name, table in data.breakdown.items():
        nested = all(isinstance(v, dict) for v in table.values())
        rows = table if nested else {k: {"images": v} for k, v in table.items()}
        console.print(_table(name, rows, header=True))
    _print_skips(console, data.skips, out)


def _table(title: str | None, rows: dict[str, dict[str, Any]], header: bool) -> Any:
    """A rich table: one row per key of ``rows``, one column per key of the inner dicts."""
    from rich.table import Table

    columns = list(dict.fromkeys(k for row in rows.values() for k in row))
    table = Table(title=title, title_justify="left", show_header=header)
    table.add_column("")
    for column in columns:
        table.add_column(str(column), justify="right")
    for key, row in rows.items():
        table.add_row(str(key), *(str(row.get(c, "")) for c in columns))
    return table


def _print_skips(console: Any, skips: list, out: Path) -> None:
    """Skips grouped by what was done and why, with an example each; the full list is a CSV."""
    if not skips:
        console.print("nothing skipped, no fallback used")
        return
    groups: dict[tuple[str, str, str], list[str]] = {}
    for s in skips:
        key = (s.action, s.what, re.sub(r"\(\d+\)", "(n)", s.reason))
        groups.setdefault(key, []).append(s.path)
    console.print(f"skipped or handled by a fallback (all {len(skips)} listed in {out / 'skipped.csv'}):")
    for (action, what, reason), paths in groups.items():
        example = paths[0] if len(paths) == 1 else f"e.g. {paths[0]}"
        console.print(f"  {len(paths)} {what}(s) {action}: {reason} ({example})", soft_wrap=True)


def _print_summary(title: str, summary: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    for key, value in (summary or {}).items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        table.add_row(str(key).replace("_", " "), str(value))
    Console(highlight=False).print(table)
