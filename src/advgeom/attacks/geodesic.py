"""An adaptive attack on robust geodesic inference (hyperspherical-defense.txt, Section
4.3; the adaptive-attack protocol of Tramer et al. 2020 and Carlini & Wagner 2017,
"Adversarial examples are not easily detected"): misclassify while staying accepted.

The model rejects a sample predicted as class j when its feature's angle to W_j exceeds
the class threshold (:class:`advgeom.inference.GeodesicRejector`, which exposes the
differentiable ``angle_excess(x) -> (logits, angles - thresholds)``). Each step ascends

    L(x') = min(class_loss(z(x'), y), confidence) - penalty * relu(excess_k(x'))

where ``class_loss`` is ``loss`` ("margin" by default, or "dlr"; both are positive
exactly when the sample is misclassified) and k is the strongest wrong class
(untargeted) or the target (targeted): the class term pushes toward k until the
misclassification has the margin ``confidence``, the penalty pulls the feature into k's
acceptance cone; L is maximal (= ``confidence``) exactly at the points sought. A point counts as a
success only when it is misclassified (by the logit margin of ``advgeom.attacks``) AND
accepted; per sample the best point over steps and restarts is kept (a successful one
if any). On a model without ``angle_excess`` every point is accepted and the attack is
PGD on ``loss``. Steps are PGD's (random start, signed linf / normalized l2 steps,
projection onto the eps-ball and [0,1]); default step ``2.5 eps / steps``. With
``step_schedule="cosine"`` the step decays from ``step_size`` (default ``eps / 10``) to 0
along a half cosine: on a PGD-trained D-SphereNet the constant step circles at the rim of
an acceptance cone without entering it, a decaying one settles inside
(docs/experiments.md, hyper-mnist).

Targeted runs (``num_targets`` > 0; the multi-targeted attack of Gowal et al. 2019 and
APGD-T's target ranking): the strongest wrong class changes from step to step, so the
untargeted run may chase no cone long enough to enter it. After the random-start and
guided runs, each sample not yet broken is attacked by one run per target, pushing
toward its ``num_targets`` most likely other classes (clean logits), one after another.

Guided starts (``guides`` > 0; the feature-space starting points of Tramer et al. 2020,
Section 6): gradient ascent from a random start can stall where rejection is strong (on
a PGD-trained D-SphereNet the features of every perturbed point sit near 90 degrees from
every class weight, outside every acceptance cone). So after the random-start runs, each
sample not yet broken is attacked again from up to ``guides`` starting points: the
projections onto its eps-ball of other inputs of the same batch that the model accepts
and predicts as a wrong class (targeted: as the target class), each run pushing toward
that input's predicted class (a guided run starts there, not at a random point). The
guides are taken round-robin over classes, nearest (l2) first within each
(:func:`guide_order`), so that the guides span the wrong classes instead of crowding
into the nearest one. A larger batch offers nearer guides;
a sample alone in its batch gets none (in an evaluation the batch is the clean-correct
points attacked). At an eps whose ball holds the whole box a guided start is the guide
itself and succeeds at once: the unbounded check of a rejecting evaluation
(:mod:`advgeom.eval.units`) runs the attack without guides (targeted runs are kept: they
start, like the first run, at a random point of the ball).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from advgeom.attacks._common import (BestTracker, Setup, check_bool, default_step,
                                     input_grad, prepare, remaining)
from advgeom.attacks._geometry import (ascent_direction, box_bounds, bview, finalize, project_l2,
                                       random_start)
from advgeom.attacks._losses import get_loss, success
from advgeom.attacks.base import PassCounter, count, describe, number
from advgeom.errors import AdvgeomError
from advgeom.registry import register


def _scores(model: nn.Module, s: Setup, x: Tensor) -> tuple[Tensor, Tensor | None]:
    """``(logits, excess (N, C) or None)``, counted as one forward."""
    fn = getattr(model, "angle_excess", None)
    if not callable(fn):
        return s.forward(x), None
    s.counter.add_forward(x.shape[0])
    logits, excess = fn(x)
    return logits, excess


def _objective(s: Setup, z: Tensor, excess: Tensor | None, y: Tensor, targeted: bool,
               penalty: float, confidence: float,
               push: tuple[Tensor, Any] | None = None) -> tuple[Tensor, Tensor]:
    """Per sample: the ascended loss and success (misclassified/targeted and accepted).
    ``push``: ``(classes, targeted loss)`` of a guided run, which pushes toward ``classes``."""
    succ = success(z, y, targeted)
    if push is not None:
        k, loss_fn = push
        loss = loss_fn(z, k).clamp(max=confidence)
    else:
        loss = s.loss_fn(z, y).clamp(max=confidence)
        k = y if targeted else z.detach().scatter(1, y.unsqueeze(1), float("-inf")).argmax(1)
    if excess is None:
        return loss, succ
    loss = loss - penalty * torch.relu(excess.gather(1, k.unsqueeze(1)).squeeze(1))
    pred = z.detach().argmax(1)
    accepted = excess.detach().gather(1, pred.unsqueeze(1)).squeeze(1) <= 0
    return loss, succ & accepted


def _run(model: nn.Module, s: Setup, x: Tensor, y: Tensor, eps: Tensor, *, norm: str,
         steps: int, step: Tensor, targeted: bool, penalty: float, confidence: float,
         random_init: bool, early_stop: bool, cosine: bool, start: Tensor | None = None,
         push: tuple[Tensor, Any] | None = None) -> BestTracker:
    """One run; with ``early_stop`` a sample leaves the batch at its first success.
    A guided run starts at ``start`` (inside the ball); a guided or targeted run pushes
    toward ``push``. ``cosine``: step ``i`` is ``step * (1 + cos(pi i / steps)) / 2``."""
    linf = norm == "linf"
    lo, hi = box_bounds(x, eps) if linf else (None, None)
    if start is not None:
        x_adv = start.clone()
    else:
        x_adv = random_start(x, eps, norm, s.generator) if random_init else x.clone()
    best = BestTracker(x)
    act = torch.arange(x.shape[0], device=x.device)  # samples still attacked
    for i in range(steps + 1):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            z, excess = _scores(model, s, x_adv)
            loss, succ = _objective(s, z, excess, y, targeted, penalty, confidence, push)
        best.update_at(act, x_adv.detach(), loss.detach(), succ)
        if i == steps:
            break
        g = input_grad(loss, x_adv, s.counter)
        with torch.no_grad():
            decay = 0.5 * (1.0 + math.cos(math.pi * i / steps)) if cosine else 1.0
            x_adv = x_adv.detach() + bview(step * decay, x) * ascent_direction(g, norm)
            x_adv = x_adv.clamp(lo, hi) if linf else project_l2(x, x_adv, eps)
            if early_stop and bool(succ.any()):
                keep = (~succ).nonzero().squeeze(1)
                if keep.numel() == 0:
                    break
                act, x_adv, x, y, eps, step = act[keep], x_adv[keep], x[keep], y[keep], eps[keep], step[keep]
                push = None if push is None else (push[0][keep], push[1])
                if linf:
                    lo, hi = lo[keep], hi[keep]
    return best


@torch.no_grad()
def guide_order(model: nn.Module, s: Setup, targeted: bool,
                guides: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per sample, up to ``guides`` other inputs of the batch that the model accepts and
    predicts as a wrong class (targeted: as the target), taken round-robin over their
    classes: the nearest (l2) of each class, classes in the order of their nearest, then
    the second nearest of each, and so on (ties in batch order). Returns ``(index (N, G),
    valid (N, G), predicted class (N,))``."""
    z, excess = _scores(model, s, s.x)
    pred = z.argmax(1)
    accepted = (torch.ones_like(pred, dtype=torch.bool) if excess is None
                else excess.gather(1, pred.unsqueeze(1)).squeeze(1) <= 0)
    same = pred.unsqueeze(0) == s.y.unsqueeze(1)   # [i, j]: j predicted as i's label
    ok = accepted.unsqueeze(0) & (same if targeted else ~same)
    ok.fill_diagonal_(False)
    flat = s.x.flatten(1)
    d = torch.cdist(flat, flat).masked_fill(~ok, float("inf"))
    dist, order = torch.sort(d, dim=1, stable=True)      # nearest first
    valid = torch.isfinite(dist)
    cls = pred[order]
    rank = torch.zeros_like(order)                       # rank of each candidate within its class
    for c in range(z.shape[1]):
        m = (cls == c) & valid
        rank = torch.where(m, m.long().cumsum(1) - 1, rank)
    m = order.shape[1]
    key = torch.where(valid, rank * m + torch.arange(m, device=order.device), torch.full_like(rank, m * m))
    pick = torch.sort(key, dim=1, stable=True).indices[:, :min(guides, max(m - 1, 0))]
    return order.gather(1, pick), valid.gather(1, pick), pred


def _guided(model: nn.Module, s: Setup, best: BestTracker, *, targeted: bool, guides: int,
            push_loss: Any, step: Tensor, **kw: Any) -> None:
    """The guided runs on the samples ``best`` has not broken (module docstring)."""
    order, valid, pred = guide_order(model, s, targeted, guides)
    for g in range(order.shape[1]):
        idx = (valid[:, g] & ~best.broken).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        src = order[idx, g]
        x, e = s.x[idx], s.eps[idx]
        start = s.x[src]
        start = start.clamp(*box_bounds(x, e)) if kw["norm"] == "linf" else project_l2(x, start, e)
        best.merge(idx, _run(model, s, x, s.y[idx], e, step=step[idx], start=start, targeted=targeted,
                             push=(s.y[idx] if targeted else pred[src], push_loss), **kw))


def _targeted(model: nn.Module, s: Setup, best: BestTracker, *, num_targets: int,
              push_loss: Any, step: Tensor, **kw: Any) -> None:
    """One run per target on the samples ``best`` has not broken, toward their
    ``num_targets`` most likely other classes in turn (module docstring)."""
    with torch.no_grad():
        z, _ = _scores(model, s, s.x)
    n = min(num_targets, z.shape[1] - 1)
    ranked = z.scatter(1, s.y.unsqueeze(1), float("-inf")).topk(n, dim=1).indices
    for r in range(n):
        idx = remaining(best)
        if idx.numel() == 0:
            break
        best.merge(idx, _run(model, s, s.x[idx], s.y[idx], s.eps[idx], step=step[idx],
                             push=(ranked[idx, r], push_loss), **kw))


SCHEDULES = ("constant", "cosine")


@register("attack", "geodesic_adaptive")
@describe(norms=("linf", "l2"), losses=("margin", "dlr"), rejection_aware=True,
          extra_runs=("guides", "num_targets"),
          ranges={"penalty": number(0.0), "confidence": number(0.0, open_low=True),
                  "guides": count(0), "num_targets": count(0)})
def geodesic_adaptive(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any,
                      norm: str = "linf", steps: int = 100, step_size: float | None = None,
                      restarts: int = 1, targeted: bool = False, loss: str = "margin",
                      generator: torch.Generator | None = None, penalty: float = 10.0,
                      confidence: float = 0.1, random_start: bool = True, guides: int = 0,
                      num_targets: int = 0, step_schedule: str = "constant",
                      early_stop: bool = True, counter: PassCounter | None = None) -> Tensor:
    """Adaptive attack on geodesic rejection: ascend ``loss`` capped at ``confidence``
    (default 0.1, in the loss's units) minus ``penalty`` (per radian, default 10) times
    the angle above the threshold of the class pushed to; success = misclassified and
    accepted. ``random_start``: start at a uniform point of
    the eps-ball (False: at the clean input; restarts then repeat nothing and stop).
    ``restarts`` run on the samples not yet broken; then ``guides`` guided runs and
    ``num_targets`` targeted runs (untargeted attacks only; module docstring) on the
    samples still unbroken. ``step_schedule``: "constant" (default) or "cosine" (the step
    decays from ``step_size``, default ``eps / 10``, to 0)."""
    check_bool("random_start", random_start)
    check_bool("early_stop", early_stop)
    penalty = geodesic_adaptive.info.check("penalty", penalty, attack="geodesic_adaptive")
    confidence = geodesic_adaptive.info.check("confidence", confidence, attack="geodesic_adaptive")
    guides = geodesic_adaptive.info.check("guides", guides, attack="geodesic_adaptive")
    num_targets = geodesic_adaptive.info.check("num_targets", num_targets, attack="geodesic_adaptive")
    if step_schedule not in SCHEDULES:
        raise AdvgeomError(f"geodesic_adaptive: step_schedule must be one of {', '.join(SCHEDULES)}, "
                           f"got {step_schedule!r}")
    if targeted and num_targets:
        raise AdvgeomError("geodesic_adaptive: num_targets runs its own targets; it needs targeted=False")
    s = prepare(model, inputs, labels, info=geodesic_adaptive.info, eps=eps, norm=norm, loss=loss,
                targeted=targeted, steps=steps, restarts=restarts, step_size=step_size,
                counter=counter, generator=generator)
    cosine = step_schedule == "cosine"
    step = default_step(step_size, s.eps, 0.1 if cosine else 2.5 / max(steps, 1))
    # the guided and targeted runs push toward a class: the targeted loss, refused now
    # (DLR needs 4 classes) rather than after the random-start runs
    push_loss = get_loss(loss, targeted=True, num_classes=s.num_classes) if guides or num_targets else None
    kw = dict(norm=norm, steps=steps, targeted=targeted, penalty=penalty, confidence=confidence,
              random_init=random_start, early_stop=early_stop, cosine=cosine)
    best = _run(model, s, s.x, s.y, s.eps, step=step, **kw)
    for _ in range(restarts - 1 if random_start else 0):
        idx = remaining(best)
        if idx.numel() == 0:
            break
        best.merge(idx, _run(model, s, s.x[idx], s.y[idx], s.eps[idx], step=step[idx], **kw))
    if guides:
        _guided(model, s, best, guides=guides, push_loss=push_loss, step=step, **kw)
    if num_targets:
        _targeted(model, s, best, num_targets=num_targets, push_loss=push_loss, step=step, **kw)
    return finalize(s.x, best.x, s.eps, norm)
