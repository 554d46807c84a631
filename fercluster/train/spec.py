"""The description of one job: plain, picklable data that a node needs to run it.

A ``JobSpec`` is what the coordinator hands to ``fercluster.train.job.run_job`` (through submitit,
Ray or the local runner). Its ``job_id`` is a short hash of the settings that change the job's
result: not SLURM resources, not paths.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class JobSpec:
    sweep: str  # sweep name
    dataset: str  # data set name in the config (e.g. "ckplus", "ckplus6", "tfd")
    kind: str  # "ckplus" or "tfd"
    classes: int  # 8 or 6 (CK+), 7 (TFD)
    fold: int  # CK+: test fold 0-9; TFD: split 0-4
    variant: str  # none, D, A, AD
    seed: int
    train: dict[str, Any]  # fercluster.config.Train fields, resolved (k may still be "random")
    prepared_dir: str  # prepared data set folder (manifest.parquet + images.npy)
    run_dir: str  # where the job writes its outputs
    crop: str = "none"  # CK+ crop method, part of identity (it changes the images)
    job_id: str = field(default="")

    def __post_init__(self) -> None:
        if not self.job_id:
            object.__setattr__(self, "job_id", make_job_id(self))

    @property
    def dropout(self) -> bool:
        return "D" in self.variant

    @property
    def augment(self) -> bool:
        return "A" in self.variant

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobSpec":
        return cls(**data)


def identity(spec: JobSpec) -> dict[str, Any]:
    """The settings that change a job's result (what its id hashes)."""
    train = {k: v for k, v in spec.train.items() if k not in ("device",)}
    return {
        "dataset": spec.dataset,
        "kind": spec.kind,
        "classes": spec.classes,
        "crop": spec.crop,
        "fold": spec.fold,
        "variant": spec.variant,
        "seed": spec.seed,
        "train": train,
    }


def make_job_id(spec: JobSpec) -> str:
    blob = json.dumps(identity(spec), sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:10]
