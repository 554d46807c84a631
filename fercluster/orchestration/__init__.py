"""Orchestration: a sweep config turned into jobs, submitted, watched, retried, run here or searched.

Between the job side (``fercluster.train``) and the analysis; nothing is imported here, import
the module you need. What the rest of the code (the CLI, the analysis) may call:

- ``plan``: ``expand(cfg)`` (the sweep's jobs, pure and ordered), ``make_spec``.
- ``coordinator``: ``run_sweep(cfg, backend, ...)`` (reconcile with SLURM: submit, skip, retry, prune).
- ``snapshots``: which code each submission runs (``plan_code``: one code snapshot per array, made by
  ``fercluster.code``), and ``code_status`` (the sweep's snapshot against the checkout).
- ``status``: ``snapshot(cfg, backend)`` (what ``status --json`` prints), ``cancel``.
- ``monitor``: ``JobRow``, ``job_rows`` (one row per job from run directories and ONE query).
- ``local``: ``run_local(cfg, console)`` (``sweep --local``).
- ``cost``: ``sweep_cost`` (GPU-hours, CPU-hours, requeues of a sweep: ``status``, the report).
- ``known``: ``load_known`` / ``save_known`` (what ``status`` last knew: stale states, done jobs).
- ``last``: ``record_last``, ``last_config`` (CONFIG of ``status`` when none is given).
- ``states``: fercluster's job states and their groups (``ACTIVE``, ``ENDED_BADLY``).
- ``backend``: the ``Backend`` protocol (and ``JobQuery``, its query side) in fercluster's terms:
  ``Submission``, ``Resources``, ``Submitted``, ``JobInfo``, ``SubmitLimit``; implementations
  ``slurm.backend.SlurmBackend``, ``fake.FakeBackend``, ``local_backend.LocalBackend``.
- ``backends``: ``backend_for(cfg)``, the one way to build the SLURM backend from a config.
- ``lanes``: ``array_lanes`` (the sweep's concurrency limit shared over its arrays).
- ``jobs``: the submitted callables; ``aggregate_job`` is the one call into the analysis.
- ``progress``: ``job_progress`` (the progress bar of a training job).
- ``bench``: ``run_bench`` (``fercluster bench orchestration``).
- ``slurm/``: SLURM itself (see its docstring); ``tune/``: the Ray Tune search (see its docstring).
"""
