import numpy as np
import pytest
import torch

from fercluster.train.preprocess import STD_EPS, box_mean, local_normalize, preprocess, to_float


def test_to_float_maps_uint8_to_0_2():
    x = torch.tensor([[[0, 255], [51, 102]]], dtype=torch.uint8)
    out = to_float(x)
    assert out.shape == (1, 1, 2, 2)
    assert torch.allclose(out.flatten(), torch.tensor([0.0, 2.0, 0.4, 0.8]))


def test_box_mean_is_zero_padded_and_always_divided_by_25():
    x = torch.ones(1, 1, 8, 8)
    mean = box_mean(x)[0, 0]
    assert mean[4, 4] == pytest.approx(1.0)
    assert mean[0, 0] == pytest.approx(9 / 25)  # corner: 3x3 of the window inside the image
    assert mean[0, 4] == pytest.approx(15 / 25)


def test_mean_subtraction_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (12, 12)).astype(np.uint8)
    out = preprocess(torch.from_numpy(img)[None], normalize="mean")[0, 0].numpy()
    x = img / 255 * 2
    padded = np.pad(x, 2)
    expected = np.array([[x[i, j] - padded[i : i + 5, j : j + 5].sum() / 25 for j in range(12)] for i in range(12)])
    assert np.allclose(out, expected, atol=1e-5)


def test_mean_std_divides_by_local_deviation():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 16, 16) * 2
    a, b = local_normalize(x, "mean"), local_normalize(x, "mean_std")
    assert not torch.allclose(a, b)
    assert b[..., 4:-4, 4:-4].std() > a[..., 4:-4, 4:-4].std()  # unit-ish local scale


def test_unknown_normalize_is_refused():
    with pytest.raises(ValueError, match="mean_std"):
        local_normalize(torch.zeros(1, 1, 4, 4), "zscore")


def test_mean_std_is_normer3_box_mean_of_squared_deviations():
    # Normer3 (anna.util) with scipy's correlation as the convolution: mean = box(x), diff = x - mean,
    # var = box(diff ** 2), zero-padded borders, always / 25. E[x^2] - E[x]^2 is a different number.
    from scipy.ndimage import correlate

    rng = np.random.default_rng(0)
    x = rng.random((16, 16)) * 2
    box = lambda a: correlate(a, np.ones((5, 5)) / 25.0, mode="constant", cval=0.0)  # noqa: E731
    diff = x - box(x)
    expected = diff / np.sqrt(box(diff**2) + STD_EPS)
    out = local_normalize(torch.tensor(x, dtype=torch.float64)[None, None], "mean_std")[0, 0].numpy()
    assert np.abs(out - expected).max() < 1e-9
