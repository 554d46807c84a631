"""The Ray Tune search over k (a config with a ``tune:`` section), locally or in one SLURM allocation.

Nothing is imported here (Ray is heavy), import the module you need. The surface:

- ``search``: ``run_tune_local(cfg, console)`` (a private Ray here), ``run_search`` (on a
  connected Ray); both return a summary whose ``state`` is ``completed`` or ``interrupted``.
- ``allocation``: ``submit_tune_slurm(cfg, console)``; ``python -m
  fercluster.orchestration.tune.allocation CONFIG`` is one task of ``slurm/ray_tune.sbatch``.
- ``state``: ``tune_status(cfg)`` and ``status_table`` (no Ray needed), the search's folders.
- ``results``: ``trials.parquet``, ``best.json`` and the live status file (``StatusCallback``).
- ``retry``: ``sweep --retry-failed`` on a search, a round that resumes its errored trials.
- ``trial``, ``scheduler``, ``ray_cluster``: a trial (the grid's training job), ASHA that
  survives a restore, a private Ray cluster; used by ``search`` and ``allocation`` only.

Imports go one way: ``allocation`` -> ``search`` -> ``state``.
"""
