"""What the simulation runs the coordinator in: the model's clock, and login nodes sharing one folder.

``wall_clock`` makes the coordinator's modules read the model's clock (pending records' ages,
``slurm.pending_bound_s``), skewed per login node. ``Hosts`` puts several login nodes in one
process: each has its own host name (``lock.socket``), its own node-local flock (NFS
``local_lock``: ``jobs/<sweep>/.lock.<host>``), its clock skew, and one monotonic clock that runs
with the model's (a coordinator waiting for the lock lets the cluster's time pass, and every live
holder's heartbeat thread beats meanwhile, unless that holder is ``stalled``: its process frozen).
"""

from __future__ import annotations

import contextlib
import time as _time
from pathlib import Path
from typing import Any, Callable, Iterator

from fercluster import lock
from fercluster.orchestration.simulate import SimSlurm
from fercluster.orchestration.store import state as state_mod
from fercluster.orchestration.submit import coordinator

# the coordinator's modules that read the wall clock (time.time)
WALL_CLOCK_READERS = (
    "fercluster.orchestration.submit.arrays",
    "fercluster.orchestration.submit.recovery",
    "fercluster.orchestration.submit.aggregate",
    "fercluster.orchestration.store.state",
    "fercluster.orchestration.store.known",
    "fercluster.orchestration.watch.stall",
)
HOST_TIMEOUT_S = {"login1": 600.0}  # the lock wait of each login node's sweep (others: 300 s, past STALE_S)
POLL_S = 5.0  # a lock waiter's poll (0.2 s in fercluster.lock): coarser here, each poll steps the model


class _Time:
    """The ``time`` module as one module sees it: ``time()`` from ``now``, the rest the real one."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def time(self) -> float:
        return self._now()

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


class _Socket:
    def __init__(self, host: Callable[[], str]) -> None:
        self._host = host

    def gethostname(self) -> str:
        return self._host()


class Hosts:
    """The login nodes of one program; ``model.host`` is the one running now."""

    def __init__(self, model: SimSlurm) -> None:
        self.model = model
        self.skew: dict[str, float] = {}  # host -> how far its wall clock is ahead of the model's
        self.inside: list[tuple[str, Any]] = []  # (host, lease) of each sweep holding the lock now
        self.stalled: set[str] = set()  # hosts whose process is frozen (no heartbeat)
        self.beats: dict[int, float] = {}  # id(lease) -> model time of its last heartbeat
        self.on_take_over: Callable[[], None] | None = None  # runs once, between a stale check and its takeover
        self.held: dict[str, Any] = {}  # host -> the lease it took before its sweep began (``holding``)
        model.guard = self.not_holding

    def wall(self) -> float:
        return self.model.sched.time() + self.skew.get(self.model.host, 0.0)

    def mono(self) -> float:
        return 10_000.0 + self.model.sched.now

    def sleep(self, seconds: float) -> None:
        """A lock waiter sleeps: the cluster's time passes, live holders beat every ``HEARTBEAT_S``."""
        sched = self.model.sched
        sched.step(seconds)
        for host, lease in self.inside:
            last = self.beats.setdefault(id(lease), sched.now)
            if host not in self.stalled and sched.now - last >= lock.HEARTBEAT_S:
                lease.beat()
                self.beats[id(lease)] = sched.now

    def not_holding(self) -> str:
        """Why the host running an sbatch now does not hold the lock ("" when it does): its lease's
        token must be the one in the claim file."""
        host = self.model.host
        leases = [lease for h, lease in self.inside if h == host]
        if not leases:
            return "it holds no lease"
        now = lock.holder(leases[-1].path).get("token")
        return "" if now == leases[-1].record["token"] else f"the claim is another's (token {now})"

    @contextlib.contextmanager
    def holding(self, host: str, jobs_dir: Path) -> Iterator[Any]:
        """``host`` takes the sweep's lock now and keeps it (its sweep, run later, uses this lease)."""
        taken = state_mod.sweep_lock(jobs_dir, HOST_TIMEOUT_S.get(host, 300.0))
        with self.as_host(host):
            lease = taken.__enter__()
        self.inside.append((host, lease))
        self.held[host] = lease
        try:
            yield lease
        finally:
            self.inside.remove((host, lease))
            del self.held[host]
            with self.as_host(host):  # released as that host
                taken.__exit__(None, None, None)

    @contextlib.contextmanager
    def as_host(self, host: str, skew_s: float = 0.0) -> Iterator[None]:
        saved = self.model.host
        self.model.host, self.skew[host] = host, skew_s
        try:
            yield
        finally:
            self.model.host = saved

    @contextlib.contextmanager
    def patched(self) -> Iterator[None]:
        """Every patch of the program: the clocks, the host names, the node-local flocks, the lease log."""
        real_sweep_lock, real_file_lock, real_take_over = state_mod.sweep_lock, state_mod.file_lock, lock._take_over

        @contextlib.contextmanager
        def sweep_lock(jobs_dir: Path, timeout_s: float = 600.0) -> Iterator[Any]:
            host = self.model.host
            if host in self.held:  # taken before (``holding``)
                yield self.held[host]
                return
            with real_sweep_lock(jobs_dir, HOST_TIMEOUT_S.get(host, 300.0)) as lease:
                self.inside.append((host, lease))
                try:
                    yield lease
                finally:
                    self.inside.remove((host, lease))

        def file_lock(path: Path, **kw: Any) -> Any:
            return real_file_lock(Path(path).with_name(f"{Path(path).name}.{self.model.host}"), **kw)

        def take_over(path: Path, match: Any) -> bool:
            hook, self.on_take_over = self.on_take_over, None
            if hook is not None:
                hook()
            return real_take_over(path, match)

        with contextlib.ExitStack() as stack:
            for name in WALL_CLOCK_READERS:
                module = __import__(name, fromlist=["time"])
                stack.enter_context(_swap(module, "time", _Time(self.wall)))
            stack.enter_context(_swap(lock, "time", _Time(lambda: _time.time() + self.skew.get(self.model.host, 0.0))))
            stack.enter_context(_swap(lock, "socket", _Socket(lambda: self.model.host)))
            stack.enter_context(_swap(lock, "_clock", self.mono))
            stack.enter_context(_swap(lock, "_sleep", self.sleep))
            stack.enter_context(_swap(lock, "POLL_S", POLL_S))
            stack.enter_context(_swap(lock, "_take_over", take_over))
            stack.enter_context(_swap(state_mod, "file_lock", file_lock))
            stack.enter_context(_swap(coordinator, "sweep_lock", sweep_lock))
            yield


@contextlib.contextmanager
def _swap(obj: Any, name: str, value: Any) -> Iterator[None]:
    saved = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, saved)
