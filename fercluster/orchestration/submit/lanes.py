"""A sweep's concurrency limit (``slurm.array_parallelism``) shared over its submissions.

The scheduler applies a throttle per submission (SLURM: ``%K`` per array); a sweep split into
several arrays would otherwise run K x arrays at once. Pure functions over counts and ids.
"""

from __future__ import annotations

from typing import Sequence

After = tuple[str, ...] | int | None  # ids to start after, a new submission's index, or nothing


def array_throttles(n_arrays: int, parallelism: int) -> list[int]:
    """Split the sweep's concurrency limit over its arrays so that together they never exceed it.
    Each array gets at least one slot."""
    base, extra = divmod(parallelism, n_arrays)
    return [max(1, base + (i < extra)) for i in range(n_arrays)]


def array_lanes(n_new: int, limit: int, active: Sequence[tuple[str, int]]) -> list[tuple[int, After]]:
    """Per new array: its throttle and what it waits for (``afterany``), so that the sweep never
    runs more than ``limit`` tasks at once, however many arrays it has.

    ``active``: the sweep's arrays that still have queued or running tasks, as (id, throttle).
    The slots they leave free are split into lanes (at most one per new array); when there are
    more new arrays than lanes, an array waits for the one before it in its lane (an int: that new
    array's index). With no slot free, new arrays start after all the active ones (a tuple of ids).
    """
    free = limit - sum(k for _, k in active)
    first: tuple[str, ...] | None = None
    if free < 1:  # start after every active array (they may be chained among themselves)
        free, first = limit, tuple(a for a, _ in active)
    lanes = min(n_new, free) or 1
    shares = array_throttles(lanes, free)
    tails: list[After] = [first] * lanes
    out: list[tuple[int, After]] = []
    for i in range(n_new):
        lane = i % lanes
        out.append((shares[lane], tails[lane]))
        tails[lane] = i
    return out
