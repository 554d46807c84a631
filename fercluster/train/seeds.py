"""Where every random choice of a job comes from: its seed and its place in the sweep.

Pure Python (no torch), so the coordinator can show each job's k at plan time (``sweep --dry-run``,
``status``) exactly as the job will draw it.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from fercluster.errors import ConfigError

if TYPE_CHECKING:
    from fercluster.train.spec import JobSpec


def seed_for(seed: int, stream: str, rank: int = 0) -> int:
    """A 63-bit seed for one named random stream of a job (independent across streams and ranks)."""
    digest = hashlib.sha256(f"{seed}:{stream}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def stream(spec: JobSpec, name: str) -> str:
    """The name of one of the job's random streams, tied to the job's place in the sweep.

    Every job draws its own k, weights, batches and augmentations (data set, fold, variant; the
    seed is the other half of ``seed_for``), as every run of the paper did. With
    ``train.pair_variants`` the variants of a fold share them (a paired design).
    """
    place = f"{spec.dataset}/{spec.fold}" + ("" if spec.train.pair_variants else f"/{spec.variant}")
    return f"{name}@{place}"


def uniform(seed: int) -> float:
    """A number in [0, 1) from a 63-bit seed: its top 53 bits, the precision of a float."""
    return (seed >> 10) / float(1 << 53)


def resolve_k(spec: JobSpec) -> float:
    """The init scale of this job: a number, or U[k_low, k_high) drawn from its identity for "random"."""
    t = spec.train
    if isinstance(t.k, (int, float)):
        return float(t.k)
    if t.k == "random":
        return t.k_low + (t.k_high - t.k_low) * uniform(seed_for(spec.seed, stream(spec, "k")))
    raise ConfigError(
        f"job {spec.job_id}: train.k is {t.k!r}, which the sweep resolves before submitting a job; "
        "run the tune sweep first (or set train.k to a number or 'random') and submit again"
    )
