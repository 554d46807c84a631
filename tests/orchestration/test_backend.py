"""The ``Backend`` protocol: fercluster's terms in, ``JobInfo`` out; submitit and SLURM's ids stay in ``slurm/``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from orch_helpers import SWEEP_KW, make_config

import fercluster
from fercluster.orchestration.backend import Backend, JobInfo, Resources, Submission, SubmitLimit
from fercluster.orchestration.backends import backend_for
from fercluster.orchestration.fake import FakeBackend
from fercluster.orchestration.local.backend import LocalBackend
from fercluster.orchestration.slurm import sbatch_watch
from fercluster.orchestration.slurm.backend import SlurmBackend
from fercluster.orchestration.submit.coordinator import run_sweep

PACKAGE = Path(fercluster.__file__).parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_the_coordinator_speaks_only_the_protocol() -> None:
    for name in ("coordinator.py", "reconcile.py"):
        path = PACKAGE / "orchestration" / "submit" / name
        imported = _imports(path)
        assert not [m for m in imported if m.startswith(("fercluster.orchestration.slurm", "submitit"))]
        assert "key=int" not in path.read_text() and "base_id" not in path.read_text()


def test_one_builder_for_the_slurm_backend() -> None:
    built = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if "SlurmBackend(" in p.read_text()]
    assert built == ["orchestration/backends.py"]


def test_backend_for_reads_the_config(workdir: Path) -> None:
    cfg = make_config(workdir, slurm={"max_timeout_requeues": 5})
    backend = backend_for(cfg)
    assert isinstance(backend, Backend) and isinstance(FakeBackend(), Backend)
    assert backend.folder == (cfg.jobs_dir / "submitit").absolute() and backend.max_timeout_requeues == 5
    assert backend_for(cfg, query_timeout_s=60).timeout_s == 60


def test_queries_answer_job_info_records_with_cost_as_fields(workdir: Path) -> None:
    cfg = make_config(workdir)
    backend = FakeBackend()  # every job: 1 CPU, 1 GPU, 60 s
    array = run_sweep(cfg, backend, **SWEEP_KW).arrays[0]["slurm_id"]
    backend.set_state([f"{array}_0"], "OUT_OF_MEMORY")
    backend.set_state([f"{array}_1"], "COMPLETED")
    infos = backend.query([f"{array}_0", f"{array}_1"])
    assert all(type(i) is JobInfo for i in infos.values())
    oom, done = infos[f"{array}_0"], infos[f"{array}_1"]
    assert (oom.state, done.state) == ("FAILED", "COMPLETED") and "out of memory" in oom.failure
    assert done.failure == "" and (done.gpu_hours, done.cpu_hours) == (60 / 3600, 60 / 3600)
    here = LocalBackend({"j": {}}).query(["j"])["j"]
    assert type(here) is JobInfo and here.state == "NOT_SUBMITTED" and here.gpu_hours is None


def test_a_job_sacct_says_node_fail_but_the_queue_has_again_is_pending(tmp_path: Path, monkeypatch) -> None:
    """Seen on the test cluster (tests/orchestration/test_cluster_faults.py): for seconds after a
    node failure sacct says NODE_FAIL while SLURM has already requeued the job. One squeue, for the
    ids in such states only, decides; a job the queue does not have again stays FAILED."""
    backend = SlurmBackend(tmp_path)
    answers = {
        "sacct": "7_0|NODE_FAIL|0:0|00:01:00|vm|None|cpu=1|60\n7_1|NODE_FAIL|0:0|00:01:00|vm|None|cpu=1|60\n"
        "7_2|FAILED|1:0|00:01:00|vm|None|cpu=1|60\n",
        "squeue": "7_0|PENDING|0:00||BeginTime\n7_1|NODE_FAIL|1:00|vm|NodeDown\n7_2|FAILED|1:00|vm|None\n",
    }
    asked: list[list[str]] = []
    monkeypatch.setattr(backend, "_ask", lambda argv: asked.append(list(argv)) or answers[argv[0]])
    infos = backend.query(["7_0", "7_1", "7_2"])
    assert [infos[s].state for s in ("7_0", "7_1", "7_2")] == ["PENDING", "FAILED", "FAILED"]
    assert [a[0] for a in asked] == ["sacct", "squeue"] and asked[1][asked[1].index("-j") + 1] == "7"
    assert backend.last_error == ""
    asked.clear()
    answers["sacct"] = "7_2|FAILED|1:0|00:01:00|vm|None|cpu=1|60\n"
    assert backend.query(["7_2"])["7_2"].state == "FAILED" and [a[0] for a in asked] == ["sacct"]


def test_a_refused_sbatch_is_a_typed_submit_limit(tmp_path: Path) -> None:
    backend = SlurmBackend(tmp_path, sbatch_timeout_s=3)
    qos = backend._sbatch_error("fc-x", RuntimeError("sbatch: error: QOSMaxSubmitJobPerUserLimit"))
    assert isinstance(qos, SubmitLimit) and "per user" in qos.limit and "fc-x" in str(qos)
    timed_out = RuntimeError("sbatch failed")
    timed_out.__cause__ = subprocess.CalledProcessError(124, ["timeout"])
    late = backend._sbatch_error("fc-y", timed_out)
    assert isinstance(late, SubmitLimit) and "did not finish within 3 s" in str(late)
    refused = RuntimeError("sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying")
    refused.__cause__ = subprocess.CalledProcessError(sbatch_watch.REFUSED, ["sbatch"])
    backend.config_text = "MaxArraySize = 1001\nMaxJobCount = 10000\n"
    full = backend._sbatch_error("fc-w", refused)
    assert isinstance(full, SubmitLimit) and full.definite and "MaxJobCount = 10000" in full.limit
    refused.__cause__ = subprocess.CalledProcessError(sbatch_watch.REFUSED_UNSURE, ["sbatch"])
    assert not backend._sbatch_error("fc-w", refused).definite  # stopped late: it may have asked again
    other = backend._sbatch_error("fc-z", RuntimeError("sbatch: error: Invalid partition name specified"))
    assert not isinstance(other, SubmitLimit) and "Invalid partition" in str(other)


def test_bounded_executor_wraps_sbatch_and_leaves_submitit_alone(tmp_path: Path) -> None:
    from submitit.slurm.slurm import SlurmExecutor

    from fercluster.orchestration.slurm.executor import WATCH, BoundedExecutor

    script = tmp_path / "x.sh"
    assert BoundedExecutor(tmp_path, 3, 7.0)._make_submission_command(script) == [
        sys.executable, "-I", str(WATCH), "7", "5", "0.5", "sbatch", str(script)
    ]  # fmt: skip
    assert SlurmExecutor(tmp_path)._make_submission_command(script) == ["sbatch", str(script)]
    own = vars(SlurmExecutor)["_make_submission_command"]  # submitit's own function, as it ships
    assert (own.__module__, own.__qualname__) == ("submitit.slurm.slurm", "SlurmExecutor._make_submission_command")


@pytest.mark.parametrize("kind, n", [("train", 3), ("aggregate", 1)])
def test_adopt_returns_the_task_ids_and_writes_missing_pickles(tmp_path: Path, kind: str, n: int) -> None:
    backend = SlurmBackend(tmp_path)
    sub = Submission("fc-t-1", kind, print, tuple(range(n)) if kind == "train" else ({"a": 1},), Resources())
    got = backend.adopt(sub, "77")
    assert got.id == "77" and got.tasks == (tuple(f"77_{i}" for i in range(n)) if n > 1 else ("77",))
    pickles = sorted(p.name for p in tmp_path.rglob("*_submitted.pkl"))
    assert pickles == ([f"77_{i}_submitted.pkl" for i in range(n)] if kind == "train" else [])
    assert backend.adopt(sub, "77") == got  # a second adoption writes nothing twice
    assert sorted(p.name for p in tmp_path.rglob("*_submitted.pkl")) == pickles


def test_no_slurm_id_arithmetic_outside_slurm() -> None:
    for path in (PACKAGE / "orchestration" / "watch").glob("*.py"):
        text = path.read_text()
        assert "key=int" not in text and "base_id" not in text and '"_" in' not in text, path.name
