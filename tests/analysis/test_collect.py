"""Reading run directories: the fast path gives the same results and the same skip reasons."""

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fercluster.analysis import collect as collect_mod
from fercluster.analysis.bench import fabricate
from fercluster.orchestration.submit.plan import expand


def _runs(tmp_path, jobs=12):
    cfg = fabricate(tmp_path, jobs)
    return cfg, [Path(s.run_dir) for s in expand(cfg)[:jobs]]


def test_broken_jobs_are_skipped_with_their_reason_and_nan_json_is_read(tmp_path):
    cfg, runs = _runs(tmp_path)
    (runs[0] / "predictions.parquet").write_bytes(b"not parquet")
    (runs[1] / "metrics.parquet").unlink()
    (runs[2] / "job.json").write_text('{"job_id": ')
    (runs[3] / "job.json").unlink()  # not complete: missing, not skipped
    info = json.loads((runs[4] / "job.json").read_text())
    info["val_acc"] = float("nan")  # json.dumps writes NaN, which orjson rejects
    (runs[4] / "job.json").write_text(json.dumps(info))
    pq.write_table(pa.table({"iteration": [1, 2]}), runs[5] / "metrics.parquet")
    (runs[6] / "predictions.parquet").unlink()
    (runs[6] / "predictions.parquet").mkdir()
    (runs[7] / "job.json").write_text("[1, 2]")
    col = collect_mod.collect(cfg)
    reasons = {s["job_id"]: s["reason"] for s in col.skipped}
    assert reasons[runs[0].name].startswith("predictions.parquet is unreadable (ArrowInvalid")
    assert reasons[runs[1].name] == "metrics.parquet is missing"
    assert reasons[runs[2].name].startswith("Expecting value")  # the json module's message, as before
    assert "val_acc" in reasons[runs[5].name]
    assert reasons[runs[6].name].startswith("predictions.parquet is unreadable (OSError")
    assert reasons[runs[7].name] == "job.json has no 'spec' mapping"
    assert len(col.skipped) == 6
    missing = {m["job_id"] for m in col.missing}  # the bench plan has more jobs than were fabricated
    assert runs[3].name in missing and not missing & {r.name for r in runs if r != runs[3]}
    done = {r.job_id: r for r in col.results}
    assert set(done) == {r.name for r in runs[8:]} | {runs[4].name}
    assert math.isnan(done[runs[4].name].info["val_acc"])


def test_fast_read_matches_the_parquet_files(tmp_path):
    cfg, runs = _runs(tmp_path, jobs=3)
    r = collect_mod.read_job(runs[1])
    metrics = pq.read_table(runs[1] / "metrics.parquet").to_pandas()
    preds = pq.read_table(runs[1] / "predictions.parquet").to_pandas()
    for k in collect_mod.METRIC_COLUMNS:
        assert r.metrics[k].dtype == np.float64 and np.array_equal(r.metrics[k], metrics[k].to_numpy(np.float64))
    assert r.labels.dtype == np.int64 and np.array_equal(r.labels, preds["label"].to_numpy())
    assert np.array_equal(r.predictions, preds["prediction"].to_numpy())
    assert r.info == json.loads((runs[1] / "job.json").read_text()) and r.spec == r.info["spec"]


def test_threaded_chunks_keep_the_plan_order(tmp_path, monkeypatch):
    cfg, runs = _runs(tmp_path, jobs=10)
    (runs[4] / "metrics.parquet").write_bytes(b"x")
    serial = collect_mod.collect(cfg, workers=1)
    monkeypatch.setattr(collect_mod, "CHUNK", 3)
    threaded = collect_mod.collect(cfg, workers=3)
    assert [r.job_id for r in threaded.results] == [r.job_id for r in serial.results]
    assert [r.job_id for r in serial.results] == [p.name for p in runs if p != runs[4]]
    assert threaded.skipped == serial.skipped and threaded.missing == serial.missing
