"""``configs/reference.yaml`` documents every setting of the config models with the code's default.

The walk goes down the models' ``model_fields``: a sub-model (``paths``, ``train``, ``tune``, a
data set's ``synthetic``) is a mapping documented key by key; a collection of models (``datasets``,
``grid``, ``tune.space``) holds example entries, each documented key by key; any other setting is
a value that must equal the code's default (as JSON, so ``Path("jobs")`` is ``jobs``). Required
settings (``name``, a data set's ``kind`` and ``root``, ``tune.datasets``) are documented by an
example value. Every problem is listed at once.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter

from fercluster.config import SweepConfig
from fercluster.config_errors import _unwrap
from fercluster.yaml_io import read_yaml

REFERENCE = Path(__file__).resolve().parents[1] / "configs" / "reference.yaml"


def _model(tp: Any) -> type[BaseModel] | None:
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _entries(tp: Any, value: Any) -> tuple[type[BaseModel], list[Any]] | None:
    """(model, entries) when ``tp`` is a dict or list of models, else None."""
    tp = _unwrap(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is dict and _model(args[1]):
        return _model(args[1]), list(value.values()) if isinstance(value, dict) else [value]  # type: ignore[return-value]
    if origin is list and _model(args[0]):
        return _model(args[0]), list(value) if isinstance(value, list) else [value]  # type: ignore[return-value]
    return None


def problems(model: type[BaseModel], data: Any, where: str = "", defaults: bool = True) -> list[str]:
    """What ``data`` (the YAML under ``where``) gets wrong about ``model``: one line per problem."""
    if not isinstance(data, dict):
        return [f"{where or '(top level)'}: documented as {data!r}, expected a mapping of {model.__name__}'s keys"]
    out = [
        f"{where}{key}: documented but not a setting of {model.__name__}"
        for key in data
        if key not in model.model_fields
    ]
    for name, field in model.model_fields.items():
        key = where + name
        if name not in data:
            out.append(f"{key}: not documented")
            continue
        value, default = data[name], field.get_default(call_default_factory=True)
        if _model(field.annotation):  # a section: its own keys, with their defaults
            out += problems(_model(field.annotation), value, key + ".", defaults)  # type: ignore[arg-type]
            continue
        collection = _entries(field.annotation, value)
        if collection is not None:  # example entries: every key; their defaults unless the field has its own
            item, entries = collection
            for i, entry in enumerate(entries):
                out += problems(item, entry, f"{key}.{i}.", defaults and not default)
            if not (defaults and default and not field.is_required()):
                continue
        if defaults and not field.is_required():
            wanted = TypeAdapter(field.annotation).dump_python(default, mode="json")
            if json.loads(json.dumps(value, default=str)) != wanted:
                out.append(f"{key}: documented default {value!r}, the code's default is {wanted!r}")
    return out


def test_the_reference_documents_every_setting_with_its_default() -> None:
    found = problems(SweepConfig, read_yaml(REFERENCE))
    assert not found, "configs/reference.yaml is out of date:\n" + "\n".join(found)


def test_the_walk_finds_a_changed_default_a_missing_and_an_unknown_key() -> None:
    data = read_yaml(REFERENCE)
    data["train"]["lr"] = 0.02
    del data["slurm"]["time_min"]
    data["analysis"]["topn"] = 3
    data["grid"][0]["seeds"] = [1]
    assert problems(SweepConfig, data) == [
        "grid.0.seeds: documented default [1], the code's default is [0]",
        "train.lr: documented default 0.02, the code's default is 0.01",
        "slurm.time_min: not documented",
        "analysis.topn: documented but not a setting of Analysis",
    ]


@pytest.mark.parametrize("section", ["train", "slurm", "analysis", "paths"])
def test_each_documented_section_validates_as_a_config(section: str) -> None:
    """The documented values are valid settings, not only the right keys."""
    data = read_yaml(REFERENCE)
    from fercluster.config import parse_config

    cfg = parse_config({"name": "r", "datasets": data["datasets"], "grid": data["grid"], section: data[section]})
    assert getattr(cfg, section) == type(getattr(cfg, section))()
