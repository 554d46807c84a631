"""``fercluster.jobs``: one handle per planned job, against the fake SLURM (nothing trains)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import fercluster
from fercluster.orchestration.fake import FakeBackend
from fercluster.orchestration.watch.monitor import submitit_paths


@pytest.fixture
def submitted(workdir: Path, fake: FakeBackend) -> fercluster.SweepConfig:
    """A two-job sweep submitted to the fake SLURM through the API (array 1000: tasks 1000_0, 1000_1)."""
    path = workdir / "mini.yaml"
    path.write_text(yaml.safe_dump({
        "name": "mini", "datasets": {"ckplus": {"kind": "ckplus", "root": "raw", "classes": 8}},
        "grid": [{"dataset": "ckplus", "folds": [0, 1], "variants": ["AD"]}], "train": {"iterations": 40, "k": 0.7},
    }))  # fmt: skip
    cfg = fercluster.load_config(path)
    fercluster.submit(cfg, backend=fake)
    return cfg


def test_jobs_are_the_plan_with_states_from_one_query(submitted: fercluster.SweepConfig, fake: FakeBackend) -> None:
    fake.set_state(["1000_0"], "RUNNING")
    before = fake.calls["sacct"]
    handles = fercluster.jobs(submitted, backend=fake)
    assert fake.calls["sacct"] == before + 1  # ONE status query for the batch
    plan = fercluster.plan(submitted)
    assert [j.job_id for j in handles] == plan["job_id"].tolist()
    assert [(j.dataset, j.fold, j.variant, j.seed) for j in handles] == [("ckplus", 0, "AD", 0), ("ckplus", 1, "AD", 0)]
    assert repr(handles[0]) == f"<Job {handles[0].job_id} ckplus fold 0 AD: RUNNING>"
    assert repr(handles[1]).endswith("fold 1 AD: PENDING>")
    fake.set_state(["1000_1"], "RUNNING")
    assert handles[1].state == "RUNNING" and fake.calls["sacct"] == before + 2  # read again: asked again
    assert fercluster.jobs(str(submitted.source), backend=fake)[1].job_id == handles[1].job_id  # a path too


def test_wait_polls_until_the_job_ends_or_times_out(
    submitted: fercluster.SweepConfig, fake: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = fercluster.jobs(submitted, backend=fake)[0]
    with pytest.raises(TimeoutError, match=f"job {job.job_id} still PENDING after 0 s"):
        job.wait(timeout=0)
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the job fails while wait sleeps
        slept.append(seconds)
        fake.set_state(["1000_0"], "FAILED")

    monkeypatch.setattr("fercluster.api.handles.time.sleep", sleep)
    assert job.wait(poll=7) == "FAILED" and slept == [7]
    assert repr(job).endswith(": FAILED>")


def test_result_logs_and_cancel(submitted: fercluster.SweepConfig, fake: FakeBackend) -> None:
    first, second = fercluster.jobs(submitted, backend=fake)
    with pytest.raises(fercluster.AnalysisError, match=f"job {first.job_id} is not complete \\(PENDING\\).*wait"):
        first.result()
    assert first.stdout() == "" and first.stderr() == ""  # no log written yet
    paths = submitit_paths(submitted.jobs_dir / "submitit", "1000_0")
    paths.stderr.parent.mkdir(parents=True, exist_ok=True)
    paths.stderr.write_text("".join(f"line {i}\n" for i in range(30)))
    assert first.stderr(lines=3) == "line 27\nline 28\nline 29" and len(first.stderr().splitlines()) == 20
    done = first.cancel()
    assert done.slurm_ids == ("1000_0",) and fake.states["1000_0"] == "CANCELLED" and first.state == "CANCELLED"
    assert fake.states["1000_1"] == "PENDING" and second.state == "PENDING"
