"""CNN7: the 7-layer CIFAR-10 convolutional network of
spectral-norm-adversarial-training.txt (Section 5.1 and Appendix A.4): "7
convolutional layers, augmented with BatchNorm, ReLU nonlinearities and
MaxPooling", 93.5% clean test accuracy, inputs standardized "to have zero mean and
unit variance".

The paper gives no layer widths. We use the CIFAR-10 network that the same
authors' earlier code builds on (Roth, Kilcher & Hofmann 2019, "The Odds are
Odd", which loads the pytorch-playground CIFAR-10 model, ~93.8% clean accuracy):
with w = ``width`` = 128,

    [conv3x3 w, BN, ReLU] x2, pool, [conv3x3 2w, BN, ReLU] x2, pool,
    [conv3x3 4w, BN, ReLU] x2, pool, conv3x3 8w (no padding), BN, ReLU, pool

(padding 1 elsewhere; 2x2 max pools; 32 -> 16 -> 8 -> 4 -> 2 -> 1), features of
dimension 8w = 1024 and a linear head. The batch norms have no affine parameters
there (``bn_affine=False``), which we keep as the default. The convolutions
have no bias: a bias in front of a batch norm is cancelled by it in training (its
gradient is zero), so dropping it leaves the trainable function class unchanged.

``normalization``: ``"per_image"`` (default; each image standardized over all its
entries, as the paper states), ``"dataset"`` (per-channel ``mean``/``std``, CIFAR-10
statistics by default) or ``"none"``. Construction draws initial weights from
torch's global RNG.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from torch import nn

from advgeom.errors import ConfigError
from advgeom.models._layers import (CIFAR10_MEAN, CIFAR10_STD, PerImageStandardize,
                                    check_spatial, choice, conv_out, int_tuple, make_normalize,
                                    positive_int, register_model)
from advgeom.models.base import Classifier

NORMALIZATIONS = ("per_image", "dataset", "none")


@register_model("cnn7")
def cnn7(*, num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32), width: int = 128,
         bn_affine: bool = False, normalization: str = "per_image",
         mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Classifier:
    """CNN7 of spectral-norm-adversarial-training.txt Appendix A.4 (see module doc)."""
    num_classes = positive_int("num_classes", num_classes)
    shape = int_tuple("input_shape", input_shape, length=3)
    width = positive_int("width", width)
    if not isinstance(bn_affine, bool):
        raise ConfigError(f"bn_affine must be True or False, got {bn_affine!r}")
    normalization = choice("normalization", normalization, NORMALIZATIONS)
    if normalization != "dataset" and (mean is not None or std is not None):
        raise ConfigError(f"mean/std are only used with normalization='dataset', "
                          f"not {normalization!r}")

    channels, height, wid = shape
    plan: list[tuple[int, int] | str] = [  # (out_channels, padding) or "pool"
        (width, 1), (width, 1), "pool", (2 * width, 1), (2 * width, 1), "pool",
        (4 * width, 1), (4 * width, 1), "pool", (8 * width, 0), "pool"]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    c_in, n_conv, n_pool = channels, 0, 0
    for step in plan:
        if step == "pool":
            n_pool += 1
            layers[f"pool{n_pool}"] = nn.MaxPool2d(2, 2)
            height, wid = height // 2, wid // 2
            continue
        c_out, pad = step
        n_conv += 1
        layers[f"conv{n_conv}"] = nn.Conv2d(c_in, c_out, 3, padding=pad, bias=False)
        layers[f"bn{n_conv}"] = nn.BatchNorm2d(c_out, affine=bn_affine)
        layers[f"relu{n_conv}"] = nn.ReLU()
        height, wid = conv_out(height, 3, pad), conv_out(wid, 3, pad)
        c_in = c_out
        check_spatial("cnn7", shape, (height, wid))
    check_spatial("cnn7", shape, (height, wid))
    layers["flatten"] = nn.Flatten()
    feature_dim = c_in * height * wid

    if normalization == "per_image":
        normalize: nn.Module = PerImageStandardize()
    elif normalization == "dataset":
        normalize = make_normalize(CIFAR10_MEAN if mean is None else mean,
                                   CIFAR10_STD if std is None else std, shape)
    else:
        normalize = nn.Identity()
    return Classifier(nn.Sequential(layers), nn.Linear(feature_dim, num_classes),
                      num_classes=num_classes, input_shape=shape, feature_dim=feature_dim,
                      normalize=normalize)
