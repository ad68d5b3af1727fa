"""The two small networks of sparsification-robustness.txt (Section 5).

``nielsen_cnn4`` -- the 4-layer CNN for multiclass MNIST / Fashion-MNIST (Table 1):
"two convolutional layers (containing 20 and 40 feature maps, both with 5x5 local
receptive fields) and two fully connected layers (containing 1000 neurons each,
with dropout) (Nielsen, 2015)". Following Nielsen's *Neural Networks and Deep
Learning*, ch. 6: valid 5x5 convolutions, each followed by ReLU and 2x2 max
pooling (28 -> 24 -> 12 -> 8 -> 4), and dropout on the input of each of the three
fully connected layers (FC 1000, FC 1000 and the softmax layer). The last dropout
therefore sits at the end of ``body``: ``features`` are dropped in training mode
only.

``fc2`` -- the 2-layer fully connected network for the binary tasks (Table 2):
one hidden ReLU layer of ``hidden`` = 10 units and ``num_classes`` = 2 outputs.
``body`` is ``Flatten -> fc1 -> relu1`` and ``head`` the output layer, so the
L1 penalty and the layer-wise l_inf bound of Theorem 2 reach ``body.fc1`` and
``head`` directly, and the ReLU switches s_i(x) are ``features(x) > 0``.

Both use identity normalization by default (inputs in [0,1] as the paper's
epsilon = 0.25 budget assumes). Construction draws initial weights from torch's
global RNG.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

from torch import nn

from advgeom.models._layers import (IDENTITY_MEAN, IDENTITY_STD, check_spatial, conv_out,
                                    int_tuple, make_normalize, positive_int, probability,
                                    register_model)
from advgeom.models.base import Classifier


@register_model("nielsen_cnn4")
def nielsen_cnn4(*, num_classes: int = 10, input_shape: Sequence[int] = (1, 28, 28),
                 mean: Sequence[float] = IDENTITY_MEAN, std: Sequence[float] = IDENTITY_STD,
                 widths: Sequence[int] = (20, 40), fc_dim: int = 1000,
                 dropout: float = 0.5) -> Classifier:
    """Nielsen's 4-layer CNN (sparsification-robustness.txt Section 5, Table 1)."""
    num_classes = positive_int("num_classes", num_classes)
    shape = int_tuple("input_shape", input_shape, length=3)
    normalize = make_normalize(mean, std, shape)
    w1, w2 = int_tuple("widths", widths, length=2)
    fc_dim = positive_int("fc_dim", fc_dim)
    dropout = probability("dropout", dropout)
    channels, height, width = shape
    for _ in range(2):  # valid 5x5 convolution then 2x2 pooling
        height, width = conv_out(height, 5) // 2, conv_out(width, 5) // 2
    check_spatial("nielsen_cnn4", shape, (height, width))

    body = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(channels, w1, 5)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2, 2)),
        ("conv2", nn.Conv2d(w1, w2, 5)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2, 2)),
        ("flatten", nn.Flatten()),
        ("dropout1", nn.Dropout(dropout)),
        ("fc1", nn.Linear(w2 * height * width, fc_dim)), ("relu3", nn.ReLU()),
        ("dropout2", nn.Dropout(dropout)),
        ("fc2", nn.Linear(fc_dim, fc_dim)), ("relu4", nn.ReLU()),
        ("dropout3", nn.Dropout(dropout)),
    ]))
    return Classifier(body, nn.Linear(fc_dim, num_classes), num_classes=num_classes,
                      input_shape=shape, feature_dim=fc_dim,
                      normalize=normalize)


@register_model("fc2")
def fc2(*, num_classes: int = 2, input_shape: Sequence[int] = (1, 28, 28),
        mean: Sequence[float] = IDENTITY_MEAN, std: Sequence[float] = IDENTITY_STD,
        hidden: int = 10) -> Classifier:
    """One hidden ReLU layer of ``hidden`` units (sparsification-robustness.txt
    Section 5, Table 2; Fig. 3 of the paper). ``mean``/``std`` run along the first
    axis of ``input_shape``: an image's channels, or the entries of a vector input."""
    num_classes = positive_int("num_classes", num_classes)
    shape = int_tuple("input_shape", input_shape)
    normalize = make_normalize(mean, std, shape)
    hidden = positive_int("hidden", hidden)
    body = nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(math.prod(shape), hidden)),
        ("relu1", nn.ReLU()),
    ]))
    return Classifier(body, nn.Linear(hidden, num_classes), num_classes=num_classes,
                      input_shape=shape, feature_dim=hidden,
                      normalize=normalize)
