"""Auto-PGD (APGD) of Croce & Hein 2020, "Reliable evaluation of adversarial robustness
with an ensemble of diverse parameter-free attacks" (AutoAttack), linf and l2.

Algorithm 1 of the paper: start at a random point of the ball, step size
``eta = 2 eps``; step k>0 is the momentum update
``x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))`` with
``z = P(x_k + eta * dir(grad f(x_k)))`` and ``a = 0.75``. At the checkpoints
``w_j = ceil(p_j N)`` with ``p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` the step size of a sample is
halved, and the sample restarted from its highest-loss point ``x_max``, when
(1) the loss increased in fewer than ``rho = 75%`` of the steps since the last
checkpoint, or (2) the step size was not reduced at the last checkpoint and
``f_max`` did not improve since.

Losses: "ce", "dlr" (and "margin"); with ``targeted=True`` the labels are targets
and "dlr" is the targeted DLR loss (DLR-T). ``apgd-t`` (in ``multi_target``)
runs targeted DLR against the top-9 classes like AutoAttack.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from advgeom.attacks._common import (BestTracker, Setup, copy_rows_, input_grad, prepare, remaining,
                                     success_of)
from advgeom.attacks._geometry import (ascent_direction, box_bounds, bview, finalize,
                                       project_l2, random_start)
from advgeom.attacks._losses import LossFn, check_loss_name
from advgeom.attacks.base import PassCounter, describe
from advgeom.registry import register

APGD_INFO = dict(norms=("linf", "l2"), losses=("ce", "dlr", "margin"))


def checkpoints(steps: int) -> set[int]:
    """Iteration counts ``w_j`` at which the step-size conditions are checked."""
    marks, length = set(), max(int(0.22 * steps), 1)
    shrink, least = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    w = length
    while w <= steps:
        marks.add(w)
        length = max(length - shrink, least)
        w += length
    return marks


def apgd_run(s: Setup, x: Tensor, y: Tensor, eps: Tensor, *, norm: str, steps: int,
             loss_fn: LossFn, succ_labels: Tensor, succ_targeted: bool,
             eta0: Tensor | None = None, rho: float = 0.75, alpha: float = 0.75) -> BestTracker:
    """One APGD run on ``x``; returns the success-first best-iterate tracker."""
    fwd, counter, linf = s.forward, s.counter, norm == "linf"
    lo, hi = box_bounds(x, eps) if linf else (None, None)

    def proj(p: Tensor) -> Tensor:
        return p.clamp_(lo, hi) if linf else project_l2(x, p, eps)

    def evaluate(p: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
        if not need_grad:
            with torch.no_grad():
                z = fwd(p)
                f = loss_fn(z, y)
            best.update(p, f, success_of(z, succ_labels, succ_targeted))
            return f, None
        p.requires_grad_(True)
        with torch.enable_grad():
            z = fwd(p)
            f = loss_fn(z, y)
        g = input_grad(f, p, counter)
        p.requires_grad_(False)
        f = f.detach()
        best.update(p, f, success_of(z.detach(), succ_labels, succ_targeted))
        return f, g

    best = BestTracker(x)
    x_cur = random_start(x, eps, norm, s.generator, l2_radius="sphere")
    f_cur, g_cur = evaluate(x_cur, True)
    x_max, f_max, g_max = x_cur.clone(), f_cur.clone(), g_cur.clone()
    eta = (2.0 * eps if eta0 is None else eta0.clone()).clone()
    x_prev = x_cur.clone()
    marks, last_mark = checkpoints(steps), 0
    n_incr = torch.zeros_like(f_cur)
    f_max_last = f_max.clone()
    reduced_last = torch.zeros_like(f_cur, dtype=torch.bool)
    for k in range(steps):
        with torch.no_grad():
            e = bview(eta, x)
            z = proj(x_cur + ascent_direction(g_cur, norm).mul_(e))
            if k > 0:
                # x + alpha (z - x) + (1 - alpha)(x - x_prev) = lerp(2x - x_prev, z, alpha)
                z = proj(torch.lerp((x_cur - x_prev).add_(x_cur), z, alpha))
            x_prev, x_cur = x_cur, z
        f_new, g_cur = evaluate(x_cur, k + 1 < steps)
        with torch.no_grad():
            n_incr += (f_new > f_cur).to(n_incr.dtype)
            f_cur = f_new
            up = f_cur > f_max
            copy_rows_(x_max, x_cur, up)
            f_max = torch.where(up, f_cur, f_max)
            if g_cur is not None:
                copy_rows_(g_max, g_cur, up)
            if k + 1 in marks and k + 1 < steps:
                span = k + 1 - last_mark
                cond1 = n_incr < rho * span
                cond2 = ~reduced_last & (f_max <= f_max_last)
                red = cond1 | cond2
                eta = torch.where(red, eta / 2.0, eta)
                rv = bview(red, x)
                x_cur = torch.where(rv, x_max, x_cur)
                g_cur = torch.where(rv, g_max, g_cur)
                f_cur = torch.where(red, f_max, f_cur)
                reduced_last, f_max_last, last_mark = red, f_max.clone(), k + 1
                n_incr.zero_()
    return best


def run_apgd(s: Setup, x: Tensor, y: Tensor, eps: Tensor, *, norm: str, steps: int,
             restarts: int, loss_fn: LossFn, succ_labels: Tensor, succ_targeted: bool,
             eta0: Tensor | None = None) -> BestTracker:
    """APGD with restarts on the still-unbroken samples (worst case kept)."""
    best = apgd_run(s, x, y, eps, norm=norm, steps=steps, loss_fn=loss_fn,
                    succ_labels=succ_labels, succ_targeted=succ_targeted, eta0=eta0)
    for _ in range(restarts - 1):
        idx = remaining(best)
        if idx.numel() == 0:
            break
        sub = apgd_run(s, x[idx], y[idx], eps[idx], norm=norm, steps=steps, loss_fn=loss_fn,
                       succ_labels=succ_labels[idx], succ_targeted=succ_targeted,
                       eta0=None if eta0 is None else eta0[idx])
        best.merge(idx, sub)
    return best


@register("attack", "apgd")
@describe(**APGD_INFO)
def apgd(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any, norm: str = "linf",
         steps: int = 100, step_size: float | None = None, restarts: int = 1,
         targeted: bool = False, loss: str = "ce", generator: torch.Generator | None = None,
         counter: PassCounter | None = None) -> Tensor:
    """APGD (Croce & Hein 2020) on ``loss`` ("ce", "dlr", "margin"); ``step_size``
    overrides the initial step ``2 eps``. Returns the successful / highest-loss point."""
    s = prepare(model, inputs, labels, info=apgd.info, eps=eps, norm=norm, loss=loss,
                targeted=targeted, steps=steps, restarts=restarts, step_size=step_size,
                counter=counter, generator=generator)
    eta0 = None if step_size is None else torch.full_like(s.eps, float(step_size))
    best = run_apgd(s, s.x, s.y, s.eps, norm=norm, steps=steps, restarts=restarts,
                    loss_fn=s.loss_fn, succ_labels=s.y, succ_targeted=targeted, eta0=eta0)
    return finalize(s.x, best.x, s.eps, norm)


@register("attack", "apgd-ce")
@describe(**{**APGD_INFO, "losses": ("ce",)})
def apgd_ce(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any, norm: str = "linf",
            steps: int = 100, step_size: float | None = None, restarts: int = 1,
            targeted: bool = False, loss: str = "ce", generator: torch.Generator | None = None,
            counter: PassCounter | None = None) -> Tensor:
    """APGD-CE: ``apgd`` with the cross-entropy loss."""
    check_loss_name(loss, ("ce",))
    return apgd(model, inputs, labels, eps=eps, norm=norm, steps=steps, step_size=step_size,
                restarts=restarts, targeted=targeted, loss="ce", generator=generator,
                counter=counter)


@register("attack", "apgd-dlr")
@describe(**{**APGD_INFO, "losses": ("dlr",)})
def apgd_dlr(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any,
             norm: str = "linf", steps: int = 100, step_size: float | None = None,
             restarts: int = 1, targeted: bool = False, loss: str = "dlr",
             generator: torch.Generator | None = None,
             counter: PassCounter | None = None) -> Tensor:
    """APGD-DLR: ``apgd`` with the DLR loss (DLR-T when targeted); needs >= 3 classes."""
    check_loss_name(loss, ("dlr",))
    return apgd(model, inputs, labels, eps=eps, norm=norm, steps=steps, step_size=step_size,
                restarts=restarts, targeted=targeted, loss="dlr", generator=generator,
                counter=counter)
