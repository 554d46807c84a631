"""``key=value`` overrides: applied to the parsed YAML before validation, checked as strictly as the
file, every problem at once, each naming its key and the override."""

from __future__ import annotations

from pathlib import Path

import pytest

from fercluster.config import load_config, parse_config
from fercluster.errors import ConfigError
from fercluster.overrides import apply_overrides, split

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
BASE = {
    "name": "t",
    "datasets": {"ckplus": {"kind": "ckplus", "root": "raw"}},
    "grid": [{"dataset": "ckplus", "folds": [0]}],
}


def problems(overrides: list[str]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE, source="t.yaml", overrides=overrides)
    lines = str(err.value).splitlines()
    return [lines[0].removeprefix("t.yaml: invalid config: ")] if len(lines) == 1 else [s.strip() for s in lines[1:]]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.iterations=500", ("train.iterations", 500)),
        ("grid.0.folds=[0,1]", ("grid.0.folds", [0, 1])),
        ("slurm.partition=gpu", ("slurm.partition", "gpu")),
        ("train.k=random", ("train.k", "random")),
        ("train.lr=1e-3", ("train.lr", 0.001)),
        ("slurm.extra={mail-type: END}", ("slurm.extra", {"mail-type": "END"})),
        ("slurm.partition=", ("slurm.partition", None)),
        ("slurm.partition=null", ("slurm.partition", None)),
        ("name=a=b", ("name", "a=b")),  # split at the first '='
        (" train.bf16 =true", ("train.bf16", True)),
    ],
)
def test_split_reads_a_dotted_key_and_a_yaml_value(override: str, expected: tuple) -> None:
    assert split(override) == expected


def test_overrides_apply_in_order_creating_missing_sections() -> None:
    data, found = apply_overrides(BASE, ["train.iterations=20", "slurm.partition=gpu", "grid.0.folds=[0,1]",
                                         "train.iterations=30", "datasets.tfd={kind: tfd, root: t.mat}"])  # fmt: skip
    assert found == []
    assert data["train"] == {"iterations": 30} and data["slurm"] == {"partition": "gpu"}
    assert data["grid"][0]["folds"] == [0, 1] and data["datasets"]["tfd"]["kind"] == "tfd"
    assert "train" not in BASE and BASE["grid"][0]["folds"] == [0]  # the input is left as it was


def test_load_config_with_overrides_records_them() -> None:
    cfg = load_config(SMOKE, overrides=["train.iterations=20", "name=smokeapi", "slurm.partition=gpu"])
    assert (cfg.name, cfg.train.iterations, cfg.slurm.partition) == ("smokeapi", 20, "gpu")
    assert cfg.overrides == ("train.iterations=20", "name=smokeapi", "slurm.partition=gpu")
    assert cfg.source == str(SMOKE.resolve()) and load_config(SMOKE).overrides == ()
    assert parse_config(BASE, overrides="train.iterations=7").train.iterations == 7  # one, given bare


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("train.iterations", "override 'train.iterations': expected key=value, e.g. train.iterations=500"),
        ("=5", "override '=5': the key must be names and list indices joined by dots"),
        ("train..lr=1", "override 'train..lr=1': the key must be names"),
        (
            "grid.1.folds=[0]",
            "grid.1: index 1 is past the end of grid (1 entry; valid: 0..0) (override 'grid.1.folds=[0]')",
        ),
        ("grid.x.folds=[0]", "grid.x: grid is a list, 'x' is not an index; valid: 0..0 (override 'grid.x.folds=[0]')"),
        ("name.x=1", "name: is 't', not a mapping or a list, so it has no keys (override 'name.x=1')"),
        ("train.k=[", "override 'train.k=[': the value is not valid YAML ("),
        ("train.lr=-1", "train.lr: got -1; Input should be greater than 0 (override 'train.lr=-1')"),
        (
            "train.itrations=5",
            "train.itrations: unknown key (value 5); did you mean `iterations`? (override 'train.itrations=5')",
        ),
        ("train.iterations='40'", "train.iterations: got '40'; Input should be a valid integer (override"),
        ("grid.0.folds=[12]", "grid.0.folds.0: got 12; Input should be less than or equal to 9 (override"),
    ],
)
def test_each_problem_is_one_line_naming_the_key_and_the_override(override: str, line: str) -> None:
    assert [p[: len(line)] for p in problems([override])] == [line]


def test_every_problem_at_once_overrides_and_file_together(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: t\ndatasets: {ckplus: {kind: ckplus, root: raw}}\ngrid: [{dataset: ckplus}]\ntrain: {momentum: 2}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides=["train.lr=-1", "grid.3.folds=[0]", "train.iterations", "slurm.nodes=0"])
    lines = str(err.value).splitlines()
    assert lines[0] == f"{path}: invalid config:"
    keys = sorted(line.strip().split(":")[0] for line in lines[1:])
    assert keys == ["grid.3", "override 'train.iterations'", "slurm.nodes", "train.lr", "train.momentum"]
    assert [line for line in lines if "train.momentum" in line][0].endswith("less than 1")  # the file's own: unmarked
