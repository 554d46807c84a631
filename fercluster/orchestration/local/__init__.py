"""Local runs (``sweep --local``): the sweep's plan run on this machine, one job at a time.

- ``run``: ``run_local(cfg, console)`` (the plan's jobs here, then the aggregation).
- ``backend``: ``LocalBackend`` (the query side of ``Backend`` over the runs recorded in
  ``state.json``), ``mark_started`` / ``mark_ended``.
"""
