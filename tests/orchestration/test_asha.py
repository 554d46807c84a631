"""``PersistentASHA`` across an interruption, fed recorded results (no Ray cluster, fast).

A restored search must make the decisions an uninterrupted one makes: the scheduler saved at any
point and read back by a fresh instance (what ``Tuner.restore`` gives) answers every later result
as the first one would have. The trials mirror test_tune.py's tiny search: lr 0.01 trials learn,
lr 1e-9 trials stay at their first accuracy.
"""

from __future__ import annotations

import json

import pytest
from asha_helpers import Trial, make_asha, replay, report
from ray.tune.schedulers import TrialScheduler

STOP, CONTINUE = TrialScheduler.STOP, TrialScheduler.CONTINUE
LEARNS_A = [(0, 0.125), (10, 0.25), (20, 0.375), (30, 0.4), (40, 0.45)]
LEARNS_B = [(0, 0.125), (10, 0.3), (20, 0.375), (30, 0.35), (40, 0.5)]  # dips after rung 20
STUCK = [(0, 0.125), (10, 0.125), (20, 0.125), (30, 0.125), (40, 0.125)]
TRIALS = [("t_00000", LEARNS_A), ("t_00001", STUCK), ("t_00002", LEARNS_B), ("t_00003", STUCK)]


STOPS = {"t_00001": 10, "t_00003": 10}  # what an uninterrupted ASHA does (the first test)
# every result the driver sees, in order: each trial until ASHA stops it
EVENTS = [(t, it, acc) for t, rows in TRIALS for it, acc in rows if it <= STOPS.get(t, 40)]


def run(asha, events, added: set[str]) -> list[str]:
    decisions = []
    for trial_id, iteration, val_acc in events:
        if trial_id not in added:
            asha.on_trial_add(None, Trial(trial_id))
            added.add(trial_id)
        decisions.append(report(asha, trial_id, iteration, val_acc))
    return decisions


def test_uninterrupted_asha_stops_the_trials_that_cannot_learn(tmp_path):
    assert replay(make_asha(tmp_path / "asha.json"), TRIALS) == STOPS


def test_a_skipped_rung_changes_the_decision(tmp_path):
    """Why a restored trial must report every evaluation Tune has not seen (trial.py): judged at
    rung 20 with its result at 30, the learning trial t_00002 is stopped."""
    skipped = [row for row in LEARNS_B if row[0] != 20]
    stopped = replay(make_asha(tmp_path / "asha.json"), [*TRIALS[:2], ("t_00002", skipped)])
    assert stopped == {"t_00001": 10, "t_00002": 30}


@pytest.mark.parametrize("cut", range(len(EVENTS) + 1))
def test_restored_asha_decides_as_an_uninterrupted_one(tmp_path, cut):
    """Interrupted after any result, restored, and fed the rest: the same decisions and rungs."""
    events = EVENTS
    expected = run(make_asha(tmp_path / "one.json"), events, set())
    path = tmp_path / "asha.json"
    before = make_asha(path)
    added: set[str] = set()
    decisions = run(before, events[:cut], added)
    if cut and decisions[-1] == CONTINUE:  # Ray stops the running trial on Ctrl-C: on_trial_complete
        trial_id, iteration, val_acc = events[cut - 1]
        before.on_trial_complete(None, Trial(trial_id), {"iteration": iteration, "val_acc": val_acc})
    after = make_asha(path)  # what Tuner.restore gives: the scheduler as created, rungs on disk
    decisions += run(after, events[cut:], set())
    assert decisions == expected
    uninterrupted = make_asha(tmp_path / "two.json")
    replay(uninterrupted, TRIALS)
    saved = json.loads(path.read_text())
    assert saved["rungs"] == uninterrupted.rungs() and saved["stopped"] == STOPS


@pytest.mark.parametrize("cut", [3, 4, 7, 10])
def test_a_result_seen_before_the_restore_gets_the_same_answer(tmp_path, cut):
    """A trial resumed from an older checkpoint reports some results again: ASHA answers as before."""
    events = EVENTS
    path = tmp_path / "asha.json"
    first = run(make_asha(path), events[:cut], set())
    after = make_asha(path)
    again = run(after, [events[cut - 1]], set())
    assert again == [first[-1]]
    assert run(after, events[cut:], {events[cut - 1][0]}) == run(make_asha(tmp_path / "one.json"), events, set())[cut:]


# -- the trial's side: a restored trial resumes from what Tune has seen ---------------------------
class RayCheckpoint:
    """Stands in for ``ray.tune.Checkpoint``: a folder, opened with ``as_directory``."""

    def __init__(self, folder):
        self.folder = folder

    def as_directory(self):
        import contextlib

        return contextlib.nullcontext(str(self.folder))


def run_dir_ahead_of_ray(tmp_path):
    """The job saved iteration 20 and was stopped before the driver took its report: Ray has 10."""
    run_dir, ray = tmp_path / "trial", tmp_path / "ray-checkpoint"
    run_dir.mkdir()
    ray.mkdir()
    for name in ("checkpoint.pt", "metrics.parquet", "progress.json"):
        (run_dir / name).write_text(f"{name} at 20")
    for name in ("checkpoint.pt", "metrics.parquet"):
        (ray / name).write_text(f"{name} at 10")
    (ray / "trial.json").write_text(json.dumps({"iteration": 10}))
    return run_dir, RayCheckpoint(ray)


def test_a_restored_trial_resumes_from_rays_checkpoint_not_a_newer_one(tmp_path):
    from fercluster.orchestration.tune.trial import _restore_checkpoint

    run_dir, checkpoint = run_dir_ahead_of_ray(tmp_path)
    assert _restore_checkpoint(checkpoint, run_dir) == 10
    assert (run_dir / "checkpoint.pt").read_text() == "checkpoint.pt at 10"
    assert (run_dir / "metrics.parquet").read_text() == "metrics.parquet at 10"
    assert not (run_dir / "progress.json").exists()  # not in Ray's checkpoint: not the state it resumes


def test_a_trial_without_a_ray_checkpoint_starts_over(tmp_path):
    from fercluster.orchestration.tune.trial import CHECKPOINT_FILES, _restore_checkpoint

    run_dir, _ = run_dir_ahead_of_ray(tmp_path)
    assert _restore_checkpoint(None, run_dir) is None
    assert not any((run_dir / name).exists() for name in CHECKPOINT_FILES)


def test_a_complete_job_is_left_as_it_is(tmp_path):
    from fercluster.orchestration.tune.trial import _restore_checkpoint

    run_dir, checkpoint = run_dir_ahead_of_ray(tmp_path)
    (run_dir / "job.json").write_text(json.dumps({"status": "completed", "val_acc": 0.5, "test_acc": 0.4}))
    assert _restore_checkpoint(checkpoint, run_dir) is None
    assert (run_dir / "checkpoint.pt").read_text() == "checkpoint.pt at 20"


def test_asha_rungs_live_outside_rays_experiment_folder(tmp_path):
    """On a restore Ray copies the experiment's .json files aside and back over it at each snapshot."""
    from test_tune import tiny_config

    from fercluster.config import parse_config
    from fercluster.orchestration.tune.state import asha_path, storage_dir

    cfg = parse_config(tiny_config(tmp_path))
    assert storage_dir(cfg) not in asha_path(cfg, "ckplus").parents


def test_a_scheduler_pickled_by_the_previous_version_still_restores(tmp_path):
    """Tuner.restore unpickles the scheduler of the search's start, maybe without ``_stopped``."""
    import pickle

    old = make_asha(tmp_path / "asha.json")
    del old.__dict__["_stopped"]
    restored = pickle.loads(pickle.dumps(old))
    assert replay(restored, TRIALS) == STOPS
