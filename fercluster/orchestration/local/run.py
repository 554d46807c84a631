"""Local mode: the sweep's plan run on this machine, one job at a time, then the aggregation.

Same plan, same state file and run directories as on SLURM: completed jobs are skipped, stopped
ones resume from their checkpoint. Jobs that SLURM holds (queued or running) are left alone.
Each job's run is recorded in ``state.json`` (``local.backend``), so that ``status`` sees it.
Jobs run in this process, on the code it imported (no snapshot); job.json records its hash.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable

from fercluster import code
from fercluster.config import SweepConfig
from fercluster.errors import FerclusterError, SlurmError
from fercluster.orchestration.backend import JobQuery
from fercluster.orchestration.backends import backend_for
from fercluster.orchestration.local.backend import KEY as LOCAL_KEY
from fercluster.orchestration.local.backend import mark_ended, mark_started
from fercluster.orchestration.store.entries import JobEntry
from fercluster.orchestration.store.state import SweepState, load_state, save_state, sweep_lock
from fercluster.orchestration.store.vocabulary import ACTIVE, COMPLETED
from fercluster.orchestration.submit import jobs as jobs_mod
from fercluster.orchestration.submit import plan as plan_mod
from fercluster.orchestration.submit.coordinator import prepare_datasets
from fercluster.orchestration.watch.monitor import JobRow, job_rows
from fercluster.orchestration.watch.progress import accuracy_text, job_progress
from fercluster.train.spec import JobSpec


def run_local(
    cfg: SweepConfig,
    console: Any = None,
    runner: Callable[..., Any] | None = None,
    aggregate: bool = True,
    slurm_backend: JobQuery | None = None,
    prepare: bool = True,
) -> dict[str, Any]:
    """Run every job of the plan that is not done; returns counts and the aggregation's result.

    ``runner(spec, reporter=..., progress=...)`` runs one job (default: ``train.job.run_job``).
    """
    from rich.console import Console

    console = console or Console()
    runner = runner or jobs_mod.local_runner()
    code.fingerprint()  # the code this process imported, hashed now rather than after edits during the sweep
    specs = plan_mod.expand(cfg)
    summary: dict[str, Any] = {"jobs": len(specs), "ran": 0, "skipped": 0, "left_to_slurm": 0, "failed": 0}
    t0 = time.perf_counter()
    with sweep_lock(cfg.jobs_dir) as lease:
        state = load_state(cfg.jobs_dir, cfg.name, lease)
        rows = _rows(cfg, specs, state, slurm_backend, console)
        todo = []
        for spec, row in zip(specs, rows, strict=True):
            if row.state == COMPLETED:
                summary["skipped"] += 1
            elif row.state in ACTIVE:
                summary["left_to_slurm"] += 1
            else:
                todo.append(spec)
        console.print(
            f"[bold]{cfg.name}[/]: {len(specs)} jobs, {summary['skipped']} done, "
            f"{summary['left_to_slurm']} on SLURM, {len(todo)} to run here"
        )
        if prepare:
            prepare_datasets(cfg, {s.dataset for s in todo})
        for i, spec in enumerate(todo, 1):
            label = f"[{i}/{len(todo)}] {spec.dataset} fold {spec.fold} {spec.variant} seed {spec.seed} ({spec.job_id})"
            ok = _run_one(cfg, state, spec, runner, console, label)
            summary["ran" if ok else "failed"] += 1
    summary["train_s"] = round(time.perf_counter() - t0, 2)
    if aggregate and summary["failed"] == 0 and (summary["ran"] or not (cfg.results_dir / "report").exists()):
        console.print("[bold]aggregating[/] ...")  # nothing new and a report exists: nothing to redo
        summary["aggregate"] = jobs_mod.aggregate_job(cfg, console=console)
    summary["total_s"] = round(time.perf_counter() - t0, 2)
    return summary


def _rows(
    cfg: SweepConfig, specs: list[JobSpec], state: SweepState, backend: JobQuery | None, console: Any
) -> list[JobRow]:
    """Job rows; SLURM is asked only when this sweep has SLURM jobs (so they are not run twice)."""
    if not any(e.slurm_ids for e in state.jobs.values()):
        return job_rows(specs, state, None)
    backend = backend or backend_for(cfg)
    try:
        return job_rows(specs, state, backend)
    except SlurmError as exc:
        console.print(f"[yellow]SLURM not reachable ({exc}); its jobs are left alone[/]")
        return job_rows(specs, state, None)


def _run_one(
    cfg: SweepConfig, state: SweepState, spec: JobSpec, runner: Callable[..., Any], console: Any, label: str
) -> bool:
    run: dict[str, Any] = {}
    mark_started(run)  # run["local"]: this process, now
    old = state.jobs.get(spec.job_id) or JobEntry()
    # code: None, not a snapshot's: this run imports this process's code (job.json records its hash)
    state.jobs[spec.job_id] = replace(
        old,
        dataset=spec.dataset,
        fold=spec.fold,
        variant=spec.variant,
        seed=spec.seed,
        run_dir=spec.run_dir,
        slurm_ids=(),
        code=None,
        submissions=old.submissions + 1,
        local=dict(run[LOCAL_KEY]),
    )
    save_state(cfg.jobs_dir, state)
    total = spec.train.iterations
    ok = True
    with job_progress(console) as bar:
        task = bar.add_task(label, total=total, acc="")

        def reporter(row: dict[str, Any]) -> None:
            bar.update(task, completed=int(row.get("iteration", 0)), acc=accuracy_text(row))

        def progress(iteration: int, iterations: int) -> None:
            bar.update(task, completed=iteration, total=iterations)

        try:
            result = runner(spec, reporter=reporter, progress=progress)
            bar.update(task, completed=total)
        except FerclusterError as exc:
            ok = False
            console.print(f"[red]job {spec.job_id} failed: {exc}[/]")
            result = None
    mark_ended(run)
    state.jobs[spec.job_id] = replace(state.jobs[spec.job_id], local=dict(run[LOCAL_KEY]))
    save_state(cfg.jobs_dir, state)
    if isinstance(result, dict):
        console.print(f"  {spec.job_id}: val {result.get('val_acc')}, test {result.get('test_acc')}")
    return ok
