"""The job side: what one sweep entry runs on a node.

spec (JobSpec, make_spec) -> dataset (prepared set on the device) -> model (zero-bias CNN),
preprocess, augment -> trainer (one step, evaluation, random streams) -> job (run_job: the loop,
selection, checkpoints, outputs) -> outputs (the run directory's files), attempts (its history of
attempts, ``history.jsonl``). distributed (DDP),
checkpoint (resume, stop signals), requeue (submitit wrapper), bench (``fercluster bench train``).
Nothing here imports the CLI, rich, ray or submitit at module top (requeue.py is imported lazily).
"""
