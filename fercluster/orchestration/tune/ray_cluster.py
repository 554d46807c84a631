"""A private Ray cluster for one search: ports, temp dir, head and worker processes.

Ray's defaults collide when two users (or two searches) share a node: a fixed head port (6379), a
fixed dashboard-agent port (52365), one range of worker ports and one predictable ``/tmp/ray``.
Here Ray binds every port itself at 0 (``SELF_BOUND``): the kernel picks a free port at the bind,
so nothing can take it between a check and the bind, and Ray reports the port it got; the head's
address is read from its own temp dir once it is up. The one port Ray cannot bind at 0 is the Ray
client server's (started on the head only where ``ray[client]`` is installed; the search never
uses it): it is drawn from ``CLIENT_PORTS`` in an order seeded by the job, and a head that stops
because that port was taken meanwhile is started again on the next one. Every node's temp dir is
in a folder of ``mkdtemp``'s (mode 0700, a random name, under ``$TMPDIR`` when short enough),
removed when the node stops. The head and workers run as ``ray start --block`` child processes, so stopping them
stops exactly this cluster (``ray stop`` would kill every Ray process of the user on the node).
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from fercluster.atomic import write_text
from fercluster.errors import FerclusterError

START_TIMEOUT_S = 120
START_TRIES = 5  # heads started before giving up, each on another client port
SELF_BOUND = (  # every port of a Ray node but the GCS's (``--port=0``, head only): Ray binds them at 0
    "--node-manager-port=0",
    "--object-manager-port=0",
    "--dashboard-agent-listen-port=0",
    "--dashboard-agent-grpc-port=0",
    "--runtime-env-agent-port=0",
    "--metrics-export-port=0",
    "--min-worker-port=0",  # 0 and 0: each worker binds a port of the kernel's choosing
    "--max-worker-port=0",
)
CLIENT_PORTS = range(20_000, 60_000)  # the Ray client server's port, where ray[client] is installed
ADDRESS_FILE = "ray_current_cluster"  # what `ray start` writes in its temp dir once the node is up
# Ray's sockets lie at <temp dir>/session_<date 26>_<pid 7>/sockets/plasma_store.N (67 characters)
# and a socket path has at most 107: the temp dir gets the rest, 40.
TEMP_MAX = 40
RAY_DIR = "r"  # Ray's temp dir inside the private folder: Ray makes its own temp dir mode 0777
_PORT_TAKEN = re.compile(r"address already in use|eaddrinuse|failed to bind|ray_client_server", re.IGNORECASE)


class RayStartError(FerclusterError):
    """A Ray head or worker that does not come up."""


def private_temp_dir() -> Path:
    """A new folder for one Ray node's temp dir (``RAY_DIR`` inside it): ``mkdtemp`` (mode 0700, a
    random name), under ``$TMPDIR`` (SLURM's per-job folder at many sites) when the path stays short
    enough, else under ``/tmp``.

    Private so that no other user can reach the node's sockets and logs (Ray opens its own temp
    dir to all, this folder above it stays closed) or create the folder first; new at every start
    so that Ray's "current cluster" file of one node never points another at the wrong cluster.
    Removed by ``RayNode.stop``.
    """
    base = os.path.abspath(os.environ.get("TMPDIR") or "/tmp")
    if len(base) + len(f"/ray-XXXXXXXX/{RAY_DIR}") > TEMP_MAX or not os.path.isdir(base):
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix="ray-", dir=base))


def client_ports(seed: str) -> Iterator[int]:
    """The Ray client server's ports to try: all of ``CLIENT_PORTS`` in an order of this user and
    ``seed`` (the job), the ones that are busy now left out (a port may still be taken before Ray
    binds it: ``start_head`` then tries the next)."""
    ports = list(CLIENT_PORTS)
    random.Random(f"{os.getuid()}:{seed}").shuffle(ports)
    return (port for port in ports if _port_free(port))


def _port_free(port: int, host: str = "") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _client_flags(ports: Iterator[int] | None) -> list[str]:
    """``--ray-client-server-port`` where ray[client] is installed (Ray starts it, on 10001 unless told)."""
    return [] if ports is None else [f"--ray-client-server-port={next(ports)}"]


def _has_ray_client() -> bool:
    return importlib.util.find_spec("grpc") is not None  # what Ray itself checks for the client server


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
    """A ``ray start --block`` child process; ``stop()`` ends it and every Ray process it started,
    then removes its temp dir."""

    process: subprocess.Popen
    address: str  # "ip:port" of the head's GCS
    log: Path
    tmp: Path | None = None  # the private folder of its temp dir (``private_temp_dir``)

    def stop(self, grace_s: float = 20) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

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
    num_cpus: int, num_gpus: int | None, log: Path, token: Path, ip: str | None = None, seed: str = ""
) -> RayNode:
    """Start a Ray head on this node and wait until a driver can connect to it.

    ``num_gpus=None`` lets Ray count the GPUs it sees (``CUDA_VISIBLE_DEVICES`` under SLURM).
    ``seed`` (the job) orders the client server's ports. A head that stops because a port it was
    given was taken meanwhile is started again (``START_TRIES`` in all); any other failure raises.
    """
    ip = ip or node_ip()
    ports = client_ports(seed) if _has_ray_client() else None
    attempt = 0
    while True:
        attempt += 1
        tmp = private_temp_dir()
        args = [
            _ray_executable(),
            "start",
            "--head",
            "--block",
            "--disable-usage-stats",
            f"--node-ip-address={ip}",
            "--port=0",
            f"--temp-dir={tmp / RAY_DIR}",
            f"--num-cpus={num_cpus}",
            "--include-dashboard=false",
            *_gpu_flag(num_gpus),
            *SELF_BOUND,
            *_client_flags(ports),
        ]
        start = log.stat().st_size if log.exists() else 0
        node = RayNode(_spawn(args, log, token), "", log, tmp)
        try:
            node.address = f"{ip}:{_wait_ready(node, start)}"
            return node
        except RayStartError:
            node.stop()
            if attempt == START_TRIES or not _PORT_TAKEN.search(_log_since(log, start)):
                raise


def start_worker(
    address: str, num_cpus: int, num_gpus: int | None, log: Path, token: Path, ip: str | None = None
) -> RayNode:
    """Join this node to the head at ``address`` (the call returns once the process runs)."""
    ip = ip or node_ip()
    tmp = private_temp_dir()
    args = [
        _ray_executable(),
        "start",
        "--block",
        "--disable-usage-stats",
        f"--address={address}",
        f"--node-ip-address={ip}",
        f"--temp-dir={tmp / RAY_DIR}",
        f"--num-cpus={num_cpus}",
        *_gpu_flag(num_gpus),
        *SELF_BOUND,
    ]
    return RayNode(_spawn(args, log, token), address, log, tmp)


def _gpu_flag(num_gpus: int | None) -> list[str]:
    return [] if num_gpus is None else [f"--num-gpus={num_gpus}"]


def _wait_ready(node: RayNode, start: int) -> int:
    """The port of the head's GCS, once ``ray start`` wrote its address in the node's own temp dir
    (a node that answers on a port could be another's; this file is this node's alone)."""
    assert node.tmp is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        port = _address_port(node.tmp / RAY_DIR / ADDRESS_FILE)
        if port is not None:
            return port
        if not node.alive():
            raise RayStartError(
                f"ray head exited with code {node.process.returncode}; see {node.log}:\n{_tail(node.log, start)}"
            )
        time.sleep(0.5)
    raise RayStartError(f"ray head not up after {START_TIMEOUT_S} s; see {node.log}:\n{_tail(node.log, start)}")


def _address_port(path: Path) -> int | None:
    """The port of ``host:port`` in ``path``; None while it is missing or half written."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    port = text.rpartition(":")[2]
    return int(port) if port.isdigit() else None


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


def _log_since(path: Path, start: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, start: int = 0, lines: int = 20) -> str:
    return "\n".join(_log_since(path, start).splitlines()[-lines:]) or "(no log)"
