"""The config loader: every bad value is one line naming the key, the value and what is valid."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from fercluster.config import SweepConfig, load_config, parse_config
from fercluster.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
NAME_RULE = "must be non-empty and use only letters, digits, '.', '_' and '-'"
CONTROL_RULE = "must not contain newlines or other control characters"

MINIMAL = {
    "name": "t",
    "datasets": {"ck": {"kind": "ckplus", "root": "raw/ck"}},
    "grid": [{"dataset": "ck"}],
}


def config_with(**sections) -> dict:
    data = copy.deepcopy(MINIMAL)
    data.update(sections)
    return data


def problems(data, source: str = "c.yaml") -> list[str]:
    """The lines of the one ConfigError that parsing ``data`` raises."""
    with pytest.raises(ConfigError) as info:
        parse_config(data, source=source)
    head, *lines = str(info.value).split("\n")
    if not lines:  # one problem: one line
        assert head.startswith(f"{source}: invalid config: ")
        return [head.removeprefix(f"{source}: invalid config: ")]
    assert head == f"{source}: invalid config:" and len(lines) > 1
    return [line.removeprefix("  ") for line in lines]


def test_minimal_config_gets_the_documented_defaults():
    cfg = parse_config(MINIMAL)

    assert isinstance(cfg, SweepConfig)
    assert cfg.paths.jobs == Path("jobs") and cfg.paths.results == Path("results")
    assert cfg.jobs_dir == Path("jobs/t") and cfg.results_dir == Path("results/t")
    assert cfg.prepared_dir("ck") == Path("data/prepared/ck")
    assert cfg.grid[0].folds == "all" and cfg.grid[0].variants == ["none", "D", "A", "AD"]


def test_config_is_frozen():
    cfg = parse_config(MINIMAL)

    with pytest.raises(Exception, match="frozen"):
        cfg.name = "other"


def test_unknown_key_is_named_with_its_value():
    assert problems(config_with(bogus=1)) == ["bogus: unknown key (value 1)"]


def test_unknown_nested_key_is_named_by_its_full_path():
    assert problems(config_with(train={"iterationz": 5})) == [
        "train.iterationz: unknown key (value 5); did you mean `iterations`?"
    ]


def test_wrong_type_names_key_value_and_expected_type():
    assert problems(config_with(train={"iterations": "many"})) == [
        "train.iterations: got 'many'; Input should be a valid integer"
    ]


def test_out_of_range_value_names_the_bound():
    assert problems(config_with(train={"iterations": 0})) == [
        "train.iterations: got 0; Input should be greater than or equal to 1"
    ]
    assert problems(config_with(train={"momentum": 1.0})) == ["train.momentum: got 1.0; Input should be less than 1"]


def test_choice_not_in_the_list_names_the_valid_choices():
    data = config_with(datasets={"ck": {"kind": "mnist", "root": "x"}})

    assert problems(data) == ["datasets.ck.kind: got 'mnist'; Input should be 'ckplus' or 'tfd'"]


def test_bad_sweep_name_is_rejected():
    assert problems(config_with(name="my sweep")) == [f"name: got 'my sweep'; {NAME_RULE}"]
    assert problems(config_with(name="../up")) == [f"name: got '../up'; {NAME_RULE}"]
    assert problems(config_with(name="")) == [f"name: got ''; {NAME_RULE}"]


@pytest.mark.parametrize(
    "key, value",
    [
        ("partition", "gpu\n#SBATCH --account=other"),
        ("account", "lab\r"),
        ("qos", "high\x00"),
        ("constraint", "a100\tv100"),
    ],
)
def test_slurm_value_with_control_characters_is_rejected(key, value):
    assert problems(config_with(slurm={key: value})) == [f"slurm.{key}: got {value!r}; {CONTROL_RULE}"]


def test_slurm_extra_flag_value_with_newline_is_rejected():
    data = config_with(slurm={"extra": {"mail-type": "END\n#SBATCH --x"}})

    assert problems(data) == [f"slurm.extra.mail-type: got 'END\\n#SBATCH --x'; {CONTROL_RULE}"]


def test_plain_slurm_values_are_accepted():
    cfg = parse_config(config_with(slurm={"partition": "gpu-a100", "extra": {"mail-type": "END,FAIL"}}))

    assert cfg.slurm.partition == "gpu-a100"
    assert cfg.slurm.extra == {"mail-type": "END,FAIL"}


def test_all_problems_are_reported_at_once():
    data = config_with(
        bogus=1,
        name="a b",
        train={"lr": -1, "iterations": "x"},
        slurm={"account": "a\rb", "nodes": 0},
    )

    assert sorted(problems(data)) == sorted(
        [
            f"name: got 'a b'; {NAME_RULE}",
            "train.iterations: got 'x'; Input should be a valid integer",
            "train.lr: got -1; Input should be greater than 0",
            f"slurm.account: got 'a\\rb'; {CONTROL_RULE}",
            "slurm.nodes: got 0; Input should be greater than or equal to 1",
            "bogus: unknown key (value 1)",
        ]
    )


def test_no_silent_coercion_of_booleans_or_numeric_strings():
    data = config_with(train={"batch_size": True, "eval_every": "40"})

    assert sorted(problems(data)) == [
        "train.batch_size: got True; Input should be a valid integer",
        "train.eval_every: got '40'; Input should be a valid integer",
    ]


def test_missing_required_section_is_named():
    data = copy.deepcopy(MINIMAL)
    del data["datasets"]

    assert problems(data) == ["datasets: missing; field required"]


def test_k_must_be_a_number_random_or_from_tune():
    assert problems(config_with(train={"k": "sometimes"})) == [
        "train.k: got 'sometimes'; must be a number, 'random' or 'from_tune <sweep name>'"
    ]
    assert parse_config(config_with(train={"k": "from_tune demo-tune"})).train.k == "from_tune demo-tune"
    assert parse_config(config_with(train={"k": 0.7})).train.k == 0.7


def test_grid_entry_naming_an_unknown_data_set_is_rejected():
    with pytest.raises(ConfigError, match=r"grid\.0\.dataset: got 'nope'; valid: \['ck'\]"):
        parse_config(config_with(grid=[{"dataset": "nope"}]), source="c.yaml")


def test_top_level_that_is_not_a_mapping_is_rejected():
    with pytest.raises(ConfigError) as info:
        parse_config([1, 2], source="c.yaml")

    assert str(info.value) == "c.yaml: expected a mapping at the top level, got list"


def test_load_config_reports_a_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")

    assert str(info.value) == f"config file not found: {tmp_path / 'nope.yaml'}"


def test_load_config_reports_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")

    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}:2:1: not valid YAML: "), err.value  # file:line:column


def test_load_config_names_the_file_in_validation_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: t\ndatasets: {ck: {kind: ckplus, root: raw}}\ngrid: [{dataset: ck}]\nextra_key: 3\n")

    with pytest.raises(ConfigError) as info:
        load_config(path)

    assert str(info.value) == f"{path}: invalid config: extra_key: unknown key (value 3)"  # one problem, one line


def test_smoke_config_loads_as_the_tiny_sweep():
    cfg = load_config(REPO / "configs" / "smoke.yaml")

    assert cfg.name == "smoke"
    assert cfg.datasets["ckplus"].kind == "ckplus" and cfg.datasets["ckplus"].synthetic is not None
    assert cfg.grid[0].folds == [0, 1] and cfg.grid[0].variants == ["none", "AD"]
    assert cfg.train.iterations == 40 and cfg.train.image_size == 32
    assert cfg.slurm.gpus_per_node == 0  # the SLURM checks run on the CPU-only test cluster


def test_each_cross_reference_problem_is_its_own_line():
    data = config_with(grid=[{"dataset": "nope"}], train_overrides={"zz": {}})

    assert problems(data) == [
        "grid.0.dataset: got 'nope'; valid: ['ck']",
        "train_overrides.zz: not a data set; valid: ['ck']",
    ]


def test_fold_out_of_range_is_one_line_at_the_fold():
    data = config_with(grid=[{"dataset": "ck", "folds": [12]}])

    assert problems(data) == ["grid.0.folds.0: got 12; Input should be less than or equal to 9"]


def test_bad_names_as_keys_are_named_under_their_section():
    data = config_with(slurm={"extra": {"mail type": "END"}})

    assert problems(data) == [f"slurm.extra: bad key 'mail type'; {NAME_RULE}"]


def test_cross_field_check_in_a_section_names_the_section():
    assert problems(config_with(train={"k_low": 1.0, "k_high": 0.5})) == [
        "train: k_low (1.0) must be below k_high (0.5)"
    ]


def test_slurm_extra_refuses_flags_fercluster_manages():
    data = config_with(slurm={"extra": {"array": "0-3", "Job_Name": "x", "time": "10", "mail-type": "END"}})
    [line] = problems(data)
    assert line.startswith("slurm.extra: got flags that fercluster manages: ")
    assert "Job_Name (fercluster sets it" in line and "array (" in line and "time (use slurm.time_min)" in line
    assert "mail-type" not in line


def test_slurm_gpu_settings_need_gpus_and_one_memory():
    assert problems(config_with(slurm={"gpus_per_node": 0, "gpu_type": "a100"})) == [
        "slurm: gpu_type and mem_per_gpu_gb need gpus_per_node > 0"
    ]
    assert problems(config_with(slurm={"mem_gb": 4, "mem_per_gpu_gb": 8})) == [
        "slurm: mem_gb and mem_per_gpu_gb: give one of them"
    ]
    assert problems(config_with(slurm={"setup": ["module load x\n#SBATCH --x"]})) == [
        f"slurm.setup.0: got 'module load x\\n#SBATCH --x'; {CONTROL_RULE}"
    ]


def test_guided_mask_defaults_to_relu_and_names_its_choices():
    assert parse_config(MINIMAL).analysis.guided_mask == "relu"  # the spec's certain part
    assert parse_config(config_with(analysis={"guided_mask": "pixel"})).analysis.guided_mask == "pixel"
    assert problems(config_with(analysis={"guided_mask": "both"})) == [
        "analysis.guided_mask: got 'both'; Input should be 'none', 'relu' or 'pixel'"
    ]


@pytest.mark.parametrize("name", ["..", ".", "-x"])
def test_names_that_are_not_path_safe_are_rejected(name):
    rule = "must not be '.' or '..' nor start with '-': it names folders (jobs/<name>, results/<name>)"
    assert problems(config_with(name=name)) == [f"name: got {name!r}; {rule}"]
    assert problems(config_with(name="")) == [f"name: got ''; {NAME_RULE}"]
    assert problems(config_with(name="a/b")) == [f"name: got 'a/b'; {NAME_RULE}"]
    assert parse_config(config_with(name="a.b-1_c")).name == "a.b-1_c"  # dots and dashes inside stay valid


def test_slurm_extra_refuses_abbreviations_and_flags_that_break_requeue():
    extra = {"dep": "afterok:1", "tim": "5", "no-requeue": "", "hold": "", "mem-per-cpu": "1G", "gpus-per-task": "1"}
    [line] = problems(config_with(slurm={"extra": {**extra, "mail-type": "END", "exclude": "n1", "time-min": "5"}}))
    assert "dep (sbatch reads it as --dependency: fercluster sets it" in line
    assert "tim (sbatch reads it as --time: use slurm.time_min)" in line
    assert "no-requeue (fercluster requeues jobs after pre-emption" in line and "hold (held jobs never start" in line
    assert "mem-per-cpu (use slurm.mem_gb or slurm.mem_per_gpu_gb)" in line
    assert "gpus-per-task (use slurm.gpus_per_node: one task per GPU)" in line
    for fine in ("mail-type", "exclude", "time-min"):  # not a prefix of a refused flag: passed to sbatch
        assert f"{fine} (" not in line


def test_signal_delay_must_be_below_the_time_limits():
    assert problems(config_with(slurm={"time_min": 2})) == [
        "slurm: signal_delay_s (120 s) must be below the time limit: time_min is 2 (120 s), so the job would be "
        "told to stop as it starts; raise time_min or lower signal_delay_s"
    ]
    [line] = problems(config_with(slurm={"time_min": 60, "aggregate": {"time_min": 1}}))
    assert "aggregate.time_min is 1 (60 s)" in line and "time_min is 60" not in line
    assert parse_config(config_with(slurm={"time_min": 3})).slurm.signal_delay_s == 120  # 120 s < 180 s: valid
