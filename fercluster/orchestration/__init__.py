"""Orchestration: a sweep config turned into jobs, submitted, watched, retried, run here or searched.

Between the job side (``fercluster.train``) and the analysis; nothing is imported here, import
the module you need. Its folders, by what they do (each ``__init__`` lists its modules):

- ``submit/``: planning and reconciling. ``plan.expand(cfg)`` (the sweep's jobs, pure and
  ordered), ``reconcile`` (the pure diff of plan and state), ``coordinator.run_sweep(cfg, backend,
  ...)`` (submit, skip, retry, prune), ``lanes``, ``snapshots`` (which code each submission runs),
  ``jobs`` (the submitted callables; ``aggregate_job`` is the one call into the analysis),
  ``last`` (CONFIG of ``status`` when none is given).
- ``watch/``: ``status.snapshot(cfg, backend)`` (what ``status --json`` prints), ``cancel``,
  ``monitor.job_rows`` (one row per job from run directories and ONE query), ``cost``
  (GPU-hours, CPU-hours, requeues), ``progress`` (the progress bar of a training job), ``stall``
  (hung jobs), ``attempts`` (each job's history of attempts).
- ``local/``: ``run.run_local(cfg, console)`` (``sweep --local``) and ``backend.LocalBackend``
  (its runs seen through the query side of ``Backend``).
- ``preflight/``: ``doctor`` (``fercluster doctor``) and ``folders`` (the jobs and results
  folders can be written).
- ``store/``: the typed run store: one record type, reader and writer per file of a sweep's
  folder (drawn in its docstring), and the state vocabulary (``store.vocabulary``).
- ``slurm/``: SLURM itself, through submitit (see its docstring); ``tune/``: the Ray Tune search.

And at the top, what every folder shares:

- ``backend``: the ``Backend`` protocol (and ``JobQuery``, its query side) in fercluster's terms:
  ``Submission``, ``Resources``, ``Submitted``, ``JobInfo``, ``SubmitLimit``; implementations
  ``slurm.backend.SlurmBackend``, ``fake.FakeBackend``, ``local.backend.LocalBackend``.
- ``backends``: ``backend_for(cfg)``, the one way to build the SLURM backend from a config.
- ``fake``: ``FakeBackend``, an in-memory SLURM for the tests and the benchmark.
- ``simulate`` and ``scheduler_model``: ``SimSlurm``, the fake run by a scheduler on a virtual clock
  (jobs start, run, fail, are requeued; sacct, squeue and sbatch fail), for the simulation test.
- ``bench``: ``run_bench`` (``fercluster bench orchestration``).
"""
