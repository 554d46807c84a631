"""The files of a run directory (see the contract), each written atomically."""

from __future__ import annotations

import io
import platform
import subprocess
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from fercluster import code
from fercluster.atomic import write_bytes, write_parquet
from fercluster.train import record

METRICS_COLUMNS = ("iteration", "train_loss", "train_acc", "val_acc", "test_acc", "wall_time")
PACKAGES = ("fercluster", "torch", "numpy", "pandas", "pyarrow", "submitit")


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    frame = pd.DataFrame(rows, columns=list(METRICS_COLUMNS))
    frame = frame.astype({"iteration": "int64", **{c: "float64" for c in METRICS_COLUMNS[1:]}})
    write_parquet(run_dir / "metrics.parquet", frame)


def write_predictions(run_dir: Path, image_ids: list[str], labels: np.ndarray, probs: np.ndarray) -> None:
    table = pa.table(
        {
            "image_id": pa.array(image_ids, pa.string()),
            "label": pa.array(labels.astype(np.int64)),
            "prediction": pa.array(probs.argmax(1).astype(np.int64)),
            "probs": pa.array([row.tolist() for row in probs.astype(np.float64)], pa.list_(pa.float64())),
        }
    )
    write_parquet(run_dir / "predictions.parquet", table)


def write_activations(run_dir: Path, image_ids: list[str], values: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> None:
    """Long format: one row per (training image, conv3 filter)."""
    n, filters = values.shape
    table = pa.table(
        {
            "image_id": pa.array(np.repeat(np.asarray(image_ids, dtype=object), filters), pa.string()),
            "filter": pa.array(np.tile(np.arange(filters, dtype=np.int64), n)),
            "value": pa.array(values.reshape(-1).astype(np.float32)),
            "y": pa.array(ys.reshape(-1).astype(np.int64)),
            "x": pa.array(xs.reshape(-1).astype(np.int64)),
        }
    )
    write_parquet(run_dir / "activations.parquet", table)


def write_model(run_dir: Path, state_dict: dict, model_config: dict, job_id: str, iteration: int) -> None:
    buffer = io.BytesIO()
    torch.save(
        {"state_dict": state_dict, "model_config": model_config, "job_id": job_id, "iteration": iteration}, buffer
    )
    write_bytes(run_dir / "model.pt", buffer.getvalue())


def write_progress(run_dir: Path, **fields: Any) -> None:
    """``progress.json`` through its one writer (``train.record``), stamped with the time."""
    record.write_progress(run_dir, record.ProgressRecord(**fields, updated=time.time()))


def progress_started(run_dir: Path, job_id: str, iterations: int) -> None:
    """An attempt starts: ``progress.json`` restamped (``updated``: now), so that ``status`` measures
    the time without progress from this start, not from the last evaluation of an earlier attempt.
    What the earlier attempt wrote (iteration, accuracies, its time per iteration) is kept."""
    old = record.read_progress(run_dir)
    if old is not None and old.job_id == job_id:
        new = replace(old, state="running", error=None, updated=time.time())
    else:
        new = record.ProgressRecord(job_id=job_id, state="running", iterations=iterations, updated=time.time())
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    record.write_progress(run_dir, new)


def code_version() -> str:
    """The git commit of the code (with '-dirty' for local changes), or the package version.

    A job run from a code snapshot gives the commit the snapshot was taken from: the folder it runs
    in may sit inside another checkout, whose commit would say nothing about this code.
    """
    record = code.running_snapshot()
    if record is not None:
        return str(record.get("commit") or f"fercluster {record.get('version')} snapshot {record['hash']}")
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "fercluster " + _version("fercluster")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def packages() -> dict[str, str]:
    return {name: _version(name) for name in PACKAGES} | {"python": platform.python_version()}


def device_name(device: torch.device, world_size: int) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return name if world_size == 1 else f"{world_size} x {name}"


def write_job_record(run_dir: Path, data: dict[str, Any]) -> None:
    """job.json, written last through its one writer (``train.record``): its presence means the job completed."""
    data.setdefault("schema", record.SCHEMA)  # the caller's dict says what the file says
    record.write_job_record(run_dir, record.JobRecord.from_dict(data))
