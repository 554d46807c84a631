"""The one way to build a scheduler ``Backend`` from a config: ``backend_for(cfg)``."""

from __future__ import annotations

from pathlib import Path

from fercluster.config import SweepConfig
from fercluster.orchestration.backend import Backend

QUERY_TIMEOUT_S = 120.0  # how long one SLURM command (sacct, squeue, scontrol, scancel) may take
SBATCH_TIMEOUT_S = 60.0  # how long one sbatch may retry while the controller refuses jobs


def backend_for(cfg: SweepConfig, *, folder: Path | None = None, query_timeout_s: float = QUERY_TIMEOUT_S) -> Backend:
    """SLURM (through submitit) for the sweep ``cfg``: its submitit folder (``jobs/<sweep>/submitit``,
    or ``folder``), ``slurm.max_timeout_requeues``; ``query_timeout_s`` bounds each command (shorter
    inside a job that has its own time limit, as the aggregation job)."""
    from fercluster.orchestration.slurm.backend import SlurmBackend

    return SlurmBackend(
        folder if folder is not None else cfg.jobs_dir / "submitit",
        timeout_s=query_timeout_s,
        max_timeout_requeues=cfg.slurm.max_timeout_requeues,
        sbatch_timeout_s=SBATCH_TIMEOUT_S,
    )
