"""One Ray Tune trial: the grid's training job with the sampled parameters, reporting to Tune.

A trial is ``fercluster.train.job.run_job`` (no second training loop) on a ``JobSpec`` whose
``train`` settings carry the sampled values (``k`` as a number) and whose run directory is
``results/<sweep>/tune/trials/<trial id>/``. After each evaluation the job saves its checkpoint and
calls the reporter, which hands the row to ``ray.tune.report`` together with a Ray checkpoint (a
copy of the job's ``checkpoint.pt``), so that ASHA can stop the trial there and a restored search
resumes it from the last evaluation Tune has seen (``_restore_checkpoint``). The last evaluation is reported after the job has written its outputs
(``job.json`` etc.), so a trial that Tune counts as complete is a complete job. Imported by Ray workers only: nothing heavy at module top.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from fercluster.train.spec import JobSpec

CHECKPOINT_FILES = ("checkpoint.pt", "metrics.parquet", "progress.json")
ATTEMPTS = "attempts.jsonl"  # one line per start of the trial in this run directory (host, SLURM node)


def trial_spec(base: dict[str, Any], config: dict[str, Any], run_dir: Path) -> JobSpec:
    """The job of a trial: ``base`` (a JobSpec dict) with the sampled parameters in ``train``."""
    params = {key: config[key] for key in base["tunable"] if key in config}
    train = {**base["spec"]["train"], **{key: float(value) for key, value in params.items()}}
    spec = {**base["spec"], "train": train, "fold": int(config["fold"]), "run_dir": str(run_dir), "job_id": ""}
    # ONE process, whatever the allocation: a Ray worker started by srun inherits SLURM_NTASKS and
    # SLURM_PROCID of its task, which would otherwise make every trial a rank of one process group
    spec["processes"] = 1
    return JobSpec.from_dict(spec)


def run_trial(config: dict[str, Any], base: dict[str, Any]) -> None:
    """The Tune trainable (wrapped with ``tune.with_parameters(run_trial, base=...)``)."""
    from ray import tune

    from fercluster.train.distributed import node_name

    trial_id = tune.get_context().get_trial_id()
    run_dir = Path(base["trials_dir"]) / trial_id
    run_dir.mkdir(parents=True, exist_ok=True)
    before = _progress_iteration(run_dir)  # where the run directory stood (ahead of Ray's after a Ctrl-C)
    restored = _restore_checkpoint(tune.get_checkpoint(), run_dir)
    _record_attempt(run_dir, trial_id, restored, before)
    spec = trial_spec(base, config, run_dir)
    extra = {
        "trial_id": trial_id,
        "dataset": spec.dataset,
        "fold": spec.fold,
        "job_id": spec.job_id,
        "node": node_name(),
    }
    reporter = Reporter(run_dir, spec.train.iterations, extra)

    from fercluster.train.job import run_job

    run_job(spec, reporter=reporter)
    # The last evaluation goes to Tune only now, once the job has written its outputs: ASHA stops
    # every trial that reaches max_t, and a stop kills the trial where it stands.
    last = reporter.final or _last_metrics(run_dir)
    if last is None:
        raise RuntimeError(f"trial {trial_id}: job {spec.job_id} finished without any evaluation in {run_dir}")
    tune.report({**last, **extra})


class Reporter:
    """``reporter(row)`` for ``run_job``: one ``tune.report`` per evaluation, with a checkpoint."""

    def __init__(self, run_dir: Path, iterations: int, extra: dict[str, Any]):
        self.run_dir, self.iterations, self.extra = run_dir, iterations, extra
        self.final: dict[str, Any] | None = None  # the last evaluation, reported after the job ends

    def __call__(self, row: dict[str, Any]) -> None:
        from ray import tune

        metrics = {key: _plain(value) for key, value in row.items()}
        if int(row["iteration"]) >= self.iterations:
            self.final = metrics
            return
        metrics.update(self.extra)
        # the job saved checkpoint.pt just before this call (it does for every evaluation but the last)
        with tempfile.TemporaryDirectory(prefix=".ray-ckpt-", dir=self.run_dir) as tmp:
            for name in CHECKPOINT_FILES:
                _link_or_copy(self.run_dir / name, Path(tmp) / name)
            (Path(tmp) / "trial.json").write_text(json.dumps({"iteration": int(row["iteration"])}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def _restore_checkpoint(checkpoint: Any, run_dir: Path) -> int | None:
    """Put the run directory back to the last checkpoint Tune has seen; its iteration, or None.

    The job saves ``checkpoint.pt`` (and its metrics) just before it reports an evaluation. A
    search stopped between that save and the driver's handling of the report leaves the run
    directory one evaluation ahead of Ray's checkpoint: resumed from there, the job would never
    report that evaluation, and ASHA would judge the trial at that rung with a later result, not
    as an uninterrupted search would. So Ray's checkpoint wins (its files replace the run
    directory's; without one the trial starts over), and the job reports every evaluation Tune
    has not seen. A complete job is left as it is: it could only finish once Tune had seen every
    evaluation but its last (a report waits for the driver's answer).
    """
    from fercluster.train.record import read_job_record

    if read_job_record(run_dir)[0] is not None:
        return None
    if checkpoint is None:
        for name in CHECKPOINT_FILES:
            (run_dir / name).unlink(missing_ok=True)
        return None
    with checkpoint.as_directory() as folder:
        info = json.loads((Path(folder) / "trial.json").read_text())
        for name in CHECKPOINT_FILES:
            if (Path(folder) / name).exists():
                _replace_with_copy(Path(folder) / name, run_dir / name)
            else:
                (run_dir / name).unlink(missing_ok=True)
    return int(info["iteration"])


def _replace_with_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes a copy of ``src`` by rename: a hard link to ``dst`` keeps the old content."""
    from fercluster.atomic import atomic_path

    with atomic_path(dst) as tmp:
        shutil.copy2(src, tmp)


def _progress_iteration(run_dir: Path) -> int | None:
    try:
        return int(json.loads((run_dir / "progress.json").read_text())["iteration"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _record_attempt(run_dir: Path, trial_id: str, restored: int | None, before: int | None) -> None:
    from fercluster.train.distributed import node_name

    line = {
        "trial_id": trial_id,
        "time": time.time(),
        "host": socket.gethostname(),
        "node": node_name(),  # the SLURM node (several may share a host)
        "pid": os.getpid(),
        "ray_checkpoint_iteration": restored,
        "run_dir_iteration": before,  # the job's progress before the restore (None: none)
        "has_job_checkpoint": (run_dir / "checkpoint.pt").exists(),
    }
    with open(run_dir / ATTEMPTS, "a") as f:
        f.write(json.dumps(line) + "\n")


def _last_metrics(run_dir: Path) -> dict[str, Any] | None:
    import pandas as pd

    path = run_dir / "metrics.parquet"
    if not path.exists():
        return None
    frame = pd.read_parquet(path)
    if frame.empty:
        return None
    return {key: _plain(value) for key, value in frame.iloc[-1].to_dict().items()}


def _link_or_copy(src: Path, dst: Path) -> None:
    if not src.exists():
        return
    try:
        os.link(src, dst)  # the job replaces its files by rename, so a hard link is a stable snapshot
    except OSError:
        shutil.copy2(src, dst)


def _plain(value: Any) -> Any:
    """numpy scalars to Python; NaN stays NaN (Tune accepts floats)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return float("nan")
    return value
