"""Carlini & Wagner's small CNNs (advgeom.models.cw), the small networks of
weight-penalization-classification-layer.txt Tables 4-5."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advgeom.errors import ConfigError
from advgeom.models import create_model
from advgeom.models._layers import count_parameters


@pytest.mark.parametrize("name,expected,flat", [
    # MNIST: 320 + 9,248 + 18,496 + 36,928 + (1024*200+200) + (200*200+200) + 2,010
    ("cw_mnist_cnn", 312_202, 64 * 4 * 4),
    # CIFAR: 1,792 + 36,928 + 73,856 + 147,584 + (3200*256+256) + (256*256+256) + 2,570
    ("cw_cifar_cnn", 1_147_978, 128 * 5 * 5),
])
def test_parameter_counts_and_valid_convolutions(name, expected, flat):
    model = create_model(name)
    assert count_parameters(model) == expected
    assert model.body.fc1.in_features == flat
    assert all(m.padding == (0, 0) for m in model.modules() if isinstance(m, nn.Conv2d))
    names = [n for n, _ in model.body.named_children()]
    assert names.index("dropout") == names.index("relu5") + 1  # dropout after FC 1 (C&W)


def test_feature_activation_tanh_bounds_the_features():
    x = torch.rand(16, 1, 28, 28)
    relu = create_model("cw_mnist_cnn").eval()
    assert (relu.features(x) >= 0).all()
    tanh = create_model("cw_mnist_cnn", feature_activation="tanh").eval()
    assert isinstance(tanh.body.feature_act, nn.Tanh)
    f = tanh.features(x)
    assert (f.abs() < 1).all() and (f < 0).any()
    for act, cls in (("prelu", nn.PReLU), ("leaky_relu", nn.LeakyReLU)):
        assert isinstance(create_model("cw_mnist_cnn", feature_activation=act).body.feature_act, cls)
    # only the last encoder layer changes
    assert sum(isinstance(m, nn.ReLU) for m in tanh.body) == 5


def test_dropout_only_in_training():
    model = create_model("cw_mnist_cnn", dropout=0.0)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        a = model.train()(x)
        b = model.eval()(x)
    torch.testing.assert_close(a, b)
    assert create_model("cw_mnist_cnn").body.dropout.p == 0.5


def test_bad_options():
    with pytest.raises(ConfigError, match="feature_activation"):
        create_model("cw_mnist_cnn", feature_activation="softsign")
    with pytest.raises(ConfigError, match="dropout"):
        create_model("cw_mnist_cnn", dropout=1.0)
    with pytest.raises(ConfigError, match="too small"):
        create_model("cw_mnist_cnn", input_shape=(1, 12, 12))
    with pytest.raises(ConfigError, match="fc_dims"):
        create_model("cw_mnist_cnn", fc_dims=(200,))


def test_small_cnn_is_the_trades_smallcnn():
    """TRADES' SmallCNN: the C&W MNIST architecture, Kaiming convolutions with zero
    biases and a zero classifier (so every logit is 0 before training)."""
    from advgeom.models import create_model

    torch.manual_seed(0)
    m = create_model("small_cnn").eval()
    shapes = [tuple(p.shape) for p in m.parameters()]
    assert shapes == [(32, 1, 3, 3), (32,), (32, 32, 3, 3), (32,), (64, 32, 3, 3), (64,),
                      (64, 64, 3, 3), (64,), (200, 1024), (200,), (200, 200), (200,),
                      (10, 200), (10,)]
    assert torch.equal(m(torch.rand(3, 1, 28, 28)), torch.zeros(3, 10))
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert all(float(c.bias.abs().max()) == 0.0 for c in convs)
    # Kaiming normal (fan_in, gain sqrt 2): std = sqrt(2 / (64 * 9)) for conv4
    assert abs(float(convs[3].weight.std()) - (2 / (64 * 9)) ** 0.5) < 0.005
