"""The API as a notebook uses it, on the smoke config (4 tiny jobs, train.iterations=20, ~30 s):
load_config, plan, run_local, jobs and the job handle, results; dtypes and states asserted."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

import fercluster

pytestmark = pytest.mark.slow  # it trains
REPO = Path(__file__).resolve().parents[2]


def test_a_notebook_session_on_the_smoke_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)  # the config's paths (data/, jobs/, results/) are relative
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = fercluster.load_config("configs/smoke.yaml", overrides=["train.iterations=20", "name=notebook"])

    plan = fercluster.plan(cfg)
    assert len(plan) == 4 and set(plan["params.iterations"]) == {20}
    before = fercluster.jobs(cfg)
    assert [j.job_id for j in before] == plan["job_id"].tolist()
    assert {j.state for j in before} == {"NOT_SUBMITTED"} and repr(before[0]).endswith(": NOT_SUBMITTED>")
    with pytest.raises(fercluster.AnalysisError, match="is not complete \\(NOT_SUBMITTED\\)"):
        before[0].result()

    run = fercluster.run_local(cfg, console=Console(file=io.StringIO()))
    assert isinstance(run, fercluster.LocalRun) and (run.jobs, run.ran, run.skipped, run.failed) == (4, 4, 0, 0)
    assert run.report is not None and run.report.exists() and run.aggregation.complete == 4
    assert repr(run).startswith("<LocalRun of sweep 'notebook': 4 jobs; ran 4, skipped 0 done, failed 0")
    assert (
        repr(run.aggregation)
        == f"<Aggregation of sweep 'notebook': 4 of 4 jobs complete, 0 missing, 0 skipped; report {run.report}>"
    )

    handles = fercluster.jobs(cfg)
    assert [j.state for j in handles] == ["COMPLETED"] * 4
    job = handles[1]
    assert job.wait(timeout=0) == "COMPLETED" and repr(job) == f"<Job {job.job_id} ckplus fold 0 AD: COMPLETED>"
    result = job.result()
    assert (result.job_id, result.fold, result.variant) == (job.job_id, 0, "AD")
    assert result.metrics["iteration"].tolist() == [0, 20] and result.record["val_acc"] == result.val_acc
    assert job.stdout() == "" and job.stderr() == ""  # run here: its output went to run_local's console
    assert len(job.cancel()) == 0  # nothing queued or running

    r = fercluster.results(cfg)
    jobs, status = r.jobs, fercluster.status(cfg)
    assert jobs["state"].tolist() == status["state"].tolist() == ["COMPLETED"] * 4
    shared = [c for c in plan.columns if c in jobs.columns and c in status.columns]
    assert {"job_id", "fold", "seed", "k", "dataset", "variant"} <= set(shared)
    assert {c: str(plan[c].dtype) for c in shared} == {c: str(jobs[c].dtype) for c in shared} == {
        c: str(status[c].dtype) for c in shared}  # fmt: skip
    assert str(jobs["fold"].dtype) == "Int64" and str(jobs["val_acc"].dtype) == "float64"
    params = [c for c in plan.columns if c.startswith("params.")]
    pd.testing.assert_frame_equal(jobs[params], plan[params])  # job.json's spec = the plan's
    assert jobs["val_acc"].tolist() == [j.result().val_acc for j in handles]
    again = fercluster.aggregate(cfg)
    assert again.complete == 4 and again.report == run.report and len(again.accuracy) > 0
