"""The CK+ crop as the authors computed it: scikit-image's grey weights, bilinear resize without
anti-aliasing, truncation to uint8; checked against scikit-image itself on a real photograph."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import skimage.color
import skimage.data
import skimage.io
import skimage.transform

from fercluster.data.ckplus import read_grey
from fercluster.data.crop import face_crop

BOX = (160, 40, 130)  # x0, y0, side: the astronaut's face (x 177..272, y 66..161 in the 512x512 photo)


def _photo(tmp_path: Path) -> Path:
    path = tmp_path / "S001_001_00000001.png"
    cv2.imwrite(str(path), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))  # a colour frame
    return path


def _scikit_image(path: Path) -> np.ndarray:
    """The authors' calls: imread, rgb2gray, the box, resize to 96 (bilinear, no anti-aliasing), * 255 -> uint8."""
    x0, y0, side = BOX
    grey = skimage.color.rgb2gray(skimage.io.imread(path))
    face = skimage.transform.resize(grey[y0 : y0 + side, x0 : x0 + side], (96, 96), order=1, anti_aliasing=False)
    return (face * 255).astype(np.uint8)


def test_crop_matches_scikit_image_within_one_grey_level(tmp_path):
    path = _photo(tmp_path)
    ours = face_crop(read_grey(path), *BOX)
    reference = _scikit_image(path)
    assert ours.shape == (96, 96) and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1


def test_the_opencv_pipeline_it_replaced_is_further_off(tmp_path):
    # BT.601 grey (OpenCV) and area resize differ from the authors' scikit-image crop by more than a
    # grey level: the test above would catch a return to them.
    path = _photo(tmp_path)
    x0, y0, side = BOX
    grey = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY)[y0 : y0 + side, x0 : x0 + side]
    opencv = cv2.resize(grey, (96, 96), interpolation=cv2.INTER_AREA)
    assert np.abs(opencv.astype(int) - _scikit_image(path).astype(int)).max() > 1


def test_grey_frames_read_as_scikit_image_reads_them(tmp_path):
    path = tmp_path / "grey.png"
    frame = skimage.color.rgb2gray(skimage.data.astronaut())
    frame8 = (frame * 255).astype(np.uint8)
    cv2.imwrite(str(path), frame8)
    np.testing.assert_allclose(read_grey(path), skimage.io.imread(path) / 255.0)


def test_truncation_not_rounding():
    grey = np.full((10, 10), 0.999 / 255 * 100)  # 99.9 grey levels
    assert face_crop(grey, 0, 0, 10)[0, 0] == 99
