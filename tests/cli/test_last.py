"""`fercluster status` without CONFIG: the last sweep started from the same folder, whatever its
``paths.jobs`` (recorded per user under ``$XDG_STATE_HOME/fercluster/``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fercluster.cli.main import _register, app
from fercluster.errors import ConfigError
from fercluster.orchestration.fake import FakeBackend
from fercluster.orchestration.submit.last import last_config, state_file

_register()
runner = CliRunner()


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder, and a per-user state folder of the test's own."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def write_config(folder: Path, jobs: str) -> Path:
    path = folder / "custom.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "custom",
                "paths": {"jobs": jobs},
                "datasets": {"ckplus": {"kind": "ckplus", "root": "raw", "classes": 8}},
                "grid": [{"dataset": "ckplus", "folds": [0, 1], "variants": ["none"]}],
                "train": {"iterations": 40, "k": 0.7},
            }
        )
    )
    return path


def test_status_without_config_finds_a_sweep_with_custom_jobs_path(here: Path, fake: FakeBackend) -> None:
    config = write_config(here, jobs="state/sweeps")
    out = runner.invoke(app, ["sweep", str(config)])
    assert out.exit_code == 0, out.output
    assert (here / "state" / "sweeps" / "custom" / "state.json").exists() and not (here / "jobs").exists()
    assert state_file() == here.parent / "xdg-state" / "fercluster" / "last.json"
    fake.set_state(["1000_1"], "RUNNING")
    status = runner.invoke(app, ["status", "--json"])
    assert status.exit_code == 0, status.output
    snap = json.loads(status.output)
    assert snap["sweep"] == "custom" and snap["counts"] == {"PENDING": 1, "RUNNING": 1}
    assert [j["slurm_id"] for j in snap["jobs"]] == ["1000_0", "1000_1"]


def test_the_last_sweep_is_per_folder(here: Path, fake: FakeBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(here, jobs="state/sweeps")
    assert runner.invoke(app, ["sweep", str(config)]).exit_code == 0
    other = here.parent / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    status = runner.invoke(app, ["status", "--json"])
    assert isinstance(status.exception, ConfigError)
    assert "no CONFIG given and no sweep started from this folder" in str(status.exception)
    assert last_config(here) == config.resolve() and last_config(other) is None


def test_dry_run_records_nothing(here: Path, fake: FakeBackend) -> None:
    config = write_config(here, jobs="state/sweeps")
    assert runner.invoke(app, ["sweep", str(config), "--dry-run"]).exit_code == 0
    assert last_config() is None


def test_jobs_last_of_earlier_versions_is_still_read(here: Path) -> None:
    config = write_config(here, jobs="jobs")
    (here / "jobs").mkdir()
    (here / "jobs" / ".last").write_text(str(config.resolve()) + "\n")
    assert last_config() == config.resolve()
