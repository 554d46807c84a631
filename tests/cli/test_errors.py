"""The CLI's error boundary, through the real command: a library error is exit code 2 and one
message on stderr that starts with ``error:`` and names the problem; never a traceback.

Each test runs ``python -m fercluster.cli.main`` in a subprocess, in a temporary working
directory, on input that fails before any training.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

GOOD = """\
name: t
datasets: {ckplus: {kind: ckplus, root: raw}}
grid: [{dataset: ckplus, folds: [0]}]  # 4 jobs: one per variant
"""

# an unknown key at the top, one inside a section, and two bad values
BAD = """\
name: t
datasets: {ckplus: {kind: ckplus, root: raw, classes: 7}}
grid: [{dataset: ckplus}]
train: {lr: -1, itrations: 5}
extra_key: 3
"""

BAD_OVERRIDES = """\
name: t
datasets: {ckplus: {kind: ckplus, root: raw}}
grid: [{dataset: ckplus}]
train_overrides: {ckplus: {lr: -1, iterations: "many"}}
"""


def fercluster(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fercluster.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one line of stderr, checked: exit code 2, ``error: ...``."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def config_error(proc: subprocess.CompletedProcess[str]) -> str:
    """A config's problems, all at once: one message, one line or a head line plus one indented
    line per problem (``fercluster.config`` lists them so); exit code 2, no traceback."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and lines[0].startswith("error: "), proc.stderr
    assert all(line.startswith("  ") for line in lines[1:]), proc.stderr
    return proc.stderr


COMMANDS = [("sweep", "{}", "--dry-run"), ("aggregate", "{}")]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_missing_config_file(tmp_path, command):
    line = error_line(fercluster(tmp_path, *(a.format("missing.yaml") for a in command)))
    assert line == "error: config file not found: missing.yaml"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_config_with_unknown_keys_and_bad_values_lists_every_problem(tmp_path, command):
    (tmp_path / "bad.yaml").write_text(BAD)
    message = config_error(fercluster(tmp_path, *(a.format("bad.yaml") for a in command)))
    assert message.startswith("error: bad.yaml: invalid config")
    for key, detail in [("extra_key", "unknown key"), ("train.itrations", "unknown key"),
                        ("datasets.ckplus.classes", "got 7"), ("train.lr", "got -1")]:  # fmt: skip
        assert f"{key}: {detail}" in message, message


def test_bad_train_overrides_fail_at_load(tmp_path):
    (tmp_path / "ov.yaml").write_text(BAD_OVERRIDES)
    message = config_error(fercluster(tmp_path, "sweep", "ov.yaml", "--dry-run"))
    assert "train_overrides.ckplus.lr: got -1" in message, message
    assert "train_overrides.ckplus.iterations: got 'many'" in message, message


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--fold", "0", "--variant", "X"], "error: --variant: got 'X'; valid: none, D, A, AD"),
        (["--fold", "12", "--variant", "AD"], "error: --fold: got 12; ckplus has folds 0..9"),
    ],
    ids=["variant", "fold"],
)
def test_job_with_a_bad_option(tmp_path, options, expected):
    (tmp_path / "t.yaml").write_text(GOOD)
    assert error_line(fercluster(tmp_path, "job", "t.yaml", "--dataset", "ckplus", *options)) == expected
    assert not (tmp_path / "results").exists()  # refused before anything ran


def test_data_prepare_tfd_on_a_missing_file(tmp_path):
    line = error_line(fercluster(tmp_path, "data", "prepare", "tfd", "TFD_96x96.mat", "--out", "P"))
    assert line.startswith("error: TFD file not found: TFD_96x96.mat")
    assert not (tmp_path / "P").exists()


def test_aggregate_without_a_completed_job(tmp_path):
    (tmp_path / "t.yaml").write_text(GOOD)
    line = error_line(fercluster(tmp_path, "aggregate", "t.yaml"))
    assert line.startswith("error: no completed job for sweep 't': 4 planned, none with a readable job.json")
    assert "fercluster sweep CONFIG" in line  # what to do
