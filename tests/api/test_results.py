"""``fercluster.results`` on the smoke sweep run here by the real command (``sweep --local`` with
``--set train.iterations=20``, 4 tiny jobs): the DataFrames hold what the jobs wrote and what the
CLI shows, from the config or the results folder, and a sweep still running is read as it is."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import fercluster
from fercluster.errors import AnalysisError

REPO = Path(__file__).resolve().parents[2]
OVERRIDES = ["train.iterations=20", "name=smokeapi"]
JOB_COLUMNS = ["job_id", "dataset", "fold", "variant", "seed", "k", "state", "iteration", "val_acc", "test_acc",
               "selected_iteration"]  # fmt: skip
METRIC_COLUMNS = ["iteration", "train_loss", "train_acc", "val_acc", "test_acc", "wall_time"]


def fercluster_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # one thread: the machine is shared, and OpenMP spin-waiting under load is far slower than one thread
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_STATE_HOME": str(cwd / "xdg-state")}
    return subprocess.run([sys.executable, "-m", "fercluster.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh folder with configs/, where the smoke sweep ran with --set (once for the module)."""
    folder = tmp_path_factory.mktemp("smokeapi")
    shutil.copytree(REPO / "configs", folder / "configs")
    args = ["sweep", "configs/smoke.yaml", "--local", *[a for o in OVERRIDES for a in ("--set", o)]]
    proc = fercluster_cli(folder, *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "smokeapi: ran 4, skipped 0 done, failed 0" in proc.stdout
    return folder


@pytest.fixture
def here(smoke: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(smoke)  # the config's paths are relative to the working folder
    monkeypatch.setenv("XDG_STATE_HOME", str(smoke / "xdg-state"))
    return smoke


def test_jobs_and_metrics_of_the_smoke_sweep(here: Path) -> None:
    cfg = fercluster.load_config("configs/smoke.yaml", overrides=OVERRIDES)
    r = fercluster.results(cfg)
    jobs = r.jobs
    assert list(jobs.columns) == JOB_COLUMNS and len(jobs) == 4
    assert list(jobs["job_id"]) == list(fercluster.plan(cfg)["job_id"])
    assert set(jobs["state"]) == {"COMPLETED"} and set(jobs["iteration"]) == {20} and set(jobs["k"]) == {0.7}
    assert jobs[["dataset", "fold", "variant", "seed"]].values.tolist() == [
        ["ckplus", 0, "none", 0], ["ckplus", 0, "AD", 0], ["ckplus", 1, "none", 0], ["ckplus", 1, "AD", 0]]  # fmt: skip
    for job in jobs.itertuples():
        record = json.loads((here / "results" / "smokeapi" / "runs" / job.job_id / "job.json").read_text())
        assert (job.val_acc, job.test_acc, job.selected_iteration) == (
            record["val_acc"], record["test_acc"], record["selected_iteration"])  # fmt: skip
    metrics = r.metrics
    assert list(metrics.columns) == ["job_id", "dataset", "fold", "variant", "seed", "k", *METRIC_COLUMNS]
    assert metrics.groupby("job_id")["iteration"].apply(list).to_dict() == {j: [0, 20] for j in jobs["job_id"]}
    one = pd.read_parquet(here / "results" / "smokeapi" / "runs" / jobs["job_id"][1] / "metrics.parquet")
    mine = metrics[metrics["job_id"] == jobs["job_id"][1]][METRIC_COLUMNS].reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, one, check_dtype=False)


def test_the_api_shows_what_the_cli_shows_and_wrote(here: Path) -> None:
    status = fercluster_cli(here, "status", "--json")  # no CONFIG: the last sweep, with its overrides
    assert status.returncode == 0, status.stderr
    assert "using the overrides of its last run: train.iterations=20 name=smokeapi" in status.stderr
    printed = json.loads(status.stdout)["jobs"]
    cfg = fercluster.sweep_config()
    assert cfg.overrides == tuple(OVERRIDES)
    frame = fercluster.status(cfg)
    same = lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else v  # noqa: E731
    assert [{k: same(v) for k, v in row.items()} for row in frame.to_dict("records")] == printed
    r = fercluster.results(cfg)
    assert r.jobs[["job_id", "state", "val_acc", "test_acc"]].to_dict("records") == [
        {k: j[k] for k in ("job_id", "state", "val_acc", "test_acc")} for j in printed]  # fmt: skip
    report = here / "results" / "smokeapi" / "report"
    written = pd.read_csv(report / "accuracy.csv")
    pd.testing.assert_frame_equal(r.accuracy.reset_index(drop=True), written, check_dtype=False, atol=1e-9)
    assert list(r.kl) == ["ckplus"]
    pd.testing.assert_frame_equal(r.kl["ckplus"], pd.read_parquet(report / "kl_ckplus.parquet"))


def test_predictions_activations_and_the_results_folder(here: Path) -> None:
    r = fercluster.results(fercluster.load_config("configs/smoke.yaml", overrides=OVERRIDES))
    job = r.jobs["job_id"][0]
    run = here / "results" / "smokeapi" / "runs" / job
    written = pd.read_parquet(run / "predictions.parquet")
    mine = r.predictions[r.predictions["job_id"] == job].reset_index(drop=True)
    assert list(mine.columns) == ["job_id", "dataset", "fold", "variant", "seed", "k", *written.columns]
    assert mine["image_id"].tolist() == written["image_id"].tolist()
    assert (mine["prediction"] == written["prediction"]).all() and len(r.predictions) == 4 * len(written)
    acts = r.activations(job)
    pd.testing.assert_frame_equal(acts, pd.read_parquet(run / "activations.parquet"))
    with pytest.raises(AnalysisError, match="no job 'nope' in sweep smokeapi"):
        r.activations("nope")
    folder = fercluster.results(here / "results" / "smokeapi")
    pd.testing.assert_frame_equal(folder.jobs, r.jobs)
    pd.testing.assert_frame_equal(folder.metrics, r.metrics)
    pd.testing.assert_frame_equal(folder.accuracy, r.accuracy)
    with pytest.raises(AnalysisError, match="not a sweep's results folder.*load_config"):
        fercluster.results("configs/smoke.yaml")


def test_a_sweep_still_running_is_read_as_it_is(here: Path) -> None:
    """A copy of the results where one job is still running (progress and metrics so far, no
    job.json) and another has not started: read through an override of paths.results."""
    copy = here / "running"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(here / "results" / "smokeapi", copy / "smokeapi")
    cfg = fercluster.load_config("configs/smoke.yaml", overrides=[*OVERRIDES, f"paths.results={copy}"])
    running, waiting = [copy / "smokeapi" / "runs" / j for j in fercluster.plan(cfg)["job_id"][2:]]
    (running / "job.json").unlink()
    (running / "predictions.parquet").unlink()
    progress = json.loads((running / "progress.json").read_text())
    (running / "progress.json").write_text(json.dumps({**progress, "state": "running", "iteration": 12}))
    shutil.rmtree(waiting)
    shutil.rmtree(copy / "smokeapi" / "report")
    r = fercluster.results(cfg)
    assert r.jobs["state"].tolist() == ["COMPLETED", "COMPLETED", "RUNNING", "NOT_SUBMITTED"]
    assert r.jobs["iteration"].tolist()[2:] == [12, pd.NA] and pd.isna(r.jobs["selected_iteration"][2])
    assert r.jobs["k"].tolist() == [0.7] * 4  # drawn from the plan for the jobs not complete
    assert r.metrics.groupby("job_id").size().to_dict() == {j: 2 for j in r.jobs["job_id"][:3]}
    assert set(r.predictions["job_id"]) == set(r.jobs["job_id"][:2]) and r.kl == {}
    acc = r.accuracy
    assert acc[acc["source"] == "ours"][["folds_done", "folds_planned"]].values.tolist() == [[1, 2], [1, 2]]
    with pytest.raises(AnalysisError, match="writes its activations when it completes"):
        r.activations(r.jobs["job_id"][2])


def test_a_sweep_not_run_yet_has_its_planned_jobs_and_empty_frames(workdir: Path) -> None:
    cfg = fercluster.load_config(REPO / "configs" / "smoke.yaml", overrides=["name=never"])
    r = fercluster.results(cfg)
    assert (
        r.jobs["state"].tolist() == ["NOT_SUBMITTED"] * 4
        and r.jobs["job_id"].tolist() == fercluster.plan(cfg)["job_id"].tolist()
    )
    assert r.metrics.empty and list(r.metrics.columns)[6:] == METRIC_COLUMNS and r.predictions.empty
    assert r.accuracy[r.accuracy["source"] == "ours"]["folds_done"].tolist() == [0, 0] and r.kl == {}
