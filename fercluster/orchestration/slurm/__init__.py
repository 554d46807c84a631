"""SLURM: submission through submitit, state queries, their text parsed, resources, requeue.

Nothing is imported here, import the module you need. The surface:

- ``backend``: ``SlurmBackend`` (a ``Backend``), ``allocation_live(slurm_id)``.
- ``parse``: ``SlurmInfo``, ``map_state`` (SLURM's words -> fercluster's states), ``failure_reason``,
  ``parse_sacct`` / ``parse_squeue`` / ``parse_scontrol_jobs`` (pure, tested without a cluster).
- ``resources``: ``submitit_parameters(cfg.slurm, ...)`` (the one mapping of a sweep's resources),
  ``array_throttles``, ``array_lanes`` (the sweep's limit across its arrays).
- ``requeue``: ``JobCheckpointable`` (the submitted training job; requeued on pre-emption).
"""
