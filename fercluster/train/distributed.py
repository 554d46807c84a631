"""Several processes per job (submitit tasks, ``srun -n``, torchrun): DistributedDataParallel.

A job runs as DDP only when fercluster launched it as several processes (``JobSpec.processes``,
set by the coordinator from the SLURM resources); the environment alone is not trusted, since
inside an allocation of several tasks (``salloc -n 4``, ``srun --pty``, a Ray worker started by
``srun``) SLURM's variables describe the allocation, not the job. Rank, world size and local rank
then come from torchrun's variables (WORLD_SIZE/RANK/LOCAL_RANK) or SLURM's
(SLURM_NTASKS/SLURM_PROCID/SLURM_LOCALID). Under SLURM the rendezvous is the job's first node
(from SLURM_JOB_NODELIST, never the MASTER_ADDR a login shell passed on), on a port hashed from the
job id that rank 0 has bound and published in the run directory (``rendezvous_store``). nccl on GPUs (each rank on its own device, passed to the process group),
gloo on CPUs. Only rank 0 writes outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from fercluster.atomic import write_json
from fercluster.errors import TrainingError

# Rendezvous ports: hashes of the job id into 10000-19999, below the Ray client server's range (20000
# and up, fercluster.orchestration.tune.ray_cluster; Ray's other ports are the kernel's) and Linux's
# ephemeral ports (32768-60999).
PORT_BASE = 10_000
PORT_RANGE = 10_000
PORT_TRIES = 8  # rank 0 tries these in turn until one binds
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


def expand_nodelist(nodelist: str) -> list[str]:
    """SLURM's node list syntax as hosts, in order: "vm[1-3,5]" -> vm1 vm2 vm3 vm5; "a,b"; zero
    padding kept ("gpu[07-08]"); several brackets multiply ("r[1-2]-n[1-2]" -> r1-n1 r1-n2 r2-n1 r2-n2)."""
    hosts: list[str] = []
    for item in _split_top(nodelist.strip()):
        hosts.extend(_expand_item(item))
    return hosts


def _split_top(text: str) -> list[str]:
    """Split at the commas outside brackets."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item for item in items if item]


def _expand_item(item: str) -> list[str]:
    match = re.match(r"([^\[]*)\[([^\]]*)\](.*)", item)
    if not match:
        return [item]
    prefix, ranges, rest = match.groups()
    tails = _expand_item(rest) if rest else [""]
    out = []
    for part in ranges.split(","):
        lo, _, hi = part.partition("-")
        numbers = range(int(lo), int(hi or lo) + 1)
        out.extend(f"{prefix}{n:0{len(lo)}d}{tail}" for n in numbers for tail in tails)
    return out


def first_node(nodelist: str) -> str:
    """The first host of a SLURM node list ("node[03-05,07],gpu1" -> "node03")."""
    hosts = expand_nodelist(nodelist)
    if not hosts:
        raise TrainingError(f"the SLURM node list {nodelist!r} names no host")
    return hosts[0]


def slurm_launched(env: dict[str, str]) -> bool:
    """Whether SLURM (srun, submitit) started this job's processes, not torchrun or a test's own launcher."""
    return "SLURM_JOB_ID" in env and "SLURM_PROCID" in env and "TORCHELASTIC_RUN_ID" not in env


def rendezvous_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """MASTER_ADDR (and, outside SLURM, MASTER_PORT) for this job's process group.

    Under SLURM they come from the job itself, never from the login shell that ran ``sbatch``
    (``--export=ALL`` carries its MASTER_ADDR, often ``localhost``, into the job): the first node of
    SLURM_JOB_NODELIST, and a port from ``port_candidates`` (``rendezvous_store`` settles which).
    ``FERCLUSTER_MASTER_ADDR`` / ``FERCLUSTER_MASTER_PORT`` override them (a site whose nodes talk over
    another interface). Under torchrun, or launched by hand, what the launcher set is used.
    """
    env = dict(os.environ if env is None else env)
    out = {}
    if slurm_launched(env):
        out["MASTER_ADDR"] = first_node(env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1")
        out["MASTER_PORT"] = str(port_candidates(job_key(env))[0])
    else:
        out = {"MASTER_ADDR": env.get("MASTER_ADDR", "127.0.0.1"), "MASTER_PORT": env.get("MASTER_PORT", "")}
        out["MASTER_PORT"] = out["MASTER_PORT"] or str(port_candidates(job_key(env))[0])
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        if env.get(f"FERCLUSTER_{key}"):
            out[key] = env[f"FERCLUSTER_{key}"]
    return out


def job_key(env: dict[str, str]) -> str:
    """The job and its attempt: SLURM's job id (an array task's own) and its restart count."""
    job = env.get("SLURM_JOB_ID", "0")
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return f"{job}.{env.get('SLURM_RESTART_COUNT', '0')}"


def port_candidates(key: str, n: int = PORT_TRIES) -> list[int]:
    """The rendezvous ports a job tries in turn: hashes of its whole id into PORT_BASE + PORT_RANGE
    (not id % range, where ids 123456 and 133456 meet). Every rank computes the same list."""
    digests = (hashlib.sha256(f"{key}/{i}".encode()).digest() for i in range(n))
    return [PORT_BASE + int.from_bytes(d[:8], "big") % PORT_RANGE for d in digests]


def rendezvous_store(info: DistInfo, addr: str, ports: list[int], folder: Path | None) -> Any:
    """The job's ``TCPStore``: rank 0 binds the first of ``ports`` that is free (binding is the check,
    so nothing can take the port between a check and its use) and publishes it in ``folder`` (the
    job's run directory, shared by its nodes); the other ranks read it there. Without a folder only
    the first port is tried, and a busy one is an error that says so."""
    from torch.distributed import TCPStore

    published = None if folder is None else Path(folder) / f".rendezvous-{ports[0]}.json"
    timeout = COLLECTIVE_TIMEOUT
    if info.rank != 0:
        port = _read_port(published, timeout.total_seconds()) if published is not None else ports[0]
        return TCPStore(addr, port, info.world_size, is_master=False, timeout=timeout)
    errors = []
    for port in ports if published is not None else ports[:1]:
        try:
            store = TCPStore(addr, port, info.world_size, is_master=True, timeout=timeout, wait_for_workers=False)
        except (RuntimeError, OSError) as exc:  # the port is taken (another job's rendezvous, a service)
            errors.append(f"{port}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            continue
        if published is not None:
            write_json(published, {"port": port, "addr": addr})
        return store
    raise TrainingError(
        f"rank 0 could bind none of the rendezvous ports ({'; '.join(errors)}); "
        "set FERCLUSTER_MASTER_PORT to a free port"
    )


def _read_port(published: Path, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return int(json.loads(published.read_text())["port"])
        except (OSError, ValueError, KeyError):
            if time.monotonic() > deadline:
                raise TrainingError(
                    f"rank 0 did not publish its rendezvous port in {published} within "
                    f"{timeout_s:.0f} s; see rank 0's log"
                ) from None
            time.sleep(0.2)


def setup(device: torch.device, info: DistInfo, rendezvous_dir: Path | None = None) -> None:
    """Join the job's process group when there are several processes (nothing for one).

    Under SLURM the rendezvous is ``rendezvous_store`` on the job's first node, with the port rank 0
    could bind, published in ``rendezvous_dir`` (the run directory). On CUDA the rank's device
    becomes the current one and is passed to the group, so NCCL and ``all_gather_object`` use it
    rather than cuda:0 on every rank.
    """
    if not info.enabled:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        return
    env = dict(os.environ)
    rdv = rendezvous_env(env)
    kwargs: dict[str, Any] = {"rank": info.rank, "world_size": info.world_size, "timeout": COLLECTIVE_TIMEOUT}
    if slurm_launched(env) and not env.get("FERCLUSTER_MASTER_PORT"):
        ports = port_candidates(job_key(env))
        kwargs["store"] = rendezvous_store(info, rdv["MASTER_ADDR"], ports, rendezvous_dir)
    os.environ.update(rdv)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device, **kwargs)
    else:
        dist.init_process_group("gloo", **kwargs)
    if "store" in kwargs and rendezvous_dir is not None:
        dist.barrier()  # every rank has read the published port: rank 0 removes it
        if info.rank == 0:
            (Path(rendezvous_dir) / f".rendezvous-{ports[0]}.json").unlink(missing_ok=True)


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
    return max_over_ranks(int(flag), info, device) > 0


def max_over_ranks(value: int, info: DistInfo, device: torch.device) -> int:
    """The largest of every rank's ``value`` (small, >= 0), on every rank (a host sync: call rarely)."""
    if not info.enabled:
        return value
    import torch.distributed as dist

    t = torch.tensor([float(value)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())
