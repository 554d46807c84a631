"""Local mode: the sweep's plan run on this machine, one job at a time, then the aggregation.

Same plan, same state file and run directories as on SLURM: completed jobs are skipped, stopped
ones resume from their checkpoint. Jobs that SLURM holds (queued or running) are left alone.
"""

from __future__ import annotations

import inspect
import os
import socket
import time
from typing import Any, Callable

from fercluster.config import SweepConfig
from fercluster.errors import FerclusterError, SlurmError
from fercluster.orchestration import plan as plan_mod
from fercluster.orchestration.coordinator import prepare_datasets
from fercluster.orchestration.monitor import job_rows
from fercluster.orchestration.state import load_state, save_state, sweep_lock


def run_local(cfg: SweepConfig, console: Any = None, runner: Callable[..., Any] | None = None,
              aggregate: bool = True, slurm_backend: Any = None, prepare: bool = True) -> dict[str, Any]:
    """Run every job of the plan that is not done; returns counts and the aggregation's result."""
    from rich.console import Console

    from fercluster.orchestration import jobs as jobs_mod

    console = console or Console()
    runner = runner or jobs_mod.local_runner()
    specs = plan_mod.expand(cfg)
    summary: dict[str, Any] = {"jobs": len(specs), "ran": 0, "skipped": 0, "left_to_slurm": 0, "failed": 0}
    t0 = time.perf_counter()
    with sweep_lock(cfg.jobs_dir):
        state = load_state(cfg.jobs_dir, cfg.name)
        rows = _rows(cfg, specs, state, slurm_backend, console)
        todo = []
        for spec, row in zip(specs, rows):
            if row.state == "COMPLETED":
                summary["skipped"] += 1
            elif row.state in ("PENDING", "RUNNING"):
                summary["left_to_slurm"] += 1
            else:
                todo.append(spec)
        console.print(f"[bold]{cfg.name}[/]: {len(specs)} jobs, {summary['skipped']} done, "
                      f"{summary['left_to_slurm']} on SLURM, {len(todo)} to run here")
        if prepare:
            prepare_datasets(cfg, {s.dataset for s in todo})
        for i, spec in enumerate(todo, 1):
            label = f"[{i}/{len(todo)}] {spec.dataset} fold {spec.fold} {spec.variant} seed {spec.seed} ({spec.job_id})"
            ok = _run_one(cfg, state, spec, runner, console, label)
            summary["ran" if ok else "failed"] += 1
    summary["train_s"] = round(time.perf_counter() - t0, 2)
    if aggregate and summary["failed"] == 0 and (summary["ran"] or not (cfg.results_dir / "report").exists()):
        summary["aggregate"] = _aggregate(cfg, console)  # nothing new and a report exists: nothing to redo
    summary["total_s"] = round(time.perf_counter() - t0, 2)
    return summary


def _rows(cfg: SweepConfig, specs: list, state: Any, backend: Any, console: Any) -> list:
    """Job rows; SLURM is asked only when this sweep has SLURM jobs (so they are not run twice)."""
    if not any(r.get("slurm_ids") for r in state.jobs.values()):
        return job_rows(specs, state, None)
    if backend is None:
        from fercluster.orchestration.backend import SlurmBackend

        backend = SlurmBackend(cfg.jobs_dir / "submitit")
    try:
        return job_rows(specs, state, backend)
    except SlurmError as exc:
        console.print(f"[yellow]SLURM not reachable ({exc}); its jobs are left alone[/]")
        return job_rows(specs, state, None)


def _run_one(cfg: SweepConfig, state: Any, spec: Any, runner: Callable[..., Any], console: Any, label: str) -> bool:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    rec = state.jobs.setdefault(spec.job_id, {"slurm_ids": [], "submissions": 0, "retries": 0})
    rec.update({"dataset": spec.dataset, "fold": spec.fold, "variant": spec.variant, "seed": spec.seed,
                "run_dir": spec.run_dir, "slurm_ids": [],
                "local": {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}})
    rec["submissions"] += 1
    save_state(cfg.jobs_dir, state)
    total = int(spec.train.get("iterations", 1))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[acc]}"), TimeElapsedColumn(), TimeRemainingColumn())
    ok = True
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(label, total=total, acc="")

        def reporter(row: dict[str, Any]) -> None:
            acc = row.get("val_acc")
            text = f"val {acc:.3f}" if isinstance(acc, float) and acc == acc else f"test {row.get('test_acc', 0):.3f}"
            bar.update(task, completed=int(row.get("iteration", 0)), acc=text)

        def progress(iteration: int, iterations: int) -> None:
            bar.update(task, completed=iteration, total=iterations)

        kwargs: dict[str, Any] = {"reporter": reporter}
        if "progress" in inspect.signature(runner).parameters:
            kwargs["progress"] = progress
        try:
            result = runner(spec, **kwargs)
            bar.update(task, completed=total)
        except FerclusterError as exc:
            ok = False
            console.print(f"[red]job {spec.job_id} failed: {exc}[/]")
            result = None
    rec["local"]["ended"] = time.time()
    save_state(cfg.jobs_dir, state)
    if result is not None and isinstance(result, dict):
        console.print(f"  {spec.job_id}: val {result.get('val_acc')}, test {result.get('test_acc')}")
    return ok


def _aggregate(cfg: SweepConfig, console: Any) -> Any:
    from fercluster.analysis.report import aggregate

    console.print("[bold]aggregating[/] ...")
    return aggregate(cfg, console=console)
