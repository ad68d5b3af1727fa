"""Locally linear attacks (sparsification-robustness.txt, Sections 3.5-3.6), registered
with the shared attack vocabulary. The algorithm lives in
:mod:`advgeom.analysis.locally_linear`; these are thin wrappers.

- ``locally_linear``: ``mode="semi_white"`` (default; ``A_SW``), ``"white"`` (``A_W``,
  projects ``w_eq`` with the model's front end) or ``"exact"`` (Jacobian of the whole
  defended model). ``steps=1`` is the single-step attack, ``steps > 1`` the iterative
  version with ``delta = step_size``.
- ``locally_linear_white``: the same with ``mode="white"``.

The attack is deterministic: ``restarts`` and ``generator`` are accepted and unused.
Only ``norm="linf"`` and untargeted attacks exist; its objective is the logit
difference of the worst pair, so ``loss`` must be ``"ce"`` or ``"margin"`` (both mean
that objective here).
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from advgeom.analysis.locally_linear import locally_linear_attack
from advgeom.errors import AdvgeomError
from advgeom.registry import register
from advgeom.types import Eps, check_eps, check_inputs


def _run(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Eps, norm: str, steps: int,
         step_size: float | None, targeted: bool, loss: str, mode: str, projection: str) -> Tensor:
    check_inputs(inputs, labels, getattr(model, "num_classes", None))
    check_eps(eps, inputs.shape[0])
    if norm != "linf":
        raise AdvgeomError(f"locally linear attack is an l_inf attack, got norm={norm!r}")
    if targeted:
        raise AdvgeomError("locally linear attack is untargeted (worst pair); targeted=True is not supported")
    if loss not in ("ce", "margin"):
        raise AdvgeomError(f"locally linear attack maximizes the worst logit pair; loss {loss!r} is not supported")
    if step_size is not None and not float(step_size) > 0:
        raise AdvgeomError(f"step_size must be > 0, got {step_size}")
    if model.training:
        warnings.warn("attacking a model in training mode (dropout/batch-norm active); "
                      "call model.eval() first", stacklevel=3)
    eps_t = eps.to(inputs) if isinstance(eps, Tensor) else float(eps)
    return locally_linear_attack(model, inputs, labels, eps=eps_t, steps=int(steps),
                                 step_size=step_size, mode=mode, projection=projection)


@register("attack", "locally_linear")
def locally_linear(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Eps,
                   norm: str = "linf", steps: int = 1, step_size: float | None = None,
                   restarts: int = 1, targeted: bool = False, loss: str = "ce",
                   generator: torch.Generator | None = None, mode: str = "semi_white",
                   projection: str = "adjoint") -> Tensor:
    """Locally linear attack on the worst class pair (semi-white box by default)."""
    return _run(model, inputs, labels, eps=eps, norm=norm, steps=steps, step_size=step_size,
                targeted=targeted, loss=loss, mode=mode, projection=projection)


@register("attack", "locally_linear_white")
def locally_linear_white(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Eps,
                         norm: str = "linf", steps: int = 1, step_size: float | None = None,
                         restarts: int = 1, targeted: bool = False, loss: str = "ce",
                         generator: torch.Generator | None = None,
                         projection: str = "adjoint") -> Tensor:
    """White-box locally linear attack: ``eps * sgn(P_K(w_eq))`` through the front end."""
    return _run(model, inputs, labels, eps=eps, norm=norm, steps=steps, step_size=step_size,
                targeted=targeted, loss=loss, mode="white", projection=projection)
