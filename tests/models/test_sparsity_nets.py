"""The networks of sparsification-robustness.txt Section 5 (advgeom.models.sparsity)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advgeom.errors import ConfigError
from advgeom.models import create_model
from advgeom.models._layers import count_parameters


def test_nielsen_cnn4_layout():
    model = create_model("nielsen_cnn4")
    c1, c2 = [m for m in model.body if isinstance(m, nn.Conv2d)]
    assert (c1.out_channels, c2.out_channels) == (20, 40)
    assert c1.kernel_size == c2.kernel_size == (5, 5) and c1.padding == (0, 0)
    assert model.body.fc1.in_features == 40 * 4 * 4  # 28 -> 24 -> 12 -> 8 -> 4
    assert model.body.fc2.out_features == 1000 and model.feature_dim == 1000
    # 520 + 20,040 + 641,000 + 1,001,000 + 10,010
    assert count_parameters(model) == 1_672_570
    drops = [m for m in model.body if isinstance(m, nn.Dropout)]
    assert len(drops) == 3 and all(d.p == 0.5 for d in drops)


def test_fc2_is_the_locally_linear_two_layer_net():
    """y(x) = W2 diag(s(x)) (W1 x + b1) + b2 with switches s = features > 0
    (paper Fig. 3): the layers are reachable for the L1 / switch analyses."""
    torch.manual_seed(0)
    model = create_model("fc2").eval()
    assert count_parameters(model) == 784 * 10 + 10 + 10 * 2 + 2
    assert model.body.fc1.weight.shape == (10, 784) and model.head.weight.shape == (2, 10)
    x = torch.rand(5, 1, 28, 28)
    w1, b1 = model.body.fc1.weight, model.body.fc1.bias
    w2, b2 = model.head.weight, model.head.bias
    with torch.no_grad():
        s = (model.features(x) > 0).float()
        pre = x.flatten(1) @ w1.T + b1
        expected = (s * pre) @ w2.T + b2
        torch.testing.assert_close(model(x), expected)


def test_fc2_options():
    model = create_model("fc2", hidden=32, num_classes=3, input_shape=(784,), mean=(0.5,), std=(0.5,))
    x = torch.rand(4, 784)
    assert model(x).shape == (4, 3)
    torch.testing.assert_close(model.normalize(x), (x - 0.5) / 0.5)
    with pytest.raises(ConfigError, match="hidden"):
        create_model("fc2", hidden=0)
    with pytest.raises(ConfigError, match="too small"):
        create_model("nielsen_cnn4", input_shape=(1, 10, 10))
