"""Multi-targeted attacks: one targeted run per candidate class, per-sample worst
case kept. ``multi_target`` is the Multi-Target Attack (MTA) of
weight-penalization-classification-layer.txt (Table 1: 100/200 iterations, step
0.0031/0.01), after Pang et al.'s MMC paper: for every class other than the true
one, a targeted PGD (or APGD) run toward it; a sample is broken as soon as ANY
iterate of ANY run misclassifies it. ``apgd-t`` is AutoAttack's APGD-T: targeted
DLR (DLR-T) APGD against the 9 most likely other classes (Croce & Hein 2020).

Targets are ranked by the clean logits (most likely first); later targets are
tried only on samples still unbroken. For samples never broken the point of the
first (most likely) target's run is returned. The attack is untargeted as a whole,
so ``targeted=True`` is refused.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from advgeom.attacks._common import BestTracker, Setup, default_step, prepare
from advgeom.attacks._geometry import bview, finalize
from advgeom.attacks._losses import check_loss_name, get_loss
from advgeom.attacks.apgd import run_apgd
from advgeom.attacks.base import PassCounter, count, describe
from advgeom.attacks.pgd import run_with_restarts
from advgeom.errors import AdvgeomError
from advgeom.registry import register

MT_INFO = dict(norms=("linf", "l2"), losses=("ce", "margin", "dlr"), targeted=False)


def _multi(s: Setup, *, norm: str, steps: int, step_size: Any, restarts: int, loss: str,
           base: str, num_targets: int | None) -> BestTracker:
    if base not in ("pgd", "apgd"):
        raise AdvgeomError(f"multi_target base must be 'pgd' or 'apgd', got {base!r}")
    loss_fn = get_loss(loss, targeted=True, num_classes=s.num_classes)
    n_t = s.num_classes - 1 if num_targets is None else int(num_targets)
    if n_t < 1:
        raise AdvgeomError(f"num_targets must be >= 1, got {num_targets!r}")
    n_t = min(n_t, s.num_classes - 1)
    with torch.no_grad():
        z = s.forward(s.x)
    ranked = z.scatter(1, s.y[:, None], -math.inf).topk(n_t, dim=1).indices
    step = default_step(step_size, s.eps, 2.5 / max(steps, 1))
    best: BestTracker | None = None
    for r in range(n_t):
        idx = (torch.arange(s.x.shape[0], device=s.x.device) if best is None
               else (~best.broken).nonzero().squeeze(1))
        if idx.numel() == 0:
            break
        x, y, t, e = s.x[idx], s.y[idx], ranked[idx, r], s.eps[idx]
        if base == "pgd":
            sub = run_with_restarts(s, x, t, e, norm=norm, steps=steps, step=step[idx],
                                    restarts=restarts, random_init=True, loss_fn=loss_fn,
                                    succ_labels=y, succ_targeted=False)
        else:
            eta0 = None if step_size is None else torch.full_like(e, float(step_size))
            sub = run_apgd(s, x, t, e, norm=norm, steps=steps, restarts=restarts,
                           loss_fn=loss_fn, succ_labels=y, succ_targeted=False, eta0=eta0)
        if best is None:
            best = sub
            continue
        take = sub.broken
        best.x[idx] = torch.where(bview(take, sub.x), sub.x, best.x[idx])
        best.broken[idx] = best.broken[idx] | take
    assert best is not None
    return best


@register("attack", "multi_target")
@describe(**MT_INFO, ranges={"num_targets": count(1, "None: every other class")})
def multi_target(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any,
                 norm: str = "linf", steps: int = 100, step_size: float | None = None,
                 restarts: int = 1, targeted: bool = False, loss: str = "ce",
                 generator: torch.Generator | None = None, base: str = "pgd",
                 num_targets: int | None = None, counter: PassCounter | None = None) -> Tensor:
    """MTA: a targeted ``base`` ("pgd" or "apgd") run with the targeted ``loss``
    toward each of the ``num_targets`` (default: all) most likely wrong classes."""
    s = prepare(model, inputs, labels, info=multi_target.info, eps=eps, norm=norm, loss=None,
                targeted=targeted, steps=steps, restarts=restarts, step_size=step_size,
                counter=counter, generator=generator)
    check_loss_name(loss, multi_target.info.losses)
    multi_target.info.check("num_targets", num_targets, attack="multi_target")
    best = _multi(s, norm=norm, steps=steps, step_size=step_size, restarts=restarts, loss=loss,
                  base=base, num_targets=num_targets)
    return finalize(s.x, best.x, s.eps, norm)


@register("attack", "apgd-t")
@describe(**{**MT_INFO, "losses": ("dlr",)}, ranges={"num_targets": count(1)})
def apgd_t(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any, norm: str = "linf",
           steps: int = 100, step_size: float | None = None, restarts: int = 1,
           targeted: bool = False, loss: str = "dlr", generator: torch.Generator | None = None,
           num_targets: int = 9, counter: PassCounter | None = None) -> Tensor:
    """APGD-T (AutoAttack): targeted-DLR APGD against the top ``num_targets`` classes;
    needs >= 4 classes."""
    s = prepare(model, inputs, labels, info=apgd_t.info, eps=eps, norm=norm, loss=None,
                targeted=targeted, steps=steps, restarts=restarts, step_size=step_size,
                counter=counter, generator=generator)
    check_loss_name(loss, apgd_t.info.losses)
    apgd_t.info.check("num_targets", num_targets, 9, attack="apgd-t")
    best = _multi(s, norm=norm, steps=steps, step_size=step_size, restarts=restarts,
                  loss="dlr", base="apgd", num_targets=num_targets)
    return finalize(s.x, best.x, s.eps, norm)
