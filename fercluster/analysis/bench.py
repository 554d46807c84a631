"""``fercluster bench aggregate``: the speed of the aggregation on fabricated results.

The job result sets are **fabricated** (random accuracies and predictions, no training) in a
temporary folder laid out exactly as a sweep's run directories, then aggregated the way
``fercluster aggregate`` does it: plan, read job.json + metrics + predictions of every job, tables,
confusion matrices, table files. Separately: the KL rankings of one job at the paper's size
(256 filters x 30 AUs x 1,300 training images).
"""

from __future__ import annotations

import io
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fercluster.config import parse_config

VARIANTS = ["none", "D", "A", "AD"]
BLOBS = 64  # distinct fabricated metrics/predictions files, reused across jobs (contents do not matter)


def bench_config(root: Path, jobs: int):
    seeds = max(1, math.ceil(jobs / 40))
    return parse_config(
        {
            "name": "bench",
            "paths": {"jobs": str(root / "jobs"), "results": str(root / "results"), "data": str(root / "data")},
            "datasets": {"ckplus": {"kind": "ckplus", "root": str(root / "raw"), "classes": 8, "crop": "landmarks"}},
            "grid": [{"dataset": "ckplus", "folds": "all", "variants": VARIANTS, "seeds": list(range(seeds))}],
        }
    )


def _blobs(rng: np.random.Generator, n_test: int = 130) -> list[tuple[bytes, bytes, float]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = []
    for _ in range(BLOBS):
        labels = rng.integers(0, 8, n_test)
        pred = np.where(rng.random(n_test) < 0.8, labels, rng.integers(0, 8, n_test))
        it = np.arange(0, 31_000, 1_000)
        curve = np.minimum(0.95, 0.3 + 0.65 * (1 - np.exp(-it / 5000))) + 0.02 * rng.standard_normal(len(it))
        metrics = pa.table(
            {
                "iteration": it,
                "train_loss": 1 - curve,
                "train_acc": curve,
                "val_acc": curve,
                "test_acc": curve - 0.01,
                "wall_time": it * 0.002,
            }
        )
        preds = pa.table(
            {
                "image_id": [f"img{i}" for i in range(n_test)],
                "label": labels,
                "prediction": pred,
                "probs": [[0.125] * 8] * n_test,
            }
        )
        bufs = []
        for table in (metrics, preds):
            buf = io.BytesIO()
            pq.write_table(table, buf)
            bufs.append(buf.getvalue())
        out.append((bufs[0], bufs[1], float((labels == pred).mean())))
    return out


def fabricate(root: Path, jobs: int, seed: int = 0):
    """Write ``jobs`` fabricated run directories of the bench sweep under ``root``; returns the config."""
    from fercluster.orchestration.submit.plan import expand

    cfg = bench_config(root, jobs)
    rng = np.random.default_rng(seed)
    blobs = _blobs(rng)
    for i, spec in enumerate(expand(cfg)[:jobs]):
        metrics, preds, acc = blobs[i % BLOBS]
        run = Path(spec.run_dir)
        run.mkdir(parents=True)
        (run / "metrics.parquet").write_bytes(metrics)
        (run / "predictions.parquet").write_bytes(preds)
        (run / "job.json").write_text(
            json.dumps(
                {
                    "job_id": spec.job_id,
                    "spec": spec.to_dict(),
                    "selected_iteration": 30_000,
                    "val_acc": acc,
                    "test_acc": acc,
                    "code_version": "fabricated",
                    "device": "none",
                    "timings": {"total_s": 60.0},
                    "status": "completed",
                }
            )
        )
    return cfg


def time_tables(cfg) -> dict[str, float]:
    from fercluster.analysis import tables
    from fercluster.analysis.collect import collect, planned_jobs

    t0 = time.perf_counter()
    plan = planned_jobs(cfg)
    tp = time.perf_counter()
    col = collect(cfg, plan=plan)
    t1 = time.perf_counter()
    folds = tables.fold_table(col.results)
    kinds = {n: (d.kind, d.classes) for n, d in cfg.datasets.items()}
    acc = tables.accuracy_table(folds, col.planned, kinds)
    tables.confusion_matrices(col.results)
    tables.write_tables(cfg.results_dir / "report", acc, folds)
    t2 = time.perf_counter()
    return {
        "jobs_read": len(col.results),
        "plan_s": tp - t0,
        "read_s": t1 - tp,
        "tables_s": t2 - t1,
        "total_s": t2 - t0,
    }


def time_kl(filters: int = 256, aus: int = 30, images: int = 1300, repeats: int = 5, seed: int = 0) -> dict[str, float]:
    from fercluster.analysis.kl import kl_matrix, ranking
    from fercluster.config import Analysis

    smoothing = Analysis()  # the config's defaults: what a sweep without an analysis: section runs
    rng = np.random.default_rng(seed)
    au = rng.random((images, aus)) < rng.uniform(0.02, 0.3, aus)
    values = np.maximum(0, rng.standard_normal((images, filters)) + au @ rng.standard_normal((aus, filters))).astype(
        np.float32
    )
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        kl = kl_matrix(values, au, smoothing.kl_bins, smoothing.kl_eps, smoothing.kl_prior)
        ranking(kl, list(range(1, aus + 1)))
        times.append(time.perf_counter() - t0)
    return {
        "kl_s": float(np.median(times)),
        "kl_min_s": float(min(times)),
        "filters": filters,
        "aus": aus,
        "images": images,
    }


def run_bench(jobs: int = 10_000, workdir: str | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fercluster-bench-", dir=workdir) as tmp:
        t0 = time.perf_counter()
        cfg = fabricate(Path(tmp), jobs)
        fabricate_s = time.perf_counter() - t0
        result: dict[str, Any] = {"jobs": jobs, "fabricated": True, "fabricate_s": fabricate_s, **time_tables(cfg)}
    result.update(time_kl())
    result["targets"] = {"tables_total_s": 10.0, "kl_s": 1.0}
    return result
