"""The description of one job: plain, picklable data that a node needs to run it.

A ``JobSpec`` is what the coordinator hands to ``fercluster.train.job.run_job`` (through submitit,
Ray or the local runner). Its ``job_id`` is a short hash of the settings that change the job's
result: not SLURM resources, not paths.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
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


def make_spec(cfg: Any, dataset: str, fold: int, variant: str, seed: int = 0, run_dir: str | None = None,
              train: dict[str, Any] | None = None) -> JobSpec:
    """The ``JobSpec`` of one grid cell of a sweep config (pure: reads no file, writes none).

    ``cfg`` is a ``fercluster.config.SweepConfig``. ``run_dir`` defaults to
    ``cfg.results_dir / "runs" / job_id``; ``prepared_dir`` is ``cfg.prepared_dir(dataset)``
    (``fercluster.data.ensure_prepared`` makes sure it exists before the job runs). ``train``
    replaces the data set's training settings (the coordinator passes them with ``k: from_tune``
    resolved to a number).
    """
    ds = cfg.datasets[dataset]
    spec = JobSpec(
        sweep=cfg.name,
        dataset=dataset,
        kind=ds.kind,
        classes=int(ds.classes),
        fold=int(fold),
        variant=variant,
        seed=int(seed),
        train=train if train is not None else cfg.train_for(dataset).model_dump(mode="json"),
        prepared_dir=str(cfg.prepared_dir(dataset)),
        run_dir="",
        crop=ds.crop if ds.kind == "ckplus" else "none",
    )
    target = run_dir if run_dir is not None else str(cfg.results_dir / "runs" / spec.job_id)
    return replace(spec, run_dir=target)
