"""The CK+ crop as the authors computed it: scikit-image's grey weights, the grey frame stored as
uint8, bilinear resize without anti-aliasing, truncation to uint8; checked against scikit-image
itself on a real photograph, with boxes of real CK+ size (Haar faces are 245 px and more)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.color
import skimage.data
import skimage.io
import skimage.transform

from fercluster.data.ckplus import read_grey
from fercluster.data.crop import face_crop

BOX = (100, 10, 260)  # x0, y0, side: around the astronaut's face (x 177..272, y 66..161 in the 512x512 photo)
BOXES = [BOX, (60, 0, 390)]  # at 260 px scikit-image's anti-aliasing changes up to 61 grey levels, at 390 px 94


def _photo(tmp_path: Path) -> Path:
    path = tmp_path / "S001_001_00000001.png"
    cv2.imwrite(str(path), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))  # a colour frame
    return path


def _scikit_image(path: Path, box=BOX, anti_aliasing: bool = False) -> np.ndarray:
    """The authors' calls: imread, rgb2gray, * 255 -> uint8 (the stored grey frame), the box, resize
    to 96 (bilinear, no anti-aliasing), * 255 -> uint8."""
    x0, y0, side = box
    grey = (skimage.color.rgb2gray(skimage.io.imread(path)) * 255).astype(np.uint8)
    face = skimage.transform.resize(
        grey[y0 : y0 + side, x0 : x0 + side], (96, 96), order=1, anti_aliasing=anti_aliasing
    )
    return (face * 255).astype(np.uint8)


@pytest.mark.parametrize("box", BOXES)
def test_crop_is_scikit_image_at_ck_plus_scale(tmp_path, box):
    path = _photo(tmp_path)
    ours = face_crop(read_grey(path), *box)
    reference = _scikit_image(path, box)
    assert ours.shape == (96, 96) and ours.dtype == np.uint8
    diff = np.abs(ours.astype(int) - reference.astype(int))
    # Equal but for float rounding at a truncation edge (a couple of pixels). Without the uint8 step
    # of RGB frames about half the pixels (4,500 of 9,216) would be one grey level off.
    assert diff.max() <= 1 and np.count_nonzero(diff) <= 10


@pytest.mark.parametrize("box", BOXES)
def test_anti_aliasing_would_be_caught(tmp_path, box):
    # scikit-image's anti-aliasing (its default since 0.19) changes a CK+-sized crop by many grey levels
    path = _photo(tmp_path)
    smoothed = _scikit_image(path, box, anti_aliasing=True)
    assert np.abs(smoothed.astype(int) - _scikit_image(path, box).astype(int)).max() > 30


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


def test_rgb_frames_are_stored_as_uint8_grey_before_the_crop(tmp_path):
    path = _photo(tmp_path)
    expected = (skimage.color.rgb2gray(skimage.io.imread(path)) * 255).astype(np.uint8) / 255.0
    np.testing.assert_array_equal(read_grey(path), expected)


def test_truncation_not_rounding():
    grey = np.full((10, 10), 0.999 / 255 * 100)  # 99.9 grey levels
    assert face_crop(grey, 0, 0, 10)[0, 0] == 99
