"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard 2016), l2 and linf; the DeepFool
column of weight-penalization-classification-layer.txt (50 iterations, overshoot
0.02).

Each iteration linearizes the logit differences ``f_k = z_k - z_y`` of the still
correctly classified samples around the current point and takes the smallest step
onto the nearest linearized boundary: ``k* = argmin |f_k| / ||w_k||_q`` with
``w_k = grad f_k`` and ``q`` the dual norm; ``r = (|f_k*| + 1e-4) w_k* / ||w_k*||_2^2``
(l2) or ``(|f_k*| + 1e-4) sign(w_k*) / ||w_k*||_1`` (linf). The steps accumulate
into ``r_tot`` and the iterate is ``clip(x + (1 + overshoot) r_tot, 0, 1)``.
Candidate classes are the true class and the ``candidates - 1`` other classes with
the largest clean logits (all classes when there are at most ``candidates``).

A sample keeps iterating until it is misclassified by more than the success margin
(:func:`~advgeom.attacks._losses.success`), as every attack's success is defined: a
point whose logits tie within float noise is on the boundary, not past it.

Minimum-norm attack: ``eps`` is an optional bound (default ``inf``); with a finite
``eps`` the final perturbation is projected onto the ball. Samples not broken
within ``steps`` iterations return their last iterate. ``steps`` counts iterations;
DeepFool has no loss (it linearizes the logit differences), no step size (the step is
the projection) and nothing random: ``loss``, ``step_size`` and ``restarts`` other
than 1 are refused, ``generator`` is unused; there is no targeted mode. ``overshoot``
must be >= 0 (a negative one stops short of the boundary).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from advgeom.attacks._common import prepare, refuse_unused
from advgeom.attacks._geometry import bview, dual_norm, finalize, flat_norm
from advgeom.attacks._losses import success
from advgeom.attacks.base import UNUSED, PassCounter, count, describe, number
from advgeom.registry import register


@register("attack", "deepfool")
@describe(norms=("l2", "linf"), losses=(), min_norm=True, targeted=False,
          uses_loss=False,
          ranges={"steps": count(1, "0 would return the clean input"), "step_size": UNUSED,
                  "restarts": UNUSED, "overshoot": number(0.0), "candidates": count(2)})
def deepfool(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any = math.inf,
             norm: str = "l2", steps: int = 50, step_size: float | None = None,
             restarts: int = 1, targeted: bool = False, loss: str | None = None,
             generator: torch.Generator | None = None, overshoot: float = 0.02,
             candidates: int = 10, counter: PassCounter | None = None) -> Tensor:
    """DeepFool; returns ``clip(x + (1 + overshoot) * r_tot)`` per sample."""
    refuse_unused("deepfool", loss=(loss, None), step_size=(step_size, None),
                  restarts=(restarts, 1))
    s = prepare(model, inputs, labels, info=deepfool.info, eps=eps, norm=norm, loss=None,
                targeted=targeted, steps=steps, restarts=restarts, step_size=step_size,
                counter=counter, generator=generator)
    overshoot = deepfool.info.check("overshoot", overshoot, attack="deepfool")
    deepfool.info.check("candidates", candidates, attack="deepfool")
    x, y = s.x, s.y
    n, k = x.shape[0], min(candidates, s.num_classes)
    q = dual_norm(norm)
    x_adv, r_tot = x.clone(), torch.zeros_like(x)
    active = torch.arange(n, device=x.device)
    cand: Tensor | None = None
    for _ in range(steps):
        xa = x_adv[active].requires_grad_(True)
        ya = y[active]
        with torch.enable_grad():
            z = s.forward(xa)
        if cand is None:  # true class first, then the most likely others
            others = z.detach().scatter(1, ya[:, None], -math.inf).topk(k - 1, dim=1).indices
            cand = torch.cat([y[:, None], others], dim=1)
        keep = ~success(z, ya, False)   # on the boundary is not past it: step again
        if not bool(keep.any()):
            break
        ca = cand[active]
        grads = []
        for j in range(k):
            (gj,) = torch.autograd.grad(z.gather(1, ca[:, j:j + 1]).sum(), xa,
                                        retain_graph=j + 1 < k)
            s.counter.add_backward(xa.shape[0])
            grads.append(gj)
        with torch.no_grad():
            zc = z.detach().gather(1, ca)
            f = (zc[:, 1:] - zc[:, :1]).abs()                       # (m, k-1)
            wk = torch.stack([g - grads[0] for g in grads[1:]], 1)  # (m, k-1, ...)
            wn = flat_norm(wk.flatten(0, 1), q).view(f.shape)
            best = (f / (wn + 1e-12)).argmin(dim=1)
            pick = torch.arange(f.shape[0], device=x.device)
            w_l, f_l, n_l = wk[pick, best], f[pick, best], wn[pick, best]
            if norm == "l2":
                r = w_l * bview((f_l + 1e-4) / (n_l.pow(2) + 1e-12), w_l)
            else:
                r = w_l.sign() * bview((f_l + 1e-4) / (n_l + 1e-12), w_l)
            sel = active[keep]
            r_tot[sel] += r[keep]
            x_adv[sel] = (x[sel] + (1.0 + overshoot) * r_tot[sel]).clamp(0.0, 1.0)
            active = sel
    return finalize(x, x_adv, s.eps, norm)
