"""Bring your own model: any ``nn.Module`` mapping inputs in [0,1] to logits works with
every attack, evaluation and defense of advgeom. A model trained on standardized
inputs gets its normalization as its first layer with :func:`with_normalization`, so
attacks and the threat model stay in [0,1] pixel space and nobody normalizes outside
the model by mistake (docs/design.md "Contracts")."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from advgeom.models.base import Normalize

# attributes advgeom reads from a model when present (class count, input shape, ...)
_FORWARDED = ("num_classes", "input_shape", "num_outputs", "feature_dim")


class Normalized(nn.Module):
    """``model(normalize(x))`` with ``normalize`` = :class:`~advgeom.models.base.Normalize`;
    the wrapped model's ``num_classes``/``input_shape``/``num_outputs``/``feature_dim``
    are carried over when it has them."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model
        for name in _FORWARDED:
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.normalize(x))


def with_normalization(model: nn.Module, mean: Sequence[float] | float,
                       std: Sequence[float] | float) -> Normalized:
    """Wrap ``model`` (which expects ``(x - mean) / std``) into a model of [0,1] inputs.

    ``mean``/``std``: one value per channel (axis 1 of NCHW images) or a single value,
    e.g. ``with_normalization(net, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))``
    for CIFAR-10 or ``with_normalization(net, 0.1307, 0.3081)`` for MNIST. The result
    shares ``model``'s parameters (nothing is copied) and keeps its training mode."""
    def as_list(v: float | Sequence[float]) -> list[float]:
        return [float(v)] if isinstance(v, (int, float)) else [float(t) for t in v]

    wrapped = Normalized(model, as_list(mean), as_list(std))
    return wrapped.train(model.training)
