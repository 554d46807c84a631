import pytest
import torch
from torch import nn

from fercluster.train.model import build_model, count_parameters, init_weights, model_config


def test_paper_model_has_1335508_parameters_for_8_classes():
    assert count_parameters(build_model(8)) == 1_335_508


def test_layer_shapes_and_no_conv_biases():
    model = build_model(8)
    assert [model.conv1.weight.shape, model.conv2.weight.shape, model.conv3.weight.shape] == [
        (64, 1, 5, 5), (128, 64, 5, 5), (256, 128, 5, 5)]  # fmt: skip
    assert all(conv.bias is None for conv in (model.conv1, model.conv2, model.conv3))
    assert model.fc4.weight.shape == (300, 1024) and model.out.weight.shape == (8, 300)


def test_features_are_post_relu_conv3_maps_and_logits_have_class_shape():
    model = build_model(7, width=0.125, image_size=32, k=0.7, seed=0)
    x = torch.randn(3, 1, 32, 32)
    maps = model.features(x)
    assert maps.shape == (3, 32, 8, 8) and maps.min() >= 0
    assert model(x).shape == (3, 7)


def test_one_relu_module_per_layer():
    model = build_model(8, width=0.125)
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 4
    assert len({id(m) for m in model.modules() if isinstance(m, nn.ReLU)}) == 4


def test_quadrant_pool_is_max_over_each_12x12_quadrant_at_96():
    model = build_model(8, width=0.125)
    maps = torch.rand(2, 32, 24, 24)
    expected = torch.nn.functional.max_pool2d(maps, 12, 12)
    assert torch.equal(model.quadrant_pool(maps), expected)
    # flatten order: channel, then quadrant row, then column
    flat = torch.flatten(model.quadrant_pool(maps), 1)
    assert flat[0, 1] == maps[0, 0, :12, 12:].max() and flat[0, 2] == maps[0, 0, 12:, :12].max()


def test_init_scales_and_biases():
    k = 0.9
    model = build_model(8, k=k, seed=1)
    assert torch.all(model.fc4.bias == 1.0) and torch.all(model.out.bias == 0.0)
    for layer, fan_in in ((model.conv2, 64 * 25), (model.conv3, 128 * 25)):
        assert layer.weight.std().item() == pytest.approx(k / fan_in**0.5, rel=0.02)
    assert model.fc4.weight.std().item() == pytest.approx(k / 256, rel=0.02)  # the code's quirk
    init_weights(model, k, "fan_in", torch.Generator().manual_seed(1))
    assert model.fc4.weight.std().item() == pytest.approx(k / 32, rel=0.02)


def test_init_is_reproducible_from_the_seed():
    a, b = build_model(8, width=0.25, k=0.5, seed=7), build_model(8, width=0.25, k=0.5, seed=7)
    c = build_model(8, width=0.25, k=0.5, seed=8)
    assert torch.equal(a.conv1.weight, b.conv1.weight) and not torch.equal(a.conv1.weight, c.conv1.weight)


def test_dropout_acts_on_fc4_input_only_in_training():
    model = build_model(8, width=0.125, image_size=32, dropout=0.5, k=0.7, seed=0)
    seen = []
    model.fc4.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    x = torch.rand(4, 1, 32, 32) + 1
    model.train()
    model(x)
    model.eval()
    model(x)
    train_in, eval_in = seen
    assert (train_in == 0).float().mean() > 0.3  # about half masked (features are positive)
    kept = train_in != 0
    assert torch.allclose(train_in[kept], 2 * eval_in[kept])  # inverted dropout


def test_model_config_rebuilds_the_architecture():
    model = build_model(6, width=0.25, image_size=48, dropout=0.5)
    rebuilt = build_model(**model_config(model))
    rebuilt.load_state_dict(model.state_dict())
