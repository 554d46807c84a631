"""A Ray Tune search's results, for notebooks: what ``fercluster.results(config)`` gives for a
config with a ``tune:`` section (a search has trials, not the grid's jobs).

Read from ``results/<sweep>/tune/`` as the search wrote it when it ended
(``orchestration.tune.results``: ``trials.parquet``, one row per trial and evaluation, and
``best.json``). The sampled parameters are ``params.*`` columns, as in ``Results.jobs``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from fercluster.api.frames import PREFIX, typed
from fercluster.config import SweepConfig
from fercluster.errors import AnalysisError


@dataclass(frozen=True)
class TuneResults:
    """A search's ``trials`` (DataFrame: dataset, fold, trial_id, ``params.*``, iteration, val_acc,
    test_acc, train_loss, train_acc, wall_time, state, stopped_by_asha, job_id, nodes) and ``best``
    (``best.json``: the best k overall and per data set)."""

    sweep: str
    folder: Path  # results/<sweep>/tune
    trials: pd.DataFrame = field(repr=False)
    best: Mapping[str, Any] = field(repr=False)

    def __repr__(self) -> str:
        n = self.trials["trial_id"].nunique() if len(self.trials) else 0
        return f"<TuneResults of search {self.sweep!r}: {n} trials, best k {self.best.get('k')}, in {self.folder}>"


def tune_results(cfg: SweepConfig) -> TuneResults:
    """The trials and best of ``cfg``'s search; ``AnalysisError`` when it has not ended yet."""
    folder = cfg.results_dir / "tune"
    path = folder / "trials.parquet"
    if not path.exists():
        raise AnalysisError(
            f"search {cfg.name} has no trials yet ({path} is written when the search ends); run it with "
            f"fercluster sweep {cfg.source or 'CONFIG'} [--local], follow it with fercluster status"
        )
    trials = pd.read_parquet(path)
    assert cfg.tune is not None
    trials = trials.rename(columns={p: PREFIX + p for p in cfg.tune.space if p in trials.columns})
    best_path = folder / "best.json"
    best = json.loads(best_path.read_text()) if best_path.exists() else {}
    return TuneResults(cfg.name, folder, typed(trials), best)
