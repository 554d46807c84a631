import json

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import fercluster.data
from fercluster.cli.main import _register, app

runner = CliRunner()
_register()


@pytest.fixture
def config(tmp_path, prepared_dir):
    data = {
        "name": "clitest",
        "paths": {"results": str(tmp_path / "results"), "jobs": str(tmp_path / "jobs"), "data": str(tmp_path / "data")},
        "datasets": {"ckplus": {"kind": "ckplus", "root": str(tmp_path / "raw"), "prepared": str(prepared_dir), "crop": "none"}},
        "grid": [{"dataset": "ckplus", "folds": [0], "variants": ["A"]}],
        "train": {"iterations": 12, "eval_every": 6, "checkpoint_every": 6, "batch_size": 8, "width": 0.125,
                  "image_size": 32, "k": 0.7, "device": "cpu"},
    }  # fmt: skip
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(autouse=True)
def prepared_as_is(monkeypatch, prepared_dir):
    """The fabricated set stands in for ensure_prepared's output."""
    monkeypatch.setattr(fercluster.data, "ensure_prepared", lambda cfg, name: prepared_dir, raising=False)


def test_job_command_runs_one_job_and_writes_its_outputs(config, tmp_path):
    result = runner.invoke(app, ["job", str(config), "--dataset", "ckplus", "--fold", "0", "--variant", "A"])
    assert result.exit_code == 0, result.output
    runs = list((tmp_path / "results" / "clitest" / "runs").iterdir())
    assert len(runs) == 1
    assert f"job {runs[0].name}: test accuracy" in result.output
    for name in ("metrics.parquet", "predictions.parquet", "activations.parquet", "model.pt", "job.json"):
        assert (runs[0] / name).exists()
    assert pd.read_parquet(runs[0] / "metrics.parquet")["iteration"].tolist() == [0, 6, 12]


def test_job_command_honours_run_dir_and_seed(config, tmp_path):
    result = runner.invoke(app, ["job", str(config), "--dataset", "ckplus", "--fold", "0", "--variant", "none",
                                 "--seed", "5", "--run-dir", str(tmp_path / "mine")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "mine" / "job.json").read_text())["seed"] == 5


def test_job_command_runs_the_sweeps_job_with_k_from_tune_resolved(config, tmp_path):
    """Same job id and run directory as the sweep would use, with the searched k."""
    from fercluster.config import load_config
    from fercluster.orchestration.submit.plan import expand

    data = yaml.safe_load(config.read_text())
    data["train"]["k"] = "from_tune search"
    config.write_text(yaml.safe_dump(data))
    best = tmp_path / "results" / "search" / "tune" / "best.json"
    best.parent.mkdir(parents=True)
    best.write_text(json.dumps({"k": 0.42}))

    result = runner.invoke(app, ["job", str(config), "--dataset", "ckplus", "--fold", "0", "--variant", "A"])
    assert result.exit_code == 0, result.output
    (planned,) = expand(load_config(config))
    record = json.loads((tmp_path / "results" / "clitest" / "runs" / planned.job_id / "job.json").read_text())
    assert (record["job_id"], record["k"]) == (planned.job_id, 0.42)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "tfd", "--fold", "0", "--variant", "A"], "--dataset: got 'tfd'; valid: ckplus"),
        (["--dataset", "ckplus", "--fold", "10", "--variant", "A"], "--fold: got 10; ckplus has folds 0..9"),
        (["--dataset", "ckplus", "--fold", "0", "--variant", "X"], "--variant: got 'X'; valid: none, D, A, AD"),
    ],
)
def test_job_command_rejects_bad_arguments(config, args, message):
    from fercluster.errors import ConfigError

    result = runner.invoke(app, ["job", str(config), *args])
    assert isinstance(result.exception, ConfigError) and message in str(result.exception)


def test_bench_train_json_has_the_promised_keys():
    result = runner.invoke(app, ["bench", "train", "--size", "32", "--width", "0.125", "--iterations", "4", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert set(out) == {"fercluster_ips", "reference_ips", "ratio", "device", "image_size", "iterations"}
    assert out["fercluster_ips"] > 0 and out["ratio"] == pytest.approx(out["fercluster_ips"] / out["reference_ips"])


def test_bench_train_prints_both_rates_and_the_ratio():
    result = runner.invoke(app, ["bench", "train", "--size", "32", "--width", "0.125", "--iterations", "4"])
    assert result.exit_code == 0, result.output
    assert "fercluster" in result.output and "reference" in result.output and "ratio" in result.output
