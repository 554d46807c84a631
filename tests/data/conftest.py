"""Small raw data sets in the real file formats, written per test (CK+ tree, TFD .mat)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

FRAME_H, FRAME_W = 100, 120


@dataclass(frozen=True)
class Seq:
    subject: str
    sequence: str
    emotion: int | None  # None: no emotion file (not used by the authors)
    frames: int = 5
    aus: tuple[int, ...] = (1, 2)
    rgb: bool = False


# 12 labelled subjects (so the round robin wraps), one unlabelled-only subject, and edge cases.
DEFAULT_SEQUENCES = (
    Seq("S005", "001", 3, aus=(9, 15, 16)),
    Seq("S005", "002", None),
    Seq("S010", "001", 5, aus=(6, 12)),
    Seq("S010", "002", 2, aus=(12, 14)),  # contempt
    Seq("S011", "001", 7, aus=(1, 2, 5, 26), rgb=True),
    Seq("S022", "001", 1, aus=(4, 5, 7, 23)),
    Seq("S037", "001", 6, aus=(1, 4, 15)),
    Seq("S050", "001", 4, aus=(1, 2, 4, 5, 20)),
    Seq("S052", "001", 5, aus=(6, 12, 25)),
    Seq("S055", "001", 7, aus=(1, 2, 27)),
    Seq("S060", "001", 3, frames=3, aus=(9,)),  # too few frames
    Seq("S060", "002", 1, aus=(4, 7)),
    Seq("S071", "001", 6, aus=(1, 15, 17)),
    Seq("S080", "001", 2, aus=(14,)),  # contempt
    Seq("S100", "001", 4, aus=(1, 2, 4)),
    Seq("S101", "001", 5, frames=4, aus=(12,)),
    Seq("S999", "001", None),  # a subject without labelled sequences: not in any fold
)


def face_points(cx: float, cy: float, w: float, h: float) -> np.ndarray:
    """68 (x, y) points on an ellipse: a stand-in for a face's landmarks."""
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    return np.stack([cx + w / 2 * np.cos(t), cy + h / 2 * np.sin(t)], axis=1)


def draw_frame(points: np.ndarray, level: int) -> np.ndarray:
    import cv2

    image = np.full((FRAME_H, FRAME_W), 40, np.uint8)
    cv2.fillPoly(image, [np.round(points).astype(np.int32)], int(level))
    return image


def write_float_lines(path: Path, rows: list[list[float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("".join(f"   {v:.7e}" for v in row) + "\n" for row in rows))


def build_ckplus(root: Path, sequences=DEFAULT_SEQUENCES, emotion_dir: str = "Emotion") -> Path:
    """A CK+ tree: cohn-kanade-images/, Emotion (or Emotion_labels)/, FACS/, Landmarks/."""
    import cv2

    for seq in sequences:
        name = f"{seq.subject}_{seq.sequence}"
        rel = Path(seq.subject, seq.sequence)
        (root / "cohn-kanade-images" / rel).mkdir(parents=True, exist_ok=True)
        for f in range(1, seq.frames + 1):
            stem = f"{name}_{f:08d}"
            points = face_points(60 + f, 52, 50, 60)
            image = draw_frame(points, 100 + 20 * f)
            if seq.rgb:
                image = np.dstack([image, image, image])
            cv2.imwrite(str(root / "cohn-kanade-images" / rel / f"{stem}.png"), image)
            write_float_lines(root / "Landmarks" / rel / f"{stem}_landmarks.txt", points.tolist())
        last = f"{name}_{seq.frames:08d}"
        (root / "FACS" / rel).mkdir(parents=True, exist_ok=True)
        write_float_lines(root / "FACS" / rel / f"{last}_facs.txt", [[au, 2.0] for au in seq.aus])
        if seq.emotion is not None:
            write_float_lines(root / emotion_dir / rel / f"{last}_emotion.txt", [[seq.emotion]])
    (root / emotion_dir).mkdir(exist_ok=True)
    (root / "cohn-kanade-images" / "S005" / "001" / ".DS_Store").write_bytes(b"\0junk")
    return root


@pytest.fixture
def ck_root(tmp_path: Path) -> Path:
    return build_ckplus(tmp_path / "CK+")


def astronaut_frame(height: int = 245) -> tuple[np.ndarray, tuple[int, int, int]]:
    """skimage's astronaut, grey, her face scaled to ~0.6 of the frame height, in a wider frame.

    Returns the frame and the face box ``(x0, y0, side)`` it holds (found by hand in the photo:
    x 177..272, y 66..161 at 512x512).
    """
    import cv2
    import skimage.data

    grey = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)
    region = grey[37:190, 150:303]
    scale = height / region.shape[0]
    region = cv2.resize(region, (round(region.shape[1] * scale), height), interpolation=cv2.INTER_AREA)
    frame = np.full((height, round(height * 640 / 490)), 90, np.uint8)
    offset = 40 * height // 245
    frame[:, offset : offset + region.shape[1]] = region
    box = (round((177 - 150) * scale) + offset, round((66 - 37) * scale), round(95 * scale))
    return frame, box


def write_tfd(path: Path, n: int = 60, size: int = 96, seed: int = 0, **overrides) -> dict:
    """A small TFD .mat (v5): a third unlabelled, the rest labelled 1..7 with five 1/2/3 splits."""
    import scipy.io

    rng = np.random.default_rng(seed)
    labels = rng.integers(1, 8, size=n)
    labels[::3] = -1
    folds = rng.integers(1, 4, size=(n, 5))
    folds[labels == -1] = 0
    data = {
        "images": rng.integers(0, 256, size=(n, size, size), dtype=np.uint8),
        "labs_ex": labels.reshape(n, 1).astype(np.float64),
        "labs_id": (np.arange(n) // 4 + 1).reshape(n, 1).astype(np.float64),
        "folds": folds.astype(np.float64),
    }
    data.update(overrides)
    data = {k: v for k, v in data.items() if v is not None}
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), data, format="5")
    return data


def write_v73_header(path: Path) -> None:
    """A file that starts like a MATLAB v7.3 (HDF5) .mat: 512-byte MAT header, then HDF5's magic."""
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    header = text.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02" + b"IM"
    path.write_bytes(header.ljust(512, b"\0") + b"\x89HDF\r\n\x1a\n" + b"\0" * 64)


# Helpers as fixtures, so test modules need no import of this file.
@pytest.fixture
def make_ckplus():
    return build_ckplus


@pytest.fixture
def astronaut():
    return astronaut_frame


@pytest.fixture
def make_tfd():
    return write_tfd


@pytest.fixture
def make_v73():
    return write_v73_header


@pytest.fixture
def seq_type():
    return Seq
