"""Fixtures of the orchestration tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from orch_helpers import make_config


@pytest.fixture(autouse=True)
def user_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`sweep` records the last config per user: in the tests, a folder of their own."""
    folder = tmp_path_factory.mktemp("xdg-state")
    monkeypatch.setenv("XDG_STATE_HOME", str(folder))
    return folder


@pytest.fixture
def cfg(workdir: Path):
    return make_config(workdir)


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic CK+ (raw and prepared) for every SLURM sweep test: prepared once."""
    return tmp_path_factory.mktemp("data")
