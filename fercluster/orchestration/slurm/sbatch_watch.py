"""sbatch under a time bound, stopped at its first "sleeping and retrying": run as a script by
``executor.BoundedExecutor`` (``python -I sbatch_watch.py BOUND_S KILL_AFTER_S SURE_S COMMAND...``).

While the controller refuses new jobs (the cluster's MaxJobCount reached), sbatch says so once
("Slurm temporarily unable to accept job, sleeping and retrying", or "Slurm job queue full") and
retries by itself for about two minutes. That first message means the job did not go in, and
sbatch then sleeps a second before it asks again: stopped within ``SURE_S`` of the message, it sent
nothing more, and the exit code says so (``REFUSED``); stopped later (a loaded machine), it may
have asked again (``REFUSED_UNSURE``). At the bound it is stopped as ``timeout(1)`` would, exit
124. Otherwise sbatch's own exit code, stdout and stderr pass through. The standard library only:
it runs isolated (``-I``), so no folder of the package shadows a module it imports.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time

REFUSED = 75  # stopped at its first retry, surely before it asked again: nothing was submitted
REFUSED_UNSURE = 76  # stopped at its first retry, but late: it may have asked again
TIMED_OUT = 124  # as timeout(1)
RETRY_MESSAGES = ("temporarily unable to accept job", "job queue full")
MARK = "fercluster: sbatch stopped at its first retry"


def _stop(proc: subprocess.Popen[bytes], kill_after_s: float) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=kill_after_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(command: list[str], bound_s: float, kill_after_s: float, sure_s: float) -> int:
    """Run ``command`` (sbatch ...), relaying its output; its exit code, or one of the above."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: queue.Queue[bytes | None] = queue.Queue()
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()

    def pump() -> None:
        for line in iter(proc.stderr.readline, b""):  # type: ignore[union-attr]
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + bound_s
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            _stop(proc, kill_after_s)
            return TIMED_OUT
        if line is None:  # stderr closed: sbatch ended (or is ending)
            break
        seen = time.monotonic()
        sys.stderr.buffer.write(line)
        sys.stderr.flush()
        if any(m in line.decode(errors="replace").lower() for m in RETRY_MESSAGES):
            _stop(proc, kill_after_s)
            sure = time.monotonic() - seen <= sure_s
            print(f"{MARK} (SLURM refuses new jobs)", file=sys.stderr)
            return REFUSED if sure else REFUSED_UNSURE
    try:
        code = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _stop(proc, kill_after_s)
        return TIMED_OUT
    reader.join(timeout=max(1.0, deadline - time.monotonic()))  # sbatch has ended: its stdout is closed
    sys.stdout.buffer.write(b"".join(out))
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    bound, kill_after, sure = (float(a) for a in sys.argv[1:4])
    sys.exit(run(sys.argv[4:], bound, kill_after, sure))
