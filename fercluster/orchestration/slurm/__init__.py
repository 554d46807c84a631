"""SLURM: submission through submitit, state queries, their text parsed, resources, requeue.

Nothing is imported here, import the module you need. The surface:

- ``backend``: ``SlurmBackend`` (a ``Backend``; built by ``orchestration.backends.backend_for``),
  ``allocation_live(slurm_id)``.
- ``executor``: ``BoundedExecutor``, submitit's ``SlurmExecutor`` with sbatch under a time bound,
  run through ``sbatch_watch.py`` (stopped at its first "sleeping and retrying": MaxJobCount).
- ``parse``: ``SlurmInfo``, ``map_state`` (SLURM's words -> fercluster's states), ``failure_reason``,
  ``parse_sacct`` / ``parse_squeue`` / ``parse_scontrol_jobs`` (pure, tested without a cluster),
  SLURM's ids (``task_ids``, ``array_id``, ``arrays_of``), ``submit_limit`` (sbatch's refusals).
- ``reasons``: ``never_starts(reason)``: pending reasons that waiting never clears.
- ``resources``: ``submitit_parameters(resources, ...)`` (the one mapping of ``backend.Resources``
  to submitit), ``submission_parameters(submission)``.
- ``requeue``: ``JobCheckpointable`` (the submitted training job; requeued on pre-emption).
"""
