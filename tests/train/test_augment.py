import math

import numpy as np
import pytest
import torch

from fercluster.train.augment import AugmentParams, augment, intensity, pixel_matrix, sample_params, warp


def _params(n=1, flip=False, angle=0.0, scale=1.0, tx=0.0, ty=0.0, gamma=1.0) -> AugmentParams:
    full = lambda v: torch.full((n,), float(v))  # noqa: E731
    return AugmentParams(torch.full((n,), flip), full(angle), full(scale), full(tx), full(ty), full(gamma))


def test_parameter_distributions():
    p = sample_params(40_000, 96, torch.Generator().manual_seed(0))
    assert p.flip.float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert -5 <= p.angle.min() and p.angle.max() <= 5 and abs(p.angle.mean()) < 0.05
    assert 0.7 <= p.scale.min() and p.scale.max() <= 1.4
    assert p.scale.mean().item() == pytest.approx(1.05, abs=0.005)
    d = (96 - 96 * p.scale).abs()
    assert torch.all(p.tx.abs() <= d / 2 + 1e-4) and torch.all(p.ty.abs() <= d / 2 + 1e-4)
    # tx / (d/2) is uniform on (-1, 1): quartiles at -0.5, 0, 0.5
    q = torch.quantile((p.tx / (d / 2)).clamp(-1, 1), torch.tensor([0.25, 0.5, 0.75]))
    assert torch.allclose(q, torch.tensor([-0.5, 0.0, 0.5]), atol=0.02)
    assert 0.25 <= p.gamma.min() and p.gamma.max() <= 4
    assert p.gamma.mean().item() == pytest.approx(2.125, abs=0.02)


def _mark(size=32, x=10, y=7):
    img = torch.zeros(1, 1, size, size)
    img[0, 0, y, x] = 1.0
    return img


def test_translation_moves_a_marked_pixel_where_the_matrix_says():
    # p_in = p_out + t: the content moves by -t
    out = warp(_mark(), _params(tx=3.0, ty=-2.0))
    y, x = divmod(out[0, 0].argmax().item(), 32)
    assert (x, y) == (10 - 3, 7 + 2) and out.max().item() == pytest.approx(1.0)


def test_flip_mirrors_before_the_warp():
    out = warp(_mark(), _params(flip=True))
    y, x = divmod(out[0, 0].argmax().item(), 32)
    assert (x, y) == (31 - 10, 7)


@pytest.mark.parametrize("flip", [False, True])
def test_rotation_scale_and_shift_follow_the_pixel_matrix(flip):
    size, yy, xx = 48, *np.mgrid[0:48, 0:48]
    cx, cy = 30.0, 17.0  # a smooth blob, centred away from the image centre
    blob = torch.tensor(np.exp(-((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2) / 4.0), dtype=torch.float32)
    params = _params(flip=flip, angle=4.0, scale=0.8, tx=2.5, ty=-1.5)
    out = warp(blob[None, None], params)[0, 0].numpy()
    # where the blob ends up: the output point whose input point is the blob's centre
    m = pixel_matrix(params, size)[0].double().numpy()
    p_out = np.linalg.solve(m[:, :2], np.array([cx, cy]) - m[:, 2])
    w = out / out.sum()
    centroid = np.array([(w * (xx + 0.5)).sum(), (w * (yy + 0.5)).sum()])
    assert np.allclose(centroid, p_out, atol=0.15)


@pytest.mark.parametrize("centre, c", [("true", 48.0), ("code", 48.5)])  # continuous coordinates: x runs 0..96
def test_pixel_matrix_is_the_spec_formula(centre, c):
    p = _params(angle=3.0, scale=1.2, tx=4.0, ty=1.0)
    m = pixel_matrix(p, 96, centre)[0].double()
    a = math.radians(3.0)
    r = 1.2 * torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
    p_out = torch.tensor([20.0, 70.0], dtype=torch.float64)
    c = torch.tensor([c, c], dtype=torch.float64)
    expected = r @ (p_out - c) + c + torch.tensor([4.0, 1.0], dtype=torch.float64)
    assert torch.allclose(m[:, :2] @ p_out + m[:, 2], expected, atol=1e-4)


def test_intensity_gamma_then_min_max_to_0_2():
    x = torch.rand(5, 1, 8, 8) * 2
    out = intensity(x, torch.full((5,), 2.0))
    assert torch.allclose(out.amin((1, 2, 3)), torch.zeros(5)) and torch.allclose(
        out.amax((1, 2, 3)), torch.full((5,), 2.0)
    )
    v = x[0].flatten() ** 2
    assert torch.allclose(out[0].flatten(), (v - v.min()) / (v.max() - v.min()) * 2, atol=1e-5)


def test_augment_is_batched_and_reproducible_from_the_generator():
    x = torch.rand(16, 1, 32, 32) * 2
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 2 + 1e-5


def _authors_warp(image: np.ndarray, flip: bool, angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    """The authors' ``Crop`` (anna.util) rebuilt from scikit-image's own calls: rotate, scale, centre
    (c = S / 2 in pixel indices), translate, composed with ``+``; ``warp`` with that inverse map."""
    from skimage.transform import AffineTransform
    from skimage.transform import warp as sk_warp

    size = image.shape[0]
    if flip:
        image = image[:, ::-1]
    centre = np.array([size // 2, size // 2, 1])
    tf = AffineTransform(rotation=np.deg2rad(angle)) + AffineTransform(scale=(scale, scale))
    shift = centre - tf.params @ centre
    tf = tf + AffineTransform(translation=shift[:2]) + AffineTransform(translation=(tx, ty))
    return sk_warp(image, tf.params, order=1, mode="constant", cval=0.0, preserve_range=True)


@pytest.mark.parametrize("flip", [False, True])
def test_warp_is_the_authors_scikit_image_crop(flip):
    yy, xx = np.mgrid[0:96, 0:96]
    image = 1.0 + np.sin(xx / 7.0) * np.cos(yy / 11.0) + 0.3 * np.sin((xx + 2 * yy) / 5.0)  # smooth, asymmetric
    image = (image - image.min()) / (image.max() - image.min()) * 2.0  # in [0, 2]
    angle, scale, tx, ty = 4.3, 1.27, 3.4, -2.2
    reference = _authors_warp(image, flip, angle, scale, tx, ty)
    params = _params(flip=flip, angle=angle, scale=scale, tx=tx, ty=ty)
    x = torch.tensor(image.copy(), dtype=torch.float64)[None, None]
    ours = warp(x, params)[0, 0].numpy()
    assert np.abs(ours - reference).max() < 1e-4  # float rounding in affine_grid; the true centre is off by > 0.01
    # the true centre (47.5) is measurably off the authors' warp: the default is what pins the centre
    true = warp(x, params, centre="true")[0, 0].numpy()
    assert np.abs(true - reference).max() > 0.01
