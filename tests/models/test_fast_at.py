"""Wong et al.'s fast-AT MNIST network against the official architecture (mnist_net.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advgeom.errors import ConfigError
from advgeom.models import create_model


def _official() -> nn.Sequential:
    """The layers of locuslab/fast_adversarial MNIST/mnist_net.py, written out here."""
    return nn.Sequential(nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))


def test_same_parameters_and_outputs_as_the_official_network() -> None:
    torch.manual_seed(0)
    ours, ref = create_model("fast_at_mnist_net").eval(), _official().eval()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters()) == 166_406
    with torch.no_grad():
        for dst, src in zip(ours.parameters(), ref.parameters()):
            assert dst.shape == src.shape
            dst.copy_(src)
    x = torch.rand(5, 1, 28, 28)
    assert torch.allclose(ours(x), ref(x), atol=1e-6)
    assert ours.features(x).shape == (5, 100)


def test_too_small_inputs_are_refused() -> None:
    with pytest.raises(ConfigError, match="too small"):
        create_model("fast_at_mnist_net", input_shape=(1, 2, 2))
