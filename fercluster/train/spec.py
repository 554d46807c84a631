"""The description of one job: plain, picklable data that a node needs to run it.

A ``JobSpec`` is what the coordinator hands to ``fercluster.train.job.run_job`` (through submitit,
Ray or the local runner). Its training settings are the typed ``fercluster.config.Train`` of its
data set, read as attributes. Its ``job_id`` is a short hash of ``identity(spec)``: what changes the
job's result, and nothing else (not SLURM resources, not where outputs go, not the settings that
``Train.RESULT_NEUTRAL`` lists).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from typing import Any

from fercluster.config import SweepConfig, Train
from fercluster.data import fingerprint


@dataclass(frozen=True)
class JobSpec:
    sweep: str  # sweep name
    dataset: str  # data set name in the config (e.g. "ckplus", "ckplus6", "tfd")
    kind: str  # "ckplus" or "tfd"
    classes: int  # 8 or 6 (CK+), 7 (TFD)
    fold: int  # CK+: test fold 0-9; TFD: split 0-4
    variant: str  # none, D, A, AD
    seed: int
    train: Train  # the data set's training settings (k may still be "random")
    prepared_dir: str  # prepared data set folder (manifest.parquet + images.npy)
    run_dir: str  # where the job writes its outputs
    crop: str = "none"  # CK+ crop method (also in data_id; kept for the record)
    data_id: str = ""  # fingerprint of the data's content: fercluster.data.fingerprint.data_id
    # How many processes fercluster launches the job as (DDP when > 1): set by the SLURM
    # submission; local runs, Ray trials and `fercluster job` run one. Not part of the identity.
    processes: int = 1
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
        """Plain JSON-able data (``job.json`` records it; ``from_dict`` reads it back)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["train"] = self.train.model_dump(mode="json")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["train"] = Train.model_validate_json(json.dumps(data["train"]))
        return cls(**values)


def identity(spec: JobSpec) -> dict[str, Any]:
    """What changes a job's result, so what its id hashes: its place in the grid, its data, and
    the training settings that differ from their defaults (``Train.result_settings``)."""
    return {
        "dataset": spec.dataset,
        "kind": spec.kind,
        "classes": spec.classes,
        "fold": spec.fold,
        "variant": spec.variant,
        "seed": spec.seed,
        "data": spec.data_id,
        "train": spec.train.result_settings(),
    }


def make_job_id(spec: JobSpec) -> str:
    blob = json.dumps(identity(spec), sort_keys=True).encode()
    return hashlib.sha1(blob).hexdigest()[:10]


def make_spec(
    cfg: SweepConfig,
    dataset: str,
    fold: int,
    variant: str,
    seed: int = 0,
    run_dir: str | None = None,
    train: Train | None = None,
    data_id: str | None = None,
) -> JobSpec:
    """The ``JobSpec`` of one grid cell of a sweep config (writes nothing; reads only the data's listing).

    ``run_dir`` defaults to ``cfg.results_dir / "runs" / job_id``; ``prepared_dir`` is
    ``cfg.prepared_dir(dataset)`` (``fercluster.data.ensure_prepared`` makes sure it exists before
    the job runs). ``train`` replaces the data set's training settings (the coordinator passes them
    with ``k: from_tune`` resolved to a number). ``data_id``: the data set's fingerprint, computed
    here if not given (it lists the raw tree: a caller making many specs computes it once).
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
        train=train if train is not None else cfg.train_for(dataset),
        prepared_dir=str(cfg.prepared_dir(dataset)),
        run_dir="",
        crop=ds.crop if ds.kind == "ckplus" else "none",
        data_id=data_id if data_id is not None else fingerprint.data_id(cfg, dataset),
    )
    target = run_dir if run_dir is not None else str(cfg.results_dir / "runs" / spec.job_id)
    return replace(spec, run_dir=target)
