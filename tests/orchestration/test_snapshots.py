"""Which code a sweep's submissions run (``orchestration.submit.snapshots``), against the fake SLURM backend."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from orch_helpers import SWEEP_KW, make_config
from typer.testing import CliRunner

from fercluster import code
from fercluster.cli.main import _register, app
from fercluster.errors import CodeError, ConfigError
from fercluster.orchestration.fake import FakeBackend
from fercluster.orchestration.store.state import load_state
from fercluster.orchestration.submit.coordinator import run_sweep
from fercluster.orchestration.watch.status import snapshot

_register()


@pytest.fixture
def edit_code(monkeypatch: pytest.MonkeyPatch):
    """Change "the checkout's code" as ``fercluster.code`` sees it (the real files stay as they are)."""
    real = code.code_files

    def edit(marker: str) -> None:
        files = real()
        ids = {**files.ids, "fercluster/edited.py": code.blob_id(marker.encode())}
        data = {**files.data, "fercluster/edited.py": marker.encode()}
        monkeypatch.setattr(code, "code_files", lambda package=None: code.CodeFiles(files.package, "git", ids, data))

    return edit


def setup_folder(params: dict) -> str:
    line = next(ln for ln in params["setup"] if ln.startswith(f"export {code.ENV}="))
    return line.split("=", 1)[1].strip("'")


def test_jobs_and_aggregation_run_one_snapshot_recorded_in_the_state(cfg, workdir: Path) -> None:
    backend = FakeBackend()
    result = run_sweep(cfg, backend, **SWEEP_KW)
    digest = result.code["current"]
    folder = Path(cfg.jobs_dir).absolute() / "code" / digest
    assert result.code["created"] and code.read_snapshot(folder)["hash"] == digest == code.code_files().hash
    train, agg = backend.submitted
    for sub in (train, agg):
        assert setup_folder(sub.params) == str(folder)
        assert f"export PYTHONPATH={folder}${{PYTHONPATH:+:$PYTHONPATH}}" in sub.params["setup"]
    state = load_state(cfg.jobs_dir, cfg.name)
    assert {rec.code for rec in state.jobs.values()} == {digest}
    assert state.arrays[train.name].code == digest and state.aggregate.code == digest
    assert result.arrays[0]["code"] == digest and result.code["note"] == ""


def test_retry_reuses_the_submitted_snapshot_unless_told_current(cfg, workdir: Path, edit_code) -> None:
    backend = FakeBackend()
    first = run_sweep(cfg, backend, **SWEEP_KW)
    old = first.code["current"]
    base = first.arrays[0]["slurm_id"]
    backend.set_state([f"{base}_0"], "FAILED")
    backend.set_state([f"{base}_{i}" for i in (1, 2, 3)], "COMPLETED")
    edit_code("changed")
    grid = [{"dataset": "ckplus", "folds": [0, 1], "variants": ["none", "AD", "D"]}]
    bigger = make_config(workdir, grid=grid, slurm={"max_retries": 2})
    for spec in first.specs[1:]:  # done
        Path(spec.run_dir).mkdir(parents=True, exist_ok=True)
        (Path(spec.run_dir) / "job.json").write_text(
            json.dumps({"code": {"hash": old}, "status": "completed", "val_acc": 0.5, "test_acc": 0.5})
        )
    result = run_sweep(bigger, backend, retry_failed=True, **SWEEP_KW)
    new = result.code["current"]
    assert new != old and result.code["created"]
    by_code = {a["code"]: a for a in result.arrays}
    assert set(by_code) == {old, new} and by_code[old]["n"] == 1 and by_code[new]["n"] == 2  # two D jobs new
    subs = {s.name: s for s in backend.submitted}
    retried = subs[by_code[old]["name"]]
    assert setup_folder(retried.params).endswith(f"/code/{old}")
    assert retried.args == (first.specs[0].to_dict(),)  # plain data for older code
    assert setup_folder(subs[by_code[new]["name"]].params).endswith(f"/code/{new}")
    assert "mix code versions" in result.code["note"] and old in result.code["note"]
    assert (
        f"code: did rerun 1 failed jobs on snapshot {old}, the code they were submitted with" in result.code["lines"][1]
    )
    assert load_state(cfg.jobs_dir, cfg.name).jobs[first.specs[0].job_id].code == old
    backend.set_state([f"{by_code[old]['slurm_id']}"], "FAILED")
    current = run_sweep(bigger, backend, retry_failed=True, retry_code="current", **SWEEP_KW)
    assert [(a["code"], a["n"]) for a in current.arrays] == [(new, 1)] and not current.code["created"]
    assert current.code["groups"] == [{"code": new, "jobs": 1, "retried": 1}]
    assert current.code["lines"] == [
        f"code: did run 1 jobs on snapshot {new} of the current code (existing: {Path(cfg.jobs_dir).absolute()}"
        f"/code/{new}); 1 of them failed jobs rerun on the current code (--code current)"
    ]


def test_retry_on_a_missing_snapshot_fails_before_submitting(cfg, workdir: Path, edit_code) -> None:
    backend = FakeBackend()
    first = run_sweep(cfg, backend, **SWEEP_KW)
    backend.set_state([f"{first.arrays[0]['slurm_id']}_{i}" for i in range(4)], "FAILED")
    shutil.rmtree(Path(cfg.jobs_dir) / "code" / first.code["current"])
    calls = backend.calls["sbatch"]
    with pytest.raises(CodeError, match="--retry-failed --code current"):
        run_sweep(cfg, backend, retry_failed=True, **SWEEP_KW)
    assert backend.calls["sbatch"] == calls
    again = run_sweep(cfg, backend, retry_failed=True, retry_code="current", **SWEEP_KW)
    assert [a["n"] for a in again.arrays] == [4]


def test_live_code_sets_no_snapshot(workdir: Path) -> None:
    cfg = make_config(workdir, slurm={"code": "live"})
    backend = FakeBackend()
    result = run_sweep(cfg, backend, **SWEEP_KW)
    assert all("setup" not in s.params for s in backend.submitted)
    assert not (Path(cfg.jobs_dir) / "code").exists() and result.arrays[0]["code"] == "live"
    status = snapshot(cfg, backend).to_dict()["code"]
    assert status["latest"] == "live" and "warning" not in status and status["line"].startswith("code: live")


def test_status_warns_when_the_checkout_differs(cfg, workdir: Path, edit_code) -> None:
    backend = FakeBackend()
    digest = run_sweep(cfg, backend, **SWEEP_KW).code["current"]
    same = snapshot(cfg, backend).to_dict()
    assert same["code"]["line"].endswith(", the same as the checkout") and "warning" not in same["code"]
    assert {j["code"] for j in same["jobs"]} == {digest}
    edit_code("changed")
    status = snapshot(cfg, backend).to_dict()["code"]
    assert status["differs"] and status["checkout"] != digest
    assert status["warning"].startswith(f"warning: the checkout's code now differs from snapshot {digest}")
    assert "--retry-failed --code current" in status["warning"]


def test_cli_says_which_code_and_rejects_code_without_retry(workdir: Path, monkeypatch, edit_code) -> None:
    backend = FakeBackend()
    monkeypatch.setattr("fercluster.cli.tables.backend", lambda cfg: backend)
    monkeypatch.setattr("fercluster.orchestration.submit.jobs.training_callable", lambda: print)
    monkeypatch.setattr("fercluster.orchestration.submit.coordinator.prepare_datasets", lambda cfg, names: None)
    path = workdir / "mini.yaml"
    data = {"name": "mini", "datasets": {"ckplus": {"kind": "ckplus", "root": "raw", "classes": 8}},
            "grid": [{"dataset": "ckplus", "folds": [0], "variants": ["none"]}], "train": {"iterations": 40, "k": 0.7}}  # fmt: skip
    path.write_text(yaml.safe_dump(data))
    runner = CliRunner()
    bad = runner.invoke(app, ["sweep", str(path), "--code", "current"])
    assert isinstance(bad.exception, ConfigError)  # main() makes it a one-line error, exit code 2
    assert "--code: got 'current'; it goes with --retry-failed" in str(bad.exception)
    out = runner.invoke(app, ["sweep", str(path)])
    digest = code.code_files().hash
    assert out.exit_code == 0, out.output
    assert f"code: did run 1 jobs on snapshot {digest} of the current code (new:" in out.output
    edit_code("changed")
    data["grid"][0]["variants"] = ["none", "AD"]
    path.write_text(yaml.safe_dump(data))
    more = runner.invoke(app, ["sweep", str(path)])
    assert (
        "note: sweep mini: 1 jobs run code" in more.output
        and f"earlier submissions ran {digest} (1 jobs)" in more.output
    )
    status = runner.invoke(app, ["status", str(path)])
    assert f"warning: the checkout's code now differs from snapshot {code.code_files().hash}" not in status.output
    assert "warning: the checkout's code now differs" not in status.output  # latest snapshot = the checkout
    assert f"jobs by code: {digest} 1, {code.code_files().hash} 1" in " ".join(status.output.split())
