"""A float32 painting window in image pixels, addressed in canonical face coordinates."""

from __future__ import annotations

import cv2
import numpy as np

from fercluster.data.synth.shape import Pose

_SHIFT = 4  # cv2 sub-pixel bits
_ONE = 1 << _SHIFT


class Canvas:
    """A float32 albedo window ``img`` whose (0, 0) is image pixel (x0, y0), with its pose."""

    def __init__(self, img: np.ndarray, x0: int, y0: int, pose: Pose):
        self.img, self.x0, self.y0, self.pose = img, x0, y0, pose
        self.alpha = np.zeros_like(img)  # coverage of the subject (body, head, hair), for the lighting
        self._m = pose.matrix().T
        self._inv = np.linalg.inv(pose.matrix())
        self._t = np.array([pose.tx - x0, pose.ty - y0])

    def px(self, canon: np.ndarray) -> np.ndarray:
        """Canonical points -> window pixel coordinates."""
        return np.asarray(canon, dtype=np.float64).reshape(-1, 2) @ self._m + self._t

    def _window(self, pts: np.ndarray, margin: float):
        h, w = self.img.shape
        lo = np.floor(pts.min(axis=0) - margin).astype(int)
        hi = np.ceil(pts.max(axis=0) + margin).astype(int) + 1
        x0, y0 = max(lo[0], 0), max(lo[1], 0)
        x1, y1 = min(hi[0], w), min(hi[1], h)
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    def mask(
        self,
        canon_polys: list[np.ndarray],
        line: float = 0.0,
        closed: bool = False,
        blur: float = 0.0,
        margin: float = 0.0,
        win=None,
    ):
        """Anti-aliased coverage (0..1) of polygons (line=0) or polylines (line=width in canonical units).

        Returns ``(mask, window)``; ``win`` forces the window (x0, y0, x1, y1), e.g. to intersect masks.
        """
        polys = [self.px(p) for p in canon_polys]
        width = max(1, int(round(line * self.pose.scale))) if line else 0
        if win is None:
            win = self._window(np.concatenate(polys), width + 3 * blur + 2 + margin)
        if win is None:
            return None, None
        x0, y0, x1, y1 = win
        m = np.zeros((y1 - y0, x1 - x0), np.uint8)
        ipts = [np.round((p - [x0, y0]) * _ONE).astype(np.int32) for p in polys]
        if width:
            cv2.polylines(m, ipts, closed, 255, width, cv2.LINE_AA, _SHIFT)
        else:
            cv2.fillPoly(m, ipts, 255, cv2.LINE_AA, _SHIFT)
        out = m.astype(np.float32) * (1 / 255)
        if blur:
            out = cv2.GaussianBlur(out, (0, 0), blur)
        return out, win

    def paint(
        self,
        canon_polys: list[np.ndarray],
        value: float | None = None,
        mul: float | None = None,
        alpha: float = 1.0,
        cover: bool = False,
        **kw,
    ) -> None:
        """Set covered pixels to ``value`` or multiply them by ``mul``, with opacity ``alpha``."""
        if alpha <= 0 or (value is None and mul == 1.0):
            return
        m, win = self.mask(canon_polys, **kw)
        if m is not None:
            self.apply(m * alpha, win, value, mul, cover)

    def apply(self, m: np.ndarray, win, value: float | None, mul: float | None, cover: bool = False) -> None:
        x0, y0, x1, y1 = win
        if cover:
            np.maximum(self.alpha[y0:y1, x0:x1], m, out=self.alpha[y0:y1, x0:x1])
        sub = self.img[y0:y1, x0:x1]
        if value is not None:
            sub += (value - sub) * m
        else:
            sub *= 1.0 - m * (1.0 - mul)

    def uv(self, win=None) -> tuple[np.ndarray, np.ndarray]:
        """Canonical coordinates (u of shape (1, w) + (h, 1) broadcast) of the window's pixels."""
        x0, y0, x1, y1 = win if win is not None else (0, 0, self.img.shape[1], self.img.shape[0])
        inv = self._inv
        xs = np.arange(x0, x1, dtype=np.float64) + self.x0 - self.pose.tx
        ys = np.arange(y0, y1, dtype=np.float64) + self.y0 - self.pose.ty
        u = (inv[0, 0] * xs)[None, :] + (inv[0, 1] * ys)[:, None]
        v = (inv[1, 0] * xs)[None, :] + (inv[1, 1] * ys)[:, None]
        return u, v

    def canon_window(self, lo, hi, margin: float = 1.0):
        """The window covering the canonical box lo=(u0, v0) .. hi=(u1, v1)."""
        corners = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [lo[0], hi[1]], [hi[0], hi[1]]], dtype=np.float64)
        return self._window(self.px(corners), margin)

    def blob(self, center, sigma, amount: float) -> None:
        """Multiply by 1 + amount * Gaussian(center, sigma=(sx, sy)) in canonical coordinates."""
        if amount == 0:
            return
        c = np.asarray(center, dtype=np.float64)
        sx, sy = sigma
        win = self.canon_window(c - [3 * sx, 3 * sy], c + [3 * sx, 3 * sy])
        if win is None:
            return
        u, v = self.uv(win)
        g = np.exp(-0.5 * (((u - c[0]) / sx) ** 2 + ((v - c[1]) / sy) ** 2))
        x0, y0, x1, y1 = win
        self.img[y0:y1, x0:x1] *= (1.0 + amount * g).astype(np.float32)
