"""TFD (Toronto Face Database) from its MATLAB v5 file, as the authors used it.

``TFD_96x96.mat`` (or ``TFD_48x48.mat``, resized to 96): ``images`` (N, S, S) uint8, ``labs_ex``
(-1 unlabelled, else 1..7), ``labs_id`` (identity), ``folds`` (N, 5: 0 unlabelled, 1 train,
2 valid, 3 test). Unlabelled images are dropped; the five official splits are kept. Faces are
already aligned: no crop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from fercluster.data.fingerprint import raw_digest
from fercluster.data.prepared import IMAGE_SIZE, TFD_FOLDS, PreparedData, Skip, read_au_regions
from fercluster.errors import DataError

LABEL_NAMES = ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral")
KEYS = ("images", "labs_ex", "labs_id", "folds")
SPLITS = {1: "train", 2: "valid", 3: "test"}
Progress = Callable[[int, int], None]


def read_mat(path: str | Path) -> dict[str, np.ndarray]:
    """The four TFD arrays of a MATLAB v5 file; DataError for v7.3 (HDF5), non-MAT files, missing keys."""
    import scipy.io
    from scipy.io.matlab import matfile_version

    path = Path(path)
    if not path.is_file():
        raise DataError(f"TFD file not found: {path}; give the path of TFD_96x96.mat")
    try:
        major, _minor = matfile_version(str(path))
    except Exception as exc:  # scipy raises ValueError or MatReadError for non-MAT content
        raise DataError(f"{path}: not a MATLAB .mat file ({exc})") from None
    if major == 2:
        raise DataError(
            f"{path}: MATLAB v7.3 (HDF5) file, which scipy cannot read; re-save it as v7 "
            f"(in MATLAB: s = load('{path.name}'); save('{path.stem}_v7.mat', '-struct', 's', '-v7'))"
        )
    try:
        data = scipy.io.loadmat(str(path), variable_names=list(KEYS))
    except Exception as exc:  # truncated or damaged file
        raise DataError(f"{path}: cannot read the .mat file ({type(exc).__name__}: {exc})") from None
    missing = [k for k in KEYS if k not in data]
    if missing:
        found = sorted(entry[0] for entry in scipy.io.whosmat(str(path)))
        raise DataError(
            f"{path}: missing key(s) {', '.join(missing)}; a TFD file holds {', '.join(KEYS)} "
            f"(found: {', '.join(found) or 'none'})"
        )
    return {k: data[k] for k in KEYS}


def _vector(path: Path, name: str, array: np.ndarray, n: int) -> np.ndarray:
    flat = np.asarray(array).reshape(-1) if np.asarray(array).size == n else None
    if flat is None:
        raise DataError(f"{path}: '{name}' has shape {np.asarray(array).shape}; expected ({n}, 1) for {n} images")
    return flat.astype(np.int64)


def check_arrays(path: Path, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(images (N,S,S) uint8, labels 1..7 or -1, identities, folds (N,5))``, shapes and values checked."""
    images = np.asarray(arrays["images"])
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise DataError(f"{path}: 'images' has shape {images.shape}; expected (N, 96, 96) or (N, 48, 48)")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.number) or images.min() < 0 or images.max() > 255:
            raise DataError(f"{path}: 'images' is {images.dtype}; expected uint8 values 0..255")
        images = images.astype(np.uint8)
    n = images.shape[0]
    labels = _vector(path, "labs_ex", arrays["labs_ex"], n)
    identities = _vector(path, "labs_id", arrays["labs_id"], n)
    folds = np.asarray(arrays["folds"]).astype(np.int64)
    if folds.shape != (n, TFD_FOLDS):
        raise DataError(f"{path}: 'folds' has shape {folds.shape}; expected ({n}, {TFD_FOLDS})")
    bad = sorted(set(np.unique(labels).tolist()) - {-1, 1, 2, 3, 4, 5, 6, 7})
    if bad:
        raise DataError(f"{path}: 'labs_ex' holds {bad[:5]}; expected -1 (unlabelled) or 1..7")
    labelled_folds = folds[labels > 0]
    if labelled_folds.size and not np.isin(labelled_folds, list(SPLITS)).all():
        rows = np.flatnonzero((labels > 0) & ~np.isin(folds, list(SPLITS)).all(axis=1))
        raise DataError(
            f"{path}: 'folds' is not 1, 2 or 3 (train, valid, test) for labelled image(s) at row(s) "
            f"{rows[:5].tolist()}; every labelled image needs a split in each of the 5 folds"
        )
    return images, labels, identities, folds


def _resize(images: np.ndarray, progress: Progress | None) -> np.ndarray:
    import cv2

    if images.shape[1] == IMAGE_SIZE:
        return np.ascontiguousarray(images)
    out = np.empty((len(images), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    interp = cv2.INTER_LINEAR if images.shape[1] < IMAGE_SIZE else cv2.INTER_AREA
    for i, image in enumerate(images):
        out[i] = cv2.resize(image, (IMAGE_SIZE, IMAGE_SIZE), interpolation=interp)
        if progress is not None and (i % 256 == 255 or i == len(images) - 1):
            progress(i + 1, len(images))
    return out


def _manifest(index: np.ndarray, identities: np.ndarray, labels: np.ndarray, folds: np.ndarray, aus: Any) -> Any:
    import pyarrow as pa

    columns: dict[str, Any] = {
        "image_id": pa.array([f"TFD_{i:06d}" for i in index], pa.string()),
        "identity": pa.array(identities, pa.int64()),
        "label": pa.array(labels, pa.int64()),
        "label_name": pa.array([LABEL_NAMES[label] for label in labels], pa.string()),
    }
    for k in range(TFD_FOLDS):
        columns[f"split_{k}"] = pa.array([SPLITS[int(v)] for v in folds[:, k]], pa.string())
    if aus is not None:
        columns["aus"] = pa.array([list(aus.get(int(i), [])) for i in index], pa.list_(pa.int64()))
    return pa.table(columns)


def read_aus(path: Path) -> dict[int, list[int]] | None:
    """Synthetic TFD only: ``<stem>.aus.parquet`` (image index -> AU list), or None."""
    if not path.is_file():
        return None
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as exc:
        raise DataError(f"{path}: not readable ({exc})") from None
    index_col = next((c for c in ("index", "image_index", "row") if c in frame.columns), None)
    if index_col is None or "aus" not in frame.columns:
        raise DataError(f"{path}: expected columns 'index' and 'aus', found {list(frame.columns)}")
    return {int(i): [int(a) for a in aus] for i, aus in zip(frame[index_col], frame["aus"], strict=True)}


def prepare_tfd(mat_path: str | Path, progress: Progress | None = None) -> PreparedData:
    """Read a TFD .mat into memory (labelled images only); write it with ``write_prepared``."""
    path = Path(mat_path)
    fingerprint = raw_digest(path)
    images, labels, identities, folds = check_arrays(path, read_mat(path))
    keep = labels > 0
    if not keep.any():
        raise DataError(f"{path}: no labelled image ('labs_ex' is -1 everywhere)")
    index = np.flatnonzero(keep)
    size = images.shape[1]
    images = _resize(images[keep], progress)
    aus = read_aus(path.with_name(path.stem + ".aus.parquet"))
    manifest = _manifest(index, identities[keep], labels[keep] - 1, folds[keep], aus)
    label_col = labels[keep] - 1
    breakdown: dict[str, dict[str, Any]] = {
        "per class": {name: int((label_col == i).sum()) for i, name in enumerate(LABEL_NAMES)}
    }
    breakdown["per fold"] = {  # type: ignore[assignment]
        str(k): {name: int((folds[keep, k] == code).sum()) for code, name in SPLITS.items()} for k in range(TFD_FOLDS)
    }
    counts = {
        "images in file": int(len(labels)),
        "labelled": int(keep.sum()),
        "unlabelled (dropped)": int((~keep).sum()),
        "identities": int(len(np.unique(identities[keep]))),
        "images written": int(keep.sum()),
    }
    skips: list[Skip] = []  # a TFD file has nothing to skip: bad content is an error
    info = {
        "kind": "tfd",
        "classes": len(LABEL_NAMES),
        "label_names": list(LABEL_NAMES),
        "source": str(path.resolve()),
        "fingerprint": fingerprint,
        "crop": "none",
        "folds": TFD_FOLDS,
        "source_size": int(size),
    }
    au_regions = read_au_regions(path.with_name(path.stem + ".au_regions.json"))
    return PreparedData(images, manifest, info, skips, au_regions, counts, breakdown)
