"""``sweep --retry-failed`` and ``--prune`` on a Ray Tune search (``tune/retry.py``, the CLI).

A retry is a round: the data sets with trials that ended in error are named in ``search.json``,
and their next restore resumes those trials (``Tuner.restore(resume_errored=True)``), once; at
most ``slurm.max_retries`` rounds. A plain restore leaves errored trials alone. ``--prune`` and
``--code submitted`` are refused with one line. Without Ray here (its Tuner is a stand-in), but for
one ``slow`` test that runs a real search whose only trial fails, then retries it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from test_tune import tiny_config, write_config

from fercluster.atomic import write_json
from fercluster.config import load_config, parse_config
from fercluster.orchestration.tune import retry
from fercluster.orchestration.tune.state import (
    completed,
    fingerprint,
    load_search,
    results_dir,
    state_dir,
    status_path,
)


def a_search(tmp_path, max_retries: int = 2, **tune: object):
    data = tiny_config(tmp_path, **tune)
    data["slurm"]["max_retries"] = max_retries
    return parse_config(data)


def ended(cfg, states: list[str], state: str = "completed") -> None:
    """The files of a search that ended with trials in these Ray states (what the driver writes)."""
    trials = [{"trial_id": f"t{i}", "state": s, "iteration": 10} for i, s in enumerate(states)]
    write_json(status_path(cfg, "ckplus"), {"trials": trials, "best": None})
    write_json(state_dir(cfg) / "search.json", {"state": state, "fingerprint": fingerprint(cfg), "mode": "local"})
    write_json(results_dir(cfg) / "best.json", {"k": 0.5})


def test_a_round_is_counted_once_taken_once_and_bounded_by_max_retries(tmp_path):
    cfg = a_search(tmp_path, max_retries=2)
    ended(cfg, ["TERMINATED", "ERROR", "ERROR"])
    assert completed(cfg) is not None
    assert retry.begin(cfg, write=False).round == 1 and load_search(cfg).retries == 0  # a dry run writes nothing
    first = retry.begin(cfg)
    assert (first.round, dict(first.failed)) == (1, {"ckplus": 2})
    assert "retrying 2 failed trial(s) of ckplus from their last checkpoint (retry 1 of at most 2" in first.line("s")
    assert completed(cfg) is None  # a round to run: the search is not done
    assert retry.begin(cfg).round == 1 and load_search(cfg).retries == 1  # begun, not yet run: the same round
    assert retry.pending(cfg, "ckplus")
    retry.take(cfg, "ckplus")  # the restore resumed them
    assert not retry.pending(cfg, "ckplus") and completed(cfg) is not None
    assert retry.begin(cfg).round == 2
    retry.take(cfg, "ckplus")
    exhausted = retry.begin(cfg)
    assert exhausted.round == 0 and load_search(cfg).retries == 2 and not retry.pending(cfg, "ckplus")
    assert "2 failed trial(s) not retried: retried 2 time(s) already (slurm.max_retries)" in exhausted.line("s")


def test_nothing_to_retry_when_no_trial_failed(tmp_path):
    cfg = a_search(tmp_path)
    ended(cfg, ["TERMINATED", "RUNNING"], state="interrupted")
    plan = retry.begin(cfg)
    assert plan.round == 0 and plan.line("s") == "search s: no failed trials to retry" and load_search(cfg).retries == 0


@pytest.fixture
def fake_tuner(monkeypatch):
    """Ray's Tuner and cluster as stand-ins: ``calls`` records each restore's resume_errored."""
    import ray
    from ray import tune

    calls: list[bool] = []

    def restore(path, trainable, resume_errored=False, **kw):
        calls.append(resume_errored)
        return SimpleNamespace()

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    monkeypatch.setattr(tune.Tuner, "can_restore", staticmethod(lambda path: True))
    monkeypatch.setattr(tune.Tuner, "restore", staticmethod(restore))
    return calls


def test_only_a_retry_round_resumes_errored_trials_and_only_once(tmp_path, fake_tuner):
    from fercluster.orchestration.tune.search import _tuner

    cfg = a_search(tmp_path)
    ended(cfg, ["ERROR"], state="interrupted")
    _tuner(cfg, "ckplus", None)  # a plain restore (an interrupted search, a requeue)
    retry.begin(cfg)
    _tuner(cfg, "ckplus", None)  # the round's restore
    _tuner(cfg, "ckplus", None)  # the allocation requeued during the round: not a second time
    assert fake_tuner == [False, True, False]


def test_the_end_of_a_search_keeps_what_its_restore_took(tmp_path, monkeypatch, fake_tuner):
    """run_search's last write must not bring back a round its restore took (a stale copy would)."""
    from fercluster.orchestration.tune import search

    cfg = a_search(tmp_path)
    ended(cfg, ["ERROR"], state="interrupted")
    retry.begin(cfg)

    def run_dataset(cfg, name, console):
        search._tuner(cfg, name, console)
        return [], True

    monkeypatch.setattr(search, "_run_dataset", run_dataset)
    search.run_search(cfg)
    record = load_search(cfg)
    assert fake_tuner == [True] and record.state == "completed" and record.retry_errored == ()


# -- on SLURM: the round begins only when an allocation goes ---------------------------------------
@pytest.fixture
def slurm_env(tmp_path, monkeypatch):
    from fercluster.orchestration.fake import FakeBackend
    from fercluster.orchestration.tune import allocation

    monkeypatch.setattr(allocation.search, "prepare", lambda cfg, console=None: None)
    code = SimpleNamespace(path=tmp_path / "code" / "abc", key="abc")
    monkeypatch.setattr(allocation, "current_code", lambda cfg, make=False: (code, None))
    return allocation, a_search(tmp_path, max_retries=1), FakeBackend()


def test_retry_failed_submits_a_completed_search_again_once_within_max_retries(slurm_env):
    allocation, cfg, fake = slurm_env
    ended(cfg, ["TERMINATED", "ERROR"])
    said: list[str] = []
    console = SimpleNamespace(print=said.append)
    plain = allocation.submit_tune_slurm(cfg, console, backend=fake, live=lambda sid: False)
    assert not plain["submitted"] and fake.submitted == []  # a plain sweep leaves a completed search
    again = allocation.submit_tune_slurm(cfg, console, retry_failed=True, backend=fake, live=lambda sid: False)
    assert again["submitted"] and len(fake.submitted) == 1 and retry.pending(cfg, "ckplus")
    assert any("retrying 1 failed trial(s) of ckplus" in line for line in said)
    retry.take(cfg, "ckplus")  # the allocation restored the search; the trial failed again
    write_json(state_dir(cfg) / "search.json", {**load_search(cfg).to_dict(), "state": "completed"})
    spent = allocation.submit_tune_slurm(cfg, console, retry_failed=True, backend=fake, live=lambda sid: False)
    assert not spent["submitted"] and len(fake.submitted) == 1
    assert "not retried: retried 1 time(s) already (slurm.max_retries)" in said[-1]


def test_a_retry_waits_while_the_searchs_allocation_may_be_live(slurm_env):
    allocation, cfg, fake = slurm_env
    ended(cfg, ["ERROR"], state="submitted")
    write_json(state_dir(cfg) / "search.json", {**load_search(cfg).to_dict(), "mode": "slurm", "slurm_id": "77"})
    for live in (True, None):  # running, or squeue did not answer
        held = allocation.submit_tune_slurm(cfg, retry_failed=True, backend=fake, live=lambda sid, live=live: live)
        assert not held["submitted"] and load_search(cfg).retries == 0 and not retry.pending(cfg, "ckplus")
    assert fake.submitted == []


# -- the CLI ---------------------------------------------------------------------------------------
def fercluster(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fercluster.cli.main", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ}, cwd=cwd)  # fmt: skip


def test_prune_and_code_submitted_are_refused_on_a_search_and_a_dry_run_says_the_retry(tmp_path):
    path = write_config(tmp_path, tiny_config(tmp_path))
    pruned = fercluster("sweep", str(path), "--prune")
    assert pruned.returncode == 2 and pruned.stderr.count("\n") == 1, pruned.stderr
    assert pruned.stderr.startswith("error: --prune: a Ray Tune search has no trials outside its search space")
    code = fercluster("sweep", str(path), "--retry-failed", "--code", "submitted")
    assert code.returncode == 2 and "--code submitted: a Ray Tune search runs all its trials on one code" in code.stderr
    ended(load_config(path), ["ERROR"])
    dry = fercluster("sweep", str(path), "--retry-failed", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "search ktune-test: retrying 1 failed trial(s) of ckplus from their last checkpoint" in dry.stdout
    assert load_search(load_config(path)).retries == 0


# -- Ray itself ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_failed_trial_runs_again_only_with_retry_failed(tmp_path):
    """One trial, failing at its start (its run directory's parent is a file); a plain rerun leaves it
    failed, ``--retry-failed`` (the file gone) runs it to the end, with Ray's own restore."""
    from fercluster.data import ensure_prepared
    from fercluster.errors import TrainingError
    from fercluster.orchestration.tune.search import run_tune_local

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    data = tiny_config(tmp_path, num_samples=1, space={"k": {"type": "uniform", "low": 0.2, "high": 1.2}})
    data["train"].update(iterations=10, eval_every=10, checkpoint_every=10)
    cfg = parse_config(data)
    ensure_prepared(cfg, "ckplus")
    trials = results_dir(cfg) / "trials"
    trials.parent.mkdir(parents=True)
    trials.write_text("not a folder")
    with pytest.raises((TrainingError, OSError)):
        run_tune_local(cfg)
    assert retry.failed_trials(cfg) == {"ckplus": 1}
    trials.unlink()
    with pytest.raises(TrainingError, match="every trial"):
        run_tune_local(cfg)  # restored without its errored trial: it stays failed and never ran
    assert not trials.exists() or not any(trials.iterdir())
    summary = run_tune_local(cfg, retry_failed=True)
    assert summary["state"] == "completed" and summary["errors"] == 0 and summary["trials"] == 1
    assert retry.failed_trials(cfg) == {} and load_search(cfg).retries == 1
    assert len(list(trials.glob("*/job.json"))) == 1  # the trial ran to its end, a complete job
