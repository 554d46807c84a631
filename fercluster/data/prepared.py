"""Prepared data sets: one folder per set, written atomically, read by training and analysis.

A prepared folder holds ``manifest.parquet`` (one row per image, row order = image order),
``images.npy`` (uint8, (N, 96, 96)), ``info.json``, ``skipped.csv`` (what was left out or handled
specially, and why) and, for synthetic sets, ``au_regions.json``. The whole folder is built under a
temporary name beside its target and renamed into place, so a reader sees the old set or the new
one, never a mix.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fercluster.atomic import atomic_dir, write_json, write_parquet, write_text, write_with
from fercluster.errors import DataError

IMAGE_SIZE = 96
REQUIRED_FILES = ("manifest.parquet", "images.npy", "info.json")
CKPLUS_FOLDS = 10
TFD_FOLDS = 5
PROTOCOLS = ("2017", "2015")


@dataclass(frozen=True)
class Skip:
    """One image or sequence left out, or handled by a fallback: listed, never silent."""

    path: str
    what: str  # "sequence" | "image" | "file"
    reason: str
    action: str  # "skipped" | "cropped by landmarks"


@dataclass
class PreparedData:
    """A prepared set in memory, before it is written."""

    images: np.ndarray  # uint8 (N, 96, 96)
    manifest: "Any"  # pyarrow.Table, row order = image order
    info: dict[str, Any]
    skips: list[Skip] = field(default_factory=list)
    au_regions: dict[str, Any] | None = None
    counts: dict[str, int] = field(default_factory=dict)  # what the CLI prints, in order
    breakdown: dict[str, dict[str, int]] = field(default_factory=dict)  # e.g. "per fold": {"0": 130}


@dataclass
class Prepared:
    """A prepared set loaded from disk."""

    images: np.ndarray  # uint8 (N, 96, 96), memory-mapped unless load_prepared(mmap=False)
    manifest: pd.DataFrame
    info: dict[str, Any]
    au_regions: dict[str, Any] | None
    path: Path

    def __len__(self) -> int:
        return len(self.manifest)


# ----------------------------------------------------------------------------- writing


def write_prepared(out: str | os.PathLike[str], data: PreparedData) -> Path:
    """Write ``data`` to the folder ``out`` atomically: build it beside, then swap it in.

    An existing prepared set at ``out`` is replaced only once the new one is complete; an existing
    folder that is not a prepared set (no info.json) is never touched.
    """
    out = Path(out)
    _check_replaceable(out)
    with atomic_dir(out) as tmp:
        _write_files(tmp, data)
    return out


def _check_replaceable(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a folder (it is created)")
    if out.is_dir() and any(out.iterdir()) and not (out / "info.json").is_file():
        raise DataError(
            f"--out {out} exists and is not a prepared set (no info.json); choose a new folder or empty this one"
        )


def _write_files(folder: Path, data: PreparedData) -> None:
    images = np.ascontiguousarray(data.images)
    n = images.shape[0]
    if images.dtype != np.uint8 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"internal: images must be uint8 (N, 96, 96), got {images.dtype} {images.shape}")
    if data.manifest.num_rows != n:
        raise DataError(f"internal: {data.manifest.num_rows} manifest rows for {n} images")

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, images)

    write_with(folder / "images.npy", save)
    write_parquet(folder / "manifest.parquet", data.manifest)
    write_text(folder / "skipped.csv", skips_csv(data.skips))
    if data.au_regions is not None:
        write_json(folder / "au_regions.json", data.au_regions)
    info = {
        **data.info,
        "n_images": int(n),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "au_regions": data.au_regions,
        "counts": data.counts,
        "breakdown": data.breakdown,
    }
    write_json(folder / "info.json", info)


def skips_csv(skips: list[Skip]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "what", "reason", "action"])
    for s in skips:
        writer.writerow([s.path, s.what, s.reason, s.action])
    return buf.getvalue()


# ----------------------------------------------------------------------------- reading


def read_au_regions(path: Path) -> dict[str, Any] | None:
    """A synthetic raw set's AU regions JSON, or None if the raw set has none (real data)."""
    if not path.is_file():
        return None
    try:
        regions = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(regions, dict):
        raise DataError(f"{path}: expected an object {{'<AU>': {{'name', 'box'}}}}, got {type(regions).__name__}")
    return regions


def is_prepared(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` holds the three files of a prepared set (contents not checked)."""
    path = Path(path)
    return all((path / name).is_file() for name in REQUIRED_FILES)


def read_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    file = Path(path) / "info.json"
    try:
        info = json.loads(file.read_text())
    except FileNotFoundError:
        raise DataError(f"{file}: missing; {Path(path)} is not a prepared set") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{file}: not readable JSON ({exc}); delete {Path(path)} and prepare again") from None
    if not isinstance(info, dict) or info.get("kind") not in ("ckplus", "tfd"):
        raise DataError(f"{file}: no valid 'kind' (ckplus or tfd); delete {Path(path)} and prepare again")
    return info


def load_prepared(path: str | os.PathLike[str], mmap: bool = True) -> Prepared:
    """Load a prepared set; DataError (naming the file) if it is missing or inconsistent."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"prepared set not found: {path}; run `fercluster data prepare ckplus|tfd ... --out {path}`")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise DataError(f"{path}: incomplete prepared set, missing {', '.join(missing)}; prepare it again")
    info = read_info(path)
    try:
        manifest = pd.read_parquet(path / "manifest.parquet")
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path / 'manifest.parquet'}: not readable ({exc}); prepare the set again") from None
    try:
        images = np.load(path / "images.npy", mmap_mode="r" if mmap else None)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path / 'images.npy'}: not readable ({exc}); prepare the set again") from None
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(
            f"{path / 'images.npy'}: expected uint8 (N, 96, 96), got {images.dtype} {images.shape}; "
            "prepare the set again"
        )
    if images.shape[0] != len(manifest):
        raise DataError(
            f"{path / 'images.npy'}: {images.shape[0]} images but manifest.parquet has "
            f"{len(manifest)} rows; prepare the set again"
        )
    _check_columns(path, info["kind"], manifest)
    au_file = path / "au_regions.json"
    au_regions = info.get("au_regions")
    if au_regions is None and au_file.is_file():
        au_regions = json.loads(au_file.read_text())
    return Prepared(images=images, manifest=manifest, info=info, au_regions=au_regions, path=path)


CKPLUS_COLUMNS = ("image_id", "subject", "sequence", "frame", "label", "label_name", "fold", "aus", "crop")
TFD_COLUMNS = ("image_id", "identity", "label", "label_name") + tuple(f"split_{i}" for i in range(TFD_FOLDS))


def _check_columns(path: Path, kind: str, manifest: pd.DataFrame) -> None:
    expected = CKPLUS_COLUMNS if kind == "ckplus" else TFD_COLUMNS
    missing = [c for c in expected if c not in manifest.columns]
    if missing:
        raise DataError(
            f"{path / 'manifest.parquet'}: missing column(s) {', '.join(missing)} for a {kind} set; "
            "prepare the set again"
        )


def split_indices(prepared: Prepared, fold: int, protocol: str = "2017") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices ``(train, val, test)`` of one fold.

    CK+ 2017: test fold t, validation fold (t+1) % 10, train the other 8. CK+ 2015: test fold t,
    train the other 9, no validation. TFD: the ``split_t`` column; 2015 trains on the train split
    only ("we train all of our models using just the training set of each fold", as the authors'
    2015 TFD scripts did) and has no validation split (the checkpoint is picked on test).
    """
    if protocol not in PROTOCOLS:
        raise DataError(f"protocol: got {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    kind = prepared.info["kind"]
    n_folds = CKPLUS_FOLDS if kind == "ckplus" else TFD_FOLDS
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < n_folds:
        raise DataError(f"fold: got {fold!r}; {kind} has folds 0..{n_folds - 1}")
    fold = int(fold)
    if kind == "ckplus":
        folds = prepared.manifest["fold"].to_numpy()
        test = folds == fold
        val = folds == (fold + 1) % n_folds if protocol == "2017" else np.zeros_like(test)
        train = ~test & ~val
    else:
        split = prepared.manifest[f"split_{fold}"].astype(str).to_numpy()
        test = split == "test"
        val = split == "valid"
        train = split == "train"
        if protocol == "2015":
            val = np.zeros_like(val)
    return tuple(np.flatnonzero(m).astype(np.int64) for m in (train, val, test))  # type: ignore[return-value]
