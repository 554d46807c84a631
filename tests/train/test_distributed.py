import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import ddp_worker
import pandas as pd
import pytest
import torch

from fercluster.errors import TrainingError
from fercluster.train.distributed import (
    DistInfo,
    detect,
    device_index,
    expand_nodelist,
    first_node,
    job_key,
    local_batch,
    port_candidates,
    rendezvous_env,
    rendezvous_store,
)
from fercluster.train.job import run_job

WORKER = Path(ddp_worker.__file__)


def test_detect_reads_torchrun_and_slurm_variables_for_a_ddp_job():
    assert detect(4, {"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}) == DistInfo(2, 4, 0)
    assert detect(2, {"SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "1"}) == DistInfo(1, 2, 1)


def test_a_single_process_job_ignores_the_allocation_around_it():
    # `salloc -n 4`, `srun --pty`, or a Ray worker started by srun: SLURM's variables describe the
    # allocation; a job fercluster launched as one process must not join a process group.
    inside = {"SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "77"}
    assert detect(1, inside) == DistInfo(0, 1, 0)
    assert detect(1, {"WORLD_SIZE": "8", "RANK": "5"}) == DistInfo(0, 1, 0)
    assert detect(1, {}) == DistInfo(0, 1, 0)


def test_a_ddp_job_in_the_wrong_environment_fails_clearly():
    with pytest.raises(TrainingError, match="launched as 2 processes but the environment has 4"):
        detect(2, {"SLURM_NTASKS": "4", "SLURM_PROCID": "0"})
    with pytest.raises(TrainingError, match="sees neither torchrun's"):
        detect(2, {})


@pytest.mark.parametrize("nodes, gpus", [(1, 4), (2, 4), (2, 1)])
def test_rank_and_device_of_every_task_of_an_allocation(nodes, gpus):
    """srun starts nodes x gpus tasks: SLURM_PROCID 0..n-1 over the nodes, SLURM_LOCALID 0..gpus-1
    on each; every rank is distinct, and the ranks of one node use distinct devices."""
    seen = {}
    for node in range(nodes):
        for local in range(gpus):
            env = {"SLURM_NTASKS": str(nodes * gpus), "SLURM_PROCID": str(node * gpus + local),
                   "SLURM_LOCALID": str(local)}  # fmt: skip
            info = detect(nodes * gpus, env)
            seen[info.rank] = (node, device_index(info.local_rank, gpus))
            assert device_index(info.local_rank, 1) == 0  # a task bound to its own GPU sees one
    assert sorted(seen) == list(range(nodes * gpus))
    for node in range(nodes):
        assert sorted(d for n, d in seen.values() if n == node) == list(range(gpus))


SLURM_TASK = {"SLURM_JOB_ID": "123456", "SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "gpu[07-09,12]"}


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("vm[1-3,5]", ["vm1", "vm2", "vm3", "vm5"]),
        ("a,b", ["a", "b"]),
        ("localhost", ["localhost"]),
        ("gpu[07-09,12]", ["gpu07", "gpu08", "gpu09", "gpu12"]),
        ("n[1-2],gpu[3],x", ["n1", "n2", "gpu3", "x"]),
        ("r[1-2]-n[01-02]", ["r1-n01", "r1-n02", "r2-n01", "r2-n02"]),
    ],
)
def test_slurm_node_lists_expand_in_order(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts and first_node(nodelist) == hosts[0]


def test_under_slurm_the_rendezvous_ignores_what_the_login_shell_passed_on():
    inherited = {**SLURM_TASK, "MASTER_ADDR": "localhost", "MASTER_PORT": "29500"}  # sbatch --export=ALL
    env = rendezvous_env(inherited)
    assert env == {"MASTER_ADDR": "gpu07", "MASTER_PORT": str(port_candidates(job_key(SLURM_TASK))[0])}
    override = rendezvous_env({**inherited, "FERCLUSTER_MASTER_ADDR": "gpu07-ib", "FERCLUSTER_MASTER_PORT": "15000"})
    assert override == {"MASTER_ADDR": "gpu07-ib", "MASTER_PORT": "15000"}  # an explicit fercluster setting wins
    torchrun = {**inherited, "TORCHELASTIC_RUN_ID": "x", "MASTER_ADDR": "gpu08", "MASTER_PORT": "29400"}
    assert rendezvous_env(torchrun) == {"MASTER_ADDR": "gpu08", "MASTER_PORT": "29400"}  # torchrun set them
    assert rendezvous_env({"MASTER_ADDR": "a", "MASTER_PORT": "1"}) == {"MASTER_ADDR": "a", "MASTER_PORT": "1"}


def test_rendezvous_ports_come_from_the_whole_job_id():
    a, b = (port_candidates(job_key({**SLURM_TASK, "SLURM_JOB_ID": j})) for j in ("123456", "133456"))
    assert a[0] != b[0]  # id % 10000 gave both 13456
    assert a == port_candidates(job_key(SLURM_TASK)) and len(set(a)) == len(a)  # every rank: the same list
    assert job_key({**SLURM_TASK, "SLURM_RESTART_COUNT": "1"}) != job_key(SLURM_TASK)  # a requeue: its own
    assert job_key({**SLURM_TASK, "SLURM_ARRAY_JOB_ID": "9", "SLURM_ARRAY_TASK_ID": "3"}) == "9_3.0"


def test_master_port_stays_clear_of_ray_and_ephemeral_ports():
    from fercluster.orchestration.tune.ray_cluster import CLIENT_PORTS

    ports = {p for j in range(0, 200_000, 7) for p in port_candidates(str(j), 2)}
    assert min(ports) >= 1024 and max(ports) < CLIENT_PORTS.start and max(ports) < 32768


def test_rank_0_skips_a_busy_port_and_the_others_find_the_one_it_bound(tmp_path):
    ports = port_candidates(f"test-{os.getpid()}")
    with socket.socket() as busy:  # another job's rendezvous holds the first port on this node
        busy.bind(("127.0.0.1", ports[0]))
        busy.listen()
        master = rendezvous_store(DistInfo(0, 2), "127.0.0.1", ports, tmp_path)
        assert json.loads((tmp_path / f".rendezvous-{ports[0]}.json").read_text())["port"] == ports[1]
        worker = rendezvous_store(DistInfo(1, 2), "127.0.0.1", ports, tmp_path)
        master.set("k", "v")
        assert worker.get("k") == b"v" and worker.port == master.port == ports[1]
        with pytest.raises(TrainingError, match=f"could bind none of the rendezvous ports \\({ports[0]}: "):
            rendezvous_store(DistInfo(0, 2), "127.0.0.1", ports, None)  # no folder to publish in: first port only


def test_node_name_is_slurms_node_else_the_host():
    import socket

    from fercluster.train.distributed import all_nodes, node_name

    assert node_name({"SLURMD_NODENAME": "VM"}) == "VM"  # two SLURM nodes may share one host
    assert node_name({}) == socket.gethostname()
    assert all_nodes(DistInfo()) == [node_name()]


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
    for p, err in zip(procs, errors, strict=True):
        assert p.returncode == 0, err[-3000:]


@pytest.fixture(scope="module")
def two_process_run(prepared_dir, tmp_path_factory):
    """One launch of 2 gloo processes: 3 fixed SGD steps, then a whole job (AD, 20 iterations)."""
    from conftest import TINY_TRAIN

    from fercluster.config import Train
    from fercluster.train.spec import JobSpec

    tmp = tmp_path_factory.mktemp("ddp")
    specs = {
        name: JobSpec(
            sweep="test",
            dataset="ckplus",
            kind="ckplus",
            classes=8,
            fold=0,
            variant="AD",
            seed=3,
            train=Train(**{**TINY_TRAIN, "iterations": 20, "eval_every": 10}),
            prepared_dir=str(prepared_dir),
            run_dir=str(tmp / name),
            processes=2 if name == "two" else 1,
        )  # fmt: skip
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
    from dataclasses import replace

    from fercluster.train.bench import _bench_spec
    from fercluster.train.model import build_model
    from fercluster.train.seeds import seed_for, stream

    spec = replace(_bench_spec(32, 0.125, 16, torch.device("cpu")), variant="none")  # as ddp_worker.steps
    return build_model(8, width=0.125, image_size=32, k=1.0, seed=seed_for(0, stream(spec, "init"))).conv1.weight


def test_two_process_job_agrees_with_one_process(two_process_run):
    tmp = two_process_run
    record = json.loads((tmp / "two" / "job.json").read_text())
    assert record["world_size"] == 2 and record["device"].startswith("2 x ")
    assert len(record["nodes"]) == 2  # the node of each rank
    m1, m2 = (pd.read_parquet(tmp / d / "metrics.parquet") for d in ("one", "two"))
    assert m1["iteration"].tolist() == m2["iteration"].tolist() == [0, 10, 20]
    # same initial weights: identical accuracies before training
    assert m1.loc[0, ["val_acc", "test_acc"]].tolist() == m2.loc[0, ["val_acc", "test_acc"]].tolist()
    # different batches (each rank draws its own), same optimisation: losses close
    assert m2["train_loss"][1:].sub(m1["train_loss"][1:]).abs().max() < 0.25
    assert abs(record["test_acc"] - json.loads((tmp / "one" / "job.json").read_text())["test_acc"]) <= 0.25
    # only rank 0 wrote: the same files as one process, no stray temporaries
    assert sorted(p.name for p in (tmp / "two").iterdir()) == sorted(p.name for p in (tmp / "one").iterdir())


def test_a_stop_signal_to_rank_0_stops_every_rank_at_one_step_and_rank_1_waits_for_the_requeue(make_spec, tmp_path):
    """SLURM's USR2 reaching one rank: the ranks agree at step 20, save one checkpoint there, rank 0's
    handler (as submitit's) requeues and exits 255; rank 1 leaves only after that, with status 0 (an
    error there would have srun --kill-on-bad-exit end rank 0 before its requeue)."""
    spec = replace(make_spec("none", iterations=40, eval_every=10, checkpoint_every=100), processes=2)
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_dict()))
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "stop", str(tmp_path / "spec.json"), str(tmp_path)],
            env={
                **os.environ,
                "WORLD_SIZE": "2",
                "RANK": str(r),
                "LOCAL_RANK": str(r),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
                "OMP_NUM_THREADS": "1",
            },
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for r in range(2)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [255, 0], errors[1][-3000:] or errors[0][-3000:]
    assert (tmp_path / "requeued").read_text() == "SIGUSR2"
    assert (tmp_path / "rank1").read_text() == "after requeue"
    assert torch.load(Path(spec.run_dir) / "checkpoint.pt", weights_only=True)["iteration"] == 20
    assert not (Path(spec.run_dir) / "job.json").exists()


@pytest.mark.slurm
def test_job_under_srun_with_two_tasks(make_spec, slurm_cluster):
    """2 SLURM tasks (SLURM_NTASKS/SLURM_PROCID, rendezvous from the node list and job id) train one
    job with DDP; the run directory must be on a path the node sees (here the same machine)."""
    base = Path(os.environ.get("FERCLUSTER_SLURM_TMP", "/tmp")) / f"fercluster-srun-{os.getpid()}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    spec = replace(make_spec("AD", run_dir=base / "run", iterations=20, eval_every=10), processes=2)
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
