"""Submission: a sweep config turned into jobs and reconciled with what the backend holds.

- ``plan``: ``expand(cfg)`` (the sweep's jobs, pure and ordered), ``make_spec``.
- ``reconcile``: ``reconcile`` (pure: which planned jobs to submit, retry, requeue, skip, leave or
  cancel, from the recorded state and one query) and its ``Diff``.
- ``coordinator``: ``run_sweep(cfg, backend, ...)`` (the diff carried out: submit, retry, prune,
  adopt orphan submissions, the aggregation job).
- ``lanes``: ``array_lanes`` (the sweep's concurrency limit shared over its arrays).
- ``snapshots``: which code each submission runs (``plan_code``: one code snapshot per array, made
  by ``fercluster.code``), and ``code_status`` (the sweep's snapshot against the checkout).
- ``jobs``: the submitted callables; ``aggregate_job`` is the one call into the analysis.
- ``last``: ``record_last``, ``last_config`` (CONFIG of ``status`` when none is given).
"""
