"""CLI commands of the training stream: ``fercluster job`` (one job, locally), ``bench train`` and ``bench gpu``."""

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
    from fercluster.orchestration.submit.plan import make_spec
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
    if run_dir is None:
        _require_planned(cfg, spec)
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


def _require_planned(cfg, spec) -> None:
    """A job outside the sweep's grid must not write into the sweep's results: refuse, naming --run-dir."""
    from fercluster.errors import ConfigError
    from fercluster.orchestration.submit.plan import expand

    if any(s.job_id == spec.job_id for s in expand(cfg)):
        return
    raise ConfigError(
        f"{spec.dataset} fold {spec.fold} variant {spec.variant} seed {spec.seed} is not a job of sweep "
        f"{cfg.name!r} (its grid does not plan it); give it its own --run-dir DIR, or add it to the grid"
    )


def _run_with_progress(spec, run_job) -> dict:
    from fercluster.orchestration.watch.progress import job_progress

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


def bench_gpu(
    size: int = typer.Option(96, "--size", help="Image side (the paper: 96)."),
    width: float = typer.Option(1.0, "--width", help="Filter/unit multiplier (the paper: 1.0)."),
    iterations: int = typer.Option(50, "--iterations", min=1, help="Timed steps per mode (batch 64)."),
    loss_steps: int = typer.Option(300, "--loss-steps", min=1, help="Steps trained per mode for the loss check."),
    no_compile: bool = typer.Option(False, "--no-compile", help="Leave out the torch.compile modes."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table."),
) -> None:
    """Images/s of the paper model's training in fp32, TF32 and bf16, with and without channels_last
    and torch.compile, each checked to reach fp32's loss; 2-GPU NCCL DDP when there are two GPUs;
    the paper sweep's projected time on one GPU. Without CUDA it says so and measures nothing.

    Example: fercluster bench gpu --iterations 100
    """
    from fercluster.errors import ConfigError
    from fercluster.train.bench_gpu import bench_gpu as run_bench

    if size % 4 or not 16 <= size <= 96:
        raise ConfigError(f"--size: got {size}; valid: a multiple of 4 in 16..96")
    result = run_bench(size=size, width=width, iterations=iterations, loss_steps=loss_steps, compile=not no_compile)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    for line in gpu_lines(result):
        typer.echo(line)


def gpu_lines(result: dict) -> list[str]:
    """The text of ``bench gpu``: one row per mode, the fastest close mode, DDP, the projection."""
    import torch

    from fercluster.train.bench_gpu import PAPER_BATCH, PAPER_ITERATIONS, PAPER_RUNS

    if not result["cuda"]:
        return [
            f"no CUDA device here (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}): "
            "nothing measured; run it on a GPU node, e.g. `srun --gpus=1 fercluster bench gpu`"
        ]
    ref = result["modes"][0]
    lines = [
        f"bench gpu: {result['device']} ({result['gpus']} GPU(s)); the paper model {result['image_size']}x"
        f"{result['image_size']}, width {result['width']}, batch {result['batch']}, variant AD; "
        f"{result['iterations']} timed steps per mode, loss after {result['loss_steps']} steps",
        f"{'mode':<34} {'images/s':>10} {'loss':>7} {'vs fp32':>9} {'sweep, 1 GPU':>13}",
    ]
    for row in result["modes"]:
        if row["error"]:
            lines.append(f"{row['mode']:<34} {'failed: ' + row['error']}")
            continue
        verdict = "(ref)" if row is ref else ("close" if row["close"] else "NOT close")
        lines.append(
            f"{row['mode']:<34} {row['images_per_s']:>10.1f} {row['loss']:>7.3f} {verdict:>9} "
            f"{row['sweep_hours']:>11.1f} h"
        )
    sweep = f"{PAPER_RUNS} runs x {PAPER_ITERATIONS:,} iterations x {PAPER_BATCH} images"
    best = next((r for r in result["modes"] if r["mode"] == result["best"]), None)
    if best is None:
        lines.append("no mode reached fp32's loss: nothing to propose")
    else:
        lines.append(
            f"paper sweep ({sweep}) on one GPU: {best['sweep_hours']:.1f} h in the fastest mode with "
            f"fp32's loss ({best['mode']}), {ref['sweep_hours']:.1f} h in fp32"
        )
    ddp = result.get("ddp")
    if ddp:
        lines.append(
            f"2-GPU DDP (NCCL, {ddp['mode']}): {ddp['images_per_s']:.1f} images/s, scaling efficiency "
            f"{ddp['efficiency']:.2f}; the sweep on 2 GPUs: {ddp['sweep_hours']:.1f} h"
        )
    elif result["gpus"] < 2:
        lines.append("DDP: one GPU here, not measured")
    return lines


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("job")(job)
    bench.command("train")(bench_train)
    bench.command("gpu")(bench_gpu)
