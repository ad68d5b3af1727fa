"""The classifier contract: [0,1] inputs -> logits, normalization first, and the
penultimate features exposed (``features``) with a separate ``head`` so that
defenses acting on the last layer (weight penalty, hyperspherical heads) can
reach them."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from advgeom.errors import AdvgeomError
from advgeom.registry import create


class Normalize(nn.Module):
    """Per-channel standardization ``(x - mean) / std`` as the model's first layer.

    ``mean``/``std`` have one entry per channel (axis 1) or a single entry; they are
    broadcast over every axis after the channel axis (images NCHW, vectors N x d use
    one entry).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean, std = [float(v) for v in mean], [float(v) for v in std]
        if len(mean) != len(std) or not mean or min(std) <= 0:
            raise AdvgeomError("Normalize needs equal-length, non-empty mean/std with std > 0")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        c = self.mean.numel()
        if c > 1 and (x.dim() < 2 or x.shape[1] != c):
            raise AdvgeomError(f"Normalize has {c} channels (mean/std) but the inputs have shape "
                               f"{tuple(x.shape)}: give inputs with {c} channels on axis 1")
        shape = (1, -1) + (1,) * (x.dim() - 2) if c > 1 else (1,) * x.dim()
        return (x - self.mean.view(shape)) / self.std.view(shape)


class Classifier(nn.Module):
    """``forward(x) = head(features(x))`` with ``features(x) = body(normalize(x))``.

    Attributes: ``num_classes``, ``input_shape`` (without batch), ``feature_dim`` and
    ``num_outputs`` (logits per sample: ``num_classes``, or 1 for a binary model whose
    single logit scores class 1).
    """

    def __init__(self, body: nn.Module, head: nn.Module, *, num_classes: int,
                 input_shape: Sequence[int], feature_dim: int,
                 normalize: nn.Module | None = None, num_outputs: int | None = None) -> None:
        super().__init__()
        self.normalize = normalize if normalize is not None else nn.Identity()
        self.body = body
        self.head = head
        self.num_classes = int(num_classes)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.feature_dim = int(feature_dim)
        self.num_outputs = int(num_outputs) if num_outputs is not None else self.num_classes

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (the input of ``head``)."""
        return self.body(self.normalize(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build a registered model by name (``advgeom list models`` shows the names)."""
    return create("model", name, **kwargs)
