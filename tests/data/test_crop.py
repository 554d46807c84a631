"""Face crops: landmarks box geometry and the Haar cascade as the authors ran it."""

from __future__ import annotations

import numpy as np
import pytest

from fercluster.data import crop
from fercluster.data.crop import crop_box, haar_box, landmark_box, to_crop_coords
from fercluster.errors import DataError


def test_landmark_box_squares_pads_and_shifts_up():
    points = np.array([[0, 0], [40, 0], [40, 20], [0, 20]] * 17, dtype=float)  # 68 points, 40 x 20
    x0, y0, side = landmark_box(points)
    assert side == pytest.approx(50.0)  # 1.25 x the larger side
    assert x0 == pytest.approx(20 - 25)  # centred on x = 20
    assert y0 == pytest.approx(10 - 5 - 25)  # centre moved up by 0.1 x side


def test_crop_box_fills_outside_with_zero_and_resizes():
    image = np.full((50, 50), 200, np.uint8)
    out = crop_box(image, -50, 0, 100)  # left half of the box lies outside the image
    assert out.shape == (96, 96) and out.dtype == np.uint8
    assert out[:, :40].max() == 0
    assert out[:40, 56:].min() == 200


def test_to_crop_coords_maps_box_corners_to_crop_corners():
    box = (10.0, 20.0, 48.0)
    mapped = to_crop_coords(np.array([[10, 20], [58, 68]]), box)
    np.testing.assert_allclose(mapped, [[0, 0], [96, 96]])


def test_haar_finds_the_face_in_a_real_photograph(astronaut):
    frame, (fx, fy, fside) = astronaut()
    box = haar_box(frame)
    assert box is not None
    x0, y0, side = box
    shorter = min(frame.shape)
    assert 0.5 * shorter <= side <= 0.8 * shorter
    # the detection contains the face (a few pixels of slack for the cascade's grid)
    slack = 0.1 * fside
    assert x0 <= fx + slack and y0 <= fy + slack
    assert x0 + side >= fx + fside - slack and y0 + side >= fy + fside - slack
    assert crop_box(frame, *box).shape == (96, 96)


def test_haar_returns_none_without_a_face():
    assert haar_box(np.full((120, 160), 128, np.uint8)) is None


class _FakeCascade:
    def __init__(self, answers):
        self.answers, self.calls = list(answers), []

    def detectMultiScale(self, image, **kwargs):  # noqa: N802 (OpenCV's name)
        self.calls.append(kwargs)
        return self.answers.pop(0)


def test_haar_uses_the_authors_parameters_and_retries_with_three_neighbours(monkeypatch):
    fake = _FakeCascade([np.empty((0, 4), int), np.array([[10, 20, 60, 60], [0, 0, 70, 70]])])
    monkeypatch.setattr(crop, "_cascade", lambda: fake)
    assert haar_box(np.zeros((100, 200), np.uint8)) == (10.0, 20.0, 60.0)  # the first detection
    assert [c["minNeighbors"] for c in fake.calls] == [5, 3]
    assert all(c["scaleFactor"] == 1.3 for c in fake.calls)
    assert fake.calls[0]["minSize"] == (50, 50) and fake.calls[0]["maxSize"] == (80, 80)


def test_missing_cascade_file_is_a_clear_error(monkeypatch):
    import cv2

    crop._cascade.cache_clear()
    monkeypatch.setattr(cv2.data, "haarcascades", "/nonexistent/")
    try:
        with pytest.raises(DataError, match="opencv-python-headless<5, or use --crop landmarks"):
            haar_box(np.zeros((100, 100), np.uint8))
    finally:
        crop._cascade.cache_clear()
