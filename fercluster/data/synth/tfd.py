"""Synthetic TFD: aligned 96x96 faces in the real .mat layout, plus AU ground truth beside it.

``images`` (N, 96, 96) uint8, ``labs_ex`` (N, 1) -1 unlabelled else 1..7 (1 anger, 2 disgust,
3 fear, 4 happy, 5 sadness, 6 surprise, 7 neutral), ``labs_id`` (N, 1) identity (-1 unknown),
``folds`` (N, 5): 0 unlabelled, 1 train, 2 valid, 3 test; each fold splits the identities (test
group f, valid group f+1 mod 5, train the rest). Beside ``X.mat``: ``X.au_regions.json`` and
``X.aus.parquet`` (one row per image: index, identity, label, label_name, aus, intensities).
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fercluster.atomic import write_bytes, write_json, write_parquet
from fercluster.data.crop import crop_box, landmark_box
from fercluster.data.synth.aus import TFD_EMOTIONS, Expression, sample_expression, sample_free_expression
from fercluster.data.synth.faces import Stage, sample_subject
from fercluster.data.synth.regions import average_regions, crop_boxes
from fercluster.data.synth.shape import Pose, Tracking
from fercluster.errors import DataError

CANVAS = 260  # rendering canvas (pixels); the face's landmarks box is about 2x the 96-pixel crop
_SCALE = 78.0  # pixels per canonical unit
_HEADER = b"MATLAB 5.0 MAT-file, synthetic TFD written by fercluster (deterministic header)"


def _face(sub, expr: Expression, rng: np.random.Generator) -> tuple[np.ndarray, Pose]:
    """One aligned 96x96 face: rendered, then cropped by its (imperfect) landmarks."""
    pose = Pose(
        _SCALE * rng.uniform(0.96, 1.04),
        np.deg2rad(rng.normal(0, 2.0)),
        CANVAS / 2 + rng.normal(0, 3),
        CANVAS / 2 + 10 + rng.normal(0, 3),
    )
    img, landmarks = Stage(sub, pose, (CANVAS, CANVAS), rng).render(expr, rng)
    pts = Tracking.sample(rng, pose.scale, 0.04, 0.03).apply(landmarks, rng)
    return crop_box(img, *landmark_box(pts)), pose


def _folds(labs_id: np.ndarray, identities: int, rng: np.random.Generator) -> np.ndarray:
    group = np.empty(identities, dtype=np.int64)
    group[rng.permutation(identities)] = np.arange(identities) % 5
    folds = np.zeros((len(labs_id), 5), dtype=np.int32)
    known = labs_id >= 0
    g = group[labs_id[known]]
    for f in range(5):
        folds[known, f] = np.where(g == f, 3, np.where(g == (f + 1) % 5, 2, 1))
    return folds


def _row(index: int, identity: int, label: int, expr: Expression) -> dict:
    aus = sorted(expr.aus)
    return {
        "index": index,
        "identity": identity,
        "label": label,
        "label_name": TFD_EMOTIONS.get(label, "unlabelled"),
        "aus": aus,
        "intensities": [round(expr.aus[a], 4) for a in aus],
    }


def _mat_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    from scipy.io import savemat

    buf = io.BytesIO()
    savemat(buf, arrays, format="5", do_compression=False)
    data = bytearray(buf.getvalue())
    data[:116] = _HEADER.ljust(116, b" ")  # scipy stamps the creation time here; keep output byte-identical
    return bytes(data)


def synth_tfd(
    mat_path: str | os.PathLike[str],
    identities: int = 40,
    seed: int = 0,
    images_per_identity: int = 8,
    unlabelled: int = 20,
) -> dict:
    """Write a synthetic TFD .mat at ``mat_path`` (and its two sidecar files); return a summary."""
    path = _checked_path(mat_path, identities, images_per_identity, unlabelled)
    start = time.perf_counter()
    children = np.random.SeedSequence(seed).spawn(identities + 2)
    images, rows, boxes = _labelled_faces(children[:identities], images_per_identity)
    _unlabelled_faces(np.random.default_rng(children[identities]), unlabelled, images, rows)
    table = pd.DataFrame(rows)
    labs_id = table["identity"].to_numpy(np.int64)
    arrays = {
        "images": np.stack(images).astype(np.uint8),
        "labs_ex": table["label"].to_numpy(np.int32)[:, None],
        "labs_id": labs_id.astype(np.int32)[:, None],
        "folds": _folds(labs_id, identities, np.random.default_rng(children[identities + 1])),
    }
    stem = path.with_suffix("")
    write_json(f"{stem}.au_regions.json", average_regions(boxes))
    write_parquet(f"{stem}.aus.parquet", table)
    write_bytes(path, _mat_bytes(arrays))  # last: the .mat's presence means the sidecars are there
    return {
        "path": str(path),
        "identities": identities,
        "images": len(images),
        "labelled": int((table["label"] > 0).sum()),
        "unlabelled": unlabelled,
        "emotions": {TFD_EMOTIONS[c]: int((table["label"] == c).sum()) for c in TFD_EMOTIONS},
        "seconds": round(time.perf_counter() - start, 2),
    }


def _checked_path(mat_path: str | os.PathLike[str], identities: int, images_per_identity: int, unlabelled: int) -> Path:
    """``mat_path`` as a Path, once the arguments are valid; a DataError that says what is valid if not."""
    if identities < 1 or images_per_identity < 1 or unlabelled < 0:
        raise DataError(
            f"synthetic TFD: bad arguments identities={identities}, images_per_identity="
            f"{images_per_identity}, unlabelled={unlabelled} (need >= 1, >= 1, >= 0)"
        )
    path = Path(mat_path)
    if path.suffix != ".mat":
        raise DataError(f"synthetic TFD: {path} does not end in .mat; give a path like data/TFD_96x96.mat")
    return path


def _labelled_faces(seeds: list[np.random.SeedSequence], per_identity: int) -> tuple[list, list[dict], list]:
    """(images, rows, crop boxes): ``per_identity`` faces of each identity, one seed each, emotions in turn."""
    images, rows, boxes = [], [], []
    for i, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        sub = sample_subject(rng)
        codes = np.concatenate([rng.permutation(7) + 1 for _ in range(-(-per_identity // 7))])
        for code in codes[:per_identity]:
            expr = sample_expression(TFD_EMOTIONS[int(code)], rng).scaled(rng.uniform(0.75, 1.0))
            img, pose = _face(sub, expr, rng)
            images.append(img)
            rows.append(_row(len(rows), i, int(code), expr))
        boxes.append(crop_boxes(sub.shape, pose))
    return images, rows, boxes


def _unlabelled_faces(rng: np.random.Generator, n: int, images: list, rows: list[dict]) -> None:
    """Append ``n`` strangers without labels, as most of the real TFD (half with a free expression)."""
    for _ in range(n):
        expr = sample_free_expression(rng) if rng.random() < 0.5 else Expression({})
        images.append(_face(sample_subject(rng), expr, rng)[0])
        rows.append(_row(len(rows), -1, -1, expr))
