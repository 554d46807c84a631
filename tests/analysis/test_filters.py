"""Filter visualisation pieces: top images, receptive field, guided backprop of one unit."""

import numpy as np
import pandas as pd
import pytest
import torch

from fercluster.analysis import filters
from fercluster.errors import ConfigError
from fercluster.train.model import build_model


def test_activation_matrices_and_top_images():
    frame = pd.DataFrame(
        {
            "image_id": np.repeat(["b", "a", "c"], 2),
            "filter": np.tile([0, 1], 3),
            "value": [1.0, 5.0, 3.0, 4.0, 2.0, 6.0],
            "y": np.arange(6),
            "x": np.arange(6),
        }
    )
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


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes only where the forward input and the backward signal are positive."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0)


def _unit_gradient(model, x, filt, y, xx, relu):
    """d conv3[filt, y, xx] / d input, with ``relu`` for relu1 and relu2 (the ReLUs below conv3)."""
    x = x.clone().requires_grad_(True)
    h = model.pool1(relu(model.conv1(x)))
    h = model.pool2(relu(model.conv2(h)))
    unit = model.conv3(h)[:, filt, y, xx].sum()
    return torch.autograd.grad(unit, x)[0][:, 0].numpy()


def test_guided_backprop_is_not_the_plain_gradient():
    """The projection keeps, at each ReLU, only what is positive both ways: built by hand here, it
    matches; the plain gradient (negative signals pass) and the deconvnet rule (forward mask dropped)
    do not. The zero-bias CNN's random conv3 weights make some signals below it negative."""
    model = build_model(8, width=0.125, image_size=32, k=1.0, seed=0).eval()
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    filt, y, xx = 3, 4, 4
    guided = filters.guided_backprop(model, x, filt, np.array([y]), np.array([xx]))[0]
    by_hand = _unit_gradient(model, x, filt, y, xx, _GuidedReLU.apply)[0]
    plain = _unit_gradient(model, x, filt, y, xx, torch.relu)[0]
    deconv = _unit_gradient(model, x, filt, y, xx, lambda t: _Deconv.apply(t))[0]
    np.testing.assert_allclose(guided, by_hand, rtol=1e-4, atol=1e-6)
    scale = np.abs(plain).max()
    assert scale > 0 and np.abs(guided - plain).max() > 0.1 * scale
    assert np.abs(guided - deconv).max() > 0.1 * np.abs(deconv).max()
    # the signal reaching relu2's output from the unit is the conv3 filter: negative somewhere, and
    # guided backprop stops it there (zero gradient into conv2) while the plain gradient passes it
    h = model.pool1(torch.relu(model.conv1(x))).detach()
    pre = model.conv2(h).detach().requires_grad_(True)
    post = torch.relu(pre)
    signal = torch.autograd.grad(model.conv3(model.pool2(post))[0, filt, y, xx], post)[0]
    assert (signal < 0).any() and (signal > 0).any()
    pre2 = model.conv2(h).detach().requires_grad_(True)
    into_conv2 = torch.autograd.grad(model.conv3(model.pool2(_GuidedReLU.apply(pre2)))[0, filt, y, xx], pre2)[0]
    assert (into_conv2[signal < 0] == 0).all() and (into_conv2 >= 0).all()


class _Deconv(torch.autograd.Function):
    """The deconvnet rule: pass positive backward signals, whatever the forward input was."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


def test_choose_filters_configured_or_by_activation_strength():
    values = np.random.default_rng(0).random((50, 6))
    assert filters.choose_filters(values, [4, 1], 3, 10) == [4, 1]
    values[:3, 2] = 5.0  # three strong images: filter 2 wins on its top 3, not on its variance alone
    values[:, 5] = np.linspace(0, 4, 50)  # widest spread, but its top 3 are weaker than filter 2's
    assert filters.choose_filters(values, None, 2, 3) == [2, 5]
    np.testing.assert_allclose(filters.activation_strength(values, 3)[2], 5.0)


class _Tiny(torch.nn.Module):
    """A hand-built network, nothing of the project's model: conv1, ReLU, max pool, conv2, ReLU, conv3."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)  # PyTorch's default init: weights of both signs
        self.conv1 = torch.nn.Conv2d(1, 3, 3, padding=1, bias=False)
        self.relu1 = torch.nn.ReLU()
        self.pool1 = torch.nn.MaxPool2d(2, 2)
        self.conv2 = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.relu2 = torch.nn.ReLU()
        self.conv3 = torch.nn.Conv2d(4, 5, 3, padding=1, bias=False)
        self.relu3 = torch.nn.ReLU()
        self.head = torch.nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool1(self.relu1(self.conv1(x)))
        h = self.relu3(self.conv3(self.relu2(self.conv2(h))))
        return self.head(h.amax(dim=(2, 3)))


@torch.no_grad()
def _projection_by_hand(net: _Tiny, x: torch.Tensor, filt: int, ys, xs, mask: str) -> np.ndarray:
    """The way down from unit (filt, ys[k], xs[k]) of conv3, written out: transposed convolutions,
    max-unpooling with the forward switches, and at each ReLU the explicit mask (forward input > 0,
    and for guided backprop backward signal > 0); ``pixel`` then keeps (map > 0)·(x > 0)."""
    w1, w2, w3 = net.conv1.weight, net.conv2.weight, net.conv3.weight
    a1 = torch.nn.functional.conv2d(x, w1, padding=1)  # relu1's forward input
    p1, switches = torch.nn.functional.max_pool2d(a1.clamp(min=0), 2, return_indices=True)
    a2 = torch.nn.functional.conv2d(p1, w2, padding=1)  # relu2's forward input

    def relu_backward(g: torch.Tensor, forward_input: torch.Tensor) -> torch.Tensor:
        keep = forward_input > 0
        return g * (keep & (g > 0) if mask != "none" else keep)

    g = torch.zeros(x.shape[0], w3.shape[0], *a2.shape[-2:])
    g[torch.arange(x.shape[0]), filt, torch.as_tensor(ys), torch.as_tensor(xs)] = 1.0
    g = relu_backward(torch.nn.functional.conv_transpose2d(g, w3, padding=1), a2)
    g = torch.nn.functional.conv_transpose2d(g, w2, padding=1)
    g = relu_backward(torch.nn.functional.max_unpool2d(g, switches, 2, output_size=a1.shape[-2:]), a1)
    g = torch.nn.functional.conv_transpose2d(g, w1, padding=1)[:, 0]
    if mask == "pixel":
        g = g * (g > 0) * (x[:, 0] > 0)
    return g.numpy()


def test_each_guided_mask_matches_the_backward_pass_written_out_by_hand():
    """analysis.guided_mask: none (plain gradient), relu (guided backprop), pixel (the authors' guided
    layer once more at the pixels), each against the explicit-mask reference; the three differ."""
    net = _Tiny().eval()
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    filt, ys, xs = 2, np.array([3, 4, 1]), np.array([4, 2, 6])
    by_hand = {m: _projection_by_hand(net, x, filt, ys, xs, m) for m in filters.GUIDED_MASKS}
    for mask, reference in by_hand.items():
        got = filters.guided_backprop(net, x, filt, ys, xs, mask)
        np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-6, err_msg=mask)
    scale = np.abs(by_hand["none"]).max()
    assert scale > 0 and np.abs(by_hand["relu"] - by_hand["none"]).max() > 0.1 * scale
    relu = by_hand["relu"]
    assert (relu < 0).any() and ((relu > 0) & (x[:, 0].numpy() <= 0)).any()  # both pixel masks bite
    assert by_hand["pixel"].min() >= 0 and np.abs(by_hand["pixel"] - relu).max() > 0.1 * np.abs(relu).max()
    with pytest.raises(ConfigError, match="analysis.guided_mask: got 'both'; valid: none, relu, pixel"):
        filters.guided_backprop(net, x, filt, ys, xs, "both")


def test_the_pixel_mask_changes_the_shown_maps():
    """visualise with guided_mask pixel: every map and its Figure 1 patch is the relu map where both it
    and the network input are positive, so nothing negative is shown and the cropped support never grows."""
    model = build_model(8, width=0.125, image_size=32, k=1.0, seed=0).eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 32, 32), dtype=np.uint8)
    f3 = model.conv3.out_channels
    acts = filters.Activations(
        np.array([str(i) for i in range(6)]), rng.random((6, f3), dtype=np.float32), *rng.integers(0, 8, (2, 6, f3))
    )
    rows = np.arange(6)
    views = {m: filters.visualise(model, images, rows, acts, [0, 3], 4, "mean", m) for m in ("relu", "pixel")}
    for i in range(2):
        k = views["relu"].top[i]
        x = filters.network_input(images[k], model, "mean")[:, 0].numpy()
        relu, pixel = views["relu"].projections[i], views["pixel"].projections[i]
        np.testing.assert_allclose(pixel, relu * (relu > 0) * (x > 0), rtol=1e-5, atol=1e-7)
        assert relu.min() < 0 <= pixel.min() and min(p.min() for p in views["pixel"].projection_patches[i]) >= 0
        for j in range(len(k)):
            shown_relu, shown_pixel = filters.crop_support(relu[j]), filters.crop_support(pixel[j])
            assert shown_pixel.shape[0] <= shown_relu.shape[0] and shown_pixel.shape[1] <= shown_relu.shape[1]


def test_the_report_computes_every_map_with_the_configured_mask(tmp_path, monkeypatch):
    """analysis.guided_mask reaches each guided-backprop call of a data set's section (the shown
    filters and the agreement check over all filters), and the summary names it."""
    import fabricate as fab

    from fercluster.analysis import dataset_section
    from fercluster.analysis.collect import collect
    from fercluster.orchestration.plan import expand

    prep = fab.make_prepared(tmp_path / "prep", subjects=20)
    cfg = fab.make_config(tmp_path, prep, folds=(0,), variants=("AD",), n_filters=2, top_n=2, guided_mask="pixel")
    fab.write_run(expand(cfg)[0], prep)
    masks, real = [], dataset_section.visualise

    def recording(*args, **kwargs):
        masks.append(args[7] if len(args) > 7 else kwargs.get("guided_mask", "relu (the default)"))
        return real(*args, **kwargs)

    monkeypatch.setattr(dataset_section, "visualise", recording)
    summary = dataset_section.analyse_dataset(cfg, "ckplus", collect(cfg).results, tmp_path / "a", log=print).summary
    assert summary["guided_mask"] == "pixel" and masks == ["pixel", "pixel"]
