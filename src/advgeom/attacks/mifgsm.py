"""Momentum iterative FGSM (Dong et al. 2018, "Boosting Adversarial Attacks with
Momentum"): the gradient, normalized by its per-sample mean absolute value, is
accumulated with decay ``decay`` (1.0 by default) and the step follows the sign
(linf) or the normalized direction (l2) of the accumulator. Starts from the clean
input; default step ``eps / steps``. Best iterate kept as in PGD.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from advgeom.attacks._common import (BestTracker, default_step, input_grad, prepare,
                                     refuse_unused, score_final, success_of)
from advgeom.attacks._geometry import (ascent_direction, box_bounds, bview, finalize,
                                       flat_norm, project_l2)
from advgeom.attacks.base import UNUSED, PassCounter, describe, number
from advgeom.attacks.pgd import check_final_iterate
from advgeom.registry import register


@register("attack", "mifgsm")
@describe(norms=("linf", "l2"), losses=("ce", "margin", "dlr"),
          ranges={"restarts": UNUSED, "decay": number(0.0)})
def mifgsm(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any, norm: str = "linf",
           steps: int = 10, step_size: float | None = None, restarts: int = 1,
           targeted: bool = False, loss: str = "ce", generator: torch.Generator | None = None,
           decay: float = 1.0, final_iterate: bool = False, counter: PassCounter | None = None) -> Tensor:
    """MI-FGSM: ``g <- decay * g + grad / ||grad||_1``, ``x <- P(x + alpha * dir(g))``.

    ``steps``: iterations; ``step_size``: the step ``alpha`` (default ``eps / steps``);
    ``decay``: the momentum factor, a finite number >= 0. Deterministic (no random
    start): ``restarts`` other than 1 is refused, ``generator`` is unused;
    ``final_iterate``: the last iterate alone (see :func:`advgeom.attacks.pgd.check_final_iterate`).
    """
    refuse_unused("mifgsm", restarts=(restarts, 1))
    check_final_iterate("mifgsm", final_iterate)
    decay = mifgsm.info.check("decay", decay, attack="mifgsm")
    s = prepare(model, inputs, labels, info=mifgsm.info, eps=eps, norm=norm, loss=loss,
                targeted=targeted, steps=steps, restarts=restarts, step_size=step_size,
                counter=counter, generator=generator)
    x, y, e = s.x, s.y, s.eps
    alpha = bview(default_step(step_size, e, 1.0 / max(steps, 1)), x)
    lo, hi = box_bounds(x, e) if norm == "linf" else (None, None)
    momentum = torch.zeros_like(x)
    x_adv = x.clone()
    best = BestTracker(x)
    for i in range(steps + 1):
        if i == steps:  # the final iterate needs no gradient
            score_final(s.forward, best, x_adv, y, s.loss_fn, y, targeted)
            break
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            z = s.forward(x_adv)
            loss_v = s.loss_fn(z, y)
        g = input_grad(loss_v, x_adv, s.counter)
        x_adv = x_adv.detach()
        with torch.no_grad():
            if not final_iterate:
                best.update(x_adv, loss_v, success_of(z.detach(), y, targeted))
            g.div_(bview(flat_norm(g, "l1") / g[0].numel() + 1e-12, g))
            momentum.mul_(decay).add_(g)
            x_adv.add_(ascent_direction(momentum.clone(), norm).mul_(alpha))
            x_adv = x_adv.clamp_(lo, hi) if norm == "linf" else project_l2(x, x_adv, e)
    return finalize(x, best.x, e, norm)
