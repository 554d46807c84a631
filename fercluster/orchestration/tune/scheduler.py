"""ASHA that survives ``Tuner.restore``.

Ray saves trials and the searcher with the experiment, but not the scheduler: a restored Tuner
gets the ASHA object pickled when the search was created, with empty rungs, and would judge the
remaining trials only against each other. This subclass writes its rungs (per milestone, the
metric of every trial that reached it) to a JSON file after each result and reads them back on
first use, so a restored search stops trials exactly as an uninterrupted one would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler

from fercluster.atomic import write_json


class PersistentASHA(AsyncHyperBandScheduler):
    """``ASHAScheduler`` (one bracket) whose rungs persist in ``state_path``."""

    def __init__(self, state_path: str | Path, **kwargs: Any):
        super().__init__(**kwargs)
        self._state_path = str(state_path)
        self._loaded = False

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._load()
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        self._load()
        action = super().on_trial_result(tune_controller, trial, result)
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

    def _save(self) -> None:
        write_json(self._state_path, {"rungs": self.rungs(), "num_stopped": self._num_stopped})

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
        self._num_stopped = int(saved.get("num_stopped", 0))
