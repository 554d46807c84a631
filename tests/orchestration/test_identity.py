"""Job ids depend on what a job computes, never on where a folder lies: the same config planned
from two copies of the project gives the same ids, so does planning after moving the data, the
jobs or the results; changing the data changes them. A sweep whose jobs got new ids says why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fercluster import api
from fercluster.cli.main import _register, app
from fercluster.config import load_config
from fercluster.orchestration.fake import FakeBackend
from fercluster.orchestration.plan import expand, renamed_jobs
from fercluster.orchestration.store.entries import JobEntry
from fercluster.orchestration.store.state import SweepState

REPO = Path(__file__).resolve().parents[2]
RAW = {"cohn-kanade-images/S005/001/S005_001_01.png": 40, "Emotion/S005/001/S005_001_01_emotion.txt": 3}
_register()
runner = CliRunner()


def project_copy(folder: Path) -> Path:
    """A copy of the project's configs with a raw CK+ tree and a config reading it, by relative paths."""
    shutil.copytree(REPO / "configs", folder / "configs")
    for rel, size in RAW.items():
        (folder / "data/raw/CK+" / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / "data/raw/CK+" / rel).write_bytes(b"x" * size)
    cfg = {"name": "raw", "datasets": {"ck": {"kind": "ckplus", "root": "data/raw/CK+", "crop": "landmarks"}},
           "grid": [{"dataset": "ck", "folds": [0, 1], "variants": ["none", "AD"]}]}  # fmt: skip
    (folder / "configs/raw.yaml").write_text(yaml.safe_dump(cfg))
    return folder


def ids(config: str, overrides: tuple[str, ...] = ()) -> list[str]:
    return list(api.plan(load_config(config, overrides))["job_id"])


@pytest.mark.parametrize("config", ["configs/smoke.yaml", "configs/raw.yaml", "configs/paper.yaml"])
def test_two_copies_of_the_project_plan_the_same_ids(tmp_path: Path, monkeypatch, config: str) -> None:
    planned = []
    for copy in ("one", "two/deeper"):
        monkeypatch.chdir(project_copy(tmp_path / copy))
        planned.append(ids(config))
    assert planned[0] == planned[1] and len(set(planned[0])) == len(planned[0]) > 0


def test_moving_the_data_jobs_and_results_keeps_the_ids(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(project_copy(tmp_path / "project"))
    before = ids("configs/raw.yaml")
    shutil.move("data/raw/CK+", tmp_path / "CK+ moved")
    moved = (f"datasets.ck.root={tmp_path / 'CK+ moved'}", "paths.jobs=/elsewhere/jobs", "paths.results=r2")
    assert ids("configs/raw.yaml", moved) == before


def test_changing_one_raw_files_size_or_a_synthetic_parameter_changes_the_ids(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(project_copy(tmp_path / "project"))
    raw, smoke = ids("configs/raw.yaml"), ids("configs/smoke.yaml")
    Path("data/raw/CK+/Emotion/S005/001/S005_001_01_emotion.txt").write_bytes(b"xxxx")
    assert set(ids("configs/raw.yaml")).isdisjoint(raw)
    assert set(ids("configs/smoke.yaml", ("datasets.ckplus.synthetic.seed=1",))).isdisjoint(smoke)


def state_with(jobs: dict[str, dict]) -> SweepState:
    return SweepState(sweep="raw", jobs={job_id: JobEntry.from_dict(rec) for job_id, rec in jobs.items()})


def test_renamed_jobs_pairs_old_and_new_ids_by_place(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(project_copy(tmp_path / "project"))
    specs = expand(load_config("configs/raw.yaml"))  # ck folds 0-1 x none, AD
    place = {"dataset": "ck", "fold": 0, "variant": "none", "seed": 0}
    state = state_with({
        "old0": place,  # the same job under an earlier id: renamed
        "oldX": {**place, "fold": 7},  # a job no longer planned: not renamed
        "noplace": {"slurm_ids": ["1"]},  # a record without its place: ignored
        specs[1].job_id: {"dataset": "ck", "fold": 0, "variant": "AD", "seed": 0},  # known under its id
    })  # fmt: skip
    assert renamed_jobs(specs, state) == [("old0", specs[0].job_id)]
    assert renamed_jobs(specs, state_with({s.job_id: place for s in specs})) == []


def test_dry_run_on_a_sweep_of_earlier_ids_says_why_its_jobs_run_again(
    tmp_path: Path, monkeypatch, fake: FakeBackend
) -> None:
    monkeypatch.chdir(project_copy(tmp_path / "project"))
    assert runner.invoke(app, ["sweep", "configs/raw.yaml"]).exit_code == 0
    state_file = Path("jobs/raw/state.json")
    text = state_file.read_text()
    for spec in expand(load_config("configs/raw.yaml")):  # as an earlier version recorded it
        text = text.replace(spec.job_id, "old" + spec.job_id[:7])
    state_file.write_text(text)
    out = runner.invoke(app, ["sweep", "configs/raw.yaml", "--dry-run"])
    assert out.exit_code == 0, out.output
    line = next(line for line in out.output.splitlines() if "new ids" in line)
    assert line.startswith("4 jobs have new ids: since fercluster 0.2 a job's id fingerprints the data by its content")
    assert line.endswith("(their old results stay in results/raw/runs/<old id>)")
    as_json = json.loads(runner.invoke(app, ["sweep", "configs/raw.yaml", "--dry-run", "--json"]).output)
    assert len(as_json["renamed"]) == 4 and all(r["old"].startswith("old") for r in as_json["renamed"])
    again = runner.invoke(app, ["sweep", "configs/raw.yaml", "--dry-run"])
    assert "new ids" in again.output  # a dry run records nothing
