"""Carlini & Wagner L2 attack (Carlini & Wagner 2017, "Towards Evaluating the
Robustness of Neural Networks"), the C&W column of
weight-penalization-classification-layer.txt (1000 iterations, lr 0.01).

Change of variables ``x' = (tanh(w) + 1) / 2`` keeps the point in [0,1]; Adam
(lr 0.01) minimizes ``||x' - x||_2^2 + c * max(z_y - max_{j!=y} z_j, -kappa)``
(targeted: ``max(max_{j!=t} z_j - z_t, -kappa)``) for ``steps`` iterations, and a
per-sample binary search over ``c`` (``search_steps`` rounds, starting at
``initial_const``; multiplied by 10 until the first success) keeps the smallest
successful perturbation. A point counts as successful when it is misclassified
(targeted: classified as the target) with logit margin >= kappa.

Known limit (of the C&W objective, checked in tests/attacks/test_cw.py): the margin
term pulls toward the highest-logit wrong class, so with many classes the search can
settle on that class's boundary rather than the nearest one; on binary tasks the
result is within a few percent of the exact minimal distance.

It is a minimum-norm attack: ``eps`` is only an optional bound (default ``inf``).
With a finite ``eps`` the found perturbation is projected onto the l2 ball.
Samples never broken are returned unchanged. ``steps``: Adam iterations per constant;
``step_size``: the Adam learning rate (default 0.01). The objective is the C&W margin
above, so ``loss`` is refused, and so is ``restarts`` other than 1 (the binary search
plays that role); ``generator`` is unused (deterministic).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from advgeom.attacks._common import check_bool, input_grad, prepare, refuse_unused, success_of
from advgeom.attacks._geometry import bview, finalize
from advgeom.attacks._losses import margin_loss, margin_targeted
from advgeom.attacks.base import UNUSED, PassCounter, count, describe, number
from advgeom.registry import register


@register("attack", "cw_l2")
@describe(norms=("l2",), losses=(), min_norm=True, uses_loss=False,
          ranges={"steps": count(1, "0 Adam steps would return the clean input"),
                  "restarts": UNUSED, "step_size": number(0.0, open_low=True, why="Adam's rate"),
                  "confidence": number(0.0), "initial_const": number(0.0, open_low=True),
                  "search_steps": count(1)})
def cw_l2(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any = math.inf,
          norm: str = "l2", steps: int = 1000, step_size: float | None = None,
          restarts: int = 1, targeted: bool = False, loss: str | None = None,
          generator: torch.Generator | None = None, confidence: float = 0.0,
          initial_const: float = 1e-3, search_steps: int = 9, abort_early: bool = True,
          counter: PassCounter | None = None) -> Tensor:
    """C&W L2 (Carlini & Wagner 2017) with binary search over the constant; returns,
    per sample, the successful point of smallest l2 distance found (the input if none).

    ``confidence``: the margin ``kappa`` >= 0 a success must clear (0: any
    misclassification); ``initial_const``: the first constant ``c`` of the search;
    ``search_steps``: rounds of the binary search over ``c``; ``abort_early``: stop
    the Adam iterations of a constant when the summed objective has not dropped by
    0.01% over the last ``steps / 10`` iterations, as in the authors' code."""
    refuse_unused("cw_l2", loss=(loss, None), restarts=(restarts, 1))
    s = prepare(model, inputs, labels, info=cw_l2.info, eps=eps, norm=norm, loss=None,
                targeted=targeted, steps=steps, restarts=restarts, step_size=step_size,
                counter=counter, generator=generator)
    cw_l2.info.check("initial_const", initial_const, attack="cw_l2")
    cw_l2.info.check("confidence", confidence, attack="cw_l2")
    cw_l2.info.check("search_steps", search_steps, attack="cw_l2")
    check_bool("abort_early", abort_early)
    lr = 0.01 if step_size is None else float(step_size)
    kappa = float(confidence)
    margin = margin_targeted if targeted else margin_loss
    x, y = s.x, s.y
    n = x.shape[0]
    w0 = torch.atanh((2.0 * x - 1.0).clamp(-1.0, 1.0) * (1.0 - 1e-6))
    lower = torch.zeros(n, dtype=x.dtype, device=x.device)
    upper = torch.full_like(lower, math.inf)
    const = torch.full_like(lower, float(initial_const))
    best_l2 = torch.full_like(lower, math.inf)
    best_adv = x.clone()
    check_every = max(steps // 10, 1)
    b1, b2, tiny = 0.9, 0.999, 1e-8
    for _ in range(search_steps):
        w = w0.clone()
        m, v = torch.zeros_like(w), torch.zeros_like(w)
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        prev = math.inf
        for it in range(steps):
            w.requires_grad_(True)
            with torch.enable_grad():
                adv = (torch.tanh(w) + 1.0) * 0.5
                z = s.forward(adv)
                l2sq = (adv - x).flatten(1).pow(2).sum(dim=1)
                mg = margin(z, y)  # > 0 on success
                obj = l2sq + const * (-mg).clamp(min=-kappa)
            g = input_grad(obj, w, s.counter)
            w = w.detach()
            with torch.no_grad():
                ok = success_of(z.detach(), y, targeted) & (mg.detach() >= kappa)
                better = ok & (l2sq.detach() < best_l2)
                best_l2 = torch.where(better, l2sq.detach(), best_l2)
                best_adv = torch.where(bview(better, x), adv.detach(), best_adv)
                found |= ok
                t = it + 1
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                step = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                w.addcdiv_(m, v.sqrt().add_(tiny), value=-step)
            if abort_early and (it + 1) % check_every == 0:
                total = float(obj.detach().sum())
                if total > prev * 0.9999:
                    break
                prev = total
        with torch.no_grad():
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            bounded = torch.isfinite(upper)
            const = torch.where(bounded, (lower + upper) / 2, const * 10)
    return finalize(x, best_adv, s.eps, norm)
