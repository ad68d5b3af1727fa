"""The small four-convolution networks of Carlini & Wagner (2017), "Towards
Evaluating the Robustness of Neural Networks" (the defensive-distillation nets),
used as the "small network" of weight-penalization-classification-layer.txt
(Section 4.2, Tables 4 and 5).

MNIST:    conv 3x3 32, conv 3x3 32, pool, conv 3x3 64, conv 3x3 64, pool, FC 200, FC 200
CIFAR-10: conv 3x3 64, conv 3x3 64, pool, conv 3x3 128, conv 3x3 128, pool, FC 256, FC 256

Convolutions are unpadded ("valid"), pools are 2x2 max with stride 2, hidden
activations are ReLU and dropout (p = 0.5 in the original) follows the first FC
layer. The second FC layer is the last encoder layer: its activation is
``feature_activation`` ("relu" as in Carlini & Wagner; "tanh" is the choice of the
weight-penalization paper, Section 3.2, f(x) = Tanh(h(x)); "prelu" and
"leaky_relu" are its ablation). The head is a linear classifier on those features.
Construction draws initial weights from torch's global RNG.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from torch import nn

from advgeom.models._layers import (CIFAR10_MEAN, CIFAR10_STD, IDENTITY_MEAN, IDENTITY_STD,
                                    check_spatial, choice, conv_out, int_tuple, make_activation,
                                    make_normalize, positive_int, probability, register_model)
from advgeom.models.base import Classifier

FEATURE_ACTIVATIONS = ("relu", "tanh", "prelu", "leaky_relu")


def cw_cnn(*, num_classes: int, input_shape: Sequence[int], mean: Sequence[float],
           std: Sequence[float], widths: Sequence[int], fc_dims: Sequence[int], dropout: float,
           feature_activation: str) -> Classifier:
    """Two stages of two valid 3x3 convolutions (``widths``) each closed by max
    pooling, then two FC layers (``fc_dims``); the last one's activation is
    ``feature_activation`` and its output is the feature vector."""
    num_classes = positive_int("num_classes", num_classes)
    shape = int_tuple("input_shape", input_shape, length=3)
    normalize = make_normalize(mean, std, shape)
    w1, w2 = int_tuple("widths", widths, length=2)
    f1, f2 = int_tuple("fc_dims", fc_dims, length=2)
    dropout = probability("dropout", dropout)
    feature_activation = choice("feature_activation", feature_activation, FEATURE_ACTIVATIONS)

    channels, height, width = shape
    for _ in range(2):  # two valid 3x3 convolutions, then 2x2 pooling
        height, width = conv_out(conv_out(height, 3), 3) // 2, conv_out(conv_out(width, 3), 3) // 2
    check_spatial("the Carlini-Wagner CNN", shape, (height, width))

    body = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(channels, w1, 3)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(w1, w1, 3)), ("relu2", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2, 2)),
        ("conv3", nn.Conv2d(w1, w2, 3)), ("relu3", nn.ReLU()),
        ("conv4", nn.Conv2d(w2, w2, 3)), ("relu4", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2, 2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(w2 * height * width, f1)), ("relu5", nn.ReLU()),
        ("dropout", nn.Dropout(dropout)),
        ("fc2", nn.Linear(f1, f2)), ("feature_act", make_activation(feature_activation)),
    ]))
    return Classifier(body, nn.Linear(f2, num_classes), num_classes=num_classes,
                      input_shape=shape, feature_dim=f2,
                      normalize=normalize)


@register_model("cw_mnist_cnn")
def cw_mnist_cnn(*, num_classes: int = 10, input_shape: Sequence[int] = (1, 28, 28),
                 mean: Sequence[float] = IDENTITY_MEAN, std: Sequence[float] = IDENTITY_STD,
                 widths: Sequence[int] = (32, 64), fc_dims: Sequence[int] = (200, 200),
                 dropout: float = 0.5, feature_activation: str = "relu") -> Classifier:
    """Carlini & Wagner's MNIST network (weight-penalization-classification-layer.txt,
    Table 4); identity normalization (inputs used as-is in [0,1])."""
    return cw_cnn(num_classes=num_classes, input_shape=input_shape, mean=mean, std=std,
                  widths=widths, fc_dims=fc_dims, dropout=dropout,
                  feature_activation=feature_activation)


@register_model("cw_cifar_cnn")
def cw_cifar_cnn(*, num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32),
                 mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD,
                 widths: Sequence[int] = (64, 128), fc_dims: Sequence[int] = (256, 256),
                 dropout: float = 0.5, feature_activation: str = "relu") -> Classifier:
    """Carlini & Wagner's CIFAR-10 network (weight-penalization-classification-layer.txt,
    Table 5); per-channel CIFAR-10 standardization by default."""
    return cw_cnn(num_classes=num_classes, input_shape=input_shape, mean=mean, std=std,
                  widths=widths, fc_dims=fc_dims, dropout=dropout,
                  feature_activation=feature_activation)


@register_model("small_cnn")
def small_cnn(*, num_classes: int = 10, input_shape: Sequence[int] = (1, 28, 28),
              widths: Sequence[int] = (32, 64), fc_dims: Sequence[int] = (200, 200),
              dropout: float = 0.5, feature_activation: str = "relu",
              zero_head: bool = True) -> Classifier:
    """TRADES' SmallCNN (Zhang et al. 2019, official MNIST model): the architecture of
    ``cw_mnist_cnn`` with TRADES' initialization (Kaiming-normal convolutions with
    zero biases; the classifier layer zero unless ``zero_head=False``)."""
    model = cw_cnn(num_classes=num_classes, input_shape=input_shape, mean=IDENTITY_MEAN,
                   std=IDENTITY_STD, widths=widths, fc_dims=fc_dims, dropout=dropout,
                   feature_activation=feature_activation)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_head:
        nn.init.zeros_(model.head.weight)
        nn.init.zeros_(model.head.bias)
    return model
