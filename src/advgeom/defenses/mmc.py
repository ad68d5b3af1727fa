"""Max-Mahalanobis center loss (Pang et al. 2020, "Rethinking softmax cross-entropy
loss for adversarial robustness"), with and without adversarial training.

The centers and the model ``mmc`` (a base network's features, a linear layer and the
MMC head with logits ``-||z - mu_k||^2``) are in :mod:`advgeom.models.mmc`.

- defense ``mmc``: the loss ``||z - mu_y||^2`` on clean inputs, or with
  ``adversarial=True`` on examples crafted by ``attack`` against the MMC logits.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from advgeom.defenses.adversarial import AdversarialSetup
from advgeom.defenses.base import Loss, StepContext, check_nonneg
from advgeom.errors import ConfigError
from advgeom.models.mmc import MMCHead
from advgeom.registry import register

# ---------------------------------------------------------------------------
# the objective


def centers_of(model: nn.Module) -> Tensor:
    head = getattr(model, "head", None)
    if not isinstance(head, MMCHead):
        raise ConfigError("defense 'mmc' needs an MMC model (model = \"mmc\")")
    return head.centers


# ---------------------------------------------------------------------------
# loss


def mmc_loss(features: Tensor, centers: Tensor, labels: Tensor) -> Tensor:
    """Mean over the batch of ``||z - mu_y||^2`` (the official code's dot loss)."""
    return (features - centers[labels]).pow(2).sum(1).mean()


@register("defense", "mmc")
def mmc(adversarial: bool = False, eps: float = 0.3, norm: str = "linf",
        attack: str = "pgd:steps=40,step_size=0.01,early_stop=false", warmup: float = 0.0,
        craft_mode: str = "eval") -> Callable[..., Loss]:
    """MMC loss on clean inputs, or (``adversarial=True``) on examples that ``attack``
    crafts against the MMC logits (Pang et al. 2020, MMC + AT)."""
    if not isinstance(adversarial, bool):
        raise ConfigError(f"defense 'mmc': adversarial must be true or false, got {adversarial!r}")
    s = AdversarialSetup("mmc", eps, norm, warmup, craft_mode, attack) if adversarial else None
    check_nonneg("mmc", "eps", eps)

    def objective(model: nn.Module, inputs: Tensor, labels: Tensor, *,
                  generator: torch.Generator | None = None,
                  context: StepContext | None = None) -> Loss:
        centers = centers_of(model)
        x = inputs if s is None else s.craft(model, inputs, labels, generator, context)
        loss = mmc_loss(model.features(x), centers, labels)
        return Loss(loss, {"mmc": loss.detach()})

    return objective
