"""The CNNs of hyperspherical-defense.txt Table 4 (advgeom.models.hyper)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advgeom.errors import ConfigError
from advgeom.models import create_model
from advgeom.models._layers import count_parameters


def convs(model):
    return [m for m in model.body if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("name,widths,per_stage,fc_in,fc_dim", [
    ("hyper_mnist_cnn", (32, 64, 128), 2, 128 * 3 * 3, 256),   # 28 -> 14 -> 7 -> 3
    ("hyper_cifar_cnn", (64, 128, 256), 3, 256 * 4 * 4, 512),  # 32 -> 16 -> 8 -> 4
])
def test_table4_layout_and_parameter_count(name, widths, per_stage, fc_in, fc_dim):
    torch.manual_seed(0)
    model = create_model(name)
    cs = convs(model)
    assert [c.out_channels for c in cs] == [w for w in widths for _ in range(per_stage)]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) and c.stride == (1, 1) for c in cs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.body) == 3
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # Table 4 has none
    assert model.body.fc.in_features == fc_in and model.body.fc.out_features == fc_dim
    assert isinstance(model.head, nn.Linear) and model.head.in_features == fc_dim
    assert model.feature_dim == fc_dim and model.num_classes == 10
    # independent count: 3x3 kernels + biases, FC, head
    chans = [model.input_shape[0]] + [c.out_channels for c in cs]
    expected = sum(9 * a * b + b for a, b in zip(chans[:-1], chans[1:]))
    expected += fc_in * fc_dim + fc_dim + fc_dim * 10 + 10
    assert count_parameters(model) == expected
    x = torch.rand(3, *model.input_shape)
    assert (model.features(x) >= 0).all()  # ReLU after the FC layer by default


def test_layer_factories_are_used_with_the_documented_signature():
    calls = []

    def conv_layer(cin, cout, *, kernel_size, padding):
        calls.append(("conv", cin, cout, kernel_size, padding))
        return nn.Conv2d(cin, cout, kernel_size, padding=padding)

    def linear_layer(fin, fout):
        calls.append(("fc", fin, fout))
        return nn.Linear(fin, fout)

    def head_layer(fin, fout):
        calls.append(("head", fin, fout))
        return nn.Linear(fin, fout, bias=False)

    model = create_model("hyper_mnist_cnn", conv_layer=conv_layer, linear_layer=linear_layer,
                         head_layer=head_layer, num_classes=7)
    assert calls == [("conv", 1, 32, 3, 1), ("conv", 32, 32, 3, 1), ("conv", 32, 64, 3, 1),
                     ("conv", 64, 64, 3, 1), ("conv", 64, 128, 3, 1), ("conv", 128, 128, 3, 1),
                     ("fc", 1152, 256), ("head", 256, 7)]
    assert model.head.bias is None and model(torch.rand(2, 1, 28, 28)).shape == (2, 7)


def test_activation_batch_norm_and_feature_activation_options():
    model = create_model("hyper_mnist_cnn", activation="tanh", feature_activation=False)
    kinds = [type(m) for m in model.body]
    assert nn.ReLU not in kinds and kinds.count(nn.Tanh) == 6
    assert isinstance(model.body[-1], nn.Linear)  # raw FC output is the feature
    assert (model.features(torch.rand(8, 1, 28, 28)) < 0).any()

    model = create_model("hyper_mnist_cnn", activation=nn.PReLU)
    prelus = [m for m in model.body if isinstance(m, nn.PReLU)]
    assert len(prelus) == 7 and len({id(p.weight) for p in prelus}) == 7  # one per layer

    model = create_model("hyper_cifar_cnn", batch_norm=True)
    body = list(model.body)
    bns = [i for i, m in enumerate(body) if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 9 and all(isinstance(body[i - 1], nn.Conv2d) for i in bns)
    assert all(isinstance(body[i + 1], nn.ReLU) for i in bns)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="too small"):
        create_model("hyper_mnist_cnn", input_shape=(1, 4, 4))
    with pytest.raises(ConfigError, match="conv_layer"):
        create_model("hyper_mnist_cnn", conv_layer=lambda *a, **k: "not a module")
    with pytest.raises(ConfigError, match="activation"):
        create_model("hyper_mnist_cnn", activation="swishy")
    with pytest.raises(ConfigError, match="batch_norm"):
        create_model("hyper_mnist_cnn", batch_norm="yes")
    with pytest.raises(ConfigError, match="widths"):
        create_model("hyper_cifar_cnn", widths=[])
