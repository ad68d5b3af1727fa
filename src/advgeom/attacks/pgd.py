"""Projected gradient descent (Madry et al. 2018) and the basic iterative method
(Kurakin et al. 2017), in the linf and l2 threat models; the PGD^k attacks of
weight-penalization-classification-layer.txt (Table 1) and
spectral-norm-adversarial-training.txt (l2 PGA).

Each step is one forward and one input-gradient; the forward also feeds the
best-iterate tracker, and one extra gradient-free forward scores the final iterate
on the samples not yet broken (a broken sample already holds a successful point).
By default a sample leaves the batch at its first success (``early_stop``): the
robust accuracy is the same, and broken samples stop costing passes.
Restarts run only on the samples that are still unbroken and keep the worst case.
Default step size: ``2.5 * eps / steps`` (Madry et al.).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from advgeom.attacks._common import (BestTracker, Setup, check_bool, default_step, input_grad,
                                     prepare, refuse_unused, remaining, score_final, success_of)
from advgeom.attacks._geometry import (ascent_direction, box_bounds, bview, finalize,
                                       project_l2, random_start)
from advgeom.attacks._losses import LossFn
from advgeom.attacks.base import UNUSED, PassCounter, describe
from advgeom.errors import AdvgeomError
from advgeom.registry import register

ITERATIVE = dict(norms=("linf", "l2"), losses=("ce", "margin", "dlr"))


def pgd_run(s: Setup, x: Tensor, y: Tensor, eps: Tensor, *, norm: str, steps: int,
            step: Tensor, loss_fn: LossFn, random_init: bool, succ_labels: Tensor,
            succ_targeted: bool, early_stop: bool = True, final_only: bool = False) -> BestTracker:
    """One PGD run on ``x`` (a subset of ``s.x`` is allowed); returns the tracker.

    ``succ_labels``/``succ_targeted`` define success, so a targeted run can still be
    scored as "misclassified" (used by ``multi_target``). With ``early_stop`` a sample
    leaves the batch at its first successful iterate (one host sync per step), so
    broken samples cost nothing; without it every sample takes all ``steps`` and keeps
    its highest-loss successful iterate (what transfer attacks want). ``final_only``
    (never with ``early_stop``): the tracker holds the last iterate of every sample.
    """
    if final_only and early_stop:
        raise ValueError("final_only scores the last iterate: it needs early_stop=False")
    fwd, counter = s.forward, s.counter
    linf = norm == "linf"
    lo, hi = box_bounds(x, eps) if linf else (None, None)
    x_adv = random_start(x, eps, norm, s.generator) if random_init else x.clone()
    uniform = bool((step == step[0]).all())   # one host sync per run
    alpha = float(step[0]) if uniform else bview(step, x)
    best = BestTracker(x)
    act: Tensor | None = None  # indices of the samples still attacked (None: all of them)
    for i in range(steps + 1):
        if i == steps:  # the final iterate needs no gradient
            if act is None:
                score_final(fwd, best, x_adv, y, loss_fn, succ_labels, succ_targeted)
            else:  # every active sample is unbroken: score them all
                with torch.no_grad():
                    z = fwd(x_adv)
                    best.update_at(act, x_adv, loss_fn(z, y),
                                   success_of(z, succ_labels, succ_targeted))
            break
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            z = fwd(x_adv)
            loss = loss_fn(z, y)
        g = input_grad(loss, x_adv, counter)
        x_adv = x_adv.detach()
        with torch.no_grad():
            succ = success_of(z.detach(), succ_labels, succ_targeted)
            if not final_only:  # final_only scores the last iterate alone (above)
                if act is None:
                    best.update(x_adv, loss, succ)
                else:
                    best.update_at(act, x_adv, loss, succ)
            if uniform:  # fused scalar step
                x_adv.add_(ascent_direction(g, norm), alpha=alpha)
            else:
                x_adv.add_(ascent_direction(g, norm).mul_(alpha))
            x_adv = x_adv.clamp_(lo, hi) if linf else project_l2(x, x_adv, eps)
            if early_stop and bool(succ.any()):  # drop the samples that just broke
                keep = (~succ).nonzero().squeeze(1)
                if keep.numel() == 0:
                    break
                act = keep if act is None else act[keep]
                x_adv, x, y, eps, succ_labels = (x_adv[keep], x[keep], y[keep], eps[keep],
                                                 succ_labels[keep])
                if linf:
                    lo, hi = lo[keep], hi[keep]
                if not uniform:
                    alpha = alpha[keep]
    return best


def run_with_restarts(s: Setup, x: Tensor, y: Tensor, eps: Tensor, *, norm: str, steps: int,
                      step: Tensor, restarts: int, random_init: bool, loss_fn: LossFn,
                      succ_labels: Tensor, succ_targeted: bool,
                      early_stop: bool = True, final_only: bool = False) -> BestTracker:
    """PGD with restarts on the still-unbroken samples; the per-sample worst case."""
    best = pgd_run(s, x, y, eps, norm=norm, steps=steps, step=step, loss_fn=loss_fn,
                   random_init=random_init, succ_labels=succ_labels, succ_targeted=succ_targeted,
                   early_stop=early_stop, final_only=final_only)
    for _ in range(restarts - 1 if random_init else 0):
        idx = remaining(best)
        if idx.numel() == 0:
            break
        sub = pgd_run(s, x[idx], y[idx], eps[idx], norm=norm, steps=steps, step=step[idx],
                      loss_fn=loss_fn, random_init=True, succ_labels=succ_labels[idx],
                      succ_targeted=succ_targeted, early_stop=early_stop, final_only=final_only)
        best.merge(idx, sub)
    return best


@register("attack", "pgd")
@describe(**ITERATIVE)
def pgd(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any, norm: str = "linf",
        steps: int = 10, step_size: float | None = None, restarts: int = 1,
        targeted: bool = False, loss: str = "ce", generator: torch.Generator | None = None,
        random_start: bool = True, early_stop: bool = True, final_iterate: bool = False,
        counter: PassCounter | None = None) -> Tensor:
    """PGD (Madry et al. 2018): random start in the eps-ball, ``steps`` signed (linf)
    or normalized (l2) gradient steps on ``loss`` ("ce", "margin", "dlr"), projection
    onto the ball and [0,1]; returns per sample a successful iterate if any (the first
    one with ``early_stop``, the highest-loss one without), else the highest-loss one,
    over all steps and restarts. ``steps``: gradient steps per restart; ``step_size``:
    the step length in the norm (default ``2.5 eps / steps``); ``loss``: the maximized
    objective; ``random_start``: start at a uniform point of the eps-ball (False: at the
    clean input, as BIM); ``final_iterate``: see :func:`check_final_iterate`."""
    check_bool("random_start", random_start)
    check_final_iterate("pgd", final_iterate, early_stop)
    if not random_start:
        refuse_unused("pgd without random_start", restarts=(restarts, 1))
    s = prepare(model, inputs, labels, info=pgd.info, eps=eps, norm=norm, loss=loss,
                targeted=targeted, steps=steps, restarts=restarts, step_size=step_size,
                counter=counter, generator=generator)
    step = default_step(step_size, s.eps, 2.5 / max(steps, 1))
    best = run_with_restarts(s, s.x, s.y, s.eps, norm=norm, steps=steps, step=step,
                             restarts=restarts, random_init=random_start, loss_fn=s.loss_fn,
                             succ_labels=s.y, succ_targeted=targeted, early_stop=early_stop,
                             final_only=final_iterate)
    return finalize(s.x, best.x, s.eps, norm)


def check_final_iterate(attack: str, final_iterate: Any, early_stop: Any = False) -> None:
    """``final_iterate``: return every sample's last iterate, whether or not an earlier
    one was adversarial (with restarts, a restart's last iterate that is). The default
    returns a successful iterate if any; the last-iterate scoring of CleverHans' BIM
    and MI-FGSM and of several papers' own PGD can only leave more points robust. It
    exists to reproduce such a protocol and is never the evaluation's default. Every
    sample then takes all steps, so ``early_stop=true`` with it is refused."""
    check_bool("early_stop", early_stop)
    if check_bool("final_iterate", final_iterate) and early_stop:
        raise AdvgeomError(f"{attack}: final_iterate=true scores only the last iterate, so every "
                           "sample takes all steps: give early_stop=false with it")


@register("attack", "bim")
@describe(**ITERATIVE, ranges={"restarts": UNUSED})
def bim(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any, norm: str = "linf",
        steps: int = 10, step_size: float | None = None, restarts: int = 1,
        targeted: bool = False, loss: str = "ce", generator: torch.Generator | None = None,
        early_stop: bool = True, final_iterate: bool = False,
        counter: PassCounter | None = None) -> Tensor:
    """Basic iterative method (Kurakin et al. 2017): PGD from the clean input (no
    random start, so ``restarts`` has nothing to vary and is not repeated);
    default step ``1.25 * eps / steps`` (Kurakin et al.'s budget of 1.25 eps);
    ``restarts`` other than 1 is refused; ``final_iterate``: see
    :func:`check_final_iterate`."""
    check_final_iterate("bim", final_iterate, early_stop)
    refuse_unused("bim", restarts=(restarts, 1))
    s = prepare(model, inputs, labels, info=bim.info, eps=eps, norm=norm, loss=loss,
                targeted=targeted, steps=steps, restarts=restarts, step_size=step_size,
                counter=counter, generator=generator)
    step = default_step(step_size, s.eps, 1.25 / max(steps, 1))
    best = run_with_restarts(s, s.x, s.y, s.eps, norm=norm, steps=steps, step=step, restarts=1,
                             random_init=False, loss_fn=s.loss_fn, succ_labels=s.y,
                             succ_targeted=targeted, early_stop=early_stop, final_only=final_iterate)
    return finalize(s.x, best.x, s.eps, norm)
