"""The plain CNNs of hyperspherical-defense.txt (Appendix C, Table 4), built so that
the hyperspherical layers (SphereConv / SphereFC / weight-normalized heads) can be
swapped in through layer factories.

MNIST:    [3x3, 32]x2, pool, [3x3, 64]x2, pool, [3x3, 128]x2, pool, FC 256
CIFAR-10: [3x3, 64]x3, pool, [3x3, 128]x3, pool, [3x3, 256]x3, pool, FC 512

Pools are 2x2 max with stride 2; convolutions use padding 1 and are each followed
by the activation (ReLU). The FC layer produces the embedding (the paper's
"feature space before entering the classifier"), followed by the activation; the
head is the classifier. Table 4 lists no batch normalization, so ``batch_norm``
defaults to False (when on, BN sits between each convolution and its activation).

Layer factories are called as ``conv_layer(in_channels, out_channels,
kernel_size=3, padding=1)``, ``linear_layer(in_features, out_features)`` and
``head_layer(feature_dim, num_classes)``; ``activation`` is a name
(``"relu"``, ``"tanh"``, ...) or a zero-argument callable returning a module.
Construction draws initial weights from torch's global RNG.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

from torch import nn

from advgeom.errors import ConfigError
from advgeom.models._layers import (CIFAR10_MEAN, CIFAR10_STD, IDENTITY_MEAN, IDENTITY_STD,
                                    built, check_layer_factory, check_spatial, int_tuple,
                                    make_activation, make_normalize, positive_int, register_model)
from advgeom.models.base import Classifier

LayerFactory = Callable[..., nn.Module]
Activation = str | Callable[[], nn.Module]

# ---------------------------------------------------------------------------
# the shared builder


def hyper_cnn(*, num_classes: int, input_shape: Sequence[int], mean: Sequence[float],
              std: Sequence[float], widths: Sequence[int], convs_per_stage: int, fc_dim: int,
              batch_norm: bool, activation: Activation, feature_activation: bool,
              conv_layer: LayerFactory, linear_layer: LayerFactory,
              head_layer: LayerFactory) -> Classifier:
    """Stages of ``convs_per_stage`` 3x3 convolutions (padding 1) of width
    ``widths[i]``, each stage closed by 2x2 max pooling; then Flatten -> FC
    ``fc_dim`` (-> activation) as the features and ``head_layer`` as the classifier."""
    num_classes = positive_int("num_classes", num_classes)
    shape = int_tuple("input_shape", input_shape, length=3)
    normalize = make_normalize(mean, std, shape)
    channels, height, width = shape
    widths = int_tuple("widths", widths)
    convs_per_stage = positive_int("convs_per_stage", convs_per_stage)
    fc_dim = positive_int("fc_dim", fc_dim)
    if not isinstance(batch_norm, bool) or not isinstance(feature_activation, bool):
        raise ConfigError("batch_norm and feature_activation must be True or False")
    for name, fac in (("conv_layer", conv_layer), ("linear_layer", linear_layer),
                      ("head_layer", head_layer)):
        check_layer_factory(name, fac)
    make_activation(activation)  # validate once before building anything
    pooled = (height >> len(widths), width >> len(widths))  # one 2x2 pool per stage
    check_spatial("this hyperspherical-defense CNN", shape, pooled)

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    c_in = channels
    for stage, c_out in enumerate(widths, start=1):
        for j in range(1, convs_per_stage + 1):
            conv = conv_layer(c_in, c_out, kernel_size=3, padding=1)
            layers[f"conv{stage}_{j}"] = built("conv_layer", conv)
            if batch_norm:
                layers[f"bn{stage}_{j}"] = nn.BatchNorm2d(c_out)
            layers[f"act{stage}_{j}"] = make_activation(activation)
            c_in = c_out
        layers[f"pool{stage}"] = nn.MaxPool2d(kernel_size=2, stride=2)
    layers["flatten"] = nn.Flatten()
    layers["fc"] = built("linear_layer", linear_layer(c_in * pooled[0] * pooled[1], fc_dim))
    if feature_activation:
        layers["act_fc"] = make_activation(activation)
    head = built("head_layer", head_layer(fc_dim, num_classes))
    return Classifier(nn.Sequential(layers), head, num_classes=num_classes,
                      input_shape=shape, feature_dim=fc_dim, normalize=normalize)


# ---------------------------------------------------------------------------
# registered models


@register_model("hyper_mnist_cnn")
def hyper_mnist_cnn(*, num_classes: int = 10, input_shape: Sequence[int] = (1, 28, 28),
                    mean: Sequence[float] = IDENTITY_MEAN, std: Sequence[float] = IDENTITY_STD,
                    widths: Sequence[int] = (32, 64, 128), convs_per_stage: int = 2,
                    fc_dim: int = 256, batch_norm: bool = False, activation: Activation = nn.ReLU,
                    feature_activation: bool = True, conv_layer: LayerFactory = nn.Conv2d,
                    linear_layer: LayerFactory = nn.Linear,
                    head_layer: LayerFactory = nn.Linear) -> Classifier:
    """The MNIST CNN of hyperspherical-defense.txt Table 4 (inputs used as-is in
    [0,1] by default: identity normalization)."""
    return hyper_cnn(num_classes=num_classes, input_shape=input_shape, mean=mean, std=std,
                     widths=widths, convs_per_stage=convs_per_stage, fc_dim=fc_dim,
                     batch_norm=batch_norm, activation=activation,
                     feature_activation=feature_activation, conv_layer=conv_layer,
                     linear_layer=linear_layer, head_layer=head_layer)


@register_model("hyper_cifar_cnn")
def hyper_cifar_cnn(*, num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32),
                    mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD,
                    widths: Sequence[int] = (64, 128, 256), convs_per_stage: int = 3,
                    fc_dim: int = 512, batch_norm: bool = False, activation: Activation = nn.ReLU,
                    feature_activation: bool = True, conv_layer: LayerFactory = nn.Conv2d,
                    linear_layer: LayerFactory = nn.Linear,
                    head_layer: LayerFactory = nn.Linear) -> Classifier:
    """The CIFAR-10 CNN of hyperspherical-defense.txt Table 4 (per-channel CIFAR-10
    standardization by default; the paper does not state its preprocessing)."""
    return hyper_cnn(num_classes=num_classes, input_shape=input_shape, mean=mean, std=std,
                     widths=widths, convs_per_stage=convs_per_stage, fc_dim=fc_dim,
                     batch_norm=batch_norm, activation=activation,
                     feature_activation=feature_activation, conv_layer=conv_layer,
                     linear_layer=linear_layer, head_layer=head_layer)


# ---------------------------------------------------------------------------
# D-SphereNets (Section 4): the same CNNs with SphereConv / SphereFC layers and a
# SphereCorr head, one registered name per column of Table 1


# variant suffix -> (default operator, head scale, annealed loss)
DSPHERE_VARIANTS: dict[str, tuple[str, str, bool]] = {
    "": ("cosine", "norm", False),                      # D-SphereNet (W-Softmax)
    "_wm": ("cosine", "multiplier", False),             # + weight multiplier
    "_wm_quadratic": ("quadratic", "multiplier", False),  # + WM + quadratic SphereCorr
    "_annealing": ("cosine", "norm", True),             # + loss annealing (eq. 8)
    "_wm_truncated": ("truncated", "multiplier", False),  # + WM + input-truncated SphereCorr
}


def dsphere_cnn(base: Callable[..., Classifier], *, scale: str, annealed: bool, operator: str,
                a: float, k: float, learn_k: bool, alpha: float, **kwargs: object) -> Classifier:
    """``base`` (hyper_mnist_cnn / hyper_cifar_cnn) with every convolution a
    :class:`~advgeom.nn.sphere.SphereConv2d`, the FC layer a
    :class:`~advgeom.nn.sphere.SphereLinear` and a :class:`~advgeom.nn.sphere.SphereHead`
    (the SphereCorr ``operator`` in all of them; ReLU after each as in SphereNet)."""
    from advgeom.nn.sphere import SphereConv2d, SphereHead, SphereLinear, check_operator

    check_operator(operator, a, k)
    if not isinstance(learn_k, bool):
        raise ConfigError(f"learn_k must be True or False, got {learn_k!r}")
    corr = dict(operator=operator, a=a, k=k, learn_k=learn_k)
    return base(conv_layer=lambda cin, cout, kernel_size=3, padding=1: SphereConv2d(
                    cin, cout, kernel_size, padding=padding, **corr),
                linear_layer=lambda fin, fout: SphereLinear(fin, fout, **corr),
                head_layer=lambda fin, classes: SphereHead(fin, classes, scale=scale, alpha=alpha,
                                                           annealed=annealed, **corr),
                **kwargs)


def _dsphere_factory(base: Callable[..., Classifier], op: str, scale: str,
                     annealed: bool) -> Callable[..., Classifier]:
    def factory(*, num_classes: int = 10, input_shape: Sequence[int] | None = None,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                widths: Sequence[int] | None = None, convs_per_stage: int | None = None,
                fc_dim: int | None = None, batch_norm: bool = False, feature_activation: bool = True,
                operator: str = op, a: float = 1.0, k: float = 0.3, learn_k: bool = False,
                alpha: float = 10.0) -> Classifier:
        given = dict(input_shape=input_shape, mean=mean, std=std, widths=widths,
                     convs_per_stage=convs_per_stage, fc_dim=fc_dim)
        return dsphere_cnn(base, scale=scale, annealed=annealed, operator=operator, a=a, k=k,
                           learn_k=learn_k, alpha=alpha, num_classes=num_classes,
                           batch_norm=batch_norm, feature_activation=feature_activation,
                           **{key: v for key, v in given.items() if v is not None})

    return factory


def _register_dsphere(prefix: str, base: Callable[..., Classifier], dataset: str) -> None:
    for suffix, (op, scale, annealed) in DSPHERE_VARIANTS.items():
        factory = _dsphere_factory(base, op, scale, annealed)
        factory.__name__ = f"{prefix}{suffix}"
        factory.__doc__ = (f"D-SphereNet{suffix.replace('_', ' + ')} on the {dataset} CNN of "
                           f"hyperspherical-defense.txt Table 4 (operator {op!r}, head scale "
                           f"{scale!r}{', loss annealing' if annealed else ''}; ``alpha``: the "
                           "weight multiplier's initial value; ``a``, ``k``, ``learn_k``: see "
                           "advgeom.nn.sphere).")
        register_model(f"{prefix}{suffix}")(factory)


_register_dsphere("dsphere_mnist", hyper_mnist_cnn, "MNIST")
_register_dsphere("dsphere_cifar", hyper_cifar_cnn, "CIFAR-10")
