"""Jobs run the code their sweep was submitted with, on the real SLURM test cluster (slurm/cluster.sh).

Each test submits from a scratch git checkout of the package (``fercluster`` run with
``PYTHONPATH=<checkout>``), then edits that checkout so that training would give other results
(the loss scale, i.e. the learning rate actually used, halved), and checks that the job still
gives the results of the unchanged code: a job held in the queue and released after the edit, and
a job requeued after the edit, which resumes from its checkpoint. The reference is the same job
submitted from this repository's unchanged code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest
import yaml
from slurm_helpers import wait_for as wait_for_status

from fercluster import code
from fercluster.config import load_config, parse_config
from fercluster.orchestration.slurm.backend import SlurmBackend
from fercluster.orchestration.submit.coordinator import run_sweep

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
TRAIN = {"iterations": 60, "eval_every": 20, "checkpoint_every": 10}
EDIT = ("self.loss_scale = dist.world_size / global_batch", "self.loss_scale = 0.5 * dist.world_size / global_batch")


def sweep_data(name: str, root: Path, data: Path) -> dict[str, Any]:
    """configs/smoke.yaml with one job, its data in ``data``, its state and outputs under ``root``."""
    cfg = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    cfg["name"] = name
    cfg["paths"] = {"jobs": str(root / "jobs"), "results": str(root / "results"), "data": str(data)}
    cfg["datasets"]["ckplus"]["root"] = str(data / "raw" / "ckplus-smoke")
    cfg["datasets"]["ckplus"]["prepared"] = str(data / "prepared" / "ckplus-smoke")
    cfg["grid"] = [{"dataset": "ckplus", "folds": [0], "variants": ["none"], "seeds": [0]}]
    cfg["train"].update(TRAIN)
    return cfg


def wait_for(cfg: Any, done: Callable[[dict], bool], timeout_s: float, what: str) -> dict:
    """``slurm_helpers.wait_for`` on the sweep's own SLURM backend."""
    return wait_for_status(cfg, SlurmBackend(cfg.jobs_dir / "submitit"), done, timeout_s, what)


def completed(snap: dict) -> bool:
    return all(j["state"] == "COMPLETED" for j in snap["jobs"])


def ended(snap: dict) -> bool:
    return all(j["state"] not in ("PENDING", "RUNNING") for j in snap["jobs"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The job on this repository's unchanged code: submitted once, waited for by whoever compares."""
    root = tmp_path_factory.mktemp("reference")
    data = tmp_path_factory.mktemp("data")
    cfg = parse_config(sweep_data("reference", root, data))
    result = run_sweep(cfg, SlurmBackend(cfg.jobs_dir / "submitit"))
    subprocess.run(["scancel", result.aggregate_id], check=True)  # only the training job is compared
    return {"cfg": cfg, "spec": result.specs[0], "data": data, "hash": result.code["current"]}


def reference_outputs(reference: dict[str, Any]) -> tuple[pd.DataFrame, dict]:
    wait_for(reference["cfg"], ended, 180, "reference job ended")
    run = Path(reference["spec"].run_dir)
    return metrics(run), json.loads((run / "job.json").read_text())


def metrics(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / "metrics.parquet").drop(columns=["wall_time"]).reset_index(drop=True)


@pytest.fixture
def checkout(tmp_path: Path, reference: dict[str, Any]) -> Path:
    """A scratch git checkout holding this repository's package as it is now (same code hash)."""
    repo = tmp_path / "checkout"
    for rel, content in code.code_files().contents.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(content)
    shutil.copy(REPO / ".gitignore", repo / ".gitignore")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "scratch"], check=True)
    assert code.code_files(repo / "fercluster").hash == reference["hash"]
    return repo


def edit(checkout: Path) -> str:
    """Change the checkout's training code so that results change; returns its new code hash."""
    path = checkout / "fercluster" / "train" / "trainer.py"
    text = path.read_text()
    assert text.count(EDIT[0]) == 1
    path.write_text(text.replace(*EDIT))
    return code.code_files(checkout / "fercluster").hash


def from_checkout(checkout: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def check_ran_snapshot(run: Path, jobs_dir: Path, digest: str) -> None:
    ran = json.loads((run / "job.json").read_text())["code"]
    folder = jobs_dir.absolute() / "code" / digest
    assert ran["hash"] == digest and ran["snapshot"] == str(folder), ran
    assert ran["package"] == str(folder / "fercluster"), ran  # fercluster.__file__ on the node


def test_held_job_released_after_an_edit_runs_the_submitted_code(
    workdir: Path, checkout: Path, reference: dict[str, Any]
) -> None:
    data = sweep_data("held", workdir, reference["data"])
    data["slurm"]["extra"] = {"begin": "now+1hour"}
    (workdir / "held.yaml").write_text(yaml.safe_dump(data))
    out = from_checkout(checkout, "-m", "fercluster.cli.main", "sweep", "held.yaml", cwd=workdir).stdout
    digest = reference["hash"]
    assert f"code: did run 1 jobs on snapshot {digest} of the current code (new:" in out, out
    sid = next(ln.split()[2] for ln in out.splitlines() if ln.startswith("submitted array"))
    agg = next(ln.split()[3] for ln in out.splitlines() if ln.startswith("submitted aggregation job"))
    script = next((workdir / "jobs" / "held" / "submitit").glob(f"{sid}*/*_submission.sh")).read_text()
    assert f"export PYTHONPATH={workdir / 'jobs' / 'held' / 'code' / digest}" in script

    edited = edit(checkout)
    assert edited != digest
    status = from_checkout(checkout, "-m", "fercluster.cli.main", "status", "held.yaml", cwd=workdir).stdout
    print(status)
    flat = " ".join(status.split())
    assert f"code: snapshot {digest} ({workdir / 'jobs' / 'held' / 'code' / digest})" in flat
    assert f"warning: the checkout's code now differs from snapshot {digest} (it hashes to {edited})" in flat
    control = sweep_data("edited", workdir / "edited", reference["data"])  # the same job on the edited code
    (workdir / "edited.yaml").write_text(yaml.safe_dump(control))
    out = from_checkout(checkout, "-m", "fercluster.cli.main", "sweep", "edited.yaml", cwd=workdir).stdout
    assert f"code: did run 1 jobs on snapshot {edited} of the current code (new:" in out, out
    subprocess.run(["scancel", out.split("submitted aggregation job ")[1].split()[0]], check=True)  # not needed
    for job in (sid, agg):
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)

    cfg = load_config(workdir / "held.yaml")
    edited_cfg = parse_config(control)
    wait_for(cfg, ended, 150, "released job ended")
    wait_for(edited_cfg, ended, 150, "job on the edited code ended")
    ref_metrics, ref_job = reference_outputs(reference)
    run = Path(wait_for(cfg, completed, 1, "released job COMPLETED")["jobs"][0]["run_dir"])
    pd.testing.assert_frame_equal(metrics(run), ref_metrics)
    assert json.loads((run / "job.json").read_text())["test_acc"] == ref_job["test_acc"]
    check_ran_snapshot(run, cfg.jobs_dir, digest)
    check_ran_snapshot(Path(reference["spec"].run_dir), reference["cfg"].jobs_dir, digest)
    other = Path(edited_cfg.results_dir) / "runs" / reference["spec"].job_id
    check_ran_snapshot(other, edited_cfg.jobs_dir, edited)
    assert not metrics(other).equals(ref_metrics)  # the edit does change the results
    snap = wait_for(cfg, lambda s: s["aggregate"]["state"] not in ("PENDING", "RUNNING"), 120, "aggregation ended")
    assert snap["aggregate"]["state"] == "COMPLETED", snap["aggregate"]  # it checks its own snapshot


PACED_SUBMIT = textwrap.dedent(
    """
    import sys, time
    from fercluster.config import load_config
    from fercluster.orchestration.submit.coordinator import run_sweep
    from fercluster.orchestration.slurm.backend import SlurmBackend
    from fercluster.orchestration.slurm.requeue import JobCheckpointable

    class Paced(JobCheckpointable):  # defined in __main__: cloudpickle sends it by value
        def __call__(self, spec, **kwargs):
            from fercluster.train.job import run_job  # imported on the node: from the snapshot
            return run_job(spec, progress=lambda it, total: time.sleep(0.25))

    cfg = load_config(sys.argv[1])
    result = run_sweep(cfg, SlurmBackend(cfg.jobs_dir / "submitit"), fn_for=Paced)
    print(result.arrays[0]["slurm_id"], result.aggregate_id, result.code["current"])
    """
)


def test_requeued_job_resumes_under_its_snapshot(workdir: Path, checkout: Path, reference: dict[str, Any]) -> None:
    (workdir / "requeued.yaml").write_text(yaml.safe_dump(sweep_data("requeued", workdir, reference["data"])))
    out = from_checkout(checkout, "-c", PACED_SUBMIT, "requeued.yaml", cwd=workdir).stdout
    sid, agg, digest = out.split()
    subprocess.run(["scancel", agg], check=True)
    assert digest == reference["hash"]
    cfg = load_config(workdir / "requeued.yaml")
    progress = Path(cfg.results_dir) / "runs" / reference["spec"].job_id / "progress.json"

    def running_past(iteration: int) -> Callable[[dict], bool]:
        return lambda s: s["jobs"][0]["state"] == "RUNNING" and (s["jobs"][0]["iteration"] or 0) >= iteration

    wait_for(cfg, running_past(20), 120, "job running past a checkpoint")
    assert edit(checkout) != digest
    subprocess.run(["scontrol", "requeue", sid], check=True)
    before = json.loads(progress.read_text())["iteration"]
    assert before < TRAIN["iterations"]
    wait_for(cfg, ended, 150, "requeued job ended")
    restarts = subprocess.run(["scontrol", "show", "job", sid], capture_output=True, text=True).stdout
    assert "Restarts=1" in restarts
    ref_metrics, _ = reference_outputs(reference)
    run = Path(wait_for(cfg, completed, 1, "requeued job COMPLETED")["jobs"][0]["run_dir"])
    pd.testing.assert_frame_equal(metrics(run), ref_metrics)
    check_ran_snapshot(run, cfg.jobs_dir, digest)
