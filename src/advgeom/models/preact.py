"""Pre-activation ResNets for CIFAR-10 (He et al. 2016, "Identity Mappings in Deep
Residual Networks"), in the 4-stage ImageNet-style layout used for CIFAR by the
adversarial-training literature (Wong et al. 2020 "Fast is better than free"; Rice et
al. 2020 "Overfitting in adversarially robust deep learning") and by RobustBench's
model zoo.

``preact_resnet`` -- a 3x3 convolution to ``base_width`` channels (no batch norm or
activation after it), four stages of pre-activation basic blocks
(BN-ReLU-conv3x3-BN-ReLU-conv3x3, added to the shortcut) of 1, 2, 4, 8 x
``base_width`` channels with strides 1, 2, 2, 2, then (``final_bn``) a batch norm and
ReLU, global average pooling and a linear head. Blocks per stage: 2, 2, 2, 2 for
depth 18 and 3, 4, 6, 3 for depth 34. A block that changes the width or the
resolution adds a 1x1 strided projection of its pre-activated input
(``shortcut="activated"``, He et al.'s form) or of its raw input
(``shortcut="input"``, the form of Wong et al.'s and Andriushchenko & Flammarion's
code, whose networks also have no final batch norm). PreAct ResNet-18 has 11.17M
parameters at ``base_width=64``.

``preact_resnet18`` is ``preact_resnet`` at depth 18. The blocks are
:class:`~advgeom.models.resnet.WideBasicBlock` (a WRN block is a pre-activation block).
Both default to per-channel CIFAR-10 standardization; convolutions are initialised
He-normal (fan-out) from torch's global RNG.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from torch import nn

from advgeom.errors import ConfigError
from advgeom.models._layers import (CIFAR10_MEAN, CIFAR10_STD, choice, init_conv_kaiming,
                                    int_tuple, make_normalize, positive_int, register_model)
from advgeom.models.base import Classifier
from advgeom.models.resnet import WideBasicBlock

# blocks per stage of each depth (2 convolutions per block + the stem + the head)
PREACT_BLOCKS: dict[int, tuple[int, int, int, int]] = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
SHORTCUTS = ("activated", "input")


@register_model("preact_resnet")
def preact_resnet(*, depth: int = 18, base_width: int = 64, num_classes: int = 10,
                  input_shape: Sequence[int] = (3, 32, 32), mean: Sequence[float] = CIFAR10_MEAN,
                  std: Sequence[float] = CIFAR10_STD, final_bn: bool = True,
                  shortcut: str = "activated") -> Classifier:
    """PreAct ResNet-``depth`` (18 or 34); see the module doc."""
    depth = positive_int("depth", depth)
    if depth not in PREACT_BLOCKS:
        raise ConfigError(f"preact_resnet depth must be one of {', '.join(map(str, PREACT_BLOCKS))}, "
                          f"got {depth}")
    base_width = positive_int("base_width", base_width)
    num_classes = positive_int("num_classes", num_classes)
    shape = int_tuple("input_shape", input_shape, length=3)
    normalize = make_normalize(mean, std, shape)
    if not isinstance(final_bn, bool):
        raise ConfigError(f"final_bn must be true or false, got {final_bn!r}")
    raw = choice("shortcut", shortcut, SHORTCUTS) == "input"

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["conv1"] = nn.Conv2d(shape[0], base_width, 3, padding=1, bias=False)
    c_in = base_width
    for stage, n in enumerate(PREACT_BLOCKS[depth]):
        c_out = base_width * 2 ** stage
        blocks = [WideBasicBlock(c_in if i == 0 else c_out, c_out, 2 if (stage > 0 and i == 0) else 1,
                                 0.0, raw_shortcut=raw) for i in range(n)]
        layers[f"stage{stage + 1}"] = nn.Sequential(*blocks)
        c_in = c_out
    if final_bn:
        layers["bn"] = nn.BatchNorm2d(c_in)
        layers["act"] = nn.ReLU()
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    model = Classifier(nn.Sequential(layers), nn.Linear(c_in, num_classes), num_classes=num_classes,
                       input_shape=shape, feature_dim=c_in, normalize=normalize)
    init_conv_kaiming(model)
    return model


@register_model("preact_resnet18")
def preact_resnet18(*, base_width: int = 64, num_classes: int = 10,
                    input_shape: Sequence[int] = (3, 32, 32), mean: Sequence[float] = CIFAR10_MEAN,
                    std: Sequence[float] = CIFAR10_STD, final_bn: bool = True,
                    shortcut: str = "activated") -> Classifier:
    """PreAct ResNet-18 (:func:`preact_resnet` at depth 18)."""
    return preact_resnet(depth=18, base_width=base_width, num_classes=num_classes,
                         input_shape=input_shape, mean=mean, std=std, final_bn=final_bn,
                         shortcut=shortcut)
