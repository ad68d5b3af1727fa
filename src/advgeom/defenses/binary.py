"""Sigmoid cross-entropy for single-logit binary models (adversarial-spheres.txt,
Section 3: "minimizing the sigmoid cross entropy loss").

Registered as defense ``bce``: ``objective(model, x, y, *, generator)`` with labels
0/1 (int64) and a model returning (N, 1) or (N,) logits; prediction is ``logit > 0``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advgeom.errors import AdvgeomError
from advgeom.registry import register

Objective = Callable[..., Tensor]


def binary_logit(model: nn.Module, x: Tensor) -> Tensor:
    """The model's single logit per sample, shape (N,); errors on multi-logit models."""
    out = model(x)
    if out.dim() == 2 and out.shape[1] == 1:
        return out.squeeze(-1)
    if out.dim() == 1:
        return out
    raise AdvgeomError(f"bce needs a single-logit model (N, 1); got output shape {tuple(out.shape)}")


@register("defense", "bce")
def bce() -> Objective:
    """Sigmoid cross-entropy objective: mean BCE-with-logits of ``model(x)`` against ``y``
    (no options: an option given to it is an error, not silently ignored)."""

    def objective(model: nn.Module, inputs: Tensor, labels: Tensor, *,
                  generator: torch.Generator | None = None, context: object = None) -> Tensor:
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > 1):
            raise AdvgeomError("bce needs labels in {0, 1}")
        return F.binary_cross_entropy_with_logits(binary_logit(model, inputs), labels.float())

    return objective
