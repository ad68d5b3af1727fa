"""Residual networks for CIFAR-10.

``wrn`` -- Wide residual network WRN-depth-k (Zagoruyko & Komodakis 2016, "Wide
Residual Networks"), the WRN-34-10 of Madry et al. / TRADES used by
weight-penalization-classification-layer.txt (Section 4.1, Tables 2-3):
a 3x3 convolution to 16 channels, three stages of n = (depth - 4) / 6
pre-activation basic blocks (BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3) of
16k, 32k, 64k channels (strides 1, 2, 2; a 1x1 projection of the pre-activated
input when the shape changes), a final BN-activation, global average pooling and
a linear head. ``feature_activation`` replaces that final ReLU (the weight-
penalization paper's tanh features). WRN-34-10 has 46.16M parameters.

``resnet32`` -- the CIFAR ResNet of He et al. 2016 ("Deep Residual Learning",
Section 4.2): a 3x3 convolution to 16 channels, three stages of n = (depth - 2) / 6
post-activation basic blocks (conv-BN-ReLU-conv-BN, add, ReLU) of 16, 32, 64
channels, global average pooling and a linear head. Shortcuts are parameter-free
(option "A": stride-2 subsampling and zero channel padding) as in the paper, or
1x1 projections (option "B"). ResNet-32 has 0.46M parameters. ``feature_activation``
replaces the last block's closing ReLU (the features' activation; "tanh" for the
weight-penalization paper).

Both default to per-channel CIFAR-10 standardization. Convolutions are initialised
He-normal (fan-out) from torch's global RNG, as in the original code.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from advgeom.errors import ConfigError
from advgeom.models._layers import (CIFAR10_MEAN, CIFAR10_STD, choice, init_conv_kaiming,
                                    int_tuple, make_activation, make_normalize, positive_int,
                                    probability, register_model)
from advgeom.models.base import Classifier

# ---------------------------------------------------------------------------
# wide residual network


class WideBasicBlock(nn.Module):
    """Pre-activation basic block of a WRN (Zagoruyko & Komodakis 2016). Its 1x1
    projection shortcut reads the pre-activated input, or the raw input when
    ``raw_shortcut`` (the PreAct ResNet form of :mod:`advgeom.models.preact`)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float,
                 raw_shortcut: bool = False) -> None:
        super().__init__()
        self.raw_shortcut = raw_shortcut
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        same = in_channels == out_channels and stride == 1
        self.shortcut = None if same else nn.Conv2d(in_channels, out_channels, 1, stride=stride,
                                                     bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu1(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(x if self.raw_shortcut else pre)
        out = self.conv2(self.dropout(self.relu2(self.bn2(self.conv1(pre)))))
        return out + skip


@register_model("wrn")
def wrn(*, depth: int = 34, widen_factor: int = 10, num_classes: int = 10,
        input_shape: Sequence[int] = (3, 32, 32), mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD, dropout: float = 0.0,
        feature_activation: str = "relu") -> Classifier:
    """WRN-``depth``-``widen_factor`` (depth = 6n + 4); see the module doc."""
    depth = positive_int("depth", depth)
    widen_factor = positive_int("widen_factor", widen_factor)
    num_classes = positive_int("num_classes", num_classes)
    shape = int_tuple("input_shape", input_shape, length=3)
    normalize = make_normalize(mean, std, shape)
    dropout = probability("dropout", dropout)
    if depth < 10 or (depth - 4) % 6:
        raise ConfigError(f"wrn depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, ...), got {depth}")
    final_act = make_activation(feature_activation, "feature_activation")
    n = (depth - 4) // 6
    widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["conv1"] = nn.Conv2d(shape[0], widths[0], 3, padding=1, bias=False)
    c_in = widths[0]
    for stage, c_out in enumerate(widths[1:]):
        blocks = []
        for i in range(n):
            stride = 2 if (stage > 0 and i == 0) else 1
            blocks.append(WideBasicBlock(c_in, c_out, stride, dropout))
            c_in = c_out
        layers[f"stage{stage + 1}"] = nn.Sequential(*blocks)
    layers["bn"] = nn.BatchNorm2d(widths[3])
    layers["act"] = final_act
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    body = nn.Sequential(layers)
    head = nn.Linear(widths[3], num_classes)
    model = Classifier(body, head, num_classes=num_classes, input_shape=shape,
                       feature_dim=widths[3], normalize=normalize)
    init_conv_kaiming(model)
    return model


# ---------------------------------------------------------------------------
# CIFAR ResNet (He et al. 2016)


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad the channels."""

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = extra_channels, stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        half = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra - half))


class BasicBlock(nn.Module):
    """Post-activation basic block of He et al. 2016."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            if shortcut == "A":
                self.shortcut = PadShortcut(out_channels - in_channels, stride)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


@register_model("resnet32")
def resnet32(*, depth: int = 32, base_width: int = 16, shortcut: str = "A",
             num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32),
             mean: Sequence[float] = CIFAR10_MEAN,
             std: Sequence[float] = CIFAR10_STD, feature_activation: str = "relu") -> Classifier:
    """CIFAR ResNet-``depth`` (depth = 6n + 2; 32 by default); see the module doc."""
    depth = positive_int("depth", depth)
    base_width = positive_int("base_width", base_width)
    shortcut = choice("shortcut", shortcut, ("A", "B"))
    num_classes = positive_int("num_classes", num_classes)
    shape = int_tuple("input_shape", input_shape, length=3)
    normalize = make_normalize(mean, std, shape)
    if depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"resnet depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), "
                          f"got {depth}")
    n = (depth - 2) // 6
    widths = [base_width, 2 * base_width, 4 * base_width]

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["conv1"] = nn.Conv2d(shape[0], widths[0], 3, padding=1, bias=False)
    layers["bn1"] = nn.BatchNorm2d(widths[0])
    layers["relu1"] = nn.ReLU()
    c_in = widths[0]
    for stage, c_out in enumerate(widths):
        blocks = []
        for i in range(n):
            stride = 2 if (stage > 0 and i == 0) else 1
            blocks.append(BasicBlock(c_in, c_out, stride, shortcut))
            c_in = c_out
        layers[f"stage{stage + 1}"] = nn.Sequential(*blocks)
    if feature_activation != "relu":
        blocks[-1].relu2 = make_activation(feature_activation, "feature_activation")
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    model = Classifier(nn.Sequential(layers), nn.Linear(widths[2], num_classes),
                       num_classes=num_classes, input_shape=shape, feature_dim=widths[2],
                       normalize=normalize)
    init_conv_kaiming(model)
    return model
