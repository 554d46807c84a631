"""ASHA that survives ``Tuner.restore``.

Ray saves trials and the searcher with the experiment, but not the scheduler: a restored Tuner
gets the ASHA object pickled when the search was created, with empty rungs, and would judge the
remaining trials only against each other. This subclass writes its rungs (per milestone, the
metric of every trial that reached it) and its stop decisions to a JSON file after each result and
reads them back on first use, so a restored search stops trials exactly as an uninterrupted one
would.

The file lies outside Ray's experiment folder (``search._tuner`` puts it under
``jobs/<sweep>/tune/asha/``): on a restore Ray copies every ``.json`` of that folder into its
staging folder and copies the staging folder back over the experiment at each snapshot, so a
file kept there was overwritten, again and again, by the copy taken when the search was restored.

A result that ASHA has already seen may come again after a restore (a trial resumes from Ray's
last saved checkpoint, which a driver that died hard may have saved before its last results):
ASHA then skips the rungs the trial is recorded at, and a trial it stopped is stopped again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from fercluster.atomic import write_json


class PersistentASHA(AsyncHyperBandScheduler):
    """``ASHAScheduler`` (one bracket) whose rungs persist in ``state_path``."""

    def __init__(self, state_path: str | Path, **kwargs: Any):
        super().__init__(**kwargs)
        self._state_path = str(state_path)
        self._loaded = False
        self._stopped: dict[str, float] = {}  # trial id -> the time_attr value ASHA stopped it at

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a search started by an earlier version restores a pickle without the stop decisions
        self.__dict__.update({"_stopped": {}, **state})

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._load()
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        self._load()
        if trial.trial_id in self._stopped:
            return TrialScheduler.STOP  # stopped before the search was restored: the same answer
        action = super().on_trial_result(tune_controller, trial, result)
        at = result.get(self._time_attr)
        if action == TrialScheduler.STOP and at is not None and at < self._max_t:
            self._stopped[trial.trial_id] = float(at)
        self._save()
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._load()
        super().on_trial_complete(tune_controller, trial, result)
        self._save()

    def rungs(self) -> list[dict[str, Any]]:
        """Per bracket and milestone, the recorded metric of each trial (metric_op applied)."""
        return [
            {"milestone": float(milestone), "recorded": dict(recorded)}
            for bracket in self._brackets
            for milestone, recorded in bracket._rungs
        ]

    def stopped(self) -> dict[str, float]:
        """The trials ASHA stopped before their end, with the time_attr value of that decision."""
        return dict(self._stopped)

    def _save(self) -> None:
        document = {"rungs": self.rungs(), "stopped": self._stopped, "num_stopped": self._num_stopped}
        write_json(self._state_path, document)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            saved = json.loads(Path(self._state_path).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return
        by_milestone = {r["milestone"]: r["recorded"] for r in saved.get("rungs", [])}
        for bracket in self._brackets:
            for milestone, recorded in bracket._rungs:
                recorded.update(by_milestone.get(float(milestone), {}))
        self._stopped.update({trial_id: float(at) for trial_id, at in saved.get("stopped", {}).items()})
        self._num_stopped = int(saved.get("num_stopped", 0))
