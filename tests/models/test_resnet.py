"""WRN and the CIFAR ResNet (advgeom.models.resnet). The big defaults are only
built on the meta device (no memory, no forward) to check their size."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advgeom.errors import ConfigError
from advgeom.models import create_model
from advgeom.models._layers import count_parameters
from advgeom.models.resnet import PadShortcut


def meta_model(name, **kw):
    with torch.device("meta"):
        return create_model(name, **kw)


@pytest.mark.parametrize("kw,expected", [
    ({}, 46_160_474),                   # WRN-34-10 (Madry et al. / TRADES), ~46.2M
    ({"depth": 28}, 36_479_194),        # WRN-28-10, 36.5M (Zagoruyko & Komodakis Table 4)
])
def test_wrn_parameter_counts(kw, expected):
    model = meta_model("wrn", **kw)
    assert count_parameters(model) == expected
    assert model.feature_dim == 640 and model.head.in_features == 640


def test_wrn_structure():
    model = meta_model("wrn")
    # 1 stem conv + 3 stages x 5 blocks x 2 convs + 3 projection shortcuts
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 34
    stages = [model.body.stage1, model.body.stage2, model.body.stage3]
    assert [len(s) for s in stages] == [5, 5, 5]
    assert [s[0].conv1.stride for s in stages] == [(1, 1), (2, 2), (2, 2)]
    assert [s[-1].conv2.out_channels for s in stages] == [160, 320, 640]


@pytest.mark.parametrize("depth,expected", [
    (32, 464_154),    # He et al. 2016 Table 6: 0.46M
    (20, 269_722),    # 0.27M
    (110, 1_727_962),  # 1.7M
])
def test_resnet_parameter_counts(depth, expected):
    model = meta_model("resnet32", depth=depth)
    assert count_parameters(model) == expected
    # option A shortcuts are parameter-free: depth - 1 convolutions + 1 linear layer
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == depth - 1
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 1


def test_resnet_option_b_adds_projections():
    a, b = meta_model("resnet32"), meta_model("resnet32", shortcut="B")
    # two 1x1 projections (16->32, 32->64) with their batch norms
    extra = 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64
    assert count_parameters(b) - count_parameters(a) == extra


def test_pad_shortcut():
    x = torch.randn(2, 4, 6, 6)
    y = PadShortcut(4, 2)(x)
    assert y.shape == (2, 8, 3, 3)
    torch.testing.assert_close(y[:, 2:6], x[:, :, ::2, ::2])
    assert torch.equal(y[:, :2], torch.zeros(2, 2, 3, 3)) and torch.equal(y[:, 6:], torch.zeros(2, 2, 3, 3))


def test_small_variants_run_and_options():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    wrn = create_model("wrn", depth=16, widen_factor=2, feature_activation="tanh", dropout=0.3).eval()
    f = wrn.features(x)
    assert f.shape == (2, 128) and (f.abs() <= 1).all() and (f < 0).any()
    assert wrn(x).shape == (2, 10)
    res = create_model("resnet32", depth=8, base_width=4, shortcut="B", num_classes=5).eval()
    assert res(x).shape == (2, 5) and res.feature_dim == 16
    # He-normal (fan-out) init of the convolutions
    conv = create_model("resnet32").body.stage3[0].conv2
    assert abs(conv.weight.std().item() - (2.0 / (9 * 64)) ** 0.5) < 0.005


def test_bad_depths():
    with pytest.raises(ConfigError, match="6n \\+ 4"):
        create_model("wrn", depth=30)
    with pytest.raises(ConfigError, match="6n \\+ 2"):
        create_model("resnet32", depth=33)
    with pytest.raises(ConfigError, match="shortcut"):
        create_model("resnet32", shortcut="C")
    with pytest.raises(ConfigError, match="widen_factor"):
        create_model("wrn", widen_factor=0)


def test_resnet_feature_activation_replaces_the_last_relu_only():
    torch.manual_seed(0)
    plain = create_model("resnet32", depth=8).eval()
    torch.manual_seed(0)
    tanh = create_model("resnet32", depth=8, feature_activation="tanh").eval()
    assert isinstance(tanh.body.stage3[-1].relu2, nn.Tanh) and isinstance(plain.body.stage3[-1].relu2, nn.ReLU)
    assert isinstance(tanh.body.stage3[0].relu1, nn.ReLU)
    assert plain.state_dict().keys() == tanh.state_dict().keys()   # same parameters, same checkpoints
    f = tanh.features(torch.rand(3, 3, 32, 32))
    assert float(f.min()) > -1.0 and float(f.max()) < 1.0 and float(f.min()) < 0.0
    with pytest.raises(ConfigError, match="feature_activation"):
        create_model("resnet32", depth=8, feature_activation="softsign")
