"""Resumable checkpoints and the stop signals that ask for one.

``checkpoint.pt`` holds everything the loop needs to continue exactly where it stopped: model and
optimiser state, every rank's random streams and loss window, the iteration, the metrics so far,
the best (selected) model so far, and the wall time spent. It is written atomically and checked on
load against the job it claims to belong to.

SIGTERM and SIGUSR2 (SLURM's warning before the time limit, submitit's preemption signal) only set
a flag; the loop checkpoints at the next step boundary, then hands the signal on to the handler
that was installed before (submitit's, which requeues) or, without one, raises ``JobInterrupted``.
In a job of several ranks (DDP) the ranks first agree on the signal and stop at the same step;
only rank 0 requeues, and the others wait for it before they exit (see ``StopSignals.hand_on``).
"""

from __future__ import annotations

import io
import signal
import threading
from pathlib import Path
from typing import Any, Callable

import torch

from fercluster.atomic import write_bytes
from fercluster.errors import CheckpointError, TrainingError

FORMAT = "fercluster-checkpoint/1"
REQUIRED = ("format", "job_id", "iteration", "model", "optimizer", "ranks", "metrics", "best", "elapsed")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class JobInterrupted(TrainingError):
    """The job stopped on a signal after saving its checkpoint; running it again resumes it."""

    def __init__(self, job_id: str, iteration: int, signum: int, path: Path):
        self.iteration = iteration
        super().__init__(
            f"job {job_id} interrupted by {signal.Signals(signum).name} at iteration {iteration}; "
            f"checkpoint saved to {path}; run the same job again to resume"
        )


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path, job_id: str) -> dict[str, Any]:
    """Read and check a checkpoint; ``CheckpointError`` if it is unreadable or another job's."""
    advice = f"delete {path} to restart job {job_id} from iteration 0"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(exc).__name__}: {reason}); {advice}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} is not a fercluster checkpoint (format {found!r}, expected {FORMAT!r}); {advice}"
        )
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}; {advice}")
    if state["job_id"] != job_id:
        raise CheckpointError(
            f"checkpoint {path} belongs to job {state['job_id']}, not {job_id} (a changed config or a copied "
            f"folder); {advice}"
        )
    return state


class StopSignals:
    """Context manager: remember SIGTERM/SIGUSR2 instead of dying at an arbitrary point.

    Outside the main thread (e.g. a Ray Tune trial) signals cannot be handled and nothing changes.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.received = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def agree(self, signum: int) -> None:
        """The signal the job's ranks agreed on (the largest any rank received): a rank that got
        none, or got it a step later, stops at the same step as the others and hands on the same."""
        self.received = signum

    def hand_on(
        self, job_id: str, iteration: int, path: Path, rank: int = 0, settle: Callable[[], None] | None = None
    ) -> None:
        """After the checkpoint: call the earlier handler (submitit's: rank 0 requeues and exits;
        on other ranks it returns), else raise ``JobInterrupted``.

        ``settle`` (DDP: a barrier of every rank) runs after that handler, also when it exits or
        raises: no rank ends before rank 0 has requeued. A rank that ended first with an error
        would have ``srun --kill-on-bad-exit`` kill rank 0 before its ``scontrol requeue``, and
        the job would end FAILED instead of resuming. After it, a rank other than 0 under such a
        handler exits cleanly (status 0): the requeue starts it again, rank 0 reports the outcome.
        """
        signum = self.received
        assert signum is not None
        previous = self._previous.get(signum)
        self.restore()
        try:
            if callable(previous):
                previous(signum, None)
        finally:
            if settle is not None:
                settle()
        if rank != 0 and callable(previous):
            raise SystemExit(0)
        raise JobInterrupted(job_id, iteration, signum, path)
