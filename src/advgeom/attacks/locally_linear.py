"""Locally linear attacks (Gopalakrishnan, Marzi, Madhow & Pedarsani 2018, "Toward Robust
Neural Networks via Sparsification"; sparsification-robustness.txt, Sections 3.5-3.6),
registered with the shared attack vocabulary. The algorithm lives in
:mod:`advgeom.analysis.locally_linear`; these are thin wrappers.

Single step (``steps`` other than 1 and ``step_size`` are refused, like ``fgsm``):

- ``locally_linear``: ``mode="semi_white"`` (default; ``A_SW = eps sgn(w_eq)``),
  ``"white"`` (``A_W = eps sgn(P_K w_eq)``, projecting with the model's front end) or
  ``"exact"`` (Jacobian of the whole defended model, through the kept support);
- ``locally_linear_white``: the same with ``mode="white"``.

Iterative (``e <- clip_eps(e + A(x + e, delta))``, ``delta = step_size``, default
``eps/20`` from 20 steps on, else ``eps/steps``): ``locally_linear_iterative`` and
``locally_linear_white_iterative`` (default 80 steps, as Table 1's iterative attacks).

All return, per sample, the candidate with the largest worst-pair logit difference
``max_{i != t} y_i - y_t`` seen. The attack is deterministic: ``restarts`` other than 1
is refused and ``generator`` is unused. l_inf only, untargeted; the objective is
always that worst-pair difference, so ``loss`` is refused.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from advgeom.analysis.locally_linear import locally_linear_attack
from advgeom.attacks._common import check_int, frozen_norm_stats, prepare, refuse_unused
from advgeom.attacks.base import PassCounter, describe
from advgeom.registry import register

INFO = dict(norms=("linf",), losses=(), targeted=False, uses_loss=False)


def _run(fn: Any, model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any, norm: str,
         steps: int, step_size: float | None, restarts: int, targeted: bool, loss: str | None,
         generator: torch.Generator | None, counter: PassCounter | None, mode: str,
         projection: str, iterative: bool) -> Tensor:
    name = fn.__name__
    refuse_unused(name, loss=(loss, None), restarts=(restarts, 1))
    if not iterative:
        refuse_unused(name, steps=(steps, 1), step_size=(step_size, None))
    check_int("steps", steps, 1 if iterative else 0)
    s = prepare(model, inputs, labels, info=fn.info, eps=eps, norm=norm, loss=None,
                targeted=targeted, steps=steps, restarts=restarts, step_size=step_size,
                counter=counter, generator=generator)
    with frozen_norm_stats(model):  # the analysis code calls the model directly
        return locally_linear_attack(model, s.x, s.y, eps=s.eps, steps=steps if iterative else 1,
                                     step_size=step_size if iterative else None, mode=mode,
                                     projection=projection, counter=s.counter)


@register("attack", "locally_linear")
@describe(**INFO, single_step=True)
def locally_linear(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any,
                   norm: str = "linf", steps: int = 1, step_size: float | None = None,
                   restarts: int = 1, targeted: bool = False, loss: str | None = None,
                   generator: torch.Generator | None = None, counter: PassCounter | None = None,
                   mode: str = "semi_white", projection: str = "adjoint") -> Tensor:
    """Single-step locally linear attack on the worst class pair (semi-white box by default).

    ``mode``: "semi_white", "white" or "exact" (see the text); ``projection``: "adjoint"
    (``P_K^T``, the exact maximizer) or "paper" (``P_K`` as the paper's code)."""
    return _run(locally_linear, model, inputs, labels, eps=eps, norm=norm, steps=steps,
                step_size=step_size, restarts=restarts, targeted=targeted, loss=loss,
                generator=generator, counter=counter, mode=mode, projection=projection,
                iterative=False)


@register("attack", "locally_linear_white")
@describe(**INFO, single_step=True)
def locally_linear_white(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any,
                         norm: str = "linf", steps: int = 1, step_size: float | None = None,
                         restarts: int = 1, targeted: bool = False, loss: str | None = None,
                         generator: torch.Generator | None = None,
                         counter: PassCounter | None = None, projection: str = "adjoint") -> Tensor:
    """Single-step white-box locally linear attack ``eps * sgn(P_K(w_eq))``.

    ``projection``: "adjoint" (``P_K^T``, the exact maximizer) or "paper" (``P_K`` as the
    paper's code)."""
    return _run(locally_linear_white, model, inputs, labels, eps=eps, norm=norm, steps=steps,
                step_size=step_size, restarts=restarts, targeted=targeted, loss=loss,
                generator=generator, counter=counter, mode="white", projection=projection,
                iterative=False)


@register("attack", "locally_linear_iterative")
@describe(**INFO)
def locally_linear_iterative(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any,
                             norm: str = "linf", steps: int = 80, step_size: float | None = None,
                             restarts: int = 1, targeted: bool = False, loss: str | None = None,
                             generator: torch.Generator | None = None,
                             counter: PassCounter | None = None, mode: str = "semi_white",
                             projection: str = "adjoint") -> Tensor:
    """Iterative locally linear attack (step ``delta = step_size``, clipped to the eps-ball).

    ``mode``: "semi_white", "white" or "exact" (see the text); ``projection``: "adjoint"
    (``P_K^T``, the exact maximizer) or "paper" (``P_K`` as the paper's code)."""
    return _run(locally_linear_iterative, model, inputs, labels, eps=eps, norm=norm, steps=steps,
                step_size=step_size, restarts=restarts, targeted=targeted, loss=loss,
                generator=generator, counter=counter, mode=mode, projection=projection,
                iterative=True)


@register("attack", "locally_linear_white_iterative")
@describe(**INFO)
def locally_linear_white_iterative(model: nn.Module, inputs: Tensor, labels: Tensor, *,
                                   eps: Any, norm: str = "linf", steps: int = 80,
                                   step_size: float | None = None, restarts: int = 1,
                                   targeted: bool = False, loss: str | None = None,
                                   generator: torch.Generator | None = None,
                                   counter: PassCounter | None = None,
                                   projection: str = "adjoint") -> Tensor:
    """Iterative white-box locally linear attack (projected ``w_eq`` at every step).

    ``projection``: "adjoint" (``P_K^T``, the exact maximizer) or "paper" (``P_K`` as the
    paper's code)."""
    return _run(locally_linear_white_iterative, model, inputs, labels, eps=eps, norm=norm,
                steps=steps, step_size=step_size, restarts=restarts, targeted=targeted,
                loss=loss, generator=generator, counter=counter, mode="white",
                projection=projection, iterative=True)
