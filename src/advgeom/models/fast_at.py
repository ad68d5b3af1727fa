"""The MNIST network of Wong, Rice & Kolter (2020), "Fast is better than free: revisiting
adversarial training" (official code: locuslab/fast_adversarial, MNIST/mnist_net.py), the
architecture of their fast FGSM adversarial training on MNIST:

conv 4x4 16 stride 2 (padding 1), ReLU, conv 4x4 32 stride 2 (padding 1), ReLU, FC 100,
ReLU, linear classifier. Inputs are used as they are in [0,1].
Construction draws initial weights from torch's global RNG (PyTorch's default init, as
the official code).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from torch import nn

from advgeom.models._layers import check_spatial, int_tuple, positive_int, register_model
from advgeom.models.base import Classifier


@register_model("fast_at_mnist_net")
def fast_at_mnist_net(*, num_classes: int = 10, input_shape: Sequence[int] = (1, 28, 28),
                      widths: Sequence[int] = (16, 32), fc_dim: int = 100) -> Classifier:
    """Wong et al.'s MNIST network (two stride-2 convolutions of 16 and 32, FC 100)."""
    num_classes, fc_dim = positive_int("num_classes", num_classes), positive_int("fc_dim", fc_dim)
    channels, height, width = int_tuple("input_shape", input_shape, length=3)
    w1, w2 = int_tuple("widths", widths, length=2)
    h, w = (height // 2) // 2, (width // 2) // 2   # each conv: floor((s + 2 - 4) / 2) + 1 = s // 2
    check_spatial("fast_at_mnist_net", (channels, height, width), (h, w))
    body = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(channels, w1, 4, stride=2, padding=1)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(w1, w2, 4, stride=2, padding=1)), ("relu2", nn.ReLU()),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(w2 * h * w, fc_dim)), ("relu3", nn.ReLU()),
    ]))
    return Classifier(body, nn.Linear(fc_dim, num_classes), num_classes=num_classes,
                      input_shape=(channels, height, width), feature_dim=fc_dim)
