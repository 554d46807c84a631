"""The run store: the files an earlier version wrote are read and migrated, the run index is a
cache of the run folders (never a second truth), and a file that does not read is a StoreError.

``fixtures/store_v1`` is a real finished smoke sweep (``fercluster sweep configs/smoke.yaml
--local``, then ``fercluster status``), as the version before the store wrote it: ``state.json``
"version": 1 with untyped entries, ``known.json`` with its "done" map, ``job.json`` and
``progress.json`` without a schema (large outputs left out: activations, model, checkpoint).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import fercluster
from fercluster.config import SweepConfig
from fercluster.errors import StoreError
from fercluster.orchestration.fake import FakeBackend
from fercluster.orchestration.plan import expand
from fercluster.orchestration.status import snapshot
from fercluster.orchestration.store.index import FILE as INDEX_FILE
from fercluster.orchestration.store.index import RunIndex
from fercluster.orchestration.store.known import load_known
from fercluster.orchestration.store.state import load_state, save_state
from fercluster.train.record import read_job_record, read_progress

REPO = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "store_v1"


def copied_sweep(tmp_path: Path) -> SweepConfig:
    """The fixture sweep under ``tmp_path``, its run folders renamed to the ids this checkout plans
    (the same jobs: matched by data set, fold, variant and seed; ids hash where the data lies)."""
    cfg = fercluster.load_config(
        REPO / "configs" / "smoke.yaml",
        overrides=[f"paths.jobs={tmp_path / 'jobs'}", f"paths.results={tmp_path / 'results'}"],
    )
    runs = FIXTURE / "results" / "smoke" / "runs"
    old = {}
    for run in runs.iterdir():
        spec = json.loads((run / "job.json").read_text())["spec"]
        old[(spec["dataset"], spec["fold"], spec["variant"], spec["seed"])] = run.name
    rename = {old[(s.dataset, s.fold, s.variant, s.seed)]: s.job_id for s in expand(cfg)}

    def copy(src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix != ".json":
            shutil.copyfile(src, dst)
            return
        text = src.read_text()
        for a, b in rename.items():
            text = text.replace(a, b)
        dst.write_text(text)

    for src in (FIXTURE / "jobs" / "smoke").iterdir():
        copy(src, cfg.jobs_dir / src.name)
    for run in runs.iterdir():
        for src in run.iterdir():
            copy(src, cfg.results_dir / "runs" / rename[run.name] / src.name)
    return cfg


def fixture_records() -> dict[tuple[int, str], dict]:
    runs = FIXTURE / "results" / "smoke" / "runs"
    out = {}
    for run in runs.iterdir():
        data = json.loads((run / "job.json").read_text())
        out[(data["spec"]["fold"], data["spec"]["variant"])] = data
    return out


def test_the_fixture_is_what_the_earlier_version_wrote() -> None:
    state = json.loads((FIXTURE / "jobs" / "smoke" / "state.json").read_text())
    known = json.loads((FIXTURE / "jobs" / "smoke" / "known.json").read_text())
    run = next((FIXTURE / "results" / "smoke" / "runs").iterdir())
    assert state["version"] == 1 and all(isinstance(e, dict) for e in state["jobs"].values())
    assert "done" in known and "schema" not in known
    assert "schema" not in json.loads((run / "job.json").read_text())
    assert "schema" not in json.loads((run / "progress.json").read_text())


def test_earlier_files_are_read_and_migrated(tmp_path: Path) -> None:
    cfg = copied_sweep(tmp_path)
    state = load_state(cfg.jobs_dir, cfg.name)
    assert len(state.jobs) == 4 and all(e.submissions == 1 and e.local["ended"] for e in state.jobs.values())
    save_state(cfg.jobs_dir, state)  # written by this version, read back the same
    assert load_state(cfg.jobs_dir, cfg.name) == state
    assert load_known(cfg.jobs_dir).costs == {}  # its "done" map now lives in the run index
    spec = expand(cfg)[0]
    record, broken = read_job_record(spec.run_dir)
    assert broken == "" and record is not None and record.schema == 1 and record.job_id == spec.job_id
    assert record.selected_iteration in (20, 40) and record.iterations == 40 and record.node
    assert read_progress(spec.run_dir).state == "completed"


def test_a_copied_sweep_shows_in_status_and_results(tmp_path: Path) -> None:
    cfg = copied_sweep(tmp_path)
    written = fixture_records()
    snap = snapshot(cfg, FakeBackend())
    assert dict(snap.counts) == {"COMPLETED": 4} and snap.stale is None
    for row in snap.jobs:
        assert (row.val_acc, row.test_acc, row.k) == tuple(
            written[(row.fold, row.variant)][key] for key in ("val_acc", "test_acc", "k")
        )
        assert row.node == written[(row.fold, row.variant)]["host"] and row.iteration == 40
    assert json.loads(json.dumps(snap.to_dict(), default=str))["counts"] == {"COMPLETED": 4}
    for r in (fercluster.results(cfg), fercluster.results(cfg.results_dir)):
        jobs = r.jobs.set_index(["fold", "variant"])
        assert set(jobs["state"]) == {"COMPLETED"} and len(jobs) == 4
        for key, data in written.items():
            assert jobs.loc[key, "test_acc"] == data["test_acc"]
        rows = {s.job_id: len(pd.read_parquet(Path(s.run_dir) / "metrics.parquet")) for s in expand(cfg)}
        assert r.metrics.groupby("job_id").size().to_dict() == rows and min(rows.values()) > 1 and r.skipped == []


def test_the_index_is_a_cache_of_the_run_folders(tmp_path: Path) -> None:
    cfg = copied_sweep(tmp_path)
    specs = expand(cfg)
    snapshot(cfg, FakeBackend())
    index = RunIndex(cfg.results_dir)
    assert index.refresh((s.job_id, s.run_dir) for s in specs) and index.read_now == []  # nothing read again
    job = Path(specs[1].run_dir) / "job.json"
    job.write_text(json.dumps({**json.loads(job.read_text()), "test_acc": 0.125, "padding": "x" * 10}))
    os.replace(Path(specs[2].run_dir) / "job.json", Path(specs[2].run_dir) / "job.json.broken-1")
    snap = snapshot(cfg, FakeBackend())
    assert snap.jobs[1].test_acc == 0.125 and snap.jobs[2].state == "NOT_SUBMITTED"
    (cfg.results_dir / INDEX_FILE).write_text("{not json")  # a broken cache is rebuilt
    assert fercluster.results(cfg).jobs["test_acc"].tolist()[1] == 0.125


def test_a_state_file_that_does_not_parse_is_a_store_error(tmp_path: Path) -> None:
    cfg = copied_sweep(tmp_path)
    path = cfg.jobs_dir / "state.json"
    path.write_text('{"version": 1, "sweep": "smoke", "jobs": {')
    with pytest.raises(StoreError, match=r"state\.json is not valid JSON .*fix it, or move it away"):
        load_state(cfg.jobs_dir, cfg.name)
    path.write_text(json.dumps({"version": 1, "sweep": "other"}))
    with pytest.raises(StoreError, match="belongs to sweep 'other', not 'smoke'"):
        load_state(cfg.jobs_dir, cfg.name)


def test_the_cli_shows_a_store_error_as_one_line(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(
        "name: t\ndatasets: {ckplus: {kind: ckplus, root: raw}}\ngrid: [{dataset: ckplus, folds: [0]}]\n"
    )
    (tmp_path / "jobs" / "t").mkdir(parents=True)
    (tmp_path / "jobs" / "t" / "state.json").write_text("{broken")
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_STATE_HOME": str(tmp_path / "xdg")}
    proc = subprocess.run([sys.executable, "-m", "fercluster.cli.main", "status", "t.yaml", "--json"], cwd=tmp_path,
                          capture_output=True, text=True, env=env)  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("error: ") and "state.json is not valid JSON" in lines[0] and "fix it" in lines[0]


def test_status_json_keeps_the_keys_the_earlier_version_printed(tmp_path: Path) -> None:
    cfg = copied_sweep(tmp_path)
    old = json.loads((FIXTURE / "status.json").read_text())  # its `status --json`, on the fixture
    new = json.loads(json.dumps(snapshot(cfg, FakeBackend()).to_dict(), default=str))
    assert set(old) <= set(new) and set(old["jobs"][0]) <= set(new["jobs"][0])
    assert new["counts"] == old["counts"] and [j["test_acc"] for j in new["jobs"]] == [
        j["test_acc"] for j in old["jobs"]
    ]


def test_the_earlier_sweep_reruns_once_under_new_ids_then_never(tmp_path: Path) -> None:
    """As the earlier version left it (its ids hashed where the data lay), a dry run says why its
    jobs run again; once under the new ids (content, not place), a re-run submits nothing."""
    earlier = copied_sweep(tmp_path / "earlier")
    state = json.loads((FIXTURE / "jobs" / "smoke" / "state.json").read_text())
    (earlier.jobs_dir / "state.json").write_text(json.dumps(state))  # the earlier ids, as written
    backend = FakeBackend()
    dry = fercluster.submit(earlier, dry_run=True, backend=backend)
    assert len(dry.renamed) == 4 and "4 jobs have new ids" in (dry.renamed_line() or "")
    assert {old for old, _ in dry.renamed} == set(state["jobs"])

    cfg = copied_sweep(tmp_path / "now")
    rerun = fercluster.submit(cfg, backend=backend)
    assert backend.calls["sbatch"] == 0 and rerun.renamed == ()
    assert len(rerun.result.diff.done) == 4 and rerun.result.diff.submit == []
