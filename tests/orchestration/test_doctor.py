"""``fercluster doctor``: on the SLURM test cluster (every line ok for configs/smoke.yaml; a missing
partition is an error naming it), and with stand-in ``sinfo``/``sbatch``/``sacct``/``scontrol``
executables on PATH for what the test cluster cannot show (accounting off, no controller)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fercluster.config import Slurm, parse_config
from fercluster.orchestration.preflight import doctor
from fercluster.orchestration.slurm.preflight import NodeLine, gpu_count

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fercluster.cli.main", "doctor", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip


def smoke(workdir: Path, **slurm: object) -> Path:
    data = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    data["slurm"].update(slurm)
    path = workdir / "smoke.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def lines(out: str) -> dict[str, str]:
    """{check name: status} from the text output."""
    found = {}
    for line in out.splitlines()[1:-1]:
        status, _, rest = line.partition(" ")
        if status in ("ok", "warning", "error"):
            found[rest.strip().split("  ")[0]] = status
    return found


# -- on the SLURM test cluster ---------------------------------------------------------------------
@pytest.mark.slurm
def test_every_line_is_ok_for_the_smoke_config(workdir: Path) -> None:
    out = run_cli(str(smoke(workdir)), cwd=workdir)
    assert out.returncode == 0, out.stdout + out.stderr
    found = lines(out.stdout)
    expected = {"slurm", "accounting", "partition", "resources", "gpus", "data ckplus", "jobs folder",
                "results folder", "node"}  # fmt: skip
    assert set(found) == expected and set(found.values()) == {"ok"}, out.stdout
    assert "0 warning(s), 0 error(s)" in out.stdout


@pytest.mark.slurm
def test_a_partition_that_does_not_exist_is_an_error_naming_it(workdir: Path) -> None:
    out = run_cli(str(smoke(workdir, partition="nosuchpart")), cwd=workdir)
    assert out.returncode == 1, out.stdout + out.stderr
    errors = [ln for ln in out.stdout.splitlines() if ln.startswith("error")]
    assert any("partition" in ln and "'nosuchpart' does not exist" in ln for ln in errors), out.stdout
    report = json.loads(run_cli(str(smoke(workdir, partition="nosuchpart")), "--json", cwd=workdir).stdout)
    assert not report["ok"] and report["node"] is None  # no job submitted to a partition that is not there


# -- stand-in SLURM commands -----------------------------------------------------------------------
SINFO = "local*|vm|up|idle|gpu:2\nlocal*|VM|up|mix|gpu:2\n"


def stand_ins(folder: Path, **scripts: str) -> dict[str, str]:
    """An environment whose PATH starts with ``folder`` holding the given shell scripts."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in scripts.items():
        path = folder / name
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def test_accounting_off_is_a_warning_naming_the_fallback(workdir: Path) -> None:
    env = stand_ins(
        workdir / "bin",
        sinfo=f"printf '{SINFO}'",
        sacct="echo 'Slurm accounting storage is disabled' >&2; exit 1",
        scontrol="echo 'MinJobAge               = 300 sec'",
        sbatch="echo 'sbatch: Job 7 to start at 2030-01-01T00:00:00 using 1 processors on nodes vm in partition local' >&2",
    )
    out = run_cli(str(smoke(workdir)), "--no-job", cwd=workdir, env=env)
    assert out.returncode == 0, out.stdout + out.stderr  # a warning is not an error
    found = lines(out.stdout)
    assert found["accounting"] == "warning" and "node" not in found
    assert {k: v for k, v in found.items() if k != "accounting"} == dict.fromkeys(set(found) - {"accounting"}, "ok")
    text = out.stdout
    assert "accounting storage is disabled" in text and "squeue/scontrol" in text and "MinJobAge=300" in text


def test_unreachable_controller_is_an_error_and_nothing_is_submitted(workdir: Path) -> None:
    env = stand_ins(
        workdir / "bin",
        sinfo="echo 'slurm_load_partitions: Unable to contact slurm controller (connect failure)' >&2; exit 1",
        sbatch="echo submitted > sbatch-was-called; exit 1",
        sacct="exit 1",
    )
    out = run_cli(str(smoke(workdir)), "--json", cwd=workdir, env=env)
    assert out.returncode == 1
    report = json.loads(out.stdout)
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["slurm"]["status"] == "error" and "Unable to contact slurm controller" in by_name["slurm"]["message"]
    assert "scontrol ping" in by_name["slurm"]["fix"]
    assert not {"accounting", "partition", "resources", "gpus"} & set(by_name)
    assert by_name["node"]["status"] == "warning" and report["node"] is None
    assert not (workdir / "sbatch-was-called").exists()
    assert by_name["data ckplus"]["status"] == "ok"  # the config's own checks still run


def test_no_slurm_at_all_says_so(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(workdir / "empty"))
    check = doctor.run_doctor(None, job=True).checks
    assert check[0].status == "error" and "sinfo not found" in check[0].message


# -- pure parts ------------------------------------------------------------------------------------
def node(gres: str, state: str = "idle", partition: str = "gpu") -> NodeLine:
    return NodeLine(partition, True, f"n-{gres}-{state}", True, state, gres)


def test_gpu_counts_from_gres() -> None:
    assert gpu_count("gpu:2") == 2 and gpu_count("gpu:a100:4(S:0-1),mps:100") == 4 and gpu_count("(null)") == 0
    assert gpu_count("gpu:a100:2,gpu:v100:1") == 3


def test_gpus_per_node_against_the_partition() -> None:
    nodes = [node("gpu:4"), node("gpu:4"), node("gpu:2")]
    assert doctor._gpus_check(Slurm(gpus_per_node=4, nodes=2), nodes).status == "ok"
    too_many = doctor._gpus_check(Slurm(gpus_per_node=8), nodes)
    assert too_many.status == "error" and "at most 4" in too_many.fix
    assert doctor._gpus_check(Slurm(gpus_per_node=4, nodes=3), nodes).status == "error"
    assert doctor._gpus_check(Slurm(gpus_per_node=0), nodes).status == "ok"


def test_partition_states() -> None:
    nodes = [node("gpu:1", "idle"), node("gpu:1", "down*")]
    assert doctor._partition_check(Slurm(), nodes).status == "ok"
    assert doctor._partition_check(Slurm(nodes=2), nodes).status == "warning"  # 1 of 2 nodes can run
    missing = doctor._partition_check(Slurm(partition="cpu"), nodes)
    assert missing.status == "error" and "'cpu' does not exist" in missing.message and "gpu" in missing.fix


def test_world_writable_jobs_folder_is_an_error(workdir: Path) -> None:
    cfg = parse_config(yaml.safe_load(smoke(workdir).read_text()))
    (workdir / "jobs").mkdir(mode=0o777)
    os.chmod(workdir / "jobs", 0o777)
    checks = {c.name: c for c in doctor.folder_checks(cfg)}
    assert checks["jobs folder"].status == "error" and "chmod o-w" in checks["jobs folder"].fix
    assert checks["results folder"].status == "ok"


def test_missing_data_without_synthetic_is_an_error(workdir: Path) -> None:
    data = yaml.safe_load(smoke(workdir).read_text())
    del data["datasets"]["ckplus"]["synthetic"]
    (check,) = doctor.data_checks(parse_config(data))
    assert check.status == "error" and "synthetic" in check.fix


def test_versions_that_differ_are_listed() -> None:
    here = {"python": "3.11.7", "torch": "2.5.1", "cuda": "12.4", "nccl": None, "fercluster": "0.1.0"}
    there = {**here, "torch": "2.4.0", "nccl": "2.21.5"}
    assert doctor.differences(here, there) == ["torch 2.4.0 there, 2.5.1 here"]
