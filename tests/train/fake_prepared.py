"""A tiny stand-in for ``fercluster.data.prepared`` (tests only), used while the data stream's
module does not exist yet. It reads the contract's format: manifest.parquet + images.npy + info.json.
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fercluster.errors import DataError


@dataclass
class Prepared:
    images: np.ndarray
    manifest: pd.DataFrame
    info: dict
    au_regions: dict | None
    path: Path


def load_prepared(path) -> Prepared:
    path = Path(path)
    if not (path / "info.json").exists():
        raise DataError(f"no prepared set at {path}")
    return Prepared(
        images=np.load(path / "images.npy", mmap_mode="r"),
        manifest=pd.read_parquet(path / "manifest.parquet"),
        info=json.loads((path / "info.json").read_text()),
        au_regions=None,
        path=path,
    )


def split_indices(prepared: Prepared, fold: int, protocol: str = "2017"):
    m = prepared.manifest
    if prepared.info["kind"] == "ckplus":
        folds = m["fold"].to_numpy()
        test = folds == fold
        val = folds == (fold + 1) % 10 if protocol == "2017" else np.zeros(len(m), bool)
        train = ~test & ~val
    else:
        col = m[f"split_{fold}"].to_numpy()
        test = col == "test"
        val = (col == "valid") if protocol == "2017" else np.zeros(len(m), bool)
        train = (col == "train") | ((col == "valid") & (protocol == "2015"))
    return tuple(np.flatnonzero(mask).astype(np.int64) for mask in (train, val, test))


def install() -> None:
    """Make ``fercluster.data.prepared`` importable if the real one is not there yet."""
    try:
        import fercluster.data.prepared  # noqa: F401
    except ImportError:
        module = types.ModuleType("fercluster.data.prepared")
        module.Prepared, module.load_prepared, module.split_indices = Prepared, load_prepared, split_indices
        sys.modules["fercluster.data.prepared"] = module


def make_prepared(
    path: Path, classes: int = 8, subjects: int = 20, per_subject: int = 8, seed: int = 0, size: int = 96
) -> Path:
    """A learnable CK+-format prepared set: each class is a bright blob at its own place, plus noise."""
    rng = np.random.default_rng(seed)
    n = subjects * per_subject
    labels = np.arange(n) % classes
    yy, xx = np.mgrid[0:size, 0:size]
    centres = [
        (size * (0.25 + 0.5 * (c % 2)), size * (0.2 + 0.6 * (c // 2) / max(1, (classes - 1) // 2)))
        for c in range(classes)
    ]
    images = np.empty((n, size, size), np.uint8)
    for i, c in enumerate(labels):
        cx, cy = centres[c]
        cx, cy = cx + rng.normal(0, 2), cy + rng.normal(0, 2)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (size / 12) ** 2))
        images[i] = np.clip(60 + 150 * blob + rng.normal(0, 20, (size, size)), 0, 255).astype(np.uint8)
    subject = np.repeat([f"S{100 + s:03d}" for s in range(subjects)], per_subject)
    manifest = pd.DataFrame(
        {
            "image_id": [f"{subject[i]}_{i:03d}_{i:08d}" for i in range(n)],
            "subject": subject,
            "sequence": [f"{i // 4:03d}" for i in range(n)],
            "frame": np.arange(n) % 4,
            "label": labels.astype(np.int64),
            "label_name": [f"class{c}" for c in labels],
            "fold": np.repeat(np.arange(subjects) % 10, per_subject),
            "aus": [[] for _ in range(n)],
            "crop": "none",
        }
    )
    path.mkdir(parents=True, exist_ok=True)
    manifest.to_parquet(path / "manifest.parquet", index=False)
    np.save(path / "images.npy", images)
    info = {
        "kind": "ckplus",
        "classes": classes,
        "label_names": [f"class{c}" for c in range(classes)],
        "n_images": n,
        "source": "tests",
        "crop": "none",
        "created": "2024-01-01T00:00:00",
        "au_regions": None,
    }
    (path / "info.json").write_text(json.dumps(info))
    return path
