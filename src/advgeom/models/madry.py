"""The MNIST network of Madry et al. (2018), "Towards Deep Learning Models Resistant
to Adversarial Attacks" (their MNIST challenge model, the PGD-AT baseline):

conv 5x5 32 (same padding), ReLU, max-pool 2, conv 5x5 64 (same), ReLU, max-pool 2,
FC 1024, ReLU, linear classifier. Inputs are used as they are in [0,1].
Construction draws initial weights from torch's global RNG.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from torch import nn

from advgeom.models._layers import (check_spatial, int_tuple, make_activation, positive_int,
                                    register_model)
from advgeom.models.base import Classifier


@register_model("madry_mnist_cnn")
def madry_mnist_cnn(*, num_classes: int = 10, input_shape: Sequence[int] = (1, 28, 28),
                    widths: Sequence[int] = (32, 64), fc_dim: int = 1024,
                    feature_activation: str = "relu") -> Classifier:
    """Madry et al.'s MNIST CNN; ``widths``/``fc_dim`` scale it (quick profiles)."""
    num_classes, fc_dim = positive_int("num_classes", num_classes), positive_int("fc_dim", fc_dim)
    channels, height, width = int_tuple("input_shape", input_shape, length=3)
    w1, w2 = int_tuple("widths", widths, length=2)
    h, w = height // 4, width // 4
    check_spatial("madry_mnist_cnn", (channels, height, width), (h, w))
    body = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(channels, w1, 5, padding=2)), ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2, 2)),
        ("conv2", nn.Conv2d(w1, w2, 5, padding=2)), ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2, 2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(w2 * h * w, fc_dim)), ("feature_act", make_activation(feature_activation)),
    ]))
    return Classifier(body, nn.Linear(fc_dim, num_classes), num_classes=num_classes,
                      input_shape=(channels, height, width), feature_dim=fc_dim)
