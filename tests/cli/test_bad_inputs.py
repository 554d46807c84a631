"""The first hour's bad inputs (issue 19's table), each through the CLI's error boundary
(``python -m fercluster.cli.main`` in a subprocess): one line on stderr, exit code 2, naming the
fix, before any work is done (nothing created under the working folder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import fercluster
from fercluster.errors import ConfigError
from tests.cli.test_errors import GOOD, error_line
from tests.cli.test_errors import fercluster as run

CONFIG = "name: t\ndatasets: {{ckplus: {{kind: ckplus, root: raw}}}}\ngrid: [{{dataset: ckplus, folds: [0]}}]\n{rest}"


def write(folder: Path, rest: str = "", name: str = "t.yaml") -> Path:
    path = folder / name
    path.write_text(CONFIG.format(rest=rest))
    return path


def test_a_folder_given_as_the_config(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    line = error_line(run(tmp_path, "sweep", "configs", "--dry-run"))
    assert line == "error: configs is a folder; give a sweep config file, e.g. configs/smoke.yaml"
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'configs'} is a folder; give a sweep config file"):
        fercluster.plan(tmp_path / "configs")  # the API: the same error, no IsADirectoryError


def test_a_yaml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    write(tmp_path, "train:\n  lr: [0.1\n  iterations: 5\n")
    assert error_line(run(tmp_path, "sweep", "t.yaml", "--dry-run")) == (
        "error: t.yaml:6:13: not valid YAML: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence that starts at 5:7); fix the file there"
    )


def test_yaml_12_numbers_in_a_file_as_in_set(tmp_path: Path) -> None:
    """``lr: 1e-3`` in the file is the number --set reads: the same jobs (a job id hashes lr)."""
    write(tmp_path, "train: {lr: 1e-3, weight_decay: 5E-4}\n", name="file.yaml")
    write(tmp_path, name="plain.yaml")
    from_file = run(tmp_path, "sweep", "file.yaml", "--dry-run", "--json")
    assert from_file.returncode == 0, from_file.stderr
    from_set = run(tmp_path, "sweep", "plain.yaml", "--dry-run", "--json",
                   "--set", "train.lr=1e-3", "--set", "train.weight_decay=5E-4")  # fmt: skip
    ids = [j["job_id"] for j in json.loads(from_file.stdout)["jobs"]]
    assert ids == [j["job_id"] for j in json.loads(from_set.stdout)["jobs"]]
    assert fercluster.load_config(tmp_path / "file.yaml").train.lr == 0.001


def test_an_unknown_key_gets_did_you_mean(tmp_path: Path) -> None:
    write(tmp_path, "train: {iteratons: 5}\n")
    assert error_line(run(tmp_path, "sweep", "t.yaml", "--dry-run")) == (
        "error: t.yaml: invalid config: train.iteratons: unknown key (value 5); did you mean `iterations`?"
    )


@pytest.mark.parametrize("key", ["jobs", "results"])
def test_paths_under_a_file(tmp_path: Path, key: str) -> None:
    write(tmp_path, f"paths: {{{key}: afile/{key}}}\n")
    (tmp_path / "afile").write_text("")
    for command in (["sweep", "t.yaml", "--dry-run"], ["status", "t.yaml"], ["sweep", "t.yaml", "--local"]):
        assert error_line(run(tmp_path, *command)) == (
            f"error: paths.{key}: afile/{key}/t would lie under {tmp_path / 'afile'}, which is a file; "
            f"set paths.{key} to a folder you can write (--set paths.{key}=DIR)"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "t.yaml"]


def test_an_impossible_results_folder_is_found_before_the_data_is_generated(tmp_path: Path) -> None:
    write(tmp_path, "paths: {results: afile/results}\n")
    config = tmp_path / "t.yaml"
    config.write_text(config.read_text().replace("root: raw}", "root: raw, synthetic: {subjects: 4}}"))
    (tmp_path / "afile").write_text("")
    line = error_line(run(tmp_path, "sweep", "t.yaml", "--local"))
    assert line.startswith("error: paths.results: afile/results/t would lie under ")
    assert not (tmp_path / "raw").exists() and not (tmp_path / "data").exists() and not (tmp_path / "jobs").exists()


def test_dry_run_warns_about_a_missing_data_root(tmp_path: Path) -> None:
    write(tmp_path)
    proc = run(tmp_path, "sweep", "t.yaml", "--dry-run")
    assert proc.returncode == 0 and "would submit 4" in proc.stdout  # a dry run still shows its plan
    assert proc.stderr.splitlines() == [
        "warning: data ckplus: neither raw data at raw nor a prepared set in data/prepared/ckplus; "
        "set datasets.ckplus.root to the CK+ folder, or add `synthetic:` for a stand-in"
    ]
    synthetic = write(tmp_path, name="s.yaml")
    synthetic.write_text(synthetic.read_text().replace("root: raw}", "root: raw, synthetic: {subjects: 4}}"))
    assert run(tmp_path, "sweep", "s.yaml", "--dry-run").stderr == ""  # generated on first use: no warning


def test_status_of_a_sweep_never_submitted(tmp_path: Path) -> None:
    write(tmp_path)
    assert error_line(run(tmp_path, "status", "t.yaml", "--set", "name=nosuchsweep")) == (
        "error: sweep 'nosuchsweep' was never submitted (no jobs/nosuchsweep/state.json); start it with: "
        "fercluster sweep t.yaml --set name=nosuchsweep (or --local), or check its name"
    )


def test_job_outside_the_grid_refuses_without_its_own_run_dir(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(GOOD)  # folds: [0]
    job = ["job", "t.yaml", "--dataset", "ckplus", "--fold", "7", "--variant", "AD"]
    assert error_line(run(tmp_path, *job)) == (
        "error: ckplus fold 7 variant AD seed 0 is not a job of sweep 't' (its grid does not plan it); "
        "give it its own --run-dir DIR, or add it to the grid"
    )
    assert not (tmp_path / "results").exists()
    own = error_line(run(tmp_path, *job, "--run-dir", "mine"))  # accepted: it goes on to the data
    assert own.startswith("error: ") and "not a job of sweep" not in own


def test_status_says_where_the_states_came_from(workdir: Path, fake) -> None:  # noqa: ANN001
    from fercluster.cli.main import _register, app

    _register()
    write(workdir)
    runner = CliRunner()
    assert runner.invoke(app, ["sweep", "t.yaml"]).exit_code == 0
    out = runner.invoke(app, ["status", "t.yaml"])
    assert out.exit_code == 0 and "(states from SLURM's sacct, at " in out.stdout and "SLURM via" not in out.stdout


def test_an_unwritable_jobs_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not writable (root writes anywhere, so the permission is faked): the same one line."""
    import fercluster.orchestration.preflight.folders as folders

    monkeypatch.chdir(tmp_path)
    cfg = fercluster.load_config(write(tmp_path))
    monkeypatch.setattr(folders.os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(ConfigError) as err:
        folders.require_folders(cfg)
    assert str(err.value) == (
        f"paths.jobs: {tmp_path} is not writable (for jobs/t); set paths.jobs to a folder you can write "
        "(--set paths.jobs=DIR)"
    )
