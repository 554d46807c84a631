"""The private Ray cluster of a search (``tune/ray_cluster.py``): ports Ray binds itself, a head
started again when a port it was given is taken between the check and the bind, a private temp
dir removed at the end.

A stand-in ``ray`` executable (``FAKE_RAY``) behaves as ``ray start --block`` does for what is
tested here: it binds the client server's port when given one (and stops with "Address already in
use" when that is taken), binds its GCS at port 0, writes ``host:port`` to ``ray_current_cluster``
in its temp dir, and blocks. One test starts a real Ray head and runs a task on it (about 11 s).
"""

from __future__ import annotations

import os
import socket
import stat
import sys
import tempfile
from pathlib import Path

import pytest

from fercluster.orchestration.tune import ray_cluster

FAKE_RAY = """\
import signal, socket, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
print("fake ray start", " ".join(sys.argv[1:]), flush=True)
if "{fail}":
    print("{fail}", flush=True)
    sys.exit(1)
held = []
if "--ray-client-server-port" in args:
    client = socket.socket()
    try:
        client.bind(("", int(args["--ray-client-server-port"])))
    except OSError as exc:
        print(f"ray_client_server: {{exc}}", flush=True)  # [Errno 98] Address already in use
        sys.exit(1)
    client.listen()
    held.append(client)
gcs = socket.socket()
gcs.bind(("127.0.0.1", int(args.get("--port", "0"))))
gcs.listen()
import os
os.makedirs(args["--temp-dir"], exist_ok=True)
with open(args["--temp-dir"] + "/ray_current_cluster", "w") as f:
    f.write(f"127.0.0.1:{{gcs.getsockname()[1]}}")
while True:
    signal.pause()
"""


def fake_ray(tmp_path: Path, monkeypatch, fail: str = "", client: bool = True) -> Path:
    """Put the stand-in ``ray`` in place (``fail``: the message it stops with at once)."""
    path = tmp_path / "ray"
    path.write_text(f"#!{sys.executable}\n" + FAKE_RAY.format(fail=fail))
    path.chmod(0o755)
    monkeypatch.setattr(ray_cluster, "_ray_executable", lambda: str(path))
    monkeypatch.setattr(ray_cluster, "_has_ray_client", lambda: client)
    return path


def starts(log: Path) -> list[dict[str, str]]:
    """The flags of each ``ray start`` the stand-in saw, in order."""
    lines = [ln.split(" ", 3)[3] for ln in log.read_text().splitlines() if ln.startswith("fake ray start ")]
    return [dict(a.split("=", 1) for a in line.split() if "=" in a) for line in lines]


@pytest.fixture
def token(tmp_path):
    return ray_cluster.auth_token(tmp_path)


def test_a_head_whose_port_is_taken_after_the_check_starts_again_on_another(tmp_path, monkeypatch, token):
    """The race of check-then-bind: the port is free at the check, taken before Ray binds it."""
    fake_ray(tmp_path, monkeypatch)
    monkeypatch.setattr(ray_cluster, "_port_free", lambda port, host="": True)  # every check says free
    first = next(ray_cluster.client_ports("job-7"))
    log = tmp_path / "head.log"
    with socket.socket() as busy:  # ... and another process has it when the head binds it
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("", first))
        busy.listen()
        node = ray_cluster.start_head(1, None, log, token, ip="127.0.0.1", seed="job-7")
    try:
        seen = starts(log)
        assert [int(s["--ray-client-server-port"]) for s in seen][0] == first and len(seen) == 2
        assert int(seen[1]["--ray-client-server-port"]) != first
        assert node.alive() and node.address.startswith("127.0.0.1:")
        with socket.create_connection(("127.0.0.1", int(node.address.split(":")[1])), timeout=5):
            pass  # the address is the GCS this head bound, read from its own temp dir
        assert not Path(seen[0]["--temp-dir"]).parent.exists()  # the first try's temp dir went with it
    finally:
        node.stop()


def test_every_port_is_bound_by_ray_itself(tmp_path, monkeypatch, token):
    """No port is chosen here but the client server's: the GCS and all others are Ray's at 0."""
    fake_ray(tmp_path, monkeypatch, client=False)
    log = tmp_path / "head.log"
    node = ray_cluster.start_head(1, None, log, token, ip="127.0.0.1")
    try:
        (flags,) = starts(log)
        ports = {k: v for k, v in flags.items() if k.endswith("-port") or k == "--port"}
        assert ports and set(ports.values()) == {"0"}, ports
        assert "--ray-client-server-port" not in flags  # not installed: Ray does not start it
    finally:
        node.stop()


def test_the_client_ports_cover_the_range_in_an_order_of_the_job(monkeypatch):
    monkeypatch.setattr(ray_cluster, "_port_free", lambda port, host="": True)
    a, b = list(ray_cluster.client_ports("job-1")), list(ray_cluster.client_ports("job-2"))
    assert sorted(a) == list(ray_cluster.CLIENT_PORTS) and a != b
    assert a == list(ray_cluster.client_ports("job-1"))  # the same job tries the same order


def test_a_head_that_fails_for_another_reason_is_not_started_again(tmp_path, monkeypatch, token):
    fake_ray(tmp_path, monkeypatch, fail="ValueError: bad --num-cpus")
    log = tmp_path / "head.log"
    with pytest.raises(ray_cluster.RayStartError, match="bad --num-cpus"):
        ray_cluster.start_head(1, None, log, token, ip="127.0.0.1", seed="job-7")
    (flags,) = starts(log)
    assert not Path(flags["--temp-dir"]).parent.exists()


def test_the_temp_dir_is_private_new_each_time_and_short(monkeypatch):
    short = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))  # /tmp/tXXXXXXXX: short enough
    try:
        monkeypatch.setenv("TMPDIR", str(short))
        a, b = ray_cluster.private_temp_dir(), ray_cluster.private_temp_dir()
        assert a.parent == short and b.parent == short and a != b
        assert stat.S_IMODE(a.stat().st_mode) == 0o700 and a.stat().st_uid == os.getuid()
        assert a.name != f"ray-{os.getuid()}" and a.name.startswith("ray-")  # not the guessable ray-<uid>
        monkeypatch.setenv("TMPDIR", str(short / ("x" * 40)))  # Ray's socket paths would pass 107
        (short / ("x" * 40)).mkdir()
        c = ray_cluster.private_temp_dir()
        assert c.parent == Path("/tmp") and len(str(c / ray_cluster.RAY_DIR)) <= ray_cluster.TEMP_MAX
        c.rmdir()
    finally:
        for path in sorted(short.rglob("*"), reverse=True):
            path.rmdir()
        short.rmdir()


def test_a_worker_gets_its_own_temp_dir_removed_when_it_stops(tmp_path, monkeypatch, token):
    fake_ray(tmp_path, monkeypatch)
    log = tmp_path / "worker.log"
    node = ray_cluster.start_worker("127.0.0.1:1", 1, None, log, token, ip="127.0.0.1")
    tmp = node.tmp
    assert tmp is not None and stat.S_IMODE(tmp.stat().st_mode) == 0o700
    flags = dict(a.split("=", 1) for a in node.process.args if "=" in a)  # what it was started with
    node.stop()
    assert Path(flags["--temp-dir"]).parent == tmp and not tmp.exists()
    assert {flags[f.split("=")[0]] for f in ray_cluster.SELF_BOUND} == {"0"} and "--port" not in flags


def test_a_real_head_binds_its_own_ports_and_runs_a_task(tmp_path, token):
    """Ray itself: ports at 0 (workers included), its address from the temp dir, the dir removed."""
    import ray

    from fercluster.orchestration.tune.search import connect, disconnect

    node = ray_cluster.start_head(1, 0, tmp_path / "head.log", token, ip="127.0.0.1", seed="real")
    try:
        assert node.tmp is not None and stat.S_IMODE(node.tmp.stat().st_mode) == 0o700  # Ray's dir is 0777 inside
        assert (node.tmp / ray_cluster.RAY_DIR / ray_cluster.ADDRESS_FILE).exists()
        connect(node.address, token)
        assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42  # a worker bound its port at 0
    finally:
        disconnect()
        node.stop()
    assert not node.tmp.exists()
