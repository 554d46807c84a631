"""Several processes per job (submitit tasks, ``srun -n``, torchrun): DistributedDataParallel.

The environment says how many processes there are: torchrun sets WORLD_SIZE/RANK/LOCAL_RANK,
SLURM sets SLURM_NTASKS/SLURM_PROCID/SLURM_LOCALID. Under SLURM the rendezvous address is the job's
first node and the port is derived from the job id, so every task computes the same one. nccl on
GPUs, gloo on CPUs. Only rank 0 writes outputs.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

import torch

PORT_BASE = 20_000
PORT_RANGE = 20_000


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


def detect(env: dict[str, str] | None = None) -> DistInfo:
    """Rank, world size and local rank from torchrun's or SLURM's variables (1 process if none)."""
    env = dict(os.environ if env is None else env)
    if int(env.get("WORLD_SIZE", "1")) > 1:
        return DistInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", env["RANK"])))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        procid = int(env["SLURM_PROCID"])
        return DistInfo(procid, int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", procid)))
    return DistInfo()


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
        job_id = int(re.sub(r"\D", "", env.get("SLURM_JOB_ID", "0")) or 0)
        out["MASTER_PORT"] = str(PORT_BASE + job_id % PORT_RANGE)
    return out


def setup(device: torch.device) -> DistInfo:
    """Join the job's process group when there are several processes; return this process's place."""
    info = detect()
    if not info.enabled:
        return info
    import torch.distributed as dist

    if not dist.is_initialized():
        os.environ.update(rendezvous_env())
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=info.rank, world_size=info.world_size)
    return info


def teardown(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


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
