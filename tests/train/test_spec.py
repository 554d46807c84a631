"""Job identity: the id hashes what changes a job's result, and nothing else."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from pydantic import create_model

from fercluster.config import Train, parse_config
from fercluster.errors import ConfigError
from fercluster.orchestration.plan import expand
from fercluster.train.spec import JobSpec, identity, make_job_id

REPO = Path(__file__).resolve().parents[2]
GRID_CONFIGS = ("paper.yaml", "demo.yaml", "smoke.yaml")


def _config(name: str, edit=None):
    data = yaml.safe_load((REPO / "configs" / name).read_text())
    if edit is not None:
        data = copy.deepcopy(data)
        edit(data)
    return parse_config(data, source=name)


@pytest.mark.parametrize("name", GRID_CONFIGS)
def test_ids_of_shipped_configs_survive_a_new_defaulted_setting(name):
    # A later version adds a setting with a default: every job keeps its id (nothing reruns).
    Later = create_model("Later", __base__=Train, new_setting=(bool, False), other_new=(float, 0.5))
    specs = expand(_config(name))
    assert specs
    for spec in specs:
        later = replace(spec, train=Later(**spec.train.model_dump()), job_id="")
        assert later.job_id == spec.job_id
    # ... while the same new setting, once set away from its default, is a new job
    changed = replace(specs[0], train=Later(**specs[0].train.model_dump(), new_setting=True), job_id="")
    assert changed.job_id != specs[0].job_id


def test_settings_that_cannot_change_a_result_keep_the_id():
    spec = expand(_config("smoke.yaml"))[0]
    for key, value in {"device": "cpu", "checkpoint_every": 7, "channels_last": False, "compile": True}.items():
        assert key in Train.RESULT_NEUTRAL
        assert replace(spec, train=spec.train.model_copy(update={key: value}), job_id="").job_id == spec.job_id
    for key, value in {"lr": 0.02, "eval_every": 10, "bf16": True, "iterations": 41}.items():
        assert replace(spec, train=spec.train.model_copy(update={key: value}), job_id="").job_id != spec.job_id


def test_other_data_gives_other_ids_and_another_place_the_same():
    """The id fingerprints what the images are made of (tests/orchestration/test_identity.py moves
    real trees): other synthetic parameters are other data; another root or prepared folder for the
    same synthetic set is the same data."""

    def other_synthetic(data):
        data["datasets"]["ckplus"]["synthetic"]["subjects"] = 21

    def other_root(data):
        data["datasets"]["ckplus"]["root"] = "/somewhere/else/CK+"

    def other_prepared(data):
        data["datasets"]["ckplus"]["prepared"] = "data/prepared/elsewhere"

    base = {s.job_id for s in expand(_config("smoke.yaml"))}
    ids = {s.job_id for s in expand(_config("smoke.yaml", other_synthetic))}
    assert len(ids) == len(base) == 4 and not ids & base
    for edit in (other_root, other_prepared):
        assert {s.job_id for s in expand(_config("smoke.yaml", edit))} == base, edit.__name__


def test_ids_do_not_depend_on_slurm_resources_or_output_places():
    def resources(data):
        data["slurm"].update({"time_min": 99, "cpus_per_task": 2, "array_parallelism": 1})
        data["paths"] = {"jobs": "elsewhere/jobs", "results": "elsewhere/results"}

    assert [s.job_id for s in expand(_config("smoke.yaml", resources))] == [
        s.job_id for s in expand(_config("smoke.yaml"))
    ]


def test_spec_round_trips_through_json_with_its_id():
    for spec in expand(_config("demo.yaml")):
        again = JobSpec.from_dict(spec.to_dict())
        assert again == spec and make_job_id(again) == spec.job_id
        assert identity(again)["train"] == spec.train.result_settings()


def test_a_bad_train_override_fails_at_load_naming_every_key():
    def bad(data):
        data["train_overrides"] = {"ckplus": {"lr": -1, "iterations": "many"}}

    with pytest.raises(ConfigError) as info:
        _config("smoke.yaml", bad)
    text = str(info.value)
    assert "train_overrides.ckplus.lr: got -1" in text and "train_overrides.ckplus.iterations: got 'many'" in text


def test_overrides_are_applied_once_at_load():
    cfg = _config("demo.yaml")
    assert cfg.train_for("ckplus").image_size == 48 and cfg.train_for("tfd").image_size == 32
    assert cfg.train_for("ckplus") is cfg.train_for("ckplus")  # built once, not per call
