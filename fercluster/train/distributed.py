"""Several processes per job (submitit tasks, ``srun -n``, torchrun): DistributedDataParallel.

A job runs as DDP only when fercluster launched it as several processes (``JobSpec.processes``,
set by the coordinator from the SLURM resources); the environment alone is not trusted, since
inside an allocation of several tasks (``salloc -n 4``, ``srun --pty``, a Ray worker started by
``srun``) SLURM's variables describe the allocation, not the job. Rank, world size and local rank
then come from torchrun's variables (WORLD_SIZE/RANK/LOCAL_RANK) or SLURM's
(SLURM_NTASKS/SLURM_PROCID/SLURM_LOCALID). The rendezvous is the job's first node, on a port
derived from the job id. nccl on GPUs (each rank on its own device, passed to the process group),
gloo on CPUs. Only rank 0 writes outputs.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from dataclasses import dataclass
from datetime import timedelta

import torch

from fercluster.errors import TrainingError

# MASTER_PORT = PORT_BASE + job id % PORT_RANGE: 10000-19999, below the blocks Ray's nodes take
# (20000 and up, fercluster.orchestration.tune.ray_cluster) and Linux's ephemeral ports (32768-60999).
PORT_BASE = 10_000
PORT_RANGE = 10_000
# A collective that waits longer than this fails the job (a rank died or hangs); SLURM's
# --kill-on-bad-exit usually ends the others long before.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def detect(processes: int = 1, env: dict[str, str] | None = None) -> DistInfo:
    """This process's place in a job launched as ``processes`` processes (1: a single process,
    whatever the environment says). TrainingError if the environment disagrees with ``processes``."""
    if processes <= 1:
        return DistInfo()
    env = dict(os.environ if env is None else env)
    if "WORLD_SIZE" in env and "RANK" in env:
        info = DistInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", env["RANK"])))
    elif "SLURM_NTASKS" in env and "SLURM_PROCID" in env:
        procid = int(env["SLURM_PROCID"])
        info = DistInfo(procid, int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", procid)))
    else:
        raise TrainingError(
            f"the job was launched as {processes} processes, but this process sees neither torchrun's "
            "(WORLD_SIZE, RANK) nor SLURM's (SLURM_NTASKS, SLURM_PROCID) variables; run it through "
            "`fercluster sweep` (or srun), or as one process"
        )
    if info.world_size != processes:
        raise TrainingError(
            f"the job was launched as {processes} processes but the environment has {info.world_size} "
            f"(rank {info.rank}); check the SLURM resources (nodes x tasks per node) of its submission"
        )
    return info


def device_index(local_rank: int, visible: int) -> int:
    """The CUDA device of a rank on its node: its local rank among the devices it sees (a task
    bound to one GPU sees one, index 0)."""
    if visible < 1:
        raise TrainingError("no CUDA device visible to this process")
    return local_rank % visible


def first_node(nodelist: str) -> str:
    """The first host of a SLURM node list ("node[03-05,07],gpu1" -> "node03")."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=10, check=True
        ).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
    if not match:
        return nodelist
    prefix, ranges = match.groups()
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def rendezvous_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """MASTER_ADDR and MASTER_PORT to set when SLURM (not torchrun) started the processes."""
    env = dict(os.environ if env is None else env)
    out = {}
    if "MASTER_ADDR" not in env:
        out["MASTER_ADDR"] = first_node(env.get("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST", "127.0.0.1")))
    if "MASTER_PORT" not in env:
        out["MASTER_PORT"] = str(master_port(env.get("SLURM_JOB_ID", "0")))
    return out


def master_port(slurm_job_id: str | int) -> int:
    """The rendezvous port of a SLURM job: every task computes the same one (see PORT_BASE)."""
    job_id = int(re.sub(r"\D", "", str(slurm_job_id)) or 0)
    return PORT_BASE + job_id % PORT_RANGE


def setup(device: torch.device, info: DistInfo) -> None:
    """Join the job's process group when there are several processes (nothing for one).

    On CUDA the rank's device becomes the current one and is passed to the group, so NCCL and
    ``all_gather_object`` use it rather than cuda:0 on every rank.
    """
    if not info.enabled:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        return
    os.environ.update(rendezvous_env())
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", rank=info.rank, world_size=info.world_size, device_id=device,
                                timeout=COLLECTIVE_TIMEOUT)  # fmt: skip
    else:
        dist.init_process_group("gloo", rank=info.rank, world_size=info.world_size, timeout=COLLECTIVE_TIMEOUT)


def barrier(info: DistInfo) -> None:
    """Wait until every rank is here (a job's ranks end together: one that tears its group down
    while another still talks to it can abort the other's process)."""
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()


def teardown(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def node_name(env: dict[str, str] | None = None) -> str:
    """The SLURM node this process runs on (``SLURMD_NODENAME``), else the host name.

    Not the host name alone: several SLURM nodes may share one host (the test cluster's two)."""
    env = os.environ if env is None else env
    return env.get("SLURMD_NODENAME") or socket.gethostname()


def all_nodes(info: DistInfo) -> list[str]:
    """The node of every rank, in rank order (a collective: every rank calls it)."""
    if not info.enabled:
        return [node_name()]
    import torch.distributed as dist

    nodes: list[str | None] = [None] * info.world_size
    dist.all_gather_object(nodes, node_name())
    return [str(n) for n in nodes]


def local_batch(global_batch: int, info: DistInfo) -> int:
    """This rank's share of the global batch (the first ranks take the remainder)."""
    share, extra = divmod(global_batch, info.world_size)
    return share + (1 if info.rank < extra else 0)


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on at least one (a host sync: call rarely)."""
    if not info.enabled:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
