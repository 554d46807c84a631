"""Helpers of the orchestration tests: small configs, finished jobs, a stand-in job callable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fercluster.config import parse_config


def make_config(root: Path, name: str = "t", grid: list[dict[str, Any]] | None = None, **over: Any):
    data = {
        "name": name,
        "paths": {"jobs": str(root / "jobs"), "results": str(root / "results"), "data": str(root / "data")},
        "datasets": {
            "ckplus": {"kind": "ckplus", "root": str(root / "raw-ck"), "classes": 8, "crop": "landmarks"},
            "tfd": {"kind": "tfd", "root": str(root / "tfd.mat"), "classes": 7},
        },
        "grid": grid if grid is not None else [{"dataset": "ckplus", "folds": [0, 1], "variants": ["none", "AD"]}],
        "train": {"iterations": 40, "eval_every": 20, "checkpoint_every": 20, "k": 0.7},
        "slurm": {"array_parallelism": 4, "gpus_per_node": 0, "max_retries": 1},
    }
    for key, value in over.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_config(data)


def finish(spec: Any, val: float = 0.5, test: float = 0.6) -> None:
    """Write what a completed job leaves: job.json (and progress.json)."""
    run = Path(spec.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / "job.json").write_text(
        json.dumps({"job_id": spec.job_id, "status": "completed", "val_acc": val, "test_acc": test})
    )


def noop(spec: Any) -> None:
    """Module-level stand-in for the job callable (the fake backend never runs it)."""


SWEEP_KW = {"fn_for": lambda: noop, "aggregate_fn": noop, "prepare": False}
