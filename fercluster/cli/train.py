"""CLI commands of the training stream: ``fercluster job`` (one job, locally) and ``bench train``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from fercluster.cli.overrides import load, set_option

INTERRUPTED_EXIT = 3  # the job saved its checkpoint on a signal; running it again resumes


def job(
    config: Path = typer.Argument(..., help="Sweep config (YAML)."),
    dataset: str = typer.Option(..., "--dataset", help="Data set name in the config."),
    fold: int = typer.Option(..., "--fold", help="CK+ test fold 0-9, TFD split 0-4."),
    variant: str = typer.Option(..., "--variant", help="none, D, A or AD."),
    seed: int = typer.Option(0, "--seed", help="The job's seed (every random choice flows from it)."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Default: results/<sweep>/runs/<job id>."),
    sets: Optional[list[str]] = set_option(),
) -> None:
    """Run one job of a sweep here, with a progress bar; resumes from its checkpoint if one exists.

    Example: fercluster job configs/smoke.yaml --dataset ckplus --fold 0 --variant AD
    """
    from fercluster.config import VARIANTS
    from fercluster.data import ensure_prepared
    from fercluster.errors import ConfigError
    from fercluster.orchestration.plan import make_spec
    from fercluster.train.checkpoint import JobInterrupted
    from fercluster.train.job import run_job

    cfg = load(config, sets)
    if dataset not in cfg.datasets:
        raise ConfigError(f"--dataset: got {dataset!r}; valid: {', '.join(sorted(cfg.datasets))}")
    if variant not in VARIANTS:
        raise ConfigError(f"--variant: got {variant!r}; valid: {', '.join(VARIANTS)}")
    folds = cfg.datasets[dataset].folds
    if not 0 <= fold < folds:
        raise ConfigError(f"--fold: got {fold}; {dataset} has folds 0..{folds - 1}")
    spec = make_spec(cfg, dataset, fold, variant, seed)  # the sweep's job: same id, k from_tune resolved
    spec = replace(
        spec, prepared_dir=str(ensure_prepared(cfg, dataset)), **({"run_dir": str(run_dir)} if run_dir else {})
    )
    try:
        record = _run_with_progress(spec, run_job)
    except JobInterrupted as exc:
        typer.echo(f"interrupted: {exc}", err=True)
        raise typer.Exit(INTERRUPTED_EXIT) from None
    typer.echo(
        f"job {record['job_id']}: test accuracy {record['test_acc']:.4f} at iteration "
        f"{record['selected_iteration']} (selection {record.get('selection', '?')}, k={record['k']:.3f}); "
        f"outputs in {spec.run_dir}"
    )


def _run_with_progress(spec, run_job) -> dict:
    from fercluster.orchestration.progress import job_progress

    iterations = spec.train.iterations
    with job_progress() as bar:
        label = f"{spec.job_id} {spec.dataset} fold {spec.fold} {spec.variant}"
        task = bar.add_task(label, total=iterations)

        def reporter(row: dict) -> None:
            val = row["val_acc"]
            val_text = "-" if val != val else f"{val:.3f}"
            bar.update(
                task, completed=row["iteration"], description=f"{label} val {val_text} test {row['test_acc']:.3f}"
            )

        def progress(iteration: int, total: int) -> None:
            if iteration % 10 == 0 or iteration == total:
                bar.update(task, completed=iteration)

        return run_job(spec, reporter=reporter, progress=progress)


def bench_train(
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    size: int = typer.Option(96, "--size", help="Image side S (the paper: 96)."),
    width: float = typer.Option(1.0, "--width", help="Filter/unit multiplier (the paper: 1.0)."),
    iterations: int = typer.Option(20, "--iterations", help="Timed steps per loop (batch 64)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
) -> None:
    """Images/s of the job's training loop and of a bare PyTorch loop, alternating in one process.

    Example: fercluster bench train --device cpu --size 48 --width 0.25 --iterations 100
    """
    from fercluster.errors import ConfigError
    from fercluster.train.bench import as_dict
    from fercluster.train.bench import bench_train as run_bench

    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device: got {device!r}; valid: cpu, cuda")
    if size % 4 or not 16 <= size <= 96:
        raise ConfigError(f"--size: got {size}; valid: a multiple of 4 in 16..96")
    result = as_dict(run_bench(device=device, size=size, width=width, iterations=iterations))
    if as_json:
        typer.echo(
            json.dumps(
                {
                    k: result[k]
                    for k in ("fercluster_ips", "reference_ips", "ratio", "device", "image_size", "iterations")
                }
            )
        )
        return
    typer.echo(
        f"train loop, {result['device']}, {size}x{size}, width {width}, batch 64, {result['iterations']} steps each:\n"
        f"  fercluster  {result['fercluster_ips']:10.1f} images/s\n"
        f"  reference   {result['reference_ips']:10.1f} images/s\n"
        f"  ratio       {result['ratio']:10.3f}"
    )


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("job")(job)
    bench.command("train")(bench_train)
