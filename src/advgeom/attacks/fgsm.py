"""Single-step attacks: the fast gradient sign method (Goodfellow et al. 2015, linf)
and the fast gradient method with an l2-normalized step (Miyato et al. 2016).

One forward and one input-gradient at the clean input, one step of size ``eps``
along the steepest-ascent direction of ``loss`` for the norm, then clipping to
[0,1]. The step is ``eps`` itself: ``steps`` other than 1, ``step_size`` and
``restarts`` other than 1 are refused (they would change nothing); ``generator`` is
accepted and unused (the attack is deterministic).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from advgeom.attacks._common import Setup, input_grad, prepare, refuse_unused
from advgeom.attacks._geometry import ascent_direction, bview, finalize
from advgeom.attacks.base import UNUSED, PassCounter, describe
from advgeom.registry import register

SINGLE = dict(norms=("linf", "l2"), losses=("ce", "margin", "dlr"), single_step=True,
              ranges={"steps": UNUSED, "step_size": UNUSED, "restarts": UNUSED})


def _one_step(s: Setup, norm: str) -> Tensor:
    x = s.x.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = s.loss_fn(s.forward(x), s.y)
    g = input_grad(loss, x, s.counter)
    with torch.no_grad():
        adv = s.x + ascent_direction(g, norm).mul_(bview(s.eps, g))
        return finalize(s.x, adv.clamp_(0.0, 1.0), s.eps, norm)


@register("attack", "fgsm")
@describe(**SINGLE)
def fgsm(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any, norm: str = "linf",
         steps: int = 1, step_size: float | None = None, restarts: int = 1,
         targeted: bool = False, loss: str = "ce", generator: torch.Generator | None = None,
         counter: PassCounter | None = None) -> Tensor:
    """FGSM (Goodfellow et al. 2015): ``clip(x + eps * sign(grad loss))``; with
    ``norm="l2"`` the step is the normalized gradient (same as ``fgm``)."""
    refuse_unused("fgsm", steps=(steps, 1), step_size=(step_size, None), restarts=(restarts, 1))
    s = prepare(model, inputs, labels, info=fgsm.info, eps=eps, norm=norm, loss=loss,
                targeted=targeted, steps=steps, restarts=restarts, step_size=step_size,
                counter=counter, generator=generator)
    return _one_step(s, norm)


@register("attack", "fgm")
@describe(**{**SINGLE, "norms": ("l2", "linf")})
def fgm(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any, norm: str = "l2",
        steps: int = 1, step_size: float | None = None, restarts: int = 1,
        targeted: bool = False, loss: str = "ce", generator: torch.Generator | None = None,
        counter: PassCounter | None = None) -> Tensor:
    """Fast gradient method, l2 by default: ``clip(x + eps * g / ||g||_2)``."""
    refuse_unused("fgm", steps=(steps, 1), step_size=(step_size, None), restarts=(restarts, 1))
    s = prepare(model, inputs, labels, info=fgm.info, eps=eps, norm=norm, loss=loss,
                targeted=targeted, steps=steps, restarts=restarts, step_size=step_size,
                counter=counter, generator=generator)
    return _one_step(s, norm)
