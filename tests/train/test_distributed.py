import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import ddp_worker
from fercluster.train.distributed import DistInfo, detect, first_node, local_batch, rendezvous_env
from fercluster.train.job import run_job

WORKER = Path(ddp_worker.__file__)


def test_detect_reads_torchrun_and_slurm_variables():
    assert detect({}) == DistInfo(0, 1, 0)
    assert detect({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}) == DistInfo(2, 4, 0)
    assert detect({"SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "1"}) == DistInfo(1, 2, 1)
    assert detect({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) == DistInfo(0, 1, 0)


def test_rendezvous_from_the_slurm_node_list_and_job_id():
    env = rendezvous_env({"SLURM_JOB_NODELIST": "gpu[07-09,12]", "SLURM_JOB_ID": "123456"})
    assert env["MASTER_ADDR"] in ("gpu07",)  # scontrol or the fallback parser
    assert env["MASTER_PORT"] == str(20_000 + 123456 % 20_000)
    assert rendezvous_env({"MASTER_ADDR": "a", "MASTER_PORT": "1"}) == {}
    assert first_node("localhost") == "localhost"


def test_global_batch_is_split_across_ranks():
    assert [local_batch(64, DistInfo(r, 2)) for r in range(2)] == [32, 32]
    assert [local_batch(10, DistInfo(r, 3)) for r in range(3)] == [4, 3, 3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args: list[str], world: int = 2, timeout: int = 120) -> None:
    port = str(_free_port())
    procs = []
    for rank in range(world):
        env = {**os.environ, "WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, str(WORKER), *args], env=env, stderr=subprocess.PIPE, text=True))
    try:
        errors = [p.communicate(timeout=timeout)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, err in zip(procs, errors):
        assert p.returncode == 0, err[-3000:]


@pytest.fixture(scope="module")
def two_process_run(prepared_dir, tmp_path_factory):
    """One launch of 2 gloo processes: 3 fixed SGD steps, then a whole job (AD, 20 iterations)."""
    from conftest import TINY_TRAIN
    from fercluster.train.spec import JobSpec

    tmp = tmp_path_factory.mktemp("ddp")
    specs = {
        name: JobSpec(sweep="test", dataset="ckplus", kind="ckplus", classes=8, fold=0, variant="AD", seed=3,
                      train={**TINY_TRAIN, "iterations": 20, "eval_every": 10}, prepared_dir=str(prepared_dir),
                      run_dir=str(tmp / name))  # fmt: skip
        for name in ("one", "two")
    }
    (tmp / "spec.json").write_text(json.dumps(specs["two"].to_dict()))
    _launch(["both", str(tmp / "two.pt"), str(tmp / "spec.json")])
    ddp_worker.steps(str(tmp / "one.pt"))
    run_job(specs["one"])
    return tmp


def test_two_gloo_processes_take_the_same_steps_as_one(two_process_run):
    """The global batch split over 2 ranks gives the one-process update (loss scaling + all-reduce)."""
    one, two = (torch.load(two_process_run / f"{name}.pt") for name in ("one", "two"))
    assert one.keys() == two.keys()
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-6, rtol=1e-5), key
    assert not torch.equal(one["conv1.weight"], _initial_conv1())


def _initial_conv1():
    from fercluster.train.model import build_model
    from fercluster.train.trainer import seed_for

    return build_model(8, width=0.125, image_size=32, k=1.0, seed=seed_for(0, "init")).conv1.weight


def test_two_process_job_agrees_with_one_process(two_process_run):
    tmp = two_process_run
    record = json.loads((tmp / "two" / "job.json").read_text())
    assert record["world_size"] == 2 and record["device"].startswith("2 x ")
    m1, m2 = (pd.read_parquet(tmp / d / "metrics.parquet") for d in ("one", "two"))
    assert m1["iteration"].tolist() == m2["iteration"].tolist() == [0, 10, 20]
    # same initial weights: identical accuracies before training
    assert m1.loc[0, ["val_acc", "test_acc"]].tolist() == m2.loc[0, ["val_acc", "test_acc"]].tolist()
    # different batches (each rank draws its own), same optimisation: losses close
    assert m2["train_loss"][1:].sub(m1["train_loss"][1:]).abs().max() < 0.25
    assert abs(record["test_acc"] - json.loads((tmp / "one" / "job.json").read_text())["test_acc"]) <= 0.25
    # only rank 0 wrote: the same files as one process, no stray temporaries
    assert sorted(p.name for p in (tmp / "two").iterdir()) == sorted(p.name for p in (tmp / "one").iterdir())


@pytest.mark.slurm
def test_job_under_srun_with_two_tasks(make_spec, slurm_cluster):
    """2 SLURM tasks (SLURM_NTASKS/SLURM_PROCID, rendezvous from the node list and job id) train one
    job with DDP; the run directory must be on a path the node sees (here the same machine)."""
    base = Path(os.environ.get("FERCLUSTER_SLURM_TMP", "/tmp")) / f"fercluster-srun-{os.getpid()}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    spec = make_spec("AD", run_dir=base / "run", iterations=20, eval_every=10)
    (base / "spec.json").write_text(json.dumps(spec.to_dict()))
    result = subprocess.run(
        ["srun", "-n", "2", "-N", "1", "--cpus-per-task=1", "--mem=1500", "--time=5", "--kill-on-bad-exit=1",
         sys.executable, str(WORKER), "job", str(base / "spec.json")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((base / "run" / "job.json").read_text())
    assert record["world_size"] == 2
    assert pd.read_parquet(base / "run" / "metrics.parquet")["iteration"].tolist() == [0, 10, 20]
    shutil.rmtree(base, ignore_errors=True)
