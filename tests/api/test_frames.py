"""``plan``, ``status`` and ``results`` describe the same jobs with the same dtypes and states, and
carry the jobs' resolved training settings as ``params.*`` columns; a Tune config gives its trials."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

import fercluster
from fercluster.api.frames import PARAM_COLUMNS, PARAM_TYPES
from fercluster.orchestration.fake import FakeBackend

MINI = {
    "name": "mini",
    "datasets": {"ckplus": {"kind": "ckplus", "root": "raw", "classes": 8}},
    "grid": [{"dataset": "ckplus", "folds": [0, 1], "variants": ["none", "AD"]}],
    "train": {"iterations": 40, "k": "random", "lr": 0.02, "width": 0.5},
}


@pytest.fixture
def config(workdir: Path) -> Path:
    path = workdir / "mini.yaml"
    path.write_text(yaml.safe_dump(MINI))
    return path


def test_plan_status_and_results_share_dtypes_and_states(config: Path) -> None:
    cfg = fercluster.load_config(config)
    frames = {"plan": fercluster.plan(cfg), "status": fercluster.status(cfg, backend=FakeBackend()),
              "results": fercluster.results(cfg).jobs}  # fmt: skip
    shared = set.intersection(*(set(f.columns) for f in frames.values()))
    assert {"job_id", "dataset", "fold", "variant", "seed", "k"} <= shared
    types = {name: {c: str(f[c].dtype) for c in sorted(shared)} for name, f in frames.items()}
    assert types["plan"] == types["status"] == types["results"], types
    assert types["plan"]["fold"] == types["plan"]["seed"] == "Int64" and types["plan"]["k"] == "float64"
    assert frames["status"]["state"].tolist() == frames["results"]["state"].tolist() == ["NOT_SUBMITTED"] * 4
    for column in ("job_id", "fold", "seed", "k"):
        assert (
            frames["plan"][column].tolist() == frames["status"][column].tolist() == frames["results"][column].tolist()
        )


def test_params_columns_are_the_resolved_training_settings(config: Path) -> None:
    cfg = fercluster.load_config(config)
    plan, jobs = fercluster.plan(cfg), fercluster.results(cfg).jobs
    assert list(plan.columns[-len(PARAM_COLUMNS) :]) == list(jobs.columns[-len(PARAM_COLUMNS) :]) == PARAM_COLUMNS
    assert {"params.lr", "params.width", "params.iterations", "params.batch_size", "params.k"} <= set(PARAM_COLUMNS)
    pd.testing.assert_frame_equal(plan[PARAM_COLUMNS], jobs[PARAM_COLUMNS])
    assert set(plan["params.lr"]) == {0.02} and set(plan["params.width"]) == {0.5}
    assert set(plan["params.iterations"]) == {40} and set(plan["params.batch_size"]) == {64}  # the default
    assert plan["params.k"].tolist() == plan["k"].tolist() and plan["k"].nunique() == 4  # drawn per job
    assert {c: str(plan[c].dtype) for c in PARAM_COLUMNS} == PARAM_TYPES
    assert PARAM_TYPES["params.lr"] == "float64" and PARAM_TYPES["params.iterations"] == "Int64"
    assert PARAM_TYPES["params.bf16"] == "boolean" and PARAM_TYPES["params.device"] == "str"


def test_a_tune_config_gives_its_trials(workdir: Path) -> None:
    cfg = fercluster.load_config(Path(__file__).resolve().parents[2] / "configs" / "ktune-demo.yaml",
                                 overrides=[f"paths.results={workdir / 'results'}"])  # fmt: skip
    with pytest.raises(fercluster.AnalysisError, match="search ktune-demo has no trials yet.*fercluster sweep"):
        fercluster.results(cfg)
    folder = workdir / "results" / "ktune-demo" / "tune"
    folder.mkdir(parents=True)
    trials = pd.DataFrame({"dataset": ["ckplus"] * 3, "fold": [0] * 3, "trial_id": ["t1", "t1", "t2"],
                           "k": [0.3, 0.3, 0.9], "iteration": [50, 100, 50], "val_acc": [0.2, 0.4, 0.3],
                           "state": ["COMPLETED", "COMPLETED", "STOPPED"]})  # fmt: skip
    trials.to_parquet(folder / "trials.parquet")
    (folder / "best.json").write_text('{"k": 0.3, "val_acc": 0.4}')
    r = fercluster.results(cfg)
    assert isinstance(r, fercluster.TuneResults) and r.best["k"] == 0.3
    assert list(r.trials.columns) == ["dataset", "fold", "trial_id", "params.k", "iteration", "val_acc", "state"]
    assert r.trials["params.k"].tolist() == [0.3, 0.3, 0.9] and str(r.trials["fold"].dtype) == "Int64"
    assert repr(r).startswith("<TuneResults of search 'ktune-demo': 2 trials, best k 0.3")
