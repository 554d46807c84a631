"""Filter visualisation pieces: top images, receptive field, guided backprop of one unit."""

import numpy as np
import pandas as pd
import torch

from fercluster.analysis import filters
from fercluster.train.model import build_model


def test_activation_matrices_and_top_images():
    frame = pd.DataFrame({"image_id": np.repeat(["b", "a", "c"], 2), "filter": np.tile([0, 1], 3),
                          "value": [1.0, 5.0, 3.0, 4.0, 2.0, 6.0], "y": np.arange(6), "x": np.arange(6)})
    acts = filters.activation_matrices(frame)
    assert acts.image_ids.tolist() == ["a", "b", "c"]
    assert acts.values.tolist() == [[3.0, 4.0], [1.0, 5.0], [2.0, 6.0]]
    assert filters.top_images(acts.values, 2).tolist() == [[0, 2], [2, 1]]  # strongest first


def test_guided_backprop_of_one_unit_stays_in_its_receptive_field():
    torch.manual_seed(0)
    model = build_model(8, width=0.125, image_size=48, k=1.0, seed=0).eval()
    x = torch.randn(3, 1, 48, 48)
    ys, xs = np.array([0, 5, 11]), np.array([3, 6, 11])
    maps = filters.guided_backprop(model, x, 2, ys, xs)
    assert maps.shape == (3, 48, 48)
    for k in range(3):
        y0, y1, x0, x1 = filters.rf_box(int(ys[k]), int(xs[k]), 48)
        outside = maps[k].copy()
        outside[y0:y1, x0:x1] = 0
        assert np.abs(maps[k]).sum() > 0 and np.abs(outside).max() == 0
    # Per-example selection: example 0's map does not depend on the others in the batch.
    alone = filters.guided_backprop(model, x[:1], 2, ys[:1], xs[:1])
    np.testing.assert_allclose(alone[0], maps[0], rtol=1e-5, atol=1e-7)


def test_patch_is_zero_filled_at_the_border_and_crop_support():
    image = np.full((32, 32), 7, dtype=np.uint8)
    p = filters.patch(image, 0, 0)
    assert p.shape == (32, 32) and p[:14].max() == 0 and p[14:, 14:].min() == 7
    m = np.zeros((10, 10))
    m[2:4, 5:9] = 1.0
    assert filters.crop_support(m).shape == (2, 4)


def test_choose_filters_configured_or_by_score():
    values = np.random.default_rng(0).random((50, 6))
    assert filters.choose_filters(values, [4, 1], 3, None) == [4, 1]
    assert filters.choose_filters(values, None, 2, np.array([0.1, 0.9, 0.2, 0.8, 0, 0])) == [1, 3]
    values[:, 5] *= 10  # largest variance
    assert filters.choose_filters(values, None, 1, None) == [5]
