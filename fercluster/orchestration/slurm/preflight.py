"""The SLURM side of ``fercluster doctor``: the commands it runs and their text parsed.

``read_nodes`` (sinfo, one line per node and partition), ``accounting`` (does sacct answer),
``config_value`` (scontrol show config), ``test_submit`` (``sbatch --test-only`` with the sbatch
lines a sweep submits, rendered by submitit) and ``run_on_node`` (one tiny submitit job, waited
for with a timeout and cancelled after it). Every command has a timeout: a controller that does
not answer makes a check fail, never the doctor hang.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from fercluster.config import Slurm
from fercluster.orchestration.backend import Resources
from fercluster.orchestration.slurm.resources import submitit_parameters

COMMAND_TIMEOUT_S = 30
USABLE = ("idle", "mix", "alloc", "comp")  # sinfo's short node states that run jobs
_GPU = re.compile(r"gpu(?::[^:,()]+)?:(\d+)")


@dataclass(frozen=True)
class NodeLine:
    """One node of one partition, as ``sinfo -N`` lists it."""

    partition: str
    default: bool
    node: str
    up: bool  # the partition is up
    state: str  # e.g. "idle", "mix", "down*"
    gres: str  # e.g. "gpu:a100:4(S:0-1)", "(null)"

    @property
    def usable(self) -> bool:
        return self.up and self.state.rstrip("*~#!%$@^-") in USABLE and not self.state.endswith("*")

    @property
    def gpus(self) -> int:
        return gpu_count(self.gres)


def gpu_count(gres: str) -> int:
    """GPUs in a Gres string: "gpu:2" -> 2, "gpu:a100:4(S:0-1),mps:100" -> 4, "(null)" -> 0."""
    return sum(int(n) for n in _GPU.findall(gres))


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str] | str:
    """The finished command, or why it could not run (not found, no answer in time)."""
    if shutil.which(argv[0]) is None:
        return f"{argv[0]} not found on PATH (not a SLURM login node?)"
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"`{' '.join(argv[:2])}` did not answer within {COMMAND_TIMEOUT_S} s"


def _said(proc: subprocess.CompletedProcess[str]) -> str:
    return (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}").splitlines()[-1]


def read_nodes() -> list[NodeLine] | str:
    """Every node of every partition, or why sinfo did not say."""
    proc = _run(["sinfo", "--noheader", "--Node", "--format=%P|%N|%a|%t|%G"])
    if isinstance(proc, str):
        return proc
    if proc.returncode != 0:
        return f"sinfo failed (exit {proc.returncode}): {_said(proc)}"
    out = []
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 5:
            partition, node, avail, state, gres = parts
            out.append(NodeLine(partition.rstrip("*"), partition.endswith("*"), node, avail == "up", state, gres))
    return out or f"sinfo lists no node: {proc.stdout.strip()!r}"


def accounting() -> tuple[bool, str]:
    """(True, "") when sacct answers, else (False, what it said)."""
    proc = _run(["sacct", "--noheader", "-X", "--format=JobID", "--starttime=now"])
    if isinstance(proc, str):
        return False, proc
    return proc.returncode == 0, "" if proc.returncode == 0 else _said(proc)


def config_value(key: str) -> str | None:
    """One value of ``scontrol show config`` (e.g. MinJobAge), or None."""
    proc = _run(["scontrol", "show", "config"])
    if isinstance(proc, str) or proc.returncode != 0:
        return None
    for line in proc.stdout.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == key:
            return value.strip().split()[0] if value.strip() else ""
    return None


def sbatch_script(slurm: Slurm, folder: Path) -> str:
    """The sbatch script a sweep's training job gets (submitit renders it from the same parameters)."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = submitit_parameters(Resources.training(slurm), job_name="fercluster-doctor")
    return _make_sbatch_string(command="true", folder=str(folder / "%j"), **params)


def test_submit(slurm: Slurm) -> tuple[bool, str]:
    """``sbatch --test-only`` on the sweep's sbatch script: (accepted, what sbatch said)."""
    with tempfile.TemporaryDirectory(prefix="fercluster-doctor-") as tmp:
        proc = _run(["sbatch", "--test-only"], stdin=sbatch_script(slurm, Path(tmp)))
    if isinstance(proc, str):
        return False, proc
    lines = (proc.stderr + proc.stdout).splitlines()
    said = "; ".join(line.strip().removeprefix("sbatch: ") for line in lines if line.strip())
    return proc.returncode == 0, said or f"exit {proc.returncode}"


@dataclass
class NodeOutcome:
    result: Any = None
    error: str = ""
    fix: str = ""
    started: bool = False  # the job ran (an error is then the node's, not the queue's)
    slurm_id: str = ""
    seconds: float = 0.0


def node_parameters(slurm: Slurm) -> dict[str, Any]:
    """The sweep's partition, account, qos, constraint, GPUs per node and memory; one task, 5 minutes."""
    resources = replace(Resources.training(slurm).one_task_per_node(), nodes=1, time_min=5)
    return submitit_parameters(resources, job_name="fercluster-doctor")


def run_on_node(fn: Callable[[], Any], slurm: Slurm, folder: Path, timeout_s: float) -> NodeOutcome:
    """Run ``fn()`` as one submitit job; cancelled if it has not ended after ``timeout_s``."""
    import submitit

    from fercluster.orchestration.store.state import ensure_dir, private_umask

    t0 = time.monotonic()
    with private_umask():
        executor = submitit.SlurmExecutor(folder=ensure_dir(Path(folder).absolute()) / "%j")
        executor.update_parameters(**node_parameters(slurm))
        try:
            job = executor.submit(fn)
        except Exception as exc:  # submitit wraps sbatch's failure in its own error types
            return NodeOutcome(
                error=f"sbatch failed: {str(exc).strip().splitlines()[-1]}", fix="see the resources line"
            )
    outcome = NodeOutcome(slurm_id=str(job.job_id))
    while not job.done():
        if time.monotonic() - t0 > timeout_s:
            reason = _queue_reason(outcome.slurm_id)
            job.cancel(check=False)
            outcome.error = f"job {outcome.slurm_id} did not finish within {timeout_s:.0f} s ({reason}); cancelled"
            outcome.fix = "run `fercluster doctor` again when the queue is shorter, with --timeout N, or with --no-job"
            return outcome
        time.sleep(1.0)
    outcome.started, outcome.seconds = True, time.monotonic() - t0
    try:
        outcome.result = job.result()
    except Exception as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        outcome.error = f"job {outcome.slurm_id} failed on the node: {last} (logs in {Path(folder) / outcome.slurm_id})"
        outcome.fix = "the nodes must run the same Python with fercluster and torch installed, on a shared file system"
    return outcome


def _queue_reason(slurm_id: str) -> str:
    proc = _run(["squeue", "--noheader", "-j", slurm_id, "-o", "%T %r"])
    if isinstance(proc, str) or proc.returncode != 0 or not proc.stdout.strip():
        return "state unknown"
    return proc.stdout.strip().lower()
