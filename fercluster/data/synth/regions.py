"""Where each AU deforms the face, as boxes in the 96x96 landmarks crop (the FAU analysis's truth).

An AU's region is the bounding box of the landmarks it moves (neutral and at full intensity) and of
the wrinkles, bulges and furrows the renderer draws for it (faces.py), mapped into the crop of the
neutral face (``landmark_box`` + ``to_crop_coords``), padded a little and averaged over subjects.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from fercluster.data.crop import CROP_SIZE, landmark_box, to_crop_coords
from fercluster.data.synth.aus import ACTION_UNITS, Expression
from fercluster.data.synth.shape import Pose, deform

_PAD = 2.0  # crop pixels around each box


def _box(lo, hi) -> np.ndarray:
    (u0, v0), (u1, v1) = lo, hi
    return np.array([(u0, v0), (u1, v0), (u0, v1), (u1, v1)], dtype=np.float64)


def _mirror(pts: np.ndarray) -> np.ndarray:
    return np.concatenate([pts, pts * [-1, 1]])


def _corner_box(L: np.ndarray, out: float, up: float, down: float) -> np.ndarray:
    c = L[54]  # image-right corner; mirrored for the other side
    return _mirror(_box((c[0] - 0.02, c[1] - up), (c[0] + out, c[1] + down)))


# Extra points per AU (canonical), from the neutral landmarks N and the full-intensity landmarks A.
_EXTRA: dict[int, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    1: lambda N, A: _box((-0.34, min(A[21, 1], A[22, 1]) - 0.31), (0.34, A[21, 1])),
    2: lambda N, A: _mirror(_box((0.28, A[26, 1] - 0.34), (0.82, A[26, 1]))),
    4: lambda N, A: np.concatenate([_box((-0.08, A[21, 1] - 0.05), (0.08, A[21, 1] + 0.13)), N[36:48]]),
    6: lambda N, A: np.concatenate(
        [_mirror(_box((0.3, -0.05), (0.72, 0.2))), _mirror(A[45:46] + [(0.16, -0.06), (0.16, 0.06)])]
    ),
    7: lambda N, A: A[40:48] + (0, 0.04),
    9: lambda N, A: np.concatenate(
        [
            _box((-0.11, N[28, 1] - 0.05), (0.11, N[28, 1] + 0.1)),
            _mirror(N[35:36] + (0.08, 0.0)),
            _mirror(N[54:55] + (0.07, 0.07)),
        ]
    ),  # it deepens the nasolabial folds too
    12: lambda N, A: np.concatenate(
        [_mirror(A[54:55] + (0.08, 0.08)), _mirror(N[35:36] + (0.06, -0.04)), _mirror(np.array([(0.45, 0.05)]))]
    ),
    14: lambda N, A: _corner_box(A, 0.1, 0.05, 0.05),
    15: lambda N, A: _corner_box(A, 0.05, 0.02, 0.16),
    17: lambda N, A: np.concatenate([_box((-0.16, A[57, 1]), (0.16, A[8, 1])), A[8:9] + (0, 0.03)]),
    20: lambda N, A: _corner_box(A, 0.12, 0.03, 0.03),
    24: lambda N, A: np.concatenate(
        [_box((-0.22, A[51, 1] - 0.09), (0.22, A[51, 1])), _box((-0.2, A[57, 1]), (0.2, A[57, 1] + 0.09))]
    ),
    26: lambda N, A: A[8:9] + (0, 0.1),
    27: lambda N, A: A[8:9] + (0, 0.1),
}


def region_points(shape: np.ndarray, au: int) -> np.ndarray:
    """Canonical points whose bounding box is the region ``au`` deforms on a face of ``shape``."""
    full = deform(shape, Expression({au: 1.0}))
    moved = sorted({i for idx, _, _ in ACTION_UNITS[au].moves for i in idx})
    pts = [shape[moved], full[moved]]
    if au in _EXTRA:
        pts.append(_EXTRA[au](shape, full))
    return np.concatenate(pts)


def crop_boxes(shape: np.ndarray, pose: Pose, landmarks: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """Per AU, [y0, y1, x0, x1] (float) in the 96x96 crop of the neutral face of ``shape`` at ``pose``.

    ``landmarks``: the image landmarks the crop is taken from (default: the true neutral ones).
    """
    neutral = pose.apply(shape) if landmarks is None else landmarks
    box = landmark_box(neutral)
    out = {}
    for au in ACTION_UNITS:
        p = to_crop_coords(pose.apply(region_points(shape, au)), box)
        (x0, y0), (x1, y1) = p.min(axis=0) - _PAD, p.max(axis=0) + _PAD
        out[au] = np.array([y0, y1, x0, x1])
    return out


def average_regions(boxes: list[dict[int, np.ndarray]]) -> dict[str, dict]:
    """The JSON of au_regions: {"<au>": {"name", "region", "box": [y0, y1, x0, x1]}} (ints, clipped)."""
    out = {}
    for au, unit in sorted(ACTION_UNITS.items()):
        mean = np.mean([b[au] for b in boxes], axis=0)
        y0, y1, x0, x1 = (int(np.clip(round(float(v)), 0, CROP_SIZE)) for v in mean)
        out[str(au)] = {"name": unit.name, "region": unit.region, "box": [y0, y1, x0, x1]}
    return out
