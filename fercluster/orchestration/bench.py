"""``fercluster bench orchestration``: the coordinator at scale, against the in-memory fake SLURM.

Measures, for a synthetic sweep of N jobs in a temporary folder, among 100,000 other users' jobs:
planning and diffing, the number of sbatch calls (arrays; MaxArraySize 1001), one status refresh
(its scheduler calls: one sacct for the sweep's ids, real sacct text parsed), and a re-run once
every job is done (no submissions).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from fercluster.config import parse_config
from fercluster.orchestration.fake import FakeBackend
from fercluster.orchestration.submit.coordinator import run_sweep
from fercluster.orchestration.watch.status import snapshot

MAX_ARRAY = 1001
METRIC_COLUMNS = ("iteration", "train_loss", "train_acc", "val_acc", "test_acc", "wall_time")  # as train.outputs writes
OTHER_JOBS = 100_000  # other users' jobs on the fake cluster: a busy shared cluster around the sweep


def noop_job(spec: Any) -> None:
    """Stand-in job callable (never run: the fake backend only records submissions)."""


def bench_config(root: Path, jobs: int) -> Any:
    seeds = max(1, math.ceil(jobs / 40))  # CK+: 10 folds x 4 variants per seed
    return parse_config(
        {
            "name": "bench",
            "paths": {"jobs": str(root / "jobs"), "results": str(root / "results"), "data": str(root / "data")},
            "datasets": {"ckplus": {"kind": "ckplus", "root": str(root / "raw"), "classes": 8}},
            "grid": [
                {"dataset": "ckplus", "folds": "all", "variants": ["none", "D", "A", "AD"], "seeds": list(range(seeds))}
            ],
            "train": {"iterations": 1000},
            "slurm": {"array_parallelism": 64},
        },
        source="bench",
    )


def run_bench(jobs: int = 10_000, results: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """The figures; ``results``: ``fercluster.results``, to time it too."""
    with tempfile.TemporaryDirectory(prefix="fercluster-bench-") as tmp:
        return _run(Path(tmp), jobs, results)


def _run(root: Path, jobs: int, results: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    cfg = bench_config(root, jobs)
    backend = FakeBackend(max_array=MAX_ARRAY)
    backend.add_foreign(OTHER_JOBS)
    kw = {"fn_for": lambda: noop_job, "aggregate_fn": noop_job, "prepare": False}

    t = time.perf_counter()
    dry = run_sweep(cfg, backend, dry_run=True, **kw)
    plan_s = time.perf_counter() - t
    n = len(dry.specs)
    t = time.perf_counter()
    sub = run_sweep(cfg, backend, **kw)
    submit_s = time.perf_counter() - t
    sbatch = backend.calls["sbatch"]

    refresh = _refresh(cfg, backend, sub.specs)
    finish_all(sub.specs)  # every job done (not timed: this is the jobs' work)
    backend.set_state([sid for s in backend.submitted for sid in s.ids], "COMPLETED")
    before_sbatch = backend.calls["sbatch"]
    t = time.perf_counter()
    rerun = run_sweep(cfg, backend, **kw)
    rerun_s = time.perf_counter() - t
    rerun_subs = backend.calls["sbatch"] - before_sbatch

    reads = read_figures(cfg, backend, sub.specs, results) if results is not None else {}
    figures = {
        "jobs_planned": n,
        "plan_diff_s": round(plan_s, 3),
        "submit_s": round(submit_s, 3),
        "training_arrays": len(sub.arrays),
        "sbatch_calls": sbatch,
        "array_sizes": [a["n"] for a in sub.arrays],
        "array_throttles": [a["throttle"] for a in sub.arrays],
        **refresh,
        "other_users_jobs": OTHER_JOBS,
        "rerun_s": round(rerun_s, 3),
        "rerun_submissions": rerun_subs,
        "rerun_done": len(rerun.diff.done),
        "state_json_mb": round((cfg.jobs_dir / "state.json").stat().st_size / 1e6, 2),
        **reads,
    }
    return {
        "jobs": n,
        **reads,
        "backend": "fake (in-memory SLURM: sacct text rendered and parsed; no cluster)",
        "figures": figures,
        "targets": _targets(figures, reads),
    }


def _refresh(cfg: Any, backend: FakeBackend, specs: list[Any]) -> dict[str, Any]:
    """One status refresh mid-sweep: its time and scheduler calls."""
    _mix_states(backend, specs)
    before, calls_before = backend.calls["sacct"], sum(backend.calls.values())
    t = time.perf_counter()
    snap = snapshot(cfg, backend)
    refresh_s = time.perf_counter() - t
    return {
        "refresh_s": round(refresh_s, 3),
        "refresh_queries": backend.calls["sacct"] - before,
        "refresh_scheduler_calls": sum(backend.calls.values()) - calls_before,  # every command: 1 when healthy
        "refresh_counts": dict(snap.counts),
    }


def _targets(f: dict[str, Any], reads: dict[str, float]) -> list[dict[str, Any]]:
    plan_s, sbatch, refresh_s, rerun_s = f["plan_diff_s"], f["sbatch_calls"], f["refresh_s"], f["rerun_s"]
    return [
        {"name": "plan + diff", "value": f"{plan_s:.2f} s", "target": "< 10 s", "pass": plan_s < 10},
        {"name": "sbatch calls (arrays + aggregation)", "value": sbatch, "target": "<= 11", "pass": sbatch <= 11},
        {
            "name": "status refresh",
            "value": f"{refresh_s:.2f} s, {f['refresh_scheduler_calls']} scheduler call(s)",
            "target": "< 2 s, 1 call (sacct for the sweep's ids)",
            "pass": refresh_s < 2 and f["refresh_queries"] == 1 and f["refresh_scheduler_calls"] == 1,
        },
        {
            "name": "re-run, all done",
            "value": f"{rerun_s:.2f} s, {f['rerun_submissions']} submissions",
            "target": "< 5 s, 0 submissions",
            "pass": rerun_s < 5 and f["rerun_submissions"] == 0 and f["rerun_done"] == f["jobs_planned"],
        },
        *read_targets(reads),
    ]


def _mix_states(backend: FakeBackend, specs: list[Any]) -> None:
    """A realistic mid-sweep: a fifth running (with progress files), some done, failed, pending."""
    states = ["RUNNING", "PENDING", "COMPLETED", "FAILED", "PENDING"]
    ids = sorted(sid for sub in backend.submitted for sid in sub.ids)  # the sweep's own
    for i, sid in enumerate(ids):
        backend.states[sid] = states[i % len(states)]
    for spec in specs[::5]:
        run_dir = Path(spec.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "progress.json").write_text(
            json.dumps(
                {
                    "job_id": spec.job_id,
                    "state": "running",
                    "iteration": 500,
                    "iterations": 1000,
                    "best_val_acc": 0.5,
                    "best_test_acc": 0.5,
                }
            )
        )


def finish_all(specs: list[Any], changed: bool = False) -> None:
    """What a completed job leaves that status and results read: job.json (its spec inside),
    metrics.parquet and predictions.parquet (the same small files for every job)."""
    metrics, predictions = _parquet_bytes()
    for spec in specs:
        run_dir = Path(spec.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "job_id": spec.job_id,
            "spec": spec.to_dict(),
            "status": "completed",
            "k": 0.7,
            "val_acc": 0.95 if changed else 0.9,
            "test_acc": 0.9,
            "selected_iteration": 1000,
            "host": "node1",
            "timings": {"total_s": 60.0},
        }
        (run_dir / "job.json").write_text(json.dumps(record))
        (run_dir / "metrics.parquet").write_bytes(metrics)
        (run_dir / "predictions.parquet").write_bytes(predictions)


def _parquet_bytes() -> tuple[bytes, bytes]:
    import io

    import pandas as pd

    out = []
    frames = [
        pd.DataFrame({c: [500.0, 1000.0] for c in METRIC_COLUMNS}).astype({"iteration": "int64"}),
        pd.DataFrame(
            {"image_id": ["a", "b"], "label": [0, 1], "prediction": [0, 1], "probs": [[0.9, 0.1], [0.2, 0.8]]}
        ),
    ]
    for frame in frames:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        out.append(buffer.getvalue())
    return out[0], out[1]


def read_figures(cfg: Any, backend: FakeBackend, specs: list[Any], results: Callable[[Any], Any]) -> dict[str, float]:
    """``status`` and ``results(cfg).jobs`` (``fercluster.results``, handed down by the CLI: the
    API sits above this layer) on the finished sweep: cold (no run index), warm (a second call),
    changed (after 10 jobs wrote new files), in seconds."""
    from fercluster.orchestration.store.index import FILE

    def timed(call: Any) -> float:
        t = time.perf_counter()
        call()
        return round(time.perf_counter() - t, 3)

    def status() -> None:
        snapshot(cfg, backend)

    def jobs() -> None:
        results(cfg).jobs  # noqa: B018 (the frame is what is timed)

    (cfg.results_dir / FILE).unlink(missing_ok=True)
    out = {"status_cold_s": timed(status), "status_warm_s": timed(status)}
    (cfg.results_dir / FILE).unlink(missing_ok=True)
    out.update(results_cold_s=timed(jobs), results_warm_s=timed(jobs))
    finish_all(specs[:: max(1, len(specs) // 10)][:10], changed=True)
    out.update(status_changed_s=timed(status), results_changed_s=timed(jobs))
    return out


def read_targets(reads: dict[str, float]) -> list[dict[str, Any]]:
    """Warm and changed reads under 0.5 s each, cold ones under 10 s."""
    out = []
    for key, value in reads.items():
        limit = 10.0 if "cold" in key else 0.5
        out.append(
            {
                "name": key.removesuffix("_s").replace("_", " "),
                "value": f"{value:.2f} s",
                "target": f"< {limit:g} s",
                "pass": value < limit,
            }
        )
    return out
