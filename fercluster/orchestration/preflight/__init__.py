"""Preflight: what is checked before a sweep does any work.

- ``doctor``: ``run_doctor`` (``fercluster doctor``: SLURM, partition, resources, data, folders,
  a compute node), ``data_warnings`` (what ``sweep --dry-run`` warns about).
- ``folders``: ``require_folders`` (``paths.jobs`` and ``paths.results`` can be made and written).
"""
