"""``fercluster.lock.file_lock``: two processes contend, the loser names the holder, a file system
without locks gives a clear error."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from fercluster import lock
from fercluster.errors import FerclusterError

HOLDER = """\
import sys
from fercluster.lock import file_lock
with file_lock(sys.argv[1], what="test holder"):
    print("held", flush=True)
    sys.stdin.readline()  # hold until the test says so (or closes stdin)
"""


@pytest.fixture
def holder(tmp_path):
    """Start another process that holds ``tmp_path/x.lock``; yields (process, lock path)."""
    path = tmp_path / "x.lock"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc, path
    finally:
        release(proc)


def release(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_a_busy_lock_names_its_holder_and_what_to_do(holder):
    proc, path = holder
    with pytest.raises(lock.LockBusy) as info:
        with lock.file_lock(path, timeout_s=0, what="sweep demo"):
            pytest.fail("took a lock another process holds")
    host = socket.gethostname()
    message = str(info.value)
    assert message.startswith(f"sweep demo: the lock {path} is held by process {proc.pid} on host {host} since ")
    assert f"kill {proc.pid} on {host}" in message and "(waited" not in message
    assert info.value.holder["pid"] == proc.pid and info.value.path == path
    assert isinstance(info.value, FerclusterError)  # the CLI turns it into a one-line error


def test_a_waiter_gives_up_after_its_timeout(holder):
    proc, path = holder
    start = time.monotonic()
    with pytest.raises(lock.LockBusy, match=rf"held by process {proc.pid} .*\(waited 0\.5 s\)"):
        with lock.file_lock(path, timeout_s=0.5):
            pass
    assert 0.5 <= time.monotonic() - start < 5


@pytest.mark.parametrize("timeout_s", [None, 30], ids=["blocking", "timeout"])
def test_a_waiter_gets_the_lock_once_the_holder_lets_go(holder, timeout_s):
    proc, path = holder
    threading.Timer(0.5, release, args=(proc,)).start()
    start = time.monotonic()
    with lock.file_lock(path, timeout_s=timeout_s):
        assert time.monotonic() - start >= 0.4  # not before the holder let go
        assert lock.holder(path)["pid"] != proc.pid


def test_the_holder_is_recorded_while_held_and_cleared_after(tmp_path):
    path = tmp_path / "deep" / "x.lock"  # folders are created
    with lock.file_lock(path, timeout_s=0):
        record = json.loads(path.read_text())
        assert record["pid"] > 0 and record["host"] == socket.gethostname() and "T" in record["started"]
    assert path.read_text() == ""


def test_a_lock_file_left_behind_does_not_block(tmp_path):
    path = tmp_path / "x.lock"
    path.write_text(json.dumps({"pid": 999999, "host": "gone", "started": "2020-01-01T00:00:00"}))
    with lock.file_lock(path, timeout_s=0):
        assert lock.holder(path)["host"] == socket.gethostname()
    path.write_text("12345\n")  # the older format: a pid only
    assert lock.holder(path) == {"pid": 12345}


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP])
def test_a_file_system_without_locks_is_a_clear_error(tmp_path, monkeypatch, code):
    def no_locks(fd, operation):  # what flock answers on Lustre mounted noflock, NFS without lockd
        raise OSError(code, "No locks available")

    monkeypatch.setattr(lock.fcntl, "flock", no_locks)
    path = tmp_path / "x.lock"
    for timeout_s in (None, 0, 1):
        with pytest.raises(lock.LockError) as info:
            with lock.file_lock(path, timeout_s=timeout_s, what="sweep demo"):
                pytest.fail("locked without flock")
        assert str(info.value).startswith(f"cannot lock {path} (sweep demo): the file system does not support file "
                                          "locks (No locks available); put ")  # fmt: skip
        assert "-o flock" in str(info.value) and not isinstance(info.value, lock.LockBusy)


def test_other_flock_errors_are_not_hidden(tmp_path, monkeypatch):
    def broken(fd, operation):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(lock.fcntl, "flock", broken)
    with pytest.raises(OSError, match="Bad file descriptor"):
        with lock.file_lock(tmp_path / "x.lock", timeout_s=0):
            pass


# -- claim: across hosts, with stale claims taken over ------------------------------------------
def test_a_claim_is_exclusive_and_names_its_holder(tmp_path):
    path = tmp_path / "x.claim"
    with lock.claim(path, timeout_s=0, what="sweep demo"):
        record = json.loads(path.read_text())
        assert record["host"] == socket.gethostname() and record["process_start"] == lock.process_start(os.getpid())
        with pytest.raises(lock.LockBusy, match="sweep demo: the lock .* is held by process"):
            with lock.claim(path, timeout_s=0.3, what="sweep demo"):
                pytest.fail("claimed twice")
    assert not path.exists()


@pytest.mark.parametrize(
    ("record", "age_s", "stale"),
    [
        ({"pid": 2**22 + 7, "host": None}, 0, True),  # this host, the process is gone
        ({"pid": None, "host": None, "process_start": 1.0}, 0, True),  # this host, the pid reused since
        ({"pid": None, "host": None}, 0, False),  # this host, alive: busy
        ({"pid": 4242, "host": "login2"}, 10, False),  # another host, just seen: busy
        ({"pid": 4242, "host": "login2"}, 600, False),  # another host, old mtime: not seen unchanged long enough
    ],
)
def test_stale_claims_are_taken_over(tmp_path, record, age_s, stale):
    path = tmp_path / "x.claim"
    record = {**record, "pid": record["pid"] or os.getpid(), "host": record["host"] or socket.gethostname()}
    path.write_text(json.dumps(record))
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    if stale:
        with lock.claim(path, timeout_s=0):
            assert lock.holder(path)["pid"] == os.getpid() and lock.holder(path)["host"] == socket.gethostname()
    else:
        with pytest.raises(lock.LockBusy, match=f"held by process {record['pid']} on host {record['host']}"):
            with lock.claim(path, timeout_s=0):
                pass
        assert json.loads(path.read_text()) == record  # a live claim is never removed


def test_a_claim_that_cannot_be_created_is_a_clear_error(tmp_path, monkeypatch):
    real = os.open

    def read_only(path, flags, mode=0o777):  # a read-only mount, or a folder of another user
        if str(path).endswith(".claim"):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(path, flags, mode)

    monkeypatch.setattr(lock.os, "open", read_only)
    with pytest.raises(lock.LockError, match=r"cannot create the lock file .* \(sweep demo\): Read-only file system"):
        with lock.claim(tmp_path / "x.claim", what="sweep demo"):
            pass


CONTENDER = """\
import pathlib, sys, time
from fercluster import lock
path, name, folder = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])

def log(line):
    with open(folder / "log", "a") as f:
        f.write(line + "\\n")

def wait_for(marker):  # an event between the processes, not a race of sleeps
    deadline = time.monotonic() + 60
    while not (folder / marker).exists():
        assert time.monotonic() < deadline, f"{name}: no {marker}"
        time.sleep(0.01)

def judged_then_wait(p):  # B: judged the claim stale; A takes it over before B goes on
    (folder / "B judged").touch()
    wait_for("A in")

if name == "B":
    lock._before_take_over = judged_then_wait
try:
    with lock.claim(path, timeout_s=0):
        log(f"{name} in")
        (folder / f"{name} in").touch()
        if name == "A":
            wait_for("B done")
        log(f"{name} out")
except lock.LockBusy:
    log(f"{name} busy")
(folder / f"{name} done").touch()
"""


def test_two_processes_taking_over_one_stale_claim_are_never_both_in(tmp_path):
    """B judges the claim stale, A takes it over and enters, then B goes on with its takeover."""
    path = tmp_path / "x.claim"
    path.write_text(json.dumps({"pid": 2**22 + 7, "host": socket.gethostname()}))  # this host, process gone
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def start(name):
        return subprocess.Popen([sys.executable, "-c", CONTENDER, str(path), name, str(tmp_path)], env=env)

    b = start("B")
    deadline = time.monotonic() + 60
    while not (tmp_path / "B judged").exists():
        assert b.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    a = start("A")
    assert a.wait(timeout=60) == 0 and b.wait(timeout=60) == 0
    assert (tmp_path / "log").read_text().splitlines() == ["A in", "B busy", "A out"]
    assert not path.exists() and not list(tmp_path.glob("x.claim.stale-*"))  # nothing left behind


# -- the lease: heartbeat, fencing, staleness from observed change ------------------------------
class FakeTime:
    """``lock._clock`` and ``lock._sleep``: time moves only when the claim waits; ``on_sleep`` runs then."""

    def __init__(self, monkeypatch, on_sleep=lambda: None):
        self.now, self.on_sleep = 1000.0, on_sleep
        monkeypatch.setattr(lock, "_clock", lambda: self.now)
        monkeypatch.setattr(lock, "_sleep", self.sleep)
        monkeypatch.setattr(lock, "POLL_S", 10.0)  # fewer polls; what is seen does not depend on it

    def sleep(self, seconds):
        self.now += seconds
        self.on_sleep()


def foreign_claim(path, beat=0, mtime_offset_s=0.0):
    path.write_text(json.dumps({"pid": 4242, "host": "login2", "token": "theirs", "beat": beat}))
    os.utime(path, (time.time() + mtime_offset_s, time.time() + mtime_offset_s))


@pytest.mark.parametrize("mtime_offset_s", [-10 * 86400, 0, 86400], ids=["our-clock-ahead", "same", "our-clock-behind"])
def test_a_foreign_claim_that_keeps_changing_is_never_stale_whatever_the_clocks(tmp_path, monkeypatch, mtime_offset_s):
    path = tmp_path / "x.claim"
    beats = iter(range(1, 10**6))
    clock = FakeTime(monkeypatch, on_sleep=lambda: foreign_claim(path, next(beats), mtime_offset_s))
    foreign_claim(path, 0, mtime_offset_s)
    with pytest.raises(lock.LockBusy, match="held by process 4242 on host login2"):
        with lock.claim(path, timeout_s=1000, stale_s=120):
            pytest.fail("took over a live claim")
    assert clock.now >= 2000 and json.loads(path.read_text())["token"] == "theirs"


@pytest.mark.parametrize("mtime_offset_s", [-10 * 86400, 86400], ids=["our-clock-ahead", "our-clock-behind"])
def test_a_foreign_claim_unchanged_for_stale_s_here_is_taken_over(tmp_path, monkeypatch, mtime_offset_s):
    path = tmp_path / "x.claim"
    clock = FakeTime(monkeypatch)
    foreign_claim(path, 7, mtime_offset_s)
    with lock.claim(path, timeout_s=1000, stale_s=120) as lease:
        assert clock.now - 1000 >= 120  # not before it was seen unchanged for stale_s
        assert lease.owned() and json.loads(path.read_text())["token"] == lease.record["token"]


class Stops:
    """A stop event for ``lock._heartbeat`` that lets it beat ``n`` times."""

    def __init__(self, n):
        self.n = n

    def wait(self, timeout):
        self.n -= 1
        return self.n < 0


def test_the_heartbeat_retries_after_a_failed_write(tmp_path, monkeypatch):
    real, calls = os.pwrite, []

    def flaky(fd, data, offset):  # the first beat meets an NFS hiccup
        calls.append(data)
        if len(calls) == 1:
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, data, offset)

    path = tmp_path / "x.claim"
    with lock.claim(path, timeout_s=0) as lease:
        monkeypatch.setattr(lock.os, "pwrite", flaky)
        lock._heartbeat(lease, Stops(3), 0)
        assert (lease.failures, lease.beats) == (1, 2) and json.loads(path.read_text())["beat"] == 2
        assert lease.owned() and lease.lost is None
        lease.check()


def test_a_heartbeat_silent_for_half_the_stale_time_loses_the_claim(tmp_path, monkeypatch):
    def broken(fd, data, offset):
        raise OSError(errno.EIO, "Input/output error")

    clock = FakeTime(monkeypatch)
    with lock.claim(tmp_path / "x.claim", timeout_s=0, stale_s=120) as lease:
        monkeypatch.setattr(lock.os, "pwrite", broken)
        assert not lease.beat() and lease.owned()  # one failure: still within the lease
        clock.now += 61
        assert not lease.beat() and not lease.owned()
        with pytest.raises(lock.LockLost, match=r"has not been written for 61 s \(last error: Input/output error\)"):
            lease.check()


def test_a_claim_taken_over_by_another_host_fails_the_fencing_check(tmp_path):
    path = tmp_path / "x.claim"
    with lock.claim(path, timeout_s=0) as lease:
        lease.check()
        path.unlink()
        foreign_claim(path)  # another login node judged it stale and took it over
        assert not lease.owned()
        with pytest.raises(lock.LockLost, match="stopped before submitting more"):
            lease.check()
        assert not lease.beat() and "taken over" in lease.lost
    assert json.loads(path.read_text())["token"] == "theirs"  # the new holder's claim is left alone


def test_the_sweep_lock_yields_the_lease_to_check_before_each_sbatch(tmp_path):
    from fercluster.orchestration.store.state import sweep_lock

    with sweep_lock(tmp_path, timeout_s=0) as lease:
        lease.check()
        (tmp_path / ".claim").unlink()
        with pytest.raises(lock.LockLost):
            lease.check()
