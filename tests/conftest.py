"""Set-up shared by all tests: the rule for tests that need the SLURM test cluster, and a working dir.

Tests marked ``slurm`` need the real cluster of ``slurm/cluster.sh`` (two nodes on one machine;
``SLURM_CONF`` picks another instance). Tests that need two nodes call ``need_nodes``. When no cluster
answers they are skipped with the reason, unless ``FERCLUSTER_REQUIRE_SLURM=1`` is set (as in CI and
the README's test command): then each of them fails, so a missing cluster can never pass silently.
Test folders add their own fixtures in their own conftest.py.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

# `sweep` records the last sweep per working folder under $XDG_STATE_HOME/fercluster: the tests (and
# the CLI subprocesses they start) keep theirs in a folder of their own, not in the user's home.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="fercluster-tests-state-")

REQUIRE_ENV = "FERCLUSTER_REQUIRE_SLURM"
START_HINT = "start it with: bash slurm/cluster.sh start (as root)"
USABLE_NODE_STATES = ("idle", "mix", "alloc", "comp")  # sinfo's short states that can run jobs


@dataclass(frozen=True)
class SlurmCluster:
    """What the tests need to know about the running cluster."""

    partition: str  # the default partition (jobs submitted without --partition land here)
    nodes: tuple[str, ...]  # its nodes that can run jobs, e.g. ("vm", "VM") on slurm/cluster.sh's two


def need_nodes(cluster: SlurmCluster, count: int) -> None:
    """Skip a test that needs ``count`` nodes on a cluster with fewer (fail under FERCLUSTER_REQUIRE_SLURM=1)."""
    if len(cluster.nodes) >= count:
        return
    found = f"the default partition {cluster.partition} has {len(cluster.nodes)} usable node(s) {list(cluster.nodes)}"
    hint = "slurm/cluster.sh runs two (stop it and start it again if it runs an older configuration)"
    if slurm_required():
        pytest.fail(f"{REQUIRE_ENV}=1 and this test needs {count} nodes; {found}; {hint}", pytrace=False)
    pytest.skip(f"needs {count} SLURM nodes; {found}")


def slurm_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


@functools.cache
def probe_slurm() -> SlurmCluster | str:
    """The cluster if `sinfo` answers with a usable node, else the reason why not (once per session)."""
    if shutil.which("sinfo") is None:
        return "sinfo not found: SLURM is not installed"
    try:
        out = subprocess.run(
            ["sinfo", "--noheader", "--Node", "--format=%P|%a|%t|%N"],  # one line per node and partition
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 30 s"
    if out.returncode != 0:
        return f"sinfo failed (exit {out.returncode}): {out.stderr.strip() or out.stdout.strip()}"
    partition, nodes = None, {}
    for line in out.stdout.splitlines():
        name, avail, state, node = line.split("|")
        if name.endswith("*"):
            partition = name.rstrip("*")
            if avail == "up":
                nodes[node] = state
    if partition is None:
        return f"sinfo shows no default partition: {out.stdout.strip()!r}"
    # "idle*": the node's slurmd does not answer; other marks (~#!%$@^-) are transitions that still run jobs
    usable = tuple(n for n, s in nodes.items() if s.rstrip("~#!%$@^-") in USABLE_NODE_STATES)
    if not usable:
        return f"no node of partition {partition} can run jobs (sinfo: {out.stdout.strip()!r})"
    return SlurmCluster(partition=partition, nodes=usable)


def _need_slurm() -> SlurmCluster:
    found = probe_slurm()
    if isinstance(found, SlurmCluster):
        return found
    if slurm_required():
        pytest.fail(f"{REQUIRE_ENV}=1 but no SLURM cluster answers: {found}; {START_HINT}", pytrace=False)
    pytest.skip(f"no SLURM cluster: {found} ({START_HINT})")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("slurm") is not None:
        _need_slurm()


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """The running test cluster (skips, or fails under FERCLUSTER_REQUIRE_SLURM=1, when there is none)."""
    return _need_slurm()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh folder made the current directory, so a config's relative paths (jobs/, results/) land in it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def two_node_cluster() -> SlurmCluster:
    """The running test cluster, with at least two nodes (else skips, or fails under FERCLUSTER_REQUIRE_SLURM=1)."""
    cluster = _need_slurm()
    need_nodes(cluster, 2)
    return cluster


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    """The CLI's SLURM replaced by the in-memory ``FakeBackend`` (returned), with the training
    callable and the data preparation stubbed out: for CLI tests that submit nothing real."""
    from fercluster.orchestration.fake import FakeBackend

    backend = FakeBackend()
    monkeypatch.setattr("fercluster.cli.tables.backend", lambda cfg: backend)
    monkeypatch.setattr("fercluster.orchestration.submit.jobs.training_callable", lambda: print)
    monkeypatch.setattr("fercluster.orchestration.submit.coordinator.prepare_datasets", lambda cfg, names: None)
    return backend
