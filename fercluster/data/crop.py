"""Face crops: by landmarks (detector-free) and by OpenCV's Haar cascade as the authors ran it."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

CROP_SIZE = 96
LANDMARK_SCALE = 1.25  # side of the square crop / larger side of the landmarks' bounding box
LANDMARK_SHIFT_UP = 0.10  # fraction of the side the crop moves up, so the brows and forehead are in


def landmark_box(points: np.ndarray) -> tuple[float, float, float]:
    """The square crop box ``(x0, y0, side)`` of 68 ``(x, y)`` landmarks.

    The bounding box of the points, squared around its centre with side
    ``LANDMARK_SCALE * max(w, h)`` and shifted up by ``LANDMARK_SHIFT_UP * side``.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise ValueError(f"landmarks must be an (n, 2) array of x, y; got shape {points.shape}")
    x_min, y_min = points.min(axis=0)
    x_max, y_max = points.max(axis=0)
    side = LANDMARK_SCALE * max(x_max - x_min, y_max - y_min)
    cx, cy = (x_min + x_max) / 2, (y_min + y_max) / 2 - LANDMARK_SHIFT_UP * side
    return cx - side / 2, cy - side / 2, side


def square(image: np.ndarray, x0: float, y0: float, side: float) -> np.ndarray:
    """The square box cut from a grey image, zero-filled where it leaves the image (same dtype)."""
    x0i, y0i, s = int(round(x0)), int(round(y0)), max(1, int(round(side)))
    h, w = image.shape
    canvas = np.zeros((s, s), dtype=image.dtype)
    sx0, sy0 = max(0, x0i), max(0, y0i)
    sx1, sy1 = min(w, x0i + s), min(h, y0i + s)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - y0i : sy1 - y0i, sx0 - x0i : sx1 - x0i] = image[sy0:sy1, sx0:sx1]
    return canvas


def crop_box(image: np.ndarray, x0: float, y0: float, side: float, size: int = CROP_SIZE) -> np.ndarray:
    """Crop the square box from a grey uint8 image (zero fill outside it), resized to size x size by
    area averaging (OpenCV). The synthetic sets' own alignment; CK+ is cropped by ``face_crop``."""
    import cv2

    return cv2.resize(square(image, x0, y0, side), (size, size), interpolation=cv2.INTER_AREA)


# The authors' CK+ pipeline ran on scikit-image: rgb2gray (ITU-R BT.709 weights, float in [0, 1])
# for colour frames, stored as uint8 (value * 255, truncated) before the crop; transform.resize
# with bilinear interpolation and no anti-aliasing (scikit-image had none then); and a cast of
# value * 255 to uint8, which truncates.
def to_grey(image: np.ndarray) -> np.ndarray:
    """A frame (grey, RGB or RGBA; uint8 or uint16) as float grey in [0, 1], as scikit-image reads
    it: ``rgb2gray`` (0.2125 R + 0.7154 G + 0.0721 B) for colour, alpha dropped, then truncated to
    the uint8 grid as the authors stored the grey frame (up to 1 grey level, on about half the pixels)."""
    from skimage.color import rgb2gray

    image = np.asarray(image)
    if image.ndim == 3:  # rgb2gray on the integer frame, as the authors called it (its float cast included)
        return to_uint8(rgb2gray(image[..., :3])) / 255.0
    return image.astype(np.float64) / np.iinfo(image.dtype).max  # exact: v / 255 * 255 == v


def to_uint8(grey: np.ndarray) -> np.ndarray:
    """Float grey in [0, 1] to uint8 as the authors' code did it: value * 255, truncated."""
    return (np.clip(grey, 0.0, 1.0) * 255).astype(np.uint8)


def face_crop(grey: np.ndarray, x0: float, y0: float, side: float, size: int = CROP_SIZE) -> np.ndarray:
    """The authors' CK+ crop: the square box of a float grey frame (zero fill outside it), resized to
    size x size with scikit-image's bilinear resize without anti-aliasing, truncated to uint8."""
    return resize_grey(square(np.asarray(grey, dtype=np.float64), x0, y0, side), size)


def resize_grey(grey: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Float grey in [0, 1] to size x size uint8: bilinear, no anti-aliasing, truncated (the authors')."""
    from skimage.transform import resize

    out = resize(grey, (size, size), order=1, mode="constant", anti_aliasing=False, preserve_range=True)
    return to_uint8(out)


def to_crop_coords(points: np.ndarray, box: tuple[float, float, float], size: int = CROP_SIZE) -> np.ndarray:
    """Map (x, y) image coordinates into the size x size crop of ``box``."""
    x0, y0, side = box
    scale = size / side
    return (np.asarray(points, dtype=np.float64) - np.array([x0, y0])) * scale


# The authors' detector settings (their code, not the paper's text).
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
HAAR_SCALE_FACTOR = 1.3
HAAR_MIN_NEIGHBORS = (5, 3)  # first try, then the retry
HAAR_MIN_FRACTION = 0.5  # minSize = this x the image's shorter side
HAAR_MAX_FRACTION = 0.8  # maxSize = this x the image's shorter side


@functools.lru_cache(maxsize=1)
def _cascade() -> "object":
    import cv2

    from fercluster.errors import DataError

    path = Path(getattr(getattr(cv2, "data", None), "haarcascades", "")) / HAAR_CASCADE
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise DataError(
            f"cannot load the Haar cascade {path} (OpenCV {cv2.__version__}); OpenCV 5 no longer "
            "ships it: install opencv-python-headless<5, or use --crop landmarks"
        )
    return cascade


def haar_box(gray: np.ndarray) -> tuple[float, float, float] | None:
    """The face box ``(x0, y0, side)`` found by the Haar cascade as the authors ran it, or None.

    detectMultiScale with scaleFactor 1.3, minNeighbors 5 (retried with 3), faces between 0.5 and
    0.8 of the image's shorter side; the first detection is taken. Boxes are square.
    """
    gray = np.ascontiguousarray(gray, dtype=np.uint8)
    if gray.ndim != 2:
        raise ValueError(f"haar_box needs a grey (h, w) image; got shape {gray.shape}")
    shorter = min(gray.shape)
    min_side, max_side = int(HAAR_MIN_FRACTION * shorter), int(HAAR_MAX_FRACTION * shorter)
    for neighbours in HAAR_MIN_NEIGHBORS:
        found = _cascade().detectMultiScale(
            gray,
            scaleFactor=HAAR_SCALE_FACTOR,
            minNeighbors=neighbours,
            minSize=(min_side, min_side),
            maxSize=(max_side, max_side),
        )
        if len(found):
            x, y, w, h = (int(v) for v in found[0])
            return float(x), float(y), float(max(w, h))
    return None
