"""Local mode: same plan and state, skip what is done, resume, aggregate at the end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orch_helpers import finish
from rich.console import Console

from fercluster.orchestration.local import run_local
from fercluster.orchestration.plan import expand
from fercluster.orchestration.store.state import load_state


def stand_in(calls: list[str], fail: str | None = None):
    def run_job(spec: Any, reporter=None, progress=None) -> dict:
        calls.append(spec.job_id)
        if spec.job_id == fail:
            from fercluster.errors import TrainingError

            raise TrainingError("loss became NaN")
        for it in (20, 40):
            if progress:
                progress(it, 40)
            if reporter:
                reporter({"iteration": it, "val_acc": 0.5, "test_acc": 0.5})
        finish(spec)
        return {"job_id": spec.job_id, "val_acc": 0.5, "test_acc": 0.6}

    return run_job


def test_runs_missing_jobs_in_plan_order_and_skips_done(cfg, workdir: Path) -> None:
    specs = expand(cfg)
    finish(specs[1])
    calls: list[str] = []
    console = Console(record=True, width=200)
    summary = run_local(cfg, console, runner=stand_in(calls), aggregate=False, prepare=False)
    assert calls == [specs[0].job_id, specs[2].job_id, specs[3].job_id]
    assert (summary["ran"], summary["skipped"], summary["failed"]) == (3, 1, 0)
    assert "40/40" in console.export_text()
    state = load_state(cfg.jobs_dir, cfg.name)
    assert state.jobs[specs[0].job_id].local["ended"] and state.jobs[specs[0].job_id].slurm_ids == ()
    calls.clear()
    again = run_local(cfg, console, runner=stand_in(calls), aggregate=False, prepare=False)
    assert calls == [] and again["skipped"] == 4


def test_failed_job_is_reported_and_the_rest_run(cfg, workdir: Path) -> None:
    specs = expand(cfg)
    calls: list[str] = []
    console = Console(record=True, width=200)
    summary = run_local(cfg, console, runner=stand_in(calls, fail=specs[0].job_id), aggregate=True, prepare=False)
    assert summary["failed"] == 1 and summary["ran"] == 3 and "aggregate" not in summary
    assert "loss became NaN" in console.export_text()


def test_aggregation_runs_at_the_end(cfg, workdir: Path, monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(
        "fercluster.analysis.report.aggregate", lambda c, console=None: seen.append(c.name) or {"ok": True}
    )
    summary = run_local(cfg, Console(record=True), runner=stand_in([]), aggregate=True, prepare=False)
    assert seen == ["t"] and summary["aggregate"] == {"ok": True}
    assert json.loads((Path(expand(cfg)[0].run_dir) / "job.json").read_text())["status"] == "completed"
