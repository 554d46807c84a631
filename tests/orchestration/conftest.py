"""Fixtures of the orchestration tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from orch_helpers import make_config


@pytest.fixture
def cfg(workdir: Path):
    return make_config(workdir)
