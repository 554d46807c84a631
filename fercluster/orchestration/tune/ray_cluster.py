"""A private Ray cluster for one search: ports, temp dir, head and worker processes.

Ray's defaults collide when two users (or two searches) share a node: a fixed dashboard-agent port
(52365), a fixed head port (6379) and one ``/tmp/ray`` owned by whoever came first. Here every
port a Ray node listens on comes from one block of ``BLOCK`` consecutive ports, chosen from the
user id and probed free, and the temp dir is per user. The head and workers run as
``ray start --block`` child processes, so stopping them stops exactly this cluster (``ray stop``
would kill every Ray process of the user on the node).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fercluster.atomic import write_text
from fercluster.errors import FerclusterError

BLOCK = 200  # ports per Ray node: 10 named services, the rest for worker processes
FIRST = 20_000  # blocks are taken from [FIRST, FIRST + SLOTS * BLOCK)
SLOTS = 200
START_TIMEOUT_S = 120


class RayStartError(FerclusterError):
    """A Ray head or worker that does not come up."""


@dataclass(frozen=True)
class Ports:
    """The ports of one Ray node, all inside ``[base, base + BLOCK)``."""

    base: int

    @property
    def gcs(self) -> int:
        return self.base

    def flags(self) -> list[str]:
        """``ray start`` flags for every port the node listens on (GCS only on the head)."""
        b = self.base
        return [
            f"--node-manager-port={b + 1}",
            f"--object-manager-port={b + 2}",
            f"--dashboard-agent-listen-port={b + 3}",
            f"--dashboard-agent-grpc-port={b + 4}",
            f"--runtime-env-agent-port={b + 5}",
            f"--metrics-export-port={b + 6}",
            f"--min-worker-port={b + 20}",
            f"--max-worker-port={b + BLOCK - 1}",
        ]


def _port_free(port: int, host: str = "") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def choose_ports(uid: int | None = None, salt: int = 0) -> Ports:
    """A block of free ports: the user's own slot first (from the uid), then the next ones.

    Two users start from different slots, so they do not collide even when both probe at once;
    a second search of the same user on the same node finds the first one's block busy and moves on.
    """
    uid = os.getuid() if uid is None else uid
    first = (uid * 7919 + salt) % SLOTS
    for step in range(SLOTS):
        base = FIRST + ((first + step) % SLOTS) * BLOCK
        probe = [base, base + 1, base + 2, base + 3, base + 4, base + 5, base + 6, base + 20]
        if all(_port_free(p) for p in probe):
            return Ports(base)
    raise RayStartError(
        f"no free block of {BLOCK} ports in {FIRST}-{FIRST + SLOTS * BLOCK}; "
        "free some ports or stop stale Ray processes of yours (`ray stop`)"
    )


def temp_dir(tag: str = "") -> Path:
    """A Ray temp dir of this user (and search): ``/tmp/ray-<uid>[-<tag>]``.

    Per user so that a second user does not find the first one's ``/tmp/ray``; per search so that
    Ray's "current cluster" file of one search never points another at the wrong cluster. Short:
    Ray's socket paths below it must stay under 107 characters.
    """
    name = f"ray-{os.getuid()}" + (f"-{tag}" if tag else "")
    return Path("/tmp") / name


def node_ip() -> str:
    """The address other nodes reach this one at (the one Ray itself would pick)."""
    from ray.util import get_node_ip_address

    return get_node_ip_address()


def _ray_executable() -> str:
    found = Path(sys.executable).with_name("ray")
    return str(found) if found.exists() else (shutil.which("ray") or "ray")


def auth_token(folder: Path) -> Path:
    """The search's own Ray token (``folder/ray_auth_token``, mode 0600), created on first use.

    Ray's token authentication keeps other users of the node (who can reach the ports) out of
    this cluster; the token lives with the search's state, which every node of the allocation reads.
    """
    path = Path(folder) / "ray_auth_token"
    if not path.exists():
        write_text(path, secrets.token_hex(32), mode=0o600)  # private from its first byte
    return path


def auth_env(token: Path) -> dict[str, str]:
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}


def use_auth(token: Path) -> None:
    """Make this process (a driver about to ``ray.init``) present the search's token."""
    os.environ.update(auth_env(token))
    try:  # Ray reads its auth mode once per process: refresh it (as ray itself does on enabling)
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):
        pass


def _env(token: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.pop("RAY_ADDRESS", None)
    env.update(auth_env(token))
    return env


@dataclass
class RayNode:
    """A ``ray start --block`` child process; ``stop()`` ends it and every Ray process it started."""

    process: subprocess.Popen
    address: str  # "ip:port" of the head's GCS
    log: Path

    def stop(self, grace_s: float = 20) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def alive(self) -> bool:
        return self.process.poll() is None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies (Linux).

    ``ray start --block`` then stops the Ray processes it started, so a driver killed with
    SIGKILL does not leave a Ray cluster behind.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _spawn(args: list[str], log: Path, token: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # a session of its own: a Ctrl-C at the terminal reaches the driver (which then stops
        # this node in order) and not the node directly
        return subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_env(token),
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def start_head(
    num_cpus: int, num_gpus: int | None, log: Path, token: Path, tmp: Path | None = None, ip: str | None = None
) -> RayNode:
    """Start a Ray head on this node and wait until a driver can connect to it.

    ``num_gpus=None`` lets Ray count the GPUs it sees (``CUDA_VISIBLE_DEVICES`` under SLURM).
    """
    ip = ip or node_ip()
    ports = choose_ports()
    tmp = tmp or temp_dir()
    args = [
        _ray_executable(),
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        f"--node-ip-address={ip}",
        f"--port={ports.gcs}",
        f"--temp-dir={tmp}",
        f"--num-cpus={num_cpus}",
        "--include-dashboard=false",
        *_gpu_flag(num_gpus),
        *ports.flags(),
    ]
    node = RayNode(_spawn(args, log, token), f"{ip}:{ports.gcs}", log)
    _wait_listening(node, ip, ports.gcs)
    return node


def start_worker(
    address: str, num_cpus: int, num_gpus: int | None, log: Path, token: Path, ip: str | None = None
) -> RayNode:
    """Join this node to the head at ``address`` (the call returns once the process runs)."""
    ip = ip or node_ip()
    ports = choose_ports(salt=1)
    args = [
        _ray_executable(),
        "start",
        "--block",
        "--disable-usage-stats",
        f"--address={address}",
        f"--node-ip-address={ip}",
        f"--num-cpus={num_cpus}",
        *_gpu_flag(num_gpus),
        *ports.flags(),
    ]
    return RayNode(_spawn(args, log, token), address, log)


def _gpu_flag(num_gpus: int | None) -> list[str]:
    return [] if num_gpus is None else [f"--num-gpus={num_gpus}"]


def _wait_listening(node: RayNode, ip: str, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not node.alive():
            raise RayStartError(
                f"ray head exited with code {node.process.returncode}; see {node.log}:\n{_tail(node.log)}"
            )
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            if sock.connect_ex((ip, port)) == 0:
                return
        time.sleep(0.5)
    node.stop()
    raise RayStartError(
        f"ray head at {ip}:{port} not listening after {START_TIMEOUT_S} s; see {node.log}:\n{_tail(node.log)}"
    )


def wait_for_nodes(count: int, timeout_s: float = START_TIMEOUT_S) -> int:
    """Block until ``count`` Ray nodes are alive in the connected cluster; returns the number seen."""
    import ray

    deadline = time.monotonic() + timeout_s
    alive = 0
    while time.monotonic() < deadline:
        alive = sum(1 for n in ray.nodes() if n.get("Alive"))
        if alive >= count:
            return alive
        time.sleep(1)
    return alive


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
