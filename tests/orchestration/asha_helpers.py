"""ASHA fed recorded results, as Ray's driver feeds it (no Ray cluster): the tune tests' replay."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ray.tune.schedulers import TrialScheduler

from fercluster.orchestration.tune.scheduler import PersistentASHA

Rows = list[tuple[int, float]]  # one trial's evaluations in order: (iteration, val_acc)


@dataclass(frozen=True)
class Trial:
    trial_id: str


def make_asha(path: Path, max_t: int = 40, grace: int = 10, factor: int = 2) -> PersistentASHA:
    """The scheduler ``search._tuner`` builds for the tests' tiny search."""
    return PersistentASHA(path, time_attr="iteration", metric="val_acc", mode="max", max_t=max_t,
                          grace_period=grace, reduction_factor=factor)  # fmt: skip


def report(asha: PersistentASHA, trial_id: str, iteration: int, val_acc: float) -> str:
    """One result as Ray's driver hands it on: ``on_trial_result``, then ``on_trial_complete`` on STOP."""
    trial, result = Trial(trial_id), {"iteration": iteration, "val_acc": val_acc}
    action = asha.on_trial_result(None, trial, result)
    if action == TrialScheduler.STOP:
        asha.on_trial_complete(None, trial, result)
    return action


def replay(asha: PersistentASHA, trials: list[tuple[str, Rows]]) -> dict[str, int]:
    """Trials run one after the other (``max_concurrent: 1``), each until ASHA stops it; returns
    the trials stopped before ``max_t`` with the iteration of that decision."""
    stopped = {}
    for trial_id, rows in trials:
        asha.on_trial_add(None, Trial(trial_id))
        for iteration, val_acc in rows:
            if report(asha, trial_id, iteration, val_acc) == TrialScheduler.STOP:
                if iteration < asha._max_t:
                    stopped[trial_id] = iteration
                break
    return stopped
