"""The API over a sweep (plan, submit, status, cancel) and ``--set``, against the fake SLURM:
the CLI and the API give the same results, overrides are recorded in the sweep's state and used by
``status`` and a re-run, and a re-run with other overrides says which jobs it adds and leaves."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import fercluster
from fercluster.api.frames import PARAM_COLUMNS
from fercluster.cli.main import _register, app
from fercluster.config import parse_config
from fercluster.errors import AnalysisError, ConfigError
from fercluster.orchestration.fake import FakeBackend
from fercluster.orchestration.last import last_sweep
from fercluster.orchestration.store.state import load_state

_register()
runner = CliRunner()
SET20 = ["--set", "train.iterations=20"]


@pytest.fixture
def config(workdir: Path) -> Path:
    path = workdir / "mini.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "mini",
                "datasets": {"ckplus": {"kind": "ckplus", "root": "raw", "classes": 8}},
                "grid": [{"dataset": "ckplus", "folds": [0, 1], "variants": ["none"]}],
                "train": {"iterations": 40, "k": 0.7},
            }
        )
    )
    return path


def cli(*args: str) -> Any:
    out = runner.invoke(app, list(args))
    assert out.exit_code == 0, out.output
    return out


def plain(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records with NaN and pandas' NA as None (JSON's null), for comparing a frame with JSON."""
    return [{k: None if v is None or (isinstance(v, float) and math.isnan(v)) else v for k, v in r.items()}
            for r in records]  # fmt: skip


def test_plan_and_dry_run_give_the_jobs_the_cli_prints(config: Path, fake: FakeBackend) -> None:
    cfg = fercluster.load_config(config, overrides=["train.iterations=20"])
    printed = json.loads(cli("sweep", str(config), "--dry-run", "--json", *SET20).stdout)
    plan = fercluster.plan(cfg)
    assert list(plan.columns) == ["job_id", "dataset", "fold", "variant", "seed", "k", "iterations", "run_dir",
                                  *PARAM_COLUMNS]  # fmt: skip
    assert set(plan["params.iterations"]) == {20} and plan["params.k"].tolist() == plan["k"].tolist()
    assert set(plan["params.lr"]) == {0.01} and set(plan["params.batch_size"]) == {64}
    assert plan[["job_id", "k"]].to_dict("records") == [{"job_id": j["job_id"], "k": j["k"]} for j in printed["jobs"]]
    assert set(plan["iterations"]) == {20}
    dry = fercluster.submit(cfg, dry_run=True, backend=fake)
    assert dry.to_dict() == printed and printed["overrides"] == ["train.iterations=20"]
    assert (
        repr(dry) == "<Submission of sweep 'mini': 2 jobs; would submit 2, retry 0, 0 done, 0 queued/running, 0 failed>"
    )
    code = printed["code"]
    assert code["created"] is False and code["would_create"] is True  # a dry run creates no snapshot
    assert dry.jobs.to_dict("records") == printed["jobs"] and set(dry.jobs["action"]) == {"submit"}
    assert fake.calls["sbatch"] == 0 and not (config.parent / "jobs" / "mini" / "state.json").exists()


def test_sweep_records_its_overrides_and_status_uses_them(config: Path, fake: FakeBackend, workdir: Path) -> None:
    submitted = json.loads(cli("sweep", str(config), "--json", *SET20).stdout)
    ids = [j["job_id"] for j in submitted["jobs"]]
    assert ids == list(fercluster.plan(fercluster.load_config(config, overrides=["train.iterations=20"]))["job_id"])
    state = load_state(workdir / "jobs" / "mini", "mini")
    assert state.config.to_dict() == {"path": str(config.resolve()), "overrides": ["train.iterations=20"]}
    assert last_sweep() == (config.resolve(), ["train.iterations=20"])
    fake.set_state(["1000_0"], "RUNNING")
    for args in (["status", str(config), "--json"], ["status", "--json"]):  # CONFIG given, or the last sweep's
        out = cli(*args)
        snap = json.loads(out.stdout)
        assert [j["job_id"] for j in snap["jobs"]] == ids and snap["counts"] == {"RUNNING": 1, "PENDING": 1}
        assert "note: sweep mini: using the overrides of its last run: train.iterations=20" in out.stderr
    cfg = fercluster.sweep_config(config)  # the config the commands used
    assert cfg.overrides == ("train.iterations=20",) and fercluster.sweep_config(config, []).overrides == ()
    frame = fercluster.status(cfg, backend=fake)
    assert plain(frame.to_dict("records")) == snap["jobs"]
    assert frame.attrs["counts"] == snap["counts"] and frame.attrs["sweep"] == "mini"
    other = cli("status", str(config), "--json", "--set", "train.iterations=30")  # --set: exactly these
    assert {j["state"] for j in json.loads(other.stdout)["jobs"]} == {"NOT_SUBMITTED"}


def test_a_config_path_means_that_files_sweep(config: Path, fake: FakeBackend) -> None:
    """``--set name=other`` made another sweep: the file's path still means the file's own sweep
    (never submitted, and status says so); only a command without CONFIG means the last one."""
    cli("sweep", str(config), "--set", "name=other")
    assert fercluster.sweep_config(config).name == "mini" and fercluster.sweep_config(config).overrides == ()
    refused = runner.invoke(app, ["status", str(config), "--json"])
    assert refused.exit_code == 1 and isinstance(refused.exception, ConfigError)  # main() makes it exit 2
    assert str(refused.exception).startswith("sweep 'mini' was never submitted (no jobs/mini/state.json)")
    last = cli("status", "--json")  # no CONFIG: the last sweep started here, with its overrides
    assert (
        json.loads(last.stdout)["sweep"] == "other" and "using the overrides of its last run: name=other" in last.stderr
    )
    cli("sweep", str(config))  # the file's own sweep, with no overrides: the last sweep now
    assert json.loads(cli("status", str(config), "--json").stdout)["sweep"] == "mini"
    assert json.loads(cli("status", "--json").stdout)["sweep"] == "mini"
    assert json.loads(cli("status", "--json", "--set", "name=other").stdout)["sweep"] == "other"


def test_the_api_records_the_last_sweep_as_the_cli_does(
    config: Path, fake: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    fercluster.submit(fercluster.load_config(config, ["train.iterations=20"]), backend=fake)
    assert last_sweep() == (config.resolve(), ["train.iterations=20"])
    assert json.loads(cli("status", "--json").stdout)["sweep"] == "mini"
    fercluster.submit(fercluster.load_config(config, ["name=sub"]), dry_run=True, backend=fake)
    assert last_sweep() == (config.resolve(), ["train.iterations=20"])  # a dry run records nothing
    import fercluster.orchestration.local as local

    monkeypatch.setattr(local, "run_local", lambda cfg, console: {"ran": 0, "jobs": 0})
    summary = fercluster.run_local(fercluster.load_config(config, ["name=nb"]))
    assert summary.sweep == "nb" and last_sweep() == (config.resolve(), ["name=nb"])
    assert json.loads(cli("status", "--json").stdout)["sweep"] == "nb"  # the CLI sees the notebook's sweep


def test_a_rerun_with_other_overrides_says_what_it_adds_and_leaves(config: Path, fake: FakeBackend) -> None:
    first = json.loads(cli("sweep", str(config), "--json", *SET20).stdout)
    assert first["overrides_changed"] is None
    again = cli("sweep", str(config))  # no --set: the recorded overrides, nothing new
    assert "using the overrides of its last run: train.iterations=20" in again.stderr
    assert "would submit" not in again.stdout and "did submit 0" in again.stdout
    assert "overrides changed" not in again.stdout
    dry = cli("sweep", str(config), "--dry-run", "--set", "train.iterations=30", "--set", "grid.0.folds=[1,2]")
    assert (
        "overrides changed since the last run (was: train.iterations=20; now: train.iterations=30 grid.0.folds=[1,2]): "
        "would add 2 jobs, leaves 2 jobs of the earlier config as they are" in dry.stdout
    )
    assert fercluster.sweep_config(config).overrides == ("train.iterations=20",)  # a dry run records nothing
    dropped = json.loads(cli("sweep", str(config), "--json", "--no-overrides").stdout)
    change = dropped["overrides_changed"]
    assert change["before"] == ["train.iterations=20"] and change["after"] == []
    assert change["added"] == [j["job_id"] for j in dropped["jobs"]]
    assert change["left"] == [j["job_id"] for j in first["jobs"]]
    assert fercluster.sweep_config(config).overrides == ()


def test_cancel_through_the_api_and_the_cli(config: Path, fake: FakeBackend) -> None:
    cli("sweep", str(config), *SET20)
    cfg = fercluster.sweep_config(config)
    job = fercluster.status(cfg, backend=fake)["job_id"][0]
    done = fercluster.cancel(str(config), job, backend=fake)  # a path: the sweep with its recorded overrides
    assert isinstance(done, fercluster.Cancelled) and fake.states["1000_0"] == "CANCELLED"
    assert done.to_dict() == {"sweep": "mini", "slurm_ids": ["1000_0"], "by_array": "array 1000 (1 task)"}
    assert repr(done) == "<Cancelled 1 SLURM jobs of sweep 'mini': array 1000 (1 task)>"
    out = cli("cancel", str(config))
    assert "cancelled 2 SLURM job(s) of sweep " in out.stdout and ": array 1000 (1 task), job 1001" in out.stdout
    assert fake.states["1000_1"] == "CANCELLED" and fake.calls["scancel"] == 2  # the array by its id


def test_the_api_refuses_what_is_not_a_grid_config(config: Path) -> None:
    with pytest.raises(ConfigError, match="^plan: expected a config or its file's path .*got dict$"):
        fercluster.plan({"name": "mini"})  # type: ignore[arg-type]
    by_path = fercluster.plan(str(config))  # a path: read as the CLI reads it
    pd.testing.assert_frame_equal(by_path, fercluster.plan(fercluster.load_config(config)))
    data = yaml.safe_load(config.read_text())
    data["tune"] = {"datasets": ["ckplus"]}
    with pytest.raises(ConfigError, match="is a Ray Tune search"):
        fercluster.submit(parse_config(data))


def test_every_function_takes_a_path_as_plan_does(config: Path, fake: FakeBackend) -> None:
    """A path is that file's sweep (``sweep_config``): no AttributeError from aggregate or cancel."""
    assert fercluster.plan(str(config)).equals(fercluster.plan(fercluster.load_config(config)))
    assert fercluster.cancel(str(config), backend=fake).slurm_ids == ()  # nothing submitted: nothing to cancel
    with pytest.raises(AnalysisError, match="^no completed job for sweep 'mini'"):
        fercluster.aggregate(config)
    cli("sweep", str(config), *SET20)
    assert list(fercluster.status(config, backend=fake)["iterations"]) == [20, 20]  # the recorded overrides
    assert fercluster.cancel(str(config), backend=fake).slurm_ids == ("1000_0", "1000_1", "1001")


def fercluster_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fercluster.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


LR_LINE = "error: mini.yaml: invalid config: train.lr: got -1; Input should be greater than 0 (override 'train.lr=-1')"


@pytest.mark.parametrize(
    "command",
    [["sweep", "mini.yaml", "--dry-run"], ["sweep", "mini.yaml", "--local"], ["status", "mini.yaml"],
     ["aggregate", "mini.yaml"], ["job", "mini.yaml", "--dataset", "ckplus", "--fold", "0", "--variant", "none"]],
    ids=lambda c: " ".join(c[:1] + c[2:3]),
)  # fmt: skip
def test_a_bad_override_is_one_line_naming_the_key_and_exit_code_2(config: Path, command: list[str]) -> None:
    proc = fercluster_cli(config.parent, *command, "--set", "train.lr=-1")
    assert (proc.returncode, proc.stderr.splitlines()) == (2, [LR_LINE])


def test_malformed_overrides_are_named_all_at_once(config: Path) -> None:
    proc = fercluster_cli(config.parent, "sweep", "mini.yaml", "--set", "train.iterations", "--set", "grid.1.folds=[0]")
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "error: mini.yaml: invalid config:",
        "  override 'train.iterations': expected key=value, e.g. train.iterations=500",
        "  grid.1: index 1 is past the end of grid (1 entry; valid: 0..0) (override 'grid.1.folds=[0]')",
    ]
    both = fercluster_cli(config.parent, "sweep", "mini.yaml", "--no-overrides", "--set", "train.iterations=5")
    assert both.returncode == 2 and "does not combine with --set" in both.stderr
