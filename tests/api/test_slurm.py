"""``--set`` on the real SLURM test cluster: the overrides reach the jobs and the aggregation job,
``status`` without CONFIG and a re-run without ``--set`` see the same sweep, and the API reads it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fercluster

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
SETS = ["train.iterations=20", "name=apislurm", "grid.0.folds=[0]"]


def fercluster_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_STATE_HOME": str(cwd / "xdg-state")}
    return subprocess.run([sys.executable, "-m", "fercluster.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_a_sweep_with_set_on_slurm(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(REPO / "configs", workdir / "configs")
    monkeypatch.setenv("XDG_STATE_HOME", str(workdir / "xdg-state"))
    out = fercluster_cli(workdir, "sweep", "configs/smoke.yaml", *[a for s in SETS for a in ("--set", s)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "apislurm: 2 jobs; did submit 2" in out.stdout
    cfg = fercluster.sweep_config()  # the last sweep started here, with its overrides
    assert cfg.overrides == tuple(SETS)
    report = cfg.results_dir / "report" / "summary.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        frame = fercluster.status(cfg)
        printed = json.loads(fercluster_cli(workdir, "status", "--json").stdout)
        # the report is written before the aggregation job ends: wait for SLURM to say it ended
        if set(frame["state"]) == {"COMPLETED"} and (printed["aggregate"] or {}).get("state") == "COMPLETED":
            break
        time.sleep(2)
    assert set(frame["state"]) == {"COMPLETED"} and report.exists(), frame[["job_id", "state", "reason"]]
    assert [j["job_id"] for j in printed["jobs"]] == frame["job_id"].tolist()
    assert {j["state"] for j in printed["jobs"]} == {"COMPLETED"} and printed["aggregate"]["state"] == "COMPLETED"
    r = fercluster.results(cfg)
    assert r.jobs["iteration"].tolist() == [20, 20] and r.metrics["iteration"].max() == 20
    assert json.loads(report.read_text())["sweep"] == "apislurm" and list(r.kl) == ["ckplus"]
    again = fercluster_cli(workdir, "sweep", "configs/smoke.yaml", *[a for s in SETS for a in ("--set", s)])
    assert again.returncode == 0 and "skip 2 done" in again.stdout, again.stdout + again.stderr
    # a config path means that file's own sweep (name: smoke), not the renamed one started from it
    own = fercluster_cli(workdir, "sweep", "configs/smoke.yaml", "--dry-run", "--json")
    assert own.returncode == 0 and json.loads(own.stdout)["sweep"] == "smoke", own.stdout[-500:] + own.stderr
