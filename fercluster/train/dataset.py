"""A job's data on the device: the prepared set's splits for one fold, pre-processed once.

The whole set lives on the device (CK+ and TFD are small): training images stay in [0, 2] for
augmentation, and every split is also kept normalised, since evaluation and the un-augmented
variants use the same inputs at every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fercluster.errors import DataError
from fercluster.train.preprocess import local_normalize, resize, to_float
from fercluster.train.spec import JobSpec


@dataclass
class Split:
    x: torch.Tensor  # (N, 1, S, S) normalised network input
    y: torch.Tensor  # (N,) int64 labels
    image_ids: list[str]

    def __len__(self) -> int:
        return len(self.image_ids)


@dataclass
class JobData:
    train_raw: torch.Tensor  # (N, 1, S, S) float in [0, 2], for augmentation
    train: Split
    val: Split  # empty under the 2015 protocol
    test: Split
    label_names: list[str]


def check_prepared(prepared, spec: JobSpec) -> None:
    """The prepared set must be the one the spec names: same kind, same classes, 96x96 images."""
    info = prepared.info
    problems = []
    if info.get("kind") != spec.kind:
        problems.append(f"kind {info.get('kind')!r} (spec: {spec.kind!r})")
    if int(info.get("classes", -1)) != spec.classes:
        problems.append(f"{info.get('classes')} classes (spec: {spec.classes})")
    images = prepared.images
    if images.ndim != 3 or images.shape[1] != images.shape[2] or images.shape[1] < spec.train.image_size:
        problems.append(f"images of shape {images.shape} (expected (N, 96, 96))")
    labels = prepared.manifest["label"].to_numpy()
    if len(labels) and (labels.min() < 0 or labels.max() >= spec.classes):
        problems.append(f"labels in [{labels.min()}, {labels.max()}] (expected 0..{spec.classes - 1})")
    if problems:
        raise DataError(
            f"prepared set {spec.prepared_dir} does not match job {spec.job_id} ({spec.dataset}): "
            + "; ".join(problems)
            + ". Re-run `fercluster data prepare` for this config or fix the data set's entry."
        )


def _split(images: torch.Tensor, labels: np.ndarray, ids: np.ndarray, idx: np.ndarray, mode: str, device) -> Split:
    index = torch.as_tensor(np.asarray(idx, dtype=np.int64))
    x = local_normalize(images[index], mode).to(device)
    y = torch.as_tensor(labels[idx].astype(np.int64)).to(device)
    return Split(x=x, y=y, image_ids=[str(i) for i in ids[idx]])


def load_job_data(spec: JobSpec, device: torch.device) -> JobData:
    """Read the prepared set, check it against the spec, split the fold and move it to ``device``."""
    from fercluster.data.prepared import load_prepared, split_indices

    prepared = load_prepared(spec.prepared_dir)
    check_prepared(prepared, spec)
    protocol = spec.train.selection
    train_idx, val_idx, test_idx = split_indices(prepared, spec.fold, protocol=protocol)
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise DataError(
            f"fold {spec.fold} of {spec.prepared_dir} has {len(train_idx)} training and {len(test_idx)} "
            "test images; both must be non-empty"
        )
    if protocol == "2017" and len(val_idx) == 0:
        raise DataError(
            f"fold {spec.fold} of {spec.prepared_dir} has no validation images, which selection 2017 needs; "
            "use selection: '2015' or a data set with a validation split"
        )
    size, mode = spec.train.image_size, spec.train.normalize
    images = resize(to_float(torch.from_numpy(np.array(prepared.images, dtype=np.uint8))), size)
    labels = prepared.manifest["label"].to_numpy()
    ids = prepared.manifest["image_id"].astype(str).to_numpy()
    train_index = torch.as_tensor(np.asarray(train_idx, dtype=np.int64))
    return JobData(
        train_raw=images[train_index].to(device),
        train=_split(images, labels, ids, train_idx, mode, device),
        val=_split(images, labels, ids, val_idx, mode, device),
        test=_split(images, labels, ids, test_idx, mode, device),
        label_names=list(prepared.info.get("label_names", [])),
    )
