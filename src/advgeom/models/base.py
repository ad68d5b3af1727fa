"""The classifier contract: [0,1] inputs -> logits, normalization first, and the
penultimate features exposed (``features``) with a separate ``head`` so that
defenses acting on the last layer (weight penalty, hyperspherical heads) can
reach them."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from advgeom.registry import create


class Normalize(nn.Module):
    """Per-channel standardization ``(x - mean) / std`` as the model's first layer."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], channel_dim: int = 1) -> None:
        super().__init__()
        shape = [1] * (channel_dim + 1)
        shape[channel_dim] = -1
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(*shape))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(*shape))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """``forward(x) = head(features(x))`` with ``features(x) = body(normalize(x))``.

    Attributes: ``num_classes``, ``input_shape`` (without batch), ``feature_dim``.
    """

    def __init__(self, body: nn.Module, head: nn.Module, *, num_classes: int,
                 input_shape: Sequence[int], feature_dim: int,
                 normalize: nn.Module | None = None) -> None:
        super().__init__()
        self.normalize = normalize if normalize is not None else nn.Identity()
        self.body = body
        self.head = head
        self.num_classes = int(num_classes)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.feature_dim = int(feature_dim)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (the input of ``head``)."""
        return self.body(self.normalize(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build a registered model by name (``advgeom list models`` shows the names)."""
    return create("model", name, **kwargs)
