"""Sparsity-based defenses (sparsification-robustness.txt, Sections 2, 4 and 5).

- defense ``l1``: network sparsity, ``CE + lam * sum_l ||W_l||_1`` over the weights of
  every Linear / Conv layer (biases are not penalized); it bounds each layer's
  ``gamma_j = max_i ||w_ij||_1`` and hence the layer-wise l_inf growth of Theorem 2.

The other defense of the paper, the sparsifying front end, is an architecture: the model
``sparse_frontend`` (:mod:`advgeom.models.sparse_frontend`), trained with plain
cross-entropy.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advgeom.defenses.base import check_nonneg
from advgeom.errors import ConfigError
from advgeom.registry import register

Objective = Callable[..., Tensor]
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


# --------------------------------------------------------------------------- network sparsity
def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The Linear / Conv layers of ``model`` in registration (= execution) order."""
    return [m for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]


def l1_penalty(model: nn.Module) -> Tensor:
    """``sum_l ||W_l||_1`` over :func:`weight_layers` (a differentiable scalar)."""
    layers = weight_layers(model)
    if not layers:
        raise ConfigError("l1 defense: the model has no Linear/Conv layer to sparsify")
    return sum(m.weight.abs().sum() for m in layers)


def weight_sparsity(model: nn.Module, rel_tol: float = 1e-2) -> list[float]:
    """Per layer, the fraction of weights with ``|w| > rel_tol * max|w|`` (kept weights)."""
    out = []
    for m in weight_layers(model):
        w = m.weight.detach().abs()
        out.append(float((w > rel_tol * w.max()).float().mean()))
    return out


@register("defense", "l1")
def l1(lam: float = 1e-3) -> Objective:
    """Cross-entropy plus ``lam`` times the l1 norm of every layer's weights (Sec. 4)."""
    lam = check_nonneg("l1", "lam", lam)

    def objective(model: nn.Module, inputs: Tensor, labels: Tensor, *,
                  generator: torch.Generator | None = None, context: object = None) -> Tensor:
        return F.cross_entropy(model(inputs), labels) + lam * l1_penalty(model)

    return objective
