"""fercluster: the experiments of Khorrami et al. (ICCVW 2015) as reproducible SLURM sweeps."""

__version__ = "0.1.0"
