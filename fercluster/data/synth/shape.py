"""Face geometry: the 68 iBUG landmarks in canonical units, per-subject shapes, AU deformation.

Canonical frame: origin between the eyes and the nose tip, x to the image right, y down; the jaw
is about 2 units wide. iBUG-68 order: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fercluster.data.synth.aus import ACTION_UNITS, Expression

_EYE_L = [(-0.62, -0.25), (-0.52, -0.31), (-0.36, -0.31), (-0.26, -0.245), (-0.36, -0.20), (-0.52, -0.20)]
_MOUTH_OUTER_L = [(-0.38, 0.58), (-0.24, 0.52), (-0.09, 0.49), (0.0, 0.50)]  # 48..51 (52..54 mirrored)
_MOUTH_LOWER = [(0.24, 0.66), (0.10, 0.70), (0.0, 0.71), (-0.10, 0.70), (-0.24, 0.66)]  # 55..59
_MOUTH_INNER = [
    (-0.33, 0.58),
    (-0.10, 0.567),
    (0.0, 0.57),
    (0.10, 0.567),
    (0.33, 0.58),
    (0.10, 0.583),
    (0.0, 0.585),
    (-0.10, 0.583),
]  # 60..67


def _template() -> np.ndarray:
    pts = np.zeros((68, 2))
    phi = np.linspace(0.0, np.pi, 17)  # jaw 0..16 from the image-left temple round the chin
    pts[:17, 0] = -np.cos(phi) * 0.98
    pts[:17, 1] = -0.2 + 1.15 * np.sin(phi) ** 0.85
    t = np.linspace(0.0, 1.0, 5)  # brow 17 (outer) .. 21 (inner)
    pts[17:22, 0] = -0.80 + 0.62 * t
    pts[17:22, 1] = -0.47 - 0.09 * np.sin(np.pi * (0.2 + 0.75 * t)) + 0.02 * t
    pts[22:27] = pts[21:16:-1] * [-1, 1]
    pts[27:31, 0] = 0.0
    pts[27:31, 1] = np.linspace(-0.27, 0.20, 4)
    pts[31:36] = [(-0.21, 0.28), (-0.11, 0.315), (0.0, 0.33), (0.11, 0.315), (0.21, 0.28)]
    pts[36:42] = _EYE_L
    eye_r = np.array(_EYE_L) * [-1, 1]
    pts[42:48] = eye_r[[3, 2, 1, 0, 5, 4]]  # 42 inner, 43 44 upper, 45 outer, 46 47 lower
    pts[48:52] = _MOUTH_OUTER_L
    pts[52:55] = np.array(_MOUTH_OUTER_L[2::-1]) * [-1, 1]
    pts[55:60] = _MOUTH_LOWER
    pts[60:68] = _MOUTH_INNER
    return pts


TEMPLATE = _template()
EYES = (slice(36, 42), slice(42, 48))
BROWS = (slice(17, 22), slice(22, 27))


def _shift(pts: np.ndarray, idx: slice | list[int], center: np.ndarray, scale: float, offset) -> None:
    pts[idx] = (pts[idx] - center) * scale + center + np.asarray(offset)


def sample_shape(rng: np.random.Generator) -> np.ndarray:
    """A subject's neutral landmarks: the template with varied proportions."""
    p = TEMPLATE.copy()
    jaw_w, jaw_h = rng.uniform(0.88, 1.12), rng.uniform(0.9, 1.12)
    p[:17, 0] *= jaw_w
    p[:17, 1] = -0.2 + (p[:17, 1] + 0.2) * jaw_h
    eye_dx, eye_dy, eye_s = rng.uniform(-0.05, 0.05), rng.uniform(-0.04, 0.04), rng.uniform(0.85, 1.2)
    for k, eye in enumerate(EYES):
        c = p[eye].mean(axis=0)
        _shift(p, eye, c, 1.0, ((-1, 1)[k] * eye_dx, eye_dy))
        c = p[eye].mean(axis=0)
        p[eye] = c + (p[eye] - c) * [eye_s, eye_s * rng.uniform(0.85, 1.15)]
    brow_dy, arch = rng.uniform(-0.05, 0.05), rng.uniform(0.6, 1.5)
    for brow in BROWS:
        base = p[brow, 1].max()
        p[brow, 1] = base + (p[brow, 1] - base) * arch + brow_dy + eye_dy
        p[brow, 0] *= rng.uniform(0.95, 1.05)
    nose_len, nose_w = rng.uniform(-0.05, 0.05), rng.uniform(0.85, 1.2)
    p[29:36, 1] += nose_len * np.array([0.5, 1, 1, 1, 1, 1, 1])
    p[31:36, 0] *= nose_w
    mouth_dy, mouth_w, lips = rng.uniform(-0.04, 0.06), rng.uniform(0.85, 1.15), rng.uniform(0.75, 1.3)
    mouth = slice(48, 68)
    c = np.array([0.0, p[60:68, 1].mean()])
    p[mouth, 0] *= mouth_w
    p[mouth, 1] = c[1] + (p[mouth, 1] - c[1]) * lips + mouth_dy + 0.5 * nose_len
    p *= [rng.uniform(0.93, 1.07), 1.0]
    return p + rng.normal(0.0, 0.008, p.shape)


DEFORM_GAIN = 1.5  # scales every AU displacement in aus.py (tuned so that expressions read at 32x32)


def deform(shape: np.ndarray, expression: Expression) -> np.ndarray:
    """Landmarks of ``shape`` showing ``expression`` (intensities already scaled for the frame)."""
    out = shape.copy()
    outward = np.sign(np.where(np.abs(shape[:, 0]) < 0.02, 0.0, shape[:, 0]))
    side_w = np.ones(68)
    if expression.side:
        side_w = np.clip(0.5 + expression.side * shape[:, 0] / 0.1, 0.0, 1.0)
    for au, value in expression.aus.items():
        w = side_w if au in expression.unilateral else 1.0
        value = value * DEFORM_GAIN
        for idx, dx, dy in ACTION_UNITS[au].moves:
            idx = list(idx)
            out[idx, 0] += value * dx * outward[idx] * (w if np.isscalar(w) else w[idx])
            out[idx, 1] += value * dy * (w if np.isscalar(w) else w[idx])
    return _fix_mouth(out)


def _fix_mouth(p: np.ndarray) -> np.ndarray:
    """Keep the lips from crossing: inner lower lip below inner upper, outer lips outside inner."""
    upper_in, lower_in = [61, 62, 63], [67, 66, 65]
    p[lower_in, 1] = np.maximum(p[lower_in, 1], p[upper_in, 1] + 0.008)
    p[[50, 51, 52], 1] = np.minimum(p[[50, 51, 52], 1], p[upper_in, 1] - 0.02)
    p[[58, 57, 56], 1] = np.maximum(p[[58, 57, 56], 1], p[lower_in, 1] + 0.03)
    return p


@dataclass(frozen=True)
class Pose:
    """Similarity from canonical units to image pixels: p_img = scale * R(angle) p + (tx, ty)."""

    scale: float
    angle: float  # radians
    tx: float
    ty: float

    def matrix(self) -> np.ndarray:
        c, s = np.cos(self.angle) * self.scale, np.sin(self.angle) * self.scale
        return np.array([[c, -s], [s, c]])

    def apply(self, pts: np.ndarray) -> np.ndarray:
        return np.asarray(pts, dtype=np.float64) @ self.matrix().T + [self.tx, self.ty]


@dataclass(frozen=True)
class Tracking:
    """A landmark tracker's systematic error on one sequence: scale about the centroid and a shift.

    Real landmark fits are off by a few per cent; it makes the landmarks crop vary in scale and
    position from one sequence to the next, which a CNN must learn to tolerate (augmentation).
    """

    scale: float
    dx: float  # pixels
    dy: float
    jitter: float  # per-point, per-frame noise in pixels

    @staticmethod
    def sample(rng: np.random.Generator, face_scale: float, scale_sd: float, shift_sd: float) -> "Tracking":
        s = float(np.clip(rng.normal(1.0, scale_sd), 1 - 2.5 * scale_sd, 1 + 2.5 * scale_sd))
        dx, dy = np.clip(rng.normal(0.0, shift_sd, 2), -2.5 * shift_sd, 2.5 * shift_sd) * face_scale
        return Tracking(s, float(dx), float(dy), 0.006 * face_scale)

    def apply(self, pts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = pts.mean(axis=0)
        return (pts - c) * self.scale + c + [self.dx, self.dy] + rng.normal(0.0, self.jitter, pts.shape)
