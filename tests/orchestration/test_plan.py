"""plan.expand: order, identity and the k taken from a Ray Tune search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from orch_helpers import make_config

from fercluster.errors import ConfigError
from fercluster.orchestration.submit.plan import expand, make_spec


def test_order_is_grid_then_fold_variant_seed(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        grid=[
            {"dataset": "ckplus", "folds": [1, 0], "variants": ["none", "AD"], "seeds": [0, 1]},
            {"dataset": "tfd", "folds": "all", "variants": ["A"]},
        ],
    )
    keys = [(s.dataset, s.fold, s.variant, s.seed) for s in expand(cfg)]
    assert keys[:8] == [
        ("ckplus", 1, "none", 0),
        ("ckplus", 1, "none", 1),
        ("ckplus", 1, "AD", 0),
        ("ckplus", 1, "AD", 1),
        ("ckplus", 0, "none", 0),
        ("ckplus", 0, "none", 1),
        ("ckplus", 0, "AD", 0),
        ("ckplus", 0, "AD", 1),
    ]
    assert keys[8:] == [("tfd", f, "A", 0) for f in range(5)]  # 'all' = TFD's 5 folds


def test_duplicate_entries_appear_once_where_first_named(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        grid=[
            {"dataset": "ckplus", "folds": [0], "variants": ["AD"]},
            {"dataset": "ckplus", "folds": [0, 1], "variants": ["AD"]},
        ],
    )
    assert [(s.fold, s.variant) for s in expand(cfg)] == [(0, "AD"), (1, "AD")]


def test_ids_stable_and_independent_of_slurm_and_output_paths(tmp_path: Path) -> None:
    a = expand(make_config(tmp_path / "a"))
    elsewhere = {"jobs": str(tmp_path / "b" / "jobs"), "results": str(tmp_path / "b" / "results")}  # same data
    b = expand(
        make_config(tmp_path / "a", slurm={"partition": "gpu", "time_min": 999, "gpus_per_node": 2}, paths=elsewhere)
    )
    assert [s.job_id for s in a] == [s.job_id for s in b]
    assert len({s.job_id for s in a}) == len(a) == 4
    assert all(len(s.job_id) == 10 for s in a)
    assert a[0].run_dir == str(tmp_path / "a" / "results" / "t" / "runs" / a[0].job_id)
    assert a == expand(make_config(tmp_path / "a"))  # pure: same config, same plan
    c = expand(make_config(tmp_path / "a", train={"lr": 0.02}))
    assert {s.job_id for s in a}.isdisjoint(s.job_id for s in c)  # a result-changing setting changes ids


def test_make_spec_matches_the_plan(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    first = expand(cfg)[0]
    assert make_spec(cfg, "ckplus", 0, "none", 0) == first


def test_k_from_tune_read_from_best_json(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, train={"k": "from_tune search"})
    with pytest.raises(ConfigError, match=r"from_tune search.*best\.json does not exist"):
        expand(cfg)
    best = tmp_path / "results" / "search" / "tune" / "best.json"
    best.parent.mkdir(parents=True)
    best.write_text(json.dumps({"k": 0.55, "val_acc": 0.8}))
    assert {s.train.k for s in expand(cfg)} == {0.55}
    best.write_text(json.dumps({"val_acc": 0.8}))
    with pytest.raises(ConfigError, match="expected a number"):
        expand(cfg)


def test_plan_agrees_with_the_training_streams_make_spec(tmp_path: Path) -> None:
    from fercluster.train import spec as spec_mod

    cfg = make_config(tmp_path)
    assert [spec_mod.make_spec(cfg, s.dataset, s.fold, s.variant, s.seed) for s in expand(cfg)] == expand(cfg)
