"""A Ray Tune search over the init scale k (and optionally lr, weight decay, momentum, dropout).

A sweep config with a ``tune:`` section is a search instead of a grid. Each trial is the grid's own
training job (``fercluster.train.job.run_job``, see ``trial``); ASHA stops weak trials at
training-iteration milestones (``grace_period``, ``reduction_factor``). Each data set of
``tune.datasets`` is its own Tuner (ASHA never compares trials of different data sets), run one
after the other on the same Ray cluster.

Where things go (``<sweep>`` is the config's ``name``):

- ``jobs/<sweep>/ray/<data set>/``: Ray's experiment (trial state, Ray checkpoints); an
  interrupted search is restored from here (``Tuner.restore``), finished trials are not run again,
  errored ones only by ``sweep --retry-failed`` (``retry``).
- ``jobs/<sweep>/tune/``: ``search.json`` (the search's state, host, pid or SLURM id, and the
  fingerprint of the settings it ran with), ``status/<data set>.json`` (live, for ``status``),
  ``asha/<data set>.json`` (ASHA's rungs, see ``scheduler``), Ray logs, the submitit folder.
- ``results/<sweep>/tune/``: ``trials/<trial id>/`` (each trial's run directory),
  ``trials.parquet`` and ``best.json`` (see ``results``).

Entry points: ``run_tune_local`` (a private Ray on this machine) and ``run_search`` (on a connected
Ray; ``allocation`` runs it inside a SLURM allocation). Both return the search's summary, whose
``state`` is ``completed`` or ``interrupted`` (Ctrl-C or a signal: run again to restore it).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fercluster import code
from fercluster.config import SearchParam, SweepConfig
from fercluster.errors import ConfigError, TrainingError
from fercluster.lock import process_start
from fercluster.orchestration.store.vocabulary import FAILED
from fercluster.orchestration.tune import ray_cluster, retry
from fercluster.orchestration.tune.state import (
    asha_path,
    check_fingerprint,
    completed,
    fingerprint,
    load_search,
    results_dir,
    save_search,
    search_lock,
    state_dir,
    status_path,
    storage_dir,
)

RAY_UNFINISHED = ("PENDING", "RUNNING", "PAUSED")  # Ray's states of a trial that has not ended


def require_tune(cfg: SweepConfig) -> None:
    if cfg.tune is None:
        raise ConfigError(f"sweep {cfg.name!r} has no tune: section; add one to run a search")
    for name in cfg.tune.datasets:
        train = cfg.train_for(name)
        if train.selection != "2017":
            raise ConfigError(
                f"tune: data set {name!r} has train.selection {train.selection!r}, which has no "
                "validation split; the search ranks trials by val_acc: set selection: '2017'"
            )


# -- the search space ----------------------------------------------------------------------------
def param_space(cfg: SweepConfig, dataset: str) -> tuple[dict[str, Any], int]:
    """Ray's ``param_space`` for one data set and the number of samples to draw from it.

    ``search: random``: uniform/loguniform/choice are sampled ``num_samples`` times, ``grid``
    values are all crossed with each sample. ``search: grid``: uniform and loguniform become
    ``num_samples`` evenly spaced (linear or log) values and every combination runs once.
    Folds are always crossed (``fold`` is a grid dimension).
    """
    from ray import tune

    t = cfg.tune
    assert t is not None
    grid = t.search == "grid"
    space: dict[str, Any] = {"fold": tune.grid_search(list(t.folds)) if len(t.folds) > 1 else t.folds[0]}
    for name, p in t.space.items():
        space[name] = _dimension(p, grid, t.num_samples)
    return space, (1 if grid else t.num_samples)


def _dimension(p: SearchParam, grid: bool, n: int) -> Any:
    from ray import tune

    if p.type == "grid" or (grid and p.type == "choice"):
        return tune.grid_search([float(v) for v in p.values or []])
    if p.type == "choice":
        return tune.choice([float(v) for v in p.values or []])
    if grid:
        points = np.linspace(p.low, p.high, n) if p.type == "uniform" else np.geomspace(p.low, p.high, n)
        return tune.grid_search([round(float(v), 6) for v in points])
    return tune.uniform(p.low, p.high) if p.type == "uniform" else tune.loguniform(p.low, p.high)


def base_job(cfg: SweepConfig, dataset: str) -> dict[str, Any]:
    """What every trial of a data set shares: its JobSpec (before sampling) and where trials go."""
    from fercluster.orchestration.submit.plan import resolved_train
    from fercluster.train.spec import make_spec

    t = cfg.tune
    assert t is not None
    # k sampled: a 'from_tune' k in train: must not be resolved
    train = cfg.train_for(dataset) if "k" in t.space else resolved_train(cfg, dataset)
    # a checkpoint at every evaluation: ASHA stops trials right after one, restore resumes there
    train = train.model_copy(update={"checkpoint_every": train.eval_every})
    spec = replace(
        make_spec(cfg, dataset, t.folds[0], t.variant, t.seed, run_dir="", train=train),
        prepared_dir=str(Path(cfg.prepared_dir(dataset)).absolute()),
    )
    return {"spec": spec.to_dict(), "trials_dir": str(results_dir(cfg) / "trials"), "tunable": sorted(t.space)}


# -- the search (on a connected Ray) -------------------------------------------------------------
def run_search(cfg: SweepConfig, console: Any = None, where: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run (or restore) every data set's Tuner on the connected Ray cluster; write the outputs.

    ``console`` (a rich Console, or None) prints one line per finished trial. Returns the summary;
    ``state`` says ``interrupted`` when a Tuner was stopped before its trials ended.
    """
    from fercluster.orchestration.tune import results as tune_results

    t = cfg.tune
    assert t is not None
    started = time.time()
    # Ray warns on every forced experiment snapshot (one per trial checkpoint here): expected, not news
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no tables of Ray's own
    record = replace(
        load_search(cfg),
        **(where or {}),
        state="running",
        started=started,
        finished=None,
        fingerprint=fingerprint(cfg),
        host=socket.gethostname(),
        pid=os.getpid(),
        pid_start=process_start(os.getpid()),
    )
    save_search(cfg, record)
    rows: list[dict[str, Any]] = []
    n_trials = 0
    interrupted = False
    try:
        for name in t.datasets:
            grid, done = _run_dataset(cfg, name, console)
            iterations = int(cfg.train_for(name).iterations)
            rows += tune_results.trial_rows(grid, name, iterations, sorted(t.space), results_dir(cfg) / "trials")
            n_trials += len(grid)
            interrupted = interrupted or not done
            if interrupted:
                break
    except BaseException:
        save_search(cfg, replace(load_search(cfg), state="failed", finished=time.time()))
        raise
    return _finish(cfg, rows, n_trials, interrupted, started)


def _finish(cfg: SweepConfig, rows: list[dict], n_trials: int, interrupted: bool, started: float) -> dict[str, Any]:
    from fercluster.orchestration.tune import results as tune_results

    t = cfg.tune
    assert t is not None
    params = sorted(t.space)
    out = results_dir(cfg)
    summary: dict[str, Any] = {"sweep": cfg.name, "elapsed_s": time.time() - started}
    if rows:
        tune_results.write_trials(out / "trials.parquet", rows, params)
        summary["best"] = tune_results.write_best(out / "best.json", rows, list(t.datasets), params)
        summary["trials_path"], summary["best_path"] = str(out / "trials.parquet"), str(out / "best.json")
    per_trial = {(r["dataset"], r["trial_id"]): r for r in rows}
    summary["trials"] = n_trials
    summary["stopped_by_asha"] = sum(1 for r in per_trial.values() if r["stopped_by_asha"])
    summary["errors"] = n_trials - sum(1 for r in per_trial.values() if r["state"] != FAILED)
    summary["iterations_run"] = int(sum(r["iteration"] for r in per_trial.values()))
    state = "interrupted" if interrupted else "completed"
    kept = {k: v for k, v in summary.items() if k != "best"}
    # read again: a restore took its data set off a retry round meanwhile (``retry.take``)
    save_search(cfg, replace(load_search(cfg), state=state, finished=time.time(), summary=kept))
    summary["state"] = state
    if interrupted:
        return summary
    if n_trials and summary["errors"] == n_trials:
        raise TrainingError(f"every trial of search {cfg.name} failed; see {storage_dir(cfg)} for Ray's error files")
    return summary


def _run_dataset(cfg: SweepConfig, dataset: str, console: Any) -> tuple[Any, bool]:
    """Fit (or restore and finish) one data set's Tuner; returns its ResultGrid and whether it finished."""
    tuner, restored = _tuner(cfg, dataset, console)
    if console is not None:
        how = "restoring" if restored else "starting"
        console.print(f"[bold]{dataset}[/bold]: {how} search in {storage_dir(cfg) / dataset}")
    grid = tuner.fit()
    # After a Ctrl-C, fit() returns and its in-memory trials all read TERMINATED; the state saved
    # on disk keeps the unfinished ones PENDING (that is what a restore resumes), so ask the disk.
    from ray.tune import ExperimentAnalysis

    from fercluster.orchestration.tune.results import write_status

    saved = ExperimentAnalysis(str(storage_dir(cfg) / dataset)).trials
    done = not any(str(trial.status) in RAY_UNFINISHED for trial in saved)
    iterations = int(cfg.train_for(dataset).iterations)
    write_status(status_path(cfg, dataset), dataset, saved, iterations, sorted(cfg.tune.space), finished=done)
    return grid, done


def _tuner(cfg: SweepConfig, dataset: str, console: Any) -> tuple[Any, bool]:
    # Over 50 lines: one Tuner's settings (space, scheduler, resources, restore) read best in one place.
    import ray
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from fercluster.orchestration.tune.results import StatusCallback
    from fercluster.orchestration.tune.scheduler import PersistentASHA
    from fercluster.orchestration.tune.trial import run_trial

    t = cfg.tune
    assert t is not None
    gpus = t.gpus_per_trial if ray.cluster_resources().get("GPU", 0) > 0 else 0
    cpus = ray.cluster_resources().get("CPU", 0)
    if t.cpus_per_trial > cpus:
        raise ConfigError(f"tune.cpus_per_trial: got {t.cpus_per_trial}; the Ray cluster has {cpus:g} CPUs")
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=base_job(cfg, dataset)), {"cpu": t.cpus_per_trial, "gpu": gpus}
    )
    path = storage_dir(cfg) / dataset
    if tune.Tuner.can_restore(str(path)):
        resume_errored = retry.pending(cfg, dataset)  # only in a --retry-failed round
        tuner = tune.Tuner.restore(str(path), trainable, resume_errored=resume_errored)
        if resume_errored:
            retry.take(cfg, dataset)
        for callback in _callbacks(tuner):  # restored from the pickle, without a printer
            if isinstance(callback, StatusCallback):
                callback.printer = console
        return tuner, True
    iterations = int(cfg.train_for(dataset).iterations)
    space, samples = param_space(cfg, dataset)
    asha_state = asha_path(cfg, dataset)  # a new search: ASHA starts with empty rungs
    asha_state.unlink(missing_ok=True)
    scheduler = PersistentASHA(
        asha_state,
        time_attr="iteration",
        max_t=iterations,
        grace_period=min(t.grace_period, iterations),
        reduction_factor=t.reduction_factor,
    )
    tune_config = tune.TuneConfig(
        metric=t.metric,
        mode="max",
        scheduler=scheduler,
        num_samples=samples,
        search_alg=BasicVariantGenerator(random_state=t.seed, max_concurrent=t.max_concurrent),
        trial_dirname_creator=_trial_dirname,
        reuse_actors=True,
    )
    status = StatusCallback(status_path(cfg, dataset), dataset, iterations, sorted(t.space), printer=console)
    run_config = tune.RunConfig(
        name=dataset,
        storage_path=str(storage_dir(cfg)),
        verbose=0,
        callbacks=[status],
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=1),
    )
    return tune.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config), False


def _trial_dirname(trial: Any) -> str:
    return trial.trial_id


def _callbacks(tuner: Any) -> list[Any]:
    """The callbacks of a restored Tuner's run config (Ray has no public accessor: empty if it moved)."""
    local = getattr(tuner, "_local_tuner", None)
    run_config = local.get_run_config() if local is not None and hasattr(local, "get_run_config") else None
    return list(getattr(run_config, "callbacks", None) or [])


# -- local ---------------------------------------------------------------------------------------
def run_tune_local(cfg: SweepConfig, console: Any = None, retry_failed: bool = False) -> dict[str, Any]:
    """Run the search on this machine with a private Ray (its own ports and temp dir).

    Restores an interrupted search, and returns at once (no Ray) when the same search has completed.
    ``retry_failed``: its trials that ended in error run again (``retry``), from their last checkpoint.
    """
    require_tune(cfg)
    with search_lock(cfg):
        plan = retry.begin(cfg) if retry_failed else None
        if plan is not None and console is not None:
            console.print(plan.line(cfg.name), markup=False, highlight=False)
        done = completed(cfg)
        if done is not None:
            if console is not None:
                console.print(f"search {cfg.name}: already completed; best k = {done['best']['k']}")
            return done
        check_fingerprint(cfg)
        prepare(cfg, console)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        cpus = len(os.sched_getaffinity(0))
        token = ray_cluster.auth_token(state_dir(cfg))
        log = state_dir(cfg) / "ray-head.log"
        node = ray_cluster.start_head(cpus, None, log, token, ip="127.0.0.1", seed=f"{state_dir(cfg)}:{os.getpid()}")
        try:
            connect(node.address, token)
            if console is not None:
                console.print(f"Ray head at {node.address} ({cpus} CPUs), logs in {state_dir(cfg) / 'ray-head.log'}")
            return run_search(cfg, console, where={"mode": "local", "ray_address": node.address})
        finally:
            disconnect()
            node.stop()


def connect(address: str, token: Path) -> None:
    import logging

    import ray

    ray_cluster.use_auth(token)
    # Ray puts the driver's working directory first on its workers' sys.path: run from a checkout's
    # root, the trials would import the checkout's fercluster/ rather than the snapshot this
    # allocation runs (code.ENV, set by its sbatch script). So the driver connects from the snapshot.
    snapshot = os.environ.get(code.ENV)
    with contextlib.chdir(snapshot) if snapshot else contextlib.nullcontext():
        ray.init(
            address=address,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=True,
            include_dashboard=False,
        )


def disconnect() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def prepare(cfg: SweepConfig, console: Any = None) -> None:
    """Prepare (generate, if synthetic) every data set of the search; a no-op once done."""
    from fercluster.data import ensure_prepared

    t = cfg.tune
    assert t is not None
    for name in t.datasets:
        if console is not None:
            console.print(f"data set {name}: {ensure_prepared(cfg, name)}")
        else:
            ensure_prepared(cfg, name)
