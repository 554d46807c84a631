import pickle

import pytest

from fercluster.train import job


def test_job_side_modules_do_not_import_submitit_rich_ray_or_the_cli_at_top():
    import ast
    from pathlib import Path

    import fercluster.train

    banned = ("submitit", "rich", "ray", "fercluster.cli")
    for path in Path(fercluster.train.__file__).parent.glob("*.py"):
        if path.name == "requeue.py":  # the submitit wrapper itself, imported lazily
            continue
        for node in ast.parse(path.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not [n for n in names if n.split(".")[0] in banned or n.startswith("fercluster.cli")], path


def test_checkpointable_runs_the_job_and_requeues_the_same_call(make_spec):
    submitit = pytest.importorskip("submitit")
    wrapper = job.JobCheckpointable()
    assert isinstance(wrapper, submitit.helpers.Checkpointable)
    spec = make_spec("none", iterations=2, eval_every=2)
    record = wrapper(spec)
    assert record["status"] == "completed"
    delayed = wrapper.checkpoint(spec)
    assert isinstance(delayed, submitit.helpers.DelayedSubmission) and delayed.args == (spec,)
    assert delayed.result() == record  # resubmitted: the completed job is skipped
    pickle.loads(pickle.dumps(delayed))
