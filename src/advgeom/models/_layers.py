"""Shared building blocks of the advgeom architectures: a registering decorator that
turns bad keyword arguments into one-line :class:`ConfigError` messages, argument
validation, activations by name, the normalization front layers and spatial-size
arithmetic.

Parameters of every model are initialised from torch's *global* RNG at construction
(as ``torch.nn`` layers always are); seed it (the training loop does) when an exact
initial state must be reproduced.
"""
from __future__ import annotations

import difflib
import functools
import inspect
import math
from typing import Any, Callable, Sequence, TypeVar

from torch import Tensor, nn

from advgeom.errors import ConfigError
from advgeom.models.base import Normalize
from advgeom.registry import register

F = TypeVar("F", bound=Callable[..., Any])

# Per-channel statistics of the CIFAR-10 training set (pixel values in [0,1]).
CIFAR10_MEAN: tuple[float, ...] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, ...] = (0.2470, 0.2435, 0.2616)
IDENTITY_MEAN: tuple[float, ...] = (0.0,)
IDENTITY_STD: tuple[float, ...] = (1.0,)

# ---------------------------------------------------------------------------
# registration with checked keyword arguments


def register_model(name: str) -> Callable[[F], F]:
    """``@register("model", name)`` plus a check of the keyword arguments.

    The wrapped factory accepts keyword arguments only; an unknown name raises
    :class:`ConfigError` listing the accepted ones (with a did-you-mean hint)
    instead of Python's bare ``TypeError``.
    """

    def deco(fn: F) -> F:
        sig = inspect.signature(fn)
        accepted = [p.name for p in sig.parameters.values()
                    if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]

        @functools.wraps(fn)
        def factory(*args: Any, **kwargs: Any) -> Any:
            if args:
                raise ConfigError(f"model {name!r} takes keyword arguments only "
                                  f"(accepted: {', '.join(accepted)})")
            unknown = [k for k in kwargs if k not in accepted]
            if unknown:
                key = unknown[0]
                close = difflib.get_close_matches(key, accepted, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"model {name!r} got unknown argument {key!r}{hint} "
                                  f"(accepted: {', '.join(accepted)})")
            return fn(**kwargs)

        register("model", name)(factory)
        return factory  # type: ignore[return-value]

    return deco


# ---------------------------------------------------------------------------
# argument validation


def positive_int(name: str, value: object) -> int:
    """``value`` as an int >= 1, else :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def int_tuple(name: str, value: object, length: int | None = None) -> tuple[int, ...]:
    """A sequence of positive ints (optionally of a fixed length) as a tuple."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ConfigError(f"{name} must be a non-empty sequence of positive integers, got {value!r}")
    out = tuple(positive_int(f"{name}[{i}]", v) for i, v in enumerate(value))
    if length is not None and len(out) != length:
        raise ConfigError(f"{name} must have {length} entries, got {len(out)} ({value!r})")
    return out


def probability(name: str, value: object) -> float:
    """A dropout probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def choice(name: str, value: object, options: Sequence[str]) -> str:
    """``value`` if it is one of ``options``, else :class:`ConfigError`."""
    if value not in options:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return str(value)


# ---------------------------------------------------------------------------
# activations

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def make_activation(spec: str | Callable[[], nn.Module], name: str = "activation") -> nn.Module:
    """A fresh activation module from a name in :data:`ACTIVATIONS` or a zero-argument
    callable (e.g. the class ``nn.ReLU``); each call returns a new module, so
    parametrised activations (PReLU) get their own parameters per layer."""
    if isinstance(spec, str):
        return ACTIVATIONS[choice(name, spec, list(ACTIVATIONS))]()
    if callable(spec):
        module = spec()
        if not isinstance(module, nn.Module):
            raise ConfigError(f"{name} callable must return an nn.Module, got {type(module).__name__}")
        return module
    raise ConfigError(f"{name} must be a name ({', '.join(ACTIVATIONS)}) or a callable, got {spec!r}")


def check_layer_factory(name: str, value: object) -> Callable[..., nn.Module]:
    """Layer factories (``conv_layer``, ``linear_layer``, ...) must be callables."""
    if not callable(value):
        raise ConfigError(f"{name} must be a callable returning an nn.Module, got {value!r}")
    return value  # type: ignore[return-value]


def built(name: str, module: object) -> nn.Module:
    """Check that a user-supplied layer factory returned a module."""
    if not isinstance(module, nn.Module):
        raise ConfigError(f"{name} returned {type(module).__name__}, expected an nn.Module")
    return module


# ---------------------------------------------------------------------------
# normalization (the model's first layer)


def make_normalize(mean: Sequence[float], std: Sequence[float],
                   input_shape: Sequence[int]) -> Normalize:
    """Per-channel ``(x - mean) / std`` for inputs of shape ``(N, *input_shape)``;
    the channel axis is ``input_shape[0]`` and ``mean``/``std`` have 1 or
    ``input_shape[0]`` entries (broadcast over the spatial axes by :class:`Normalize`)."""
    channels = int(input_shape[0])
    vals = []
    for label, seq in (("mean", mean), ("std", std)):
        if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence):
            raise ConfigError(f"{label} must be a sequence of numbers, got {seq!r}")
        if len(seq) not in (1, channels):
            raise ConfigError(f"{label} must have 1 or {channels} entries (one per channel), got {len(seq)}")
        try:
            floats = [float(v) for v in seq]
        except (TypeError, ValueError):
            raise ConfigError(f"{label} must contain numbers, got {seq!r}") from None
        if not all(math.isfinite(v) for v in floats):
            raise ConfigError(f"{label} must be finite, got {seq!r}")
        vals.append(floats)
    if min(vals[1]) <= 0.0:
        raise ConfigError(f"std must be positive, got {std!r}")
    return Normalize(vals[0], vals[1])


class PerImageStandardize(nn.Module):
    """Standardize each image to zero mean and unit variance over all its entries:
    ``(x - mean(x)) / max(std(x), 1/sqrt(numel))`` (the preprocessing of
    spectral-norm-adversarial-training.txt Appendix A.4; the floor, as in
    TensorFlow's ``per_image_standardization``, keeps constant images finite)."""

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)
        mean = flat.mean(dim=1, keepdim=True)
        var = (flat - mean).pow(2).mean(dim=1, keepdim=True)
        # clamp the variance (not the std) so the gradient stays finite at var = 0
        std = var.clamp_min(1.0 / flat.shape[1]).sqrt()
        return ((flat - mean) / std).view_as(x)


# ---------------------------------------------------------------------------
# sizes


def conv_out(size: int, kernel: int, padding: int = 0, stride: int = 1) -> int:
    """Output length of a convolution/pooling along one spatial axis."""
    return (size + 2 * padding - kernel) // stride + 1


def check_spatial(model: str, input_shape: Sequence[int], final: tuple[int, int]) -> None:
    """Raise if the feature map would vanish for ``input_shape``."""
    if final[0] < 1 or final[1] < 1:
        raise ConfigError(f"input_shape {tuple(input_shape)} is too small for {model} "
                          f"(the feature map would be {final[0]}x{final[1]})")


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (works on the meta device too)."""
    return sum(p.numel() for p in model.parameters())


def init_conv_kaiming(module: nn.Module) -> None:
    """He-normal (fan-out) init of convolutions, zero biases of linear layers, unit
    batch-norm scales: the initialisation of the original ResNet / WRN code."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

