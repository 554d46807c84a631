"""The submitted training job: submitit's Checkpointable around ``run_job``, requeued as the same call."""

import pickle

import pytest

submitit = pytest.importorskip("submitit")

from fercluster.orchestration.slurm.requeue import JobCheckpointable  # noqa: E402


def test_checkpointable_runs_the_job_and_requeues_the_same_call(monkeypatch):
    calls = []

    def run_job(spec, **kwargs):  # stand-in: the wrapper, not the training, is under test
        calls.append((spec, kwargs))
        return {"job_id": spec["job_id"], "status": "completed"}

    monkeypatch.setattr("fercluster.train.job.run_job", run_job)
    spec = {"job_id": "abc123"}
    wrapper = JobCheckpointable()
    assert isinstance(wrapper, submitit.helpers.Checkpointable)
    record = wrapper(spec)
    assert record == {"job_id": "abc123", "status": "completed"} and calls == [(spec, {})]
    delayed = wrapper.checkpoint(spec)
    assert isinstance(delayed, submitit.helpers.DelayedSubmission) and delayed.args == (spec,)
    assert delayed.result() == record and len(calls) == 2  # resubmitted: the same call again
    pickle.loads(pickle.dumps(delayed))


def test_the_job_side_does_not_carry_the_wrapper():
    import fercluster.train.job as job

    assert not hasattr(job, "JobCheckpointable")  # it lives here, with submitit
