"""Plain training objectives (the natural-training baselines of every paper)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advgeom.defenses.base import check_fraction
from advgeom.registry import register

Objective = Callable[..., Tensor]


@register("defense", "ce")
def cross_entropy(label_smoothing: float = 0.0) -> Objective:
    """Natural training: mean cross-entropy of the logits; ``label_smoothing`` in
    [0, 1] (Szegedy et al. 2016; ``torch.nn.functional.cross_entropy``)."""
    label_smoothing = check_fraction("ce", "label_smoothing", label_smoothing)

    def objective(model: nn.Module, inputs: Tensor, labels: Tensor, *,
                  generator: torch.Generator | None = None, context: object = None) -> Tensor:
        return F.cross_entropy(model(inputs), labels, label_smoothing=label_smoothing)

    return objective
