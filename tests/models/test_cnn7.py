"""CNN7 of spectral-norm-adversarial-training.txt Appendix A.4 (advgeom.models.cnn7)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advgeom.errors import ConfigError
from advgeom.models import Normalize, create_model
from advgeom.models._layers import CIFAR10_MEAN, PerImageStandardize, count_parameters


def test_seven_conv_bn_relu_layers_and_parameter_count():
    model = create_model("cnn7")
    cs = [m for m in model.body if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.body if isinstance(m, nn.BatchNorm2d)]
    assert len(cs) == 7 and len(bns) == 7
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.body) == 4
    assert [c.out_channels for c in cs] == [128, 128, 256, 256, 512, 512, 1024]
    assert [c.padding for c in cs] == [(1, 1)] * 6 + [(0, 0)]
    assert model.feature_dim == 1024 and isinstance(model.head, nn.Linear)
    chans = [3] + [c.out_channels for c in cs]
    expected = sum(9 * a * b for a, b in zip(chans[:-1], chans[1:])) + 1024 * 10 + 10
    assert count_parameters(model) == expected  # no conv biases, affine-free BN
    assert isinstance(model.normalize, PerImageStandardize)


def test_per_image_standardization_makes_the_model_affine_invariant():
    torch.manual_seed(0)
    model = create_model("cnn7", width=8).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(0.5 * x + 0.2), model(x), rtol=1e-4, atol=1e-5)


def test_per_image_standardize_layer():
    layer = PerImageStandardize()
    x = torch.rand(4, 3, 8, 8) * torch.tensor([1.0, 2.0, 0.5, 5.0]).view(4, 1, 1, 1)
    y = layer(x).flatten(1)
    torch.testing.assert_close(y.mean(1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(1, unbiased=False), torch.ones(4), atol=1e-4, rtol=0)
    # below the floor 1/sqrt(numel) the image is divided by the floor instead
    tiny = 0.01 * torch.rand(1, 3, 8, 8)
    floor = (1.0 / 192) ** 0.5
    torch.testing.assert_close(layer(tiny), (tiny - tiny.mean()) / floor)
    const = torch.full((2, 3, 8, 8), 0.3, requires_grad=True)
    out = layer(const)
    out.sum().backward()
    assert torch.equal(out, torch.zeros_like(out)) and torch.isfinite(const.grad).all()


def test_normalization_options():
    model = create_model("cnn7", width=4, normalization="dataset")
    assert isinstance(model.normalize, Normalize)
    torch.testing.assert_close(model.normalize.mean.flatten(), torch.tensor(CIFAR10_MEAN))
    assert isinstance(create_model("cnn7", width=4, normalization="none").normalize, nn.Identity)
    with pytest.raises(ConfigError, match="only used with normalization='dataset'"):
        create_model("cnn7", width=4, mean=(0.5,))
    with pytest.raises(ConfigError, match="normalization"):
        create_model("cnn7", normalization="batch")
    with pytest.raises(ConfigError, match="too small"):
        create_model("cnn7", width=4, input_shape=(3, 16, 16))
