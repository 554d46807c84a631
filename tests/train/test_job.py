import json
import os
import signal
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fercluster import code
from fercluster.errors import CheckpointError, ConfigError, DataError, TrainingError
from fercluster.train.attempts import read_history
from fercluster.train.checkpoint import JobInterrupted
from fercluster.train.job import run_job
from fercluster.train.model import build_model


def _same_results(a: Path, b: Path) -> None:
    ma, mb = (pd.read_parquet(d / "metrics.parquet").drop(columns="wall_time") for d in (a, b))
    pd.testing.assert_frame_equal(ma, mb)
    pd.testing.assert_frame_equal(
        pd.read_parquet(a / "predictions.parquet"), pd.read_parquet(b / "predictions.parquet")
    )
    sa, sb = (torch.load(d / "model.pt")["state_dict"] for d in (a, b))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    ja, jb = (json.loads((d / "job.json").read_text()) for d in (a, b))
    assert ja["selected_iteration"] == jb["selected_iteration"] and ja["test_acc"] == jb["test_acc"]


def test_job_writes_the_contracts_outputs(make_spec, tmp_path):
    spec = make_spec("AD", run_dir=tmp_path / "run")
    record = run_job(spec)
    run = tmp_path / "run"
    metrics = pd.read_parquet(run / "metrics.parquet")
    assert list(metrics.columns) == ["iteration", "train_loss", "train_acc", "val_acc", "test_acc", "wall_time"]
    assert metrics["iteration"].tolist() == [0, 10, 20, 30]
    assert np.isnan(metrics["train_loss"][0]) and metrics["train_loss"][1:].notna().all()
    preds = pd.read_parquet(run / "predictions.parquet")
    assert list(preds.columns) == ["image_id", "label", "prediction", "probs"]
    assert len(preds) == 16 and np.allclose([sum(p) for p in preds["probs"]], 1.0, atol=1e-5)
    acts = pd.read_parquet(run / "activations.parquet")
    assert list(acts.columns) == ["image_id", "filter", "value", "y", "x"]
    assert len(acts) == 128 * 32 and acts["value"].dtype == np.float32 and (acts["value"] >= 0).all()
    assert acts["y"].between(0, 7).all() and acts["x"].between(0, 7).all()
    saved = torch.load(run / "model.pt")
    model = build_model(**saved["model_config"])
    model.load_state_dict(saved["state_dict"])
    assert saved["iteration"] == record["selected_iteration"] and saved["job_id"] == spec.job_id
    progress = json.loads((run / "progress.json").read_text())
    assert progress["state"] == "completed" and progress["iteration"] == 30
    job = json.loads((run / "job.json").read_text())
    assert job == record and job["status"] == "completed" and job["k"] == 0.8 and job["seed"] == 3
    for key in ("spec", "code_version", "packages", "device", "timings", "val_acc", "test_acc"):
        assert key in job
    # run here (as local mode does): no snapshot, the fingerprint of the code this process imported
    assert job["code"]["hash"] == code.fingerprint() and job["code"]["snapshot"] is None
    assert job["code"]["package"] == str(code.package_dir())
    best_val = metrics["val_acc"].max()
    first_best = metrics[metrics["val_acc"] == best_val].iloc[0]
    assert record["selected_iteration"] == first_best["iteration"] and record["test_acc"] == first_best["test_acc"]


def test_completed_job_is_skipped(make_spec, tmp_path):
    spec = make_spec("none", iterations=5, eval_every=5)
    first = run_job(spec)
    (Path(spec.run_dir) / "metrics.parquet").unlink()
    assert run_job(spec) == first and not (Path(spec.run_dir) / "metrics.parquet").exists()


def test_interrupted_and_resumed_equals_uninterrupted(make_spec, tmp_path):
    """SIGUSR2 at step 13 (between evaluations at 10, 20 and checkpoints at 7, 14), then a crash at
    step 23 (last checkpoint: 21): both resumes must give exactly the uninterrupted results."""
    reference = make_spec("AD", run_dir=tmp_path / "straight")
    run_job(reference)
    spec = make_spec("AD", run_dir=tmp_path / "resumed")

    def signal_at_13(it, total):
        if it == 13:
            os.kill(os.getpid(), signal.SIGUSR2)

    with pytest.raises(JobInterrupted, match="iteration 13"):
        run_job(spec, progress=signal_at_13)
    assert torch.load(Path(spec.run_dir) / "checkpoint.pt", weights_only=True)["iteration"] == 13
    assert not (Path(spec.run_dir) / "job.json").exists()

    def crash_at_23(it, total):
        if it == 23:
            raise RuntimeError("node lost")

    with pytest.raises(RuntimeError, match="node lost"):
        run_job(spec, progress=crash_at_23)
    assert torch.load(Path(spec.run_dir) / "checkpoint.pt", weights_only=True)["iteration"] == 21
    run_job(spec)
    _same_results(tmp_path / "straight", tmp_path / "resumed")
    # its history: three attempts, each with where it started from, how it ended and where
    first, second, third = read_history(spec.run_dir)
    assert [(a.number, a.from_iteration, a.iteration, a.ended, a.ended_by) for a in (first, second, third)] == [
        (1, 0, 13, "requeue", "job"), (2, 13, 23, "failed", "job"), (3, 21, 30, "completed", "job")]  # fmt: skip
    assert first.detail == "SIGUSR2" and second.detail == "RuntimeError: node lost"
    assert first.node == socket.gethostname() and first.slurm_id == "" and first.start <= first.end <= second.start
    assert [a.number for a in read_history(tmp_path / "straight")] == [1]


def test_signal_is_handed_on_to_the_previous_handler(make_spec):
    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        spec = make_spec("none")
        with pytest.raises(JobInterrupted):
            run_job(spec, progress=lambda it, total: it == 4 and os.kill(os.getpid(), signal.SIGUSR2))
        assert calls == [signal.SIGUSR2]
        assert signal.getsignal(signal.SIGUSR2) is not None and signal.getsignal(signal.SIGUSR2).__name__ == "<lambda>"
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_nan_loss_stops_with_a_clear_error_and_keeps_outputs(make_spec):
    spec = make_spec("none", lr=1e12, k=5.0)
    with pytest.raises(TrainingError, match="training loss is nan .*smaller k or learning rate"):
        run_job(spec)
    run = Path(spec.run_dir)
    progress = json.loads((run / "progress.json").read_text())
    assert progress["state"] == "failed" and "nan" in progress["error"]
    assert len(pd.read_parquet(run / "metrics.parquet")) >= 2 and not (run / "job.json").exists()


def test_corrupt_checkpoint_is_refused(make_spec):
    spec = make_spec("none")
    Path(spec.run_dir).mkdir(parents=True)
    (Path(spec.run_dir) / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable.*delete"):
        run_job(spec)


def test_foreign_checkpoint_is_refused(make_spec, tmp_path):
    other = make_spec("none", run_dir=tmp_path / "other", iterations=8, checkpoint_every=4)
    run_job(other)
    spec = make_spec("A")
    Path(spec.run_dir).mkdir(parents=True)
    (Path(spec.run_dir) / "checkpoint.pt").write_bytes((tmp_path / "other" / "checkpoint.pt").read_bytes())
    with pytest.raises(CheckpointError, match=f"belongs to job {other.job_id}, not {spec.job_id}"):
        run_job(spec)


def test_prepared_set_with_other_classes_is_refused(make_spec):
    with pytest.raises(DataError, match="8 classes \\(spec: 6\\)"):
        run_job(make_spec("none", classes=6))


def test_k_from_tune_must_be_resolved_before_the_job(make_spec):
    with pytest.raises(ConfigError, match="from_tune tune1.*run the tune sweep first"):
        run_job(make_spec("none", k="from_tune tune1"))


def test_random_k_is_drawn_from_the_seed_and_recorded(make_spec, tmp_path):
    a = run_job(make_spec("none", run_dir=tmp_path / "a", k="random", iterations=2, eval_every=2))
    b = run_job(make_spec("none", run_dir=tmp_path / "b", k="random", iterations=2, eval_every=2, lr=0.02))
    assert 0.2 <= a["k"] < 1.2 and a["k"] == b["k"]


def test_selection_2015_picks_the_best_test_accuracy_without_validation(make_spec):
    record = run_job(make_spec("none", selection="2015", iterations=20))
    metrics = pd.read_parquet(Path(record["spec"]["run_dir"]) / "metrics.parquet")
    assert metrics["val_acc"].isna().all()
    assert record["test_acc"] == metrics["test_acc"].max()


def test_full_disk_leaves_no_partial_file(make_spec, monkeypatch):
    import errno

    import pyarrow.parquet as pq

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", no_space)
    spec = make_spec("none", iterations=4, eval_every=2)
    with pytest.raises(OSError, match="No space"):
        run_job(spec)
    run = Path(spec.run_dir)
    assert not (run / "metrics.parquet").exists() and not list(run.glob(".tmp-*"))
    assert json.loads((run / "progress.json").read_text())["state"] == "failed"


def test_job_records_every_checkpoint_selection(make_spec, tmp_path):
    record = run_job(make_spec("none", run_dir=tmp_path / "run", iterations=30, eval_every=10))
    metrics = pd.read_parquet(tmp_path / "run" / "metrics.parquet")
    sel = json.loads((tmp_path / "run" / "job.json").read_text())["selections"]
    assert set(sel) == {"best_val", "best_test", "last"}
    for name, column in (("best_val", "val_acc"), ("best_test", "test_acc")):
        first = metrics[metrics[column] == metrics[column].max()].iloc[0]  # ties: the earliest
        assert sel[name] == {"iteration": int(first["iteration"]), "val_acc": first["val_acc"],
                             "test_acc": first["test_acc"]}  # fmt: skip
    last = metrics.iloc[-1]
    assert sel["last"] == {"iteration": 30, "val_acc": last["val_acc"], "test_acc": last["test_acc"]}
    # the top-level fields keep their meaning: the configured selection ("2017": best validation)
    assert (record["selected_iteration"], record["test_acc"]) == (
        sel["best_val"]["iteration"],
        sel["best_val"]["test_acc"],
    )


def test_eval_at_code_evaluates_after_updates_1_11_21(make_spec, tmp_path):
    run_job(make_spec("none", run_dir=tmp_path / "run", iterations=30, eval_every=10, eval_at="code"))
    assert pd.read_parquet(tmp_path / "run" / "metrics.parquet")["iteration"].tolist() == [1, 11, 21]
    # as the authors' Monitor: a checkpoint after updates 1, 1001, ..., 30001 of 31,000
    from fercluster.train.job import due_eval

    assert [it for it in range(31_001) if due_eval(it, "code", 1000, 31_000)] == list(range(1, 30_002, 1000))
