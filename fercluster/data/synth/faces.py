"""Procedural renderer of grey faces from landmarks (numpy + cv2, windowed, a few ms a frame).

Everything is painted into an "albedo" image window around the head, then lit (gradient and
radial shading), softened, and noise is added. Painting helpers work on the bounding box of what
they draw only, so small features cost little.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fercluster.data.synth.aus import Expression
from fercluster.data.synth.canvas import Canvas
from fercluster.data.synth.shape import Pose, deform, sample_shape


@dataclass(frozen=True)
class Subject:
    shape: np.ndarray  # (68, 2) neutral canonical landmarks
    skin: float
    background: float
    hair: float
    hairline: float  # canonical y of the hairline at the midline
    brow_dark: float  # multiplicative
    brow_thick: float  # canonical units
    lip_dark: float
    iris: float
    light_dir: float  # radians
    light: float  # gradient strength
    shading: float  # radial fall-off strength
    noise: float  # grey levels of fine noise
    chin_dots: np.ndarray  # (8, 2) canonical offsets of the AU17 chin dimpling
    gaze: tuple[float, float]
    clothes: float
    bg_grad: tuple[float, float]  # grey levels per pixel, x and y


def sample_subject(rng: np.random.Generator) -> Subject:
    skin = rng.uniform(105, 200)
    background = rng.uniform(25, 225)
    if abs(background - skin) < 30:
        background = skin + (-45 if skin > 125 else 45)
    return Subject(
        shape=sample_shape(rng),
        skin=skin,
        background=background,
        hair=rng.uniform(15, 80) if rng.random() < 0.8 else rng.uniform(120, 190),
        hairline=rng.uniform(-1.05, -0.78),
        brow_dark=rng.uniform(0.35, 0.7),
        brow_thick=rng.uniform(0.045, 0.08),
        lip_dark=rng.uniform(0.6, 0.85),
        iris=rng.uniform(25, 110),
        light_dir=rng.uniform(0, 2 * np.pi),
        light=rng.uniform(0.0, 0.3),
        shading=rng.uniform(0.12, 0.28),
        noise=rng.uniform(1.5, 5.0),
        chin_dots=np.column_stack([rng.uniform(-0.12, 0.12, 8), rng.uniform(-0.22, -0.08, 8)]),
        gaze=(float(rng.normal(0, 0.015)), float(rng.normal(0, 0.008))),
        clothes=rng.uniform(20, 230),
        bg_grad=(float(rng.normal(0, 0.05)), float(rng.normal(0, 0.05))),
    )


def _amount(expr: Expression, au: int, side: int) -> float:
    """Intensity of ``au`` on one side of the face (-1 image-left, +1 image-right, 0 midline)."""
    value = expr.aus.get(au, 0.0)
    if au in expr.unilateral and side and side != expr.side:
        return 0.0
    return value


_T8 = np.linspace(0, 1, 8)[:, None]
_CIRCLES = {
    n: np.column_stack([np.cos(a), np.sin(a)]) for n in (8, 20) for a in [np.linspace(0, 2 * np.pi, n, endpoint=False)]
}


def _curve(p0, p1, p2) -> np.ndarray:
    """Quadratic Bezier through control points (canonical), 8 points."""
    t = _T8
    return (1 - t) ** 2 * np.asarray(p0) + 2 * t * (1 - t) * np.asarray(p1) + t**2 * np.asarray(p2)


def _ellipse(center, rx: float, ry: float, n: int = 20) -> np.ndarray:
    return _CIRCLES[n] * [rx, ry] + np.asarray(center)


def head_outline(L: np.ndarray) -> np.ndarray:
    """Jaw 0..16, then the forehead arc back over the top of the head."""
    y_mid = (L[0, 1] + L[16, 1]) / 2
    rx, cx = (L[16, 0] - L[0, 0]) / 2, (L[16, 0] + L[0, 0]) / 2
    a = np.linspace(0, np.pi, 17)[1:-1]
    arc = np.column_stack([cx + rx * np.cos(a), y_mid - (y_mid + 1.42) * np.sin(a)])
    return np.concatenate([L[:17], arc])


def _paint_body(cv: Canvas, sub: Subject) -> None:
    """Clothes and neck (drawn once per sequence, into the base frame)."""
    cv.paint(
        [np.array([(-1.9, 1.75), (-0.5, 1.3), (0.5, 1.3), (1.9, 1.75), (2.6, 5.0), (-2.6, 5.0)])],
        value=sub.clothes,
        blur=1.0,
        cover=True,
    )
    cv.paint(
        [np.array([(-0.52, 0.4), (0.52, 0.4), (0.58, 1.55), (0, 1.7), (-0.58, 1.55)])],
        value=sub.skin * 0.82,
        blur=1.0,
        cover=True,
    )


def _paint_head(cv: Canvas, sub: Subject, L: np.ndarray) -> None:
    for k in (0, 16):
        side = np.sign(L[k, 0])
        cv.paint([_ellipse((L[k, 0] + side * 0.03, L[k, 1] + 0.2), 0.1, 0.2)], value=sub.skin * 0.88, cover=True)
    cv.paint([head_outline(L)], value=sub.skin, cover=True)
    cv.blob((0, L[8, 1] + 0.08), (0.35, 0.07), -0.25)  # shadow under the chin


def _hair_mask(cv: Canvas, sub: Subject):
    """Soft hair coverage (analytic, in canonical coordinates) and its window."""
    win = cv.canon_window((-1.2, -1.65), (1.2, sub.hairline + 0.5))
    if win is None:
        return None, None
    u, v = cv.uv(win)
    inside = np.clip((1 - (u / 1.1) ** 2 - ((v + 0.15) / 1.42) ** 2) / 0.06, 0, 1)
    above = np.clip((sub.hairline + 0.4 * u**2 - v) / 0.03, 0, 1)
    return (inside * above).astype(np.float32), win


def _paint_cheeks_nose(cv: Canvas, sub: Subject, L: np.ndarray, e: Expression) -> None:
    for side, wing, corner in ((-1, 31, 48), (1, 35, 54)):
        a6, a12 = _amount(e, 6, side), _amount(e, 12, side)
        cv.blob((side * 0.5, 0.1 - 0.08 * a6 - 0.04 * a12), (0.17, 0.12), 0.2 * a6 + 0.12 * a12)
        fold = 0.05 + 0.45 * a12 + 0.25 * _amount(e, 9, side) + 0.1 * a6 + 0.15 * _amount(e, 20, side)
        w, c = L[wing], L[corner]
        cv.paint(
            [_curve(w + (side * 0.05, -0.03), (w[0] + side * 0.14, (w[1] + c[1]) / 2), c + (side * 0.07, 0.07))],
            mul=1 - fold,
            line=0.03,
            blur=1.2,
        )
    for side, a, b in ((-1, 31, 32), (1, 35, 34)):
        c = (L[a] + L[b]) / 2 + (0, -0.012)
        cv.paint([_ellipse(c, 0.042, 0.02)], mul=0.45, blur=0.6)
        w = L[a]
        cv.paint(
            [np.array([w + (0.0, 0.0), w + (side * 0.03, -0.05), w + (-side * 0.005, -0.11)])],
            mul=0.85,
            line=0.02,
            blur=1.0,
        )
    ys = [L[28, 1] + 0.05 * k - 0.02 for k in range(3)]
    cv.paint(
        [_curve((-0.1, y + 0.01), (0, y - 0.015), (0.1, y + 0.01)) for y in ys],
        mul=1 - 0.4 * e.aus.get(9, 0.0),
        line=0.02,
        blur=1.0,
    )


def _paint_eyes(cv: Canvas, sub: Subject, L: np.ndarray, e: Expression) -> None:
    for side, eye in ((-1, L[36:42]), (1, L[42:48])):
        outer, inner = (eye[0], eye[3]) if side < 0 else (eye[3], eye[0])
        upper = eye[[0, 1, 2, 3]]
        cv.blob(eye.mean(axis=0) + (0, -0.03), (0.17, 0.08), -0.25 * e.aus.get(4, 0.0))
        cv.paint([upper + (0, -0.045) * np.array([[0.4], [1], [1], [0.4]])], mul=0.85, line=0.02, blur=1.0)
        m_eye, win = cv.mask([eye], margin=2)
        if m_eye is None:
            continue
        cv.apply(m_eye, win, min(sub.skin + 45, 235), None)
        c = eye.mean(axis=0) + sub.gaze
        r = 0.085 * np.linalg.norm(eye[3] - eye[0]) / 0.36
        m_iris, _ = cv.mask([_ellipse(c, r, r)], win=win)
        cv.apply(m_iris * m_eye, win, sub.iris, None)
        m_pupil, _ = cv.mask([_ellipse(c, 0.4 * r, 0.4 * r)], win=win)
        cv.apply(m_pupil * m_eye, win, 8.0, None)
        cv.paint([upper], mul=0.3, line=0.022)
        cv.paint([eye[[3, 4, 5, 0]]], mul=0.7, line=0.01)
        bulge = 0.15 * _amount(e, 6, side) + 0.22 * e.aus.get(7, 0.0)
        cv.paint([eye[[4, 5]] + (0, 0.035)], mul=1 - bulge, line=0.022, blur=1.0)
        start = outer + (side * 0.05, 0.0)
        rays = [
            np.array([start + d * 0.01, start + d * 0.1])
            for d in (np.array([np.cos(a) * side, np.sin(a)]) for a in (-0.45, 0.0, 0.45))
        ]
        cv.paint(rays, mul=1 - 0.4 * _amount(e, 6, side), line=0.018, blur=1.0)


def _paint_brows(cv: Canvas, sub: Subject, L: np.ndarray, e: Expression) -> None:
    taper = np.array([0.6, 0.85, 1.0, 1.0, 0.9])
    for brow, t in ((L[17:22], taper), (L[22:27], taper[::-1])):
        half = (sub.brow_thick * t / 2)[:, None] * [0, 1]
        cv.paint([np.concatenate([brow - half, (brow + half)[::-1]])], mul=sub.brow_dark, blur=0.8)
    a1, a2, a4 = e.aus.get(1, 0.0), e.aus.get(2, 0.0), e.aus.get(4, 0.0)
    top_in = min(L[21, 1], L[22, 1])
    cv.paint(
        [_curve((-0.32, y + 0.01), (0, y - 0.03), (0.32, y + 0.01)) for y in top_in - 0.13 - 0.07 * np.arange(3)],
        mul=1 - 0.3 * a1,
        line=0.02,
        blur=1.0,
    )
    cv.paint(
        [
            _curve((side * 0.3, y + 0.02), (side * 0.55, y - 0.03), (side * 0.8, y + 0.03))
            for side, outer in ((-1, L[17]), (1, L[26]))
            for y in outer[1] - 0.15 - 0.07 * np.arange(3)
        ],
        mul=1 - 0.3 * a2,
        line=0.02,
        blur=1.0,
    )
    cv.paint(
        [np.array([(x * 1.3, top_in - 0.03), (x, top_in + 0.12)]) for x in (-0.05, 0.05)],
        mul=1 - 0.45 * a4,
        line=0.02,
        blur=1.0,
    )


def _paint_mouth(cv: Canvas, sub: Subject, L: np.ndarray, e: Expression) -> None:
    a24, a17 = e.aus.get(24, 0.0), e.aus.get(17, 0.0)
    cv.blob((0, L[51, 1] - 0.05), (0.2, 0.03), 0.1 * a24)
    cv.blob((0, L[57, 1] + 0.05), (0.18, 0.03), 0.08 * a24)
    cv.paint([L[48:60]], mul=sub.lip_dark, blur=0.5)
    inner = L[60:68]
    m_in, win = cv.mask([inner], margin=2)
    if m_in is not None:
        cv.apply(m_in, win, 25.0, None)
        m_top, _ = cv.mask([np.concatenate([L[60:65], L[64:59:-1] + (0, 0.045)])], win=win)
        cv.apply(m_top * m_in, win, 215.0, None)
        low = L[[64, 65, 66, 67, 60]]
        m_low, _ = cv.mask([np.concatenate([low, low[::-1] - (0, 0.03)])], win=win)
        cv.apply(m_low * m_in, win, 190.0, None)
    cv.paint([L[60:65]], mul=0.55, line=0.01)
    for side, corner in ((-1, L[48]), (1, L[54])):
        out = np.array([side, 0.0])
        cv.blob(corner, (0.03, 0.03), -0.12)
        a14, a15, a20 = (_amount(e, au, side) for au in (14, 15, 20))
        cv.paint(
            [_curve(corner + out * 0.06 + (0, -0.04), corner + out * 0.085, corner + out * 0.06 + (0, 0.04))],
            mul=1 - 0.5 * a14,
            line=0.022,
            blur=1.0,
        )
        cv.paint(
            [np.array([corner + out * 0.01 + (0, 0.03), corner + out * 0.035 + (0, 0.14)])],
            mul=1 - 0.35 * a15,
            line=0.022,
            blur=1.0,
        )
        cv.paint(
            [np.array([corner + out * 0.03, corner + out * 0.11 + (0, 0.01)])], mul=1 - 0.3 * a20, line=0.02, blur=1.0
        )
    y = L[57, 1]
    cv.paint(
        [_curve((-0.14, y + 0.05), (0, y + 0.1), (0.14, y + 0.05))], mul=1 - 0.06 - 0.35 * a17, line=0.022, blur=1.0
    )
    cv.blob(L[8] + (0, -0.12), (0.12, 0.07), 0.1 * a17)
    cv.paint([_ellipse(L[8] + d, 0.014, 0.014, 8) for d in sub.chin_dots], mul=1 - 0.35 * a17, blur=1.0)


def _gain(cv: Canvas, sub: Subject) -> np.ndarray:
    """Lighting of the window: a gradient and a radial fall-off, on a coarse grid (it is smooth)."""
    h, w = cv.img.shape
    step = 8
    p = cv.pose
    coarse = Canvas(
        np.empty(((h + step - 1) // step + 1, (w + step - 1) // step + 1), np.float32),
        0,
        0,
        Pose(p.scale / step, p.angle, (p.tx - cv.x0) / step, (p.ty - cv.y0) / step),
    )
    u, v = coarse.uv()
    grad = sub.light * (u * np.cos(sub.light_dir) + v * np.sin(sub.light_dir)) / 1.4
    r2 = np.minimum(u**2 + ((v + 0.2) / 1.25) ** 2, 1.3)
    big = cv2.resize(
        (1.0 + grad - sub.shading * r2).astype(np.float32),
        (coarse.img.shape[1] * step, coarse.img.shape[0] * step),
        interpolation=cv2.INTER_LINEAR,
    )
    return big[:h, :w]


def _static_shading(gain: Canvas, sub: Subject) -> None:
    """Shading that does not move with the AUs (nose, eye sockets, cheeks), folded into the lighting."""
    N = sub.shape
    light_side = np.sign(np.cos(sub.light_dir)) or 1.0
    gain.blob((0, N[29, 1] - 0.05), (0.045, 0.2), 0.07)
    gain.blob((-light_side * 0.09, N[29, 1]), (0.04, 0.15), -0.1)
    gain.blob(N[30] + (0, 0.02), (0.06, 0.04), 0.07)
    for side, eye in ((-1, N[36:42]), (1, N[42:48])):
        gain.blob(eye.mean(axis=0) + (0, -0.03), (0.17, 0.08), -0.1)
        gain.blob((side * 0.5, 0.1), (0.17, 0.12), 0.04)


def _window(pts: np.ndarray, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    w, h = size
    x0, y0 = (max(0, int(np.floor(v)) - 2) for v in pts.min(axis=0))
    x1, y1 = (min(lim, int(np.ceil(v)) + 3) for v, lim in zip(pts.max(axis=0), (w, h), strict=True))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


class Stage:
    """One subject at one pose in a frame of ``size`` (w, h): everything that stays the same across
    a sequence (wall, clothes, neck, hair, lighting) is computed once; ``render`` paints the face."""

    def __init__(self, sub: Subject, pose: Pose, size: tuple[int, int], rng: np.random.Generator):
        self.sub, self.pose, self.size = sub, pose, size
        w, h = size
        gx, gy = sub.bg_grad
        xs = (np.arange(w, dtype=np.float32) - w / 2) * gx
        ys = (np.arange(h, dtype=np.float32) - h / 2) * gy
        frame = np.float32(sub.background) + xs[None, :] + ys[:, None]
        body = _window(pose.apply([(-2.7, 0.3), (2.7, 0.3), (-2.7, 5.0), (2.7, 5.0)]), size)
        if body is not None:
            x0, y0, x1, y1 = body
            cv = Canvas(frame[y0:y1, x0:x1].copy(), x0, y0, pose)
            _paint_body(cv, sub)
            frame[y0:y1, x0:x1] = self._lit(cv, frame[y0:y1, x0:x1], _gain(cv, sub))
        self.base = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
        head = np.concatenate([head_outline(sub.shape), [(-1.3, -1.62), (1.3, -1.62), (0, sub.shape[8, 1] + 0.6)]])
        self.win = _window(pose.apply(head), size)
        if self.win is not None:
            x0, y0, x1, y1 = self.win
            self.bg = frame[y0:y1, x0:x1].copy()
            cv = Canvas(self.bg, x0, y0, pose)
            self.gain = _gain(cv, sub)
            _static_shading(Canvas(self.gain, x0, y0, pose), sub)
            self.hair, self.hair_win = _hair_mask(cv, sub)
        self.noise = rng.standard_normal(60_000, dtype=np.float32)

    @staticmethod
    def _lit(cv: Canvas, bg: np.ndarray, gain: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(bg + (cv.img * gain - bg) * cv.alpha, (0, 0), 0.6)

    def render(self, expr: Expression, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One grey uint8 frame showing ``expr`` and its true landmarks (68, 2) in image pixels."""
        sub, frame = self.sub, self.base.copy()
        L = deform(sub.shape, expr)
        if self.win is not None:
            x0, y0, x1, y1 = self.win
            cv = Canvas(self.bg.copy(), x0, y0, self.pose)
            _paint_head(cv, sub, L)
            if self.hair is not None:
                cv.apply(self.hair, self.hair_win, sub.hair, None, cover=True)
            _paint_cheeks_nose(cv, sub, L, expr)
            _paint_eyes(cv, sub, L, expr)
            _paint_brows(cv, sub, L, expr)
            _paint_mouth(cv, sub, L, expr)
            face = self._lit(cv, self.bg, self.gain)
            face += self._noise((x1 - x0, y1 - y0), rng) * (cv.alpha * np.float32(sub.noise))
            face += np.float32(0.5)
            frame[y0:y1, x0:x1] = np.clip(face, 0, 255, out=face).astype(np.uint8)
        return frame, self.pose.apply(L)

    def _noise(self, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """Noise at a third of the resolution (it survives the crop's downsampling; PNGs stay small)."""
        w, h = size
        cw, ch = w // 3 + 2, h // 3 + 2
        if self.noise.size < cw * ch:
            small = rng.standard_normal((ch, cw), dtype=np.float32)
        else:
            offset = int(rng.integers(0, self.noise.size - cw * ch + 1))
            small = self.noise[offset : offset + cw * ch].reshape(ch, cw)
        return cv2.resize(small, (cw * 3, ch * 3), interpolation=cv2.INTER_LINEAR)[1 : h + 1, 1 : w + 1]
