"""The CLI of the orchestration stream: sweep --dry-run, status --json, cancel, bench orchestration."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fercluster.cli.main import _register, app
from fercluster.orchestration.fake import FakeBackend
from fercluster.orchestration.submit.last import last_config

_register()
runner = CliRunner()


@pytest.fixture
def config_file(workdir: Path) -> Path:
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


def test_dry_run_prints_the_plan_and_actions(config_file: Path, fake: FakeBackend) -> None:
    out = runner.invoke(app, ["sweep", str(config_file), "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "plan of sweep mini (dry run)" in out.output and out.output.count("submit") >= 2
    assert "mini: 2 jobs; would submit 2, retry 0; skip 0 done" in out.output
    assert fake.calls["sbatch"] == 0


def test_sweep_then_status_json(config_file: Path, fake: FakeBackend, workdir: Path) -> None:
    out = runner.invoke(app, ["sweep", str(config_file)])
    assert out.exit_code == 0, out.output
    assert "submitted array 1000" in out.output and "submitted aggregation job 1001" in out.output
    assert last_config(workdir) == config_file.resolve()
    fake.set_state(["1000_0"], "RUNNING")
    status = runner.invoke(app, ["status", "--json"])  # CONFIG: the last sweep
    assert status.exit_code == 0, status.output
    snap = json.loads(status.output)
    assert snap["counts"] == {"RUNNING": 1, "PENDING": 1}
    row = snap["jobs"][0]
    assert {k: row[k] for k in ("dataset", "fold", "variant", "seed", "state", "slurm_id", "iterations")} == {
        "dataset": "ckplus",
        "fold": 0,
        "variant": "none",
        "seed": 0,
        "state": "RUNNING",
        "slurm_id": "1000_0",
        "iterations": 40,
    }
    assert {"job_id", "iteration", "val_acc", "test_acc"} <= set(row)
    table = runner.invoke(app, ["status", str(config_file)])
    assert "RUNNING 1" in table.output and "1000_0" in table.output
    cancelled = runner.invoke(app, ["cancel", str(config_file), "--job", row["job_id"]])
    assert (
        cancelled.exit_code == 0 and "cancelled 1 SLURM job(s) of sweep mini: array 1000 (1 task)" in cancelled.output
    )
    assert fake.states["1000_0"] == "CANCELLED"
    failed = runner.invoke(app, ["status", "--failed"])
    assert "cancelled (scancel" in failed.output


def test_status_without_config_or_history_is_a_one_line_error(workdir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fercluster.cli.main", "status"], capture_output=True, text=True, cwd=workdir
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: no CONFIG given and no sweep started from this folder; example: fercluster status configs/smoke.yaml"
    )


def test_bench_orchestration_small(workdir: Path) -> None:
    out = runner.invoke(app, ["bench", "orchestration", "--jobs", "400", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["backend"].startswith("fake") and report["jobs"] == 400
    assert report["figures"]["sbatch_calls"] == 2 and report["figures"]["rerun_submissions"] == 0
    assert report["figures"]["refresh_queries"] == 1 and report["figures"]["refresh_scheduler_calls"] == 1
    assert report["figures"]["other_users_jobs"] == 100_000 and report["figures"]["refresh_s"] < 2
    assert all(t["pass"] for t in report["targets"])
