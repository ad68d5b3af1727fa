"""Training objectives of the D-SphereNets (hyperspherical-defense.txt, Section 4):
any registered objective (``ce``, ``fgsm_at``, ``pgd_at``: natural, FGSM and PGD
training) plus the D-SphereNet terms:

* the orthogonality regularizer ``ortho * sum_layers ||W^T W - I||_F^2`` over every
  SphereCorr layer (Section 4.1);
* the weight multiplier's penalty ``eta * |alpha|`` (eq. 6) when the head has one;
* the loss annealing of eq. 8 when the head is an annealed one: with lambda from the
  schedule ``anneal`` at the step,
  ``L = 1/(1+lambda) CE(g(W, x), y) + lambda/(1+lambda) CE(||x|| g(W, x), y)``,
  i.e. the sphere-normalized softmax loss (eq. 7) mixed with W-Softmax (eq. 4), lambda
  decreasing from a large value to a non-negative minimum.

The base objective is the registered one, unchanged (its crafting included); for
annealing, the head records the ``(g, ||x||)`` of the base objective's training-mode
forward (crafting runs in eval mode and is not recorded), whose cross-entropy is the
W-Softmax term, and the sphere-normalized term is added on the same forward. Bases with
more than one training forward (TRADES, ``pgd_at`` with ``mix``) are refused for
annealing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advgeom.defenses.base import Loss, StepContext, check_nonneg, split_loss
from advgeom.errors import ConfigError
from advgeom.nn.sphere import SphereHead, orthogonality_penalty, sphere_layers
from advgeom.registry import create, register


@dataclass(frozen=True)
class Annealing:
    """``lambda(t) = max(minimum, base * (1 + gamma t)^-power)`` at step t (the
    form of SphereFace's annealing; defaults are SphereFace's, an assumption: the paper
    gives none)."""

    base: float = 1000.0
    gamma: float = 0.12
    power: float = 1.0
    minimum: float = 5.0

    @classmethod
    def checked(cls, spec: Any) -> "Annealing":
        if spec is None:
            return cls()
        if not isinstance(spec, dict):
            raise ConfigError(f"defense 'dsphere': anneal must be a table (base, gamma, power, "
                              f"minimum), got {spec!r}")
        unknown = set(spec) - {"base", "gamma", "power", "minimum"}
        if unknown:
            raise ConfigError(f"defense 'dsphere': unknown anneal key(s) {sorted(unknown)} "
                              f"(base, gamma, power, minimum)")
        vals = {k: check_nonneg("dsphere", f"anneal.{k}", v) for k, v in spec.items()}
        return cls(**vals)

    def at(self, step: int) -> float:
        return max(self.minimum, self.base * (1.0 + self.gamma * step) ** (-self.power))


def annealed_loss(g: Tensor, x_norm: Tensor, labels: Tensor, lam: float) -> Tensor:
    """Eq. 8 with lambda ``lam``: ``1/(1+lam) CE(g) + lam/(1+lam) CE(||x|| g)``."""
    sphere = F.cross_entropy(g, labels)
    wsoft = F.cross_entropy(x_norm.unsqueeze(1) * g, labels)
    return (sphere + lam * wsoft) / (1.0 + lam)


def sphere_head(model: nn.Module) -> SphereHead | None:
    head = getattr(model, "head", None)
    return head if isinstance(head, SphereHead) else None


@register("defense", "dsphere")
def dsphere(base: str = "ce", base_kwargs: dict[str, Any] | None = None, ortho: float = 1e-4,
            eta: float = 0.01, anneal: dict[str, float] | None = None) -> Callable[..., Loss]:
    """The D-SphereNet objective around the registered objective ``base`` (built with
    ``base_kwargs``): adds ``ortho`` times the orthogonality regularizer, ``eta |alpha|``
    for a weight-multiplier head, and trains an annealed head with eq. 8 under the
    schedule ``anneal`` (:class:`Annealing`). ``ortho`` 1e-4 and ``eta`` 0.01 are
    assumptions (the paper gives no values)."""
    if base == "dsphere":
        raise ConfigError("defense 'dsphere': base must be another objective")
    try:
        inner = create("defense", base, **(base_kwargs or {}))
    except TypeError as e:
        raise ConfigError(f"defense 'dsphere': base_kwargs of {base!r}: {e}") from None
    ortho = check_nonneg("dsphere", "ortho", ortho)
    eta = check_nonneg("dsphere", "eta", eta)
    schedule = Annealing.checked(anneal)

    def objective(model: nn.Module, inputs: Tensor, labels: Tensor, *,
                  generator: torch.Generator | None = None,
                  context: StepContext | None = None) -> Loss:
        head = sphere_head(model)
        if head is None or not sphere_layers(model):
            raise ConfigError("defense 'dsphere' needs a D-SphereNet (a model with a SphereHead, "
                              "e.g. dsphere_mnist)")
        if head.annealed:
            head.start_recording()
        try:
            loss, terms = split_loss(inner(model, inputs, labels, generator=generator, context=context))
        finally:
            records = head.stop_recording() if head.annealed else []
        terms = dict(terms)
        if head.annealed:
            if len(records) != 1:
                raise ConfigError(f"defense 'dsphere': loss annealing needs a base objective with "
                                  f"one training forward (ce, fgsm_at, pgd_at); {base!r} made "
                                  f"{len(records)}")
            lam = schedule.at(context.step if context is not None else 0)
            g, x_norm = records[0]
            loss = (loss * lam + F.cross_entropy(g, labels)) / (1.0 + lam)
            terms["lambda"] = torch.tensor(lam)
        total = loss
        if ortho > 0:
            reg = orthogonality_penalty(model)
            total = total + ortho * reg
            terms["ortho"] = reg.detach()
        if head.scale == "multiplier":
            total = total + eta * head.penalty()
            terms["alpha"] = head.penalty().detach()
        return Loss(total, terms)

    return objective
