"""FAB-T, the targeted Fast Adaptive Boundary attack (Croce & Hein 2020, "Minimally
distorted adversarial examples with a fast adaptive boundary attack"), linf and l2:
the third attack of AutoAttack's "standard" suite; with ``num_targets=0`` the original
untargeted FAB of AutoAttack's "plus" suite.

Per target class ``t`` (the ``num_targets`` most likely wrong classes of the clean
input, most likely first) and per sample, each of ``steps`` iterations

1. linearizes ``f = z_t - z_y`` at the iterate ``x_k``: the boundary becomes the
   hyperplane ``f(x_k) + <grad f(x_k), u - x_k> = 0``;
2. projects both ``x_k`` and the clean ``x_0`` onto that hyperplane intersected with the
   box [0,1]^d, with the smallest ``norm`` displacement (``d_k`` and ``d_0``);
3. moves to ``clip((x_k + eta d_k)(1 - a) + (x_0 + eta d_0) a)``, with the bias toward
   the clean point ``a = min(|d_k| / (|d_k| + |d_0|), alpha_max)``;
4. when the new iterate is misclassified, keeps it if it is the closest adversarial so
   far and steps back toward the clean point: ``x_k <- x_0 + beta (x_k - x_0)``.

"Misclassified" in the search is the reference's rule, the argmax leaving the true class,
so the iterates follow the official implementation's exactly. The point returned is the
closest iterate that is also a success by advgeom's logit margin
(:func:`~advgeom.attacks._losses.success`, shared by every attack and the evaluator's
scoring): a float-noise success on the boundary is never returned.

Untargeted (``num_targets=0``): step 1 linearizes every ``z_j - z_y`` (j != y) and takes
the closest linearized boundary, the ``j`` minimizing ``|f_j| / ||grad f_j||_q`` (``q``
the dual norm: 1 for linf, 2 for l2); that needs the input gradient of every logit, one
backward pass per class per iteration (the official implementation's cost too).

Defaults are the official ones (100 iterations, 9 targets, ``alpha_max = 0.1``,
``eta = 1.05``, ``beta = 0.9``); restarts after the first start at a random point at
distance ``eps / 2``. As in AutoAttack, a target or restart runs only on the samples
without an adversarial inside the eps-ball yet, and with ``early_stop`` (default) a
sample leaves the batch as soon as it has one (the robust accuracy at ``eps`` is the
same; only the distances of points already broken stop shrinking). With ``eps=inf`` it is
a minimum-norm attack (every iteration runs). Returns per sample the closest
misclassified point found, projected onto the eps-ball (the clean input if none).

``steps`` counts iterations (each: one forward and one input-gradient, plus one forward
to test the new iterate); ``step_size`` and ``loss`` do not exist for FAB (its step is
the projection) and are refused; ``targeted`` is refused too: FAB-T picks its own
targets, the labels are the true classes.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from advgeom.attacks._common import Setup, check_bool, input_grad, prepare, refuse_unused
from advgeom.attacks._losses import success
from advgeom.attacks._geometry import bview, finalize, flat_norm, rand
from advgeom.attacks.base import UNUSED, PassCounter, count, describe, number
from advgeom.registry import register


def sort_rows(v: Tensor) -> tuple[Tensor, Tensor]:
    """``v.sort(dim=1, stable=True)`` for non-negative ``v`` (``inf``, NaN allowed: last). For
    float32 on the CPU, each entry's bits (ordered like the values when non-negative)
    and its column are packed in one int64 and sorted by NumPy, about 3x faster than
    ``torch.sort`` (FAB sorts two input-sized rows per sample and iteration): the same
    order, ties broken by column."""
    if v.device.type != "cpu" or v.dtype != torch.float32:
        return v.sort(dim=1, stable=True)
    import numpy as np

    cols = torch.arange(v.shape[1], dtype=torch.int64)
    packed = (v.contiguous().view(torch.int32).to(torch.int64) << 32) | cols
    order = torch.from_numpy(np.sort(packed.numpy(), axis=1)) & 0xFFFFFFFF
    return v.gather(1, order), order


NEWTON_STEPS = 32   # Newton steps of the projection before the sort-based solve takes over


def project_to_hyperplane(p: Tensor, w: Tensor, r: Tensor, norm: str, *,
                          newton_steps: int = NEWTON_STEPS) -> Tensor:
    """Per row, the smallest ``norm`` displacement ``d`` ("linf" or "l2") with
    ``<w, d> = r`` and ``p + d`` in [0,1]^d; the reachable ``d`` that comes closest
    when the hyperplane misses the box. ``p``: (..., d); ``w``: the same or broadcast to
    it (FAB projects its iterate and the clean point onto one hyperplane: ``p`` (2, N, d),
    ``w`` (N, d)); ``r``: ``p.shape[:-1]``.

    Exact: with ``s = sign(w)`` and ``cap_i`` the room left in the box along ``s_i``,
    the optimum is ``d_i = s_i min(lam c_i, cap_i)`` (``c_i = 1`` for linf, ``|w_i|``
    for l2) for the smallest ``lam >= 0`` reaching ``r``. ``<w, d(lam)> = sum_i a_i
    min(lam, t_i)`` (``a_i = |w_i| c_i``, breakpoints ``t_i = cap_i / c_i``) is concave,
    increasing and piecewise linear, so Newton's method from ``lam = 0`` climbs it from
    below and stops exactly, on the final linear piece, once a step crosses no
    breakpoint, i.e. leaves the slope unchanged (usually 2-4 steps of branch-free
    arithmetic, on preallocated buffers).
    Rows still moving after ``newton_steps`` steps are solved by sorting the
    breakpoints (:func:`_project_sorted`)."""
    flip = torch.where(r < 0, -1.0, 1.0).to(w.dtype)[..., None]
    sw, r = w.sign() * flip, r.abs()            # sign of the row flipped to r >= 0 (p's shape)
    aw = w.abs()
    cap = (0.5 - p).mul_(sw).add_(0.5).clamp_min_(0.0)   # 1 - p along +, p along - (w_i = 0: moot)
    if norm == "linf":
        a, t = aw, cap
    else:   # w_i = 0: a_i = 0 whatever t_i
        a, t = aw * aw, cap / aw.clamp_min(torch.finfo(aw.dtype).tiny)
    big = torch.finfo(w.dtype).max    # "no finite lam reaches r": every entry at its cap
    lam, reach = torch.zeros_like(r), torch.zeros_like(r)
    buf, low = torch.empty_like(t), torch.empty_like(t)
    # slope of the reach at lam = 0: the entries with room (t_i > 0)
    slope = torch.mul(a, torch.sign(t, out=buf), out=buf).sum(-1)
    moving = torch.ones_like(r, dtype=torch.bool)
    for k in range(newton_steps):
        lam = torch.where(slope > 0, lam + (r - reach).clamp_min_(0.0) / slope.clamp_min(1e-30),
                          torch.full_like(lam, big))
        col = lam[..., None]
        torch.minimum(t, col, out=low)                  # min(t_i, lam)
        # the slope at lam: the entries still below their caps (t_i > lam). Unchanged: no
        # breakpoint crossed (or only entries too small to move the sum), lam is final
        new = torch.mul(a, torch.gt(t, col, out=buf), out=buf).sum(-1)
        if torch.equal(new, slope):
            moving = None
            break
        if k + 1 == newton_steps:
            moving = new != slope
        slope = new
        reach = torch.mul(a, low, out=buf).sum(-1)
    if newton_steps == 0:
        step = cap.clone()
    else:
        step = low if norm == "linf" else torch.minimum(lam[..., None] * aw, cap)
    if moving is not None and bool(moving.any()):
        d = p.shape[-1]
        rows = moving.reshape(-1).nonzero().squeeze(1)
        def full(v: Tensor) -> Tensor:
            return v.expand(p.shape).reshape(-1, d)[rows]

        step.view(-1, d)[rows] = _project_sorted(full(cap), full(a), full(aw), r.reshape(-1)[rows], norm)
    return step.mul_(sw)


def _project_sorted(cap: Tensor, a: Tensor, aw: Tensor, r: Tensor, norm: str) -> Tensor:
    """The step sizes ``min(lam c_i, cap_i)`` of :func:`project_to_hyperplane` by one
    sort of the breakpoints (for rows where Newton's method is slow): ``r >= 0``."""
    b = aw * cap                                   # each term's value once saturated
    lam = b / a   # 0/0 = NaN where w_i = 0: sorted last, like inf (no reach, no slope)
    lam_s, order = sort_rows(lam)
    a_s, b_s = a.gather(1, order), b.gather(1, order)
    suffix = a_s.flip(1).cumsum(1).flip(1)         # sum_{j >= k} a_j (exactly 0 past the last)
    after = torch.nn.functional.pad(suffix[:, 1:], (0, 1))
    cum_b = b_s.cumsum(1)
    reach = cum_b + (lam_s * after).nan_to_num_(nan=0.0)   # NaN or inf times 0 (past the last) is 0
    k = (reach < r[:, None]).sum(1, keepdim=True)   # first breakpoint that reaches r
    feasible = k[:, 0] < a.shape[1]
    kk = k.clamp(max=a.shape[1] - 1)
    before = torch.where(k > 0, cum_b.gather(1, (k - 1).clamp_min(0)), torch.zeros_like(r[:, None]))
    denom = suffix.gather(1, kk)
    lam_opt = torch.where(denom > 0, (r[:, None] - before) / denom.clamp_min(1e-30),
                          torch.zeros_like(denom))
    # linf: c_i = a_i / |w_i| is 1 (and cap_i carries w_i = 0); l2: c_i = |w_i|
    step = torch.minimum(lam_opt if norm == "linf" else lam_opt * aw, cap)
    return torch.where(feasible[:, None], step, cap)


def _size(d: Tensor, norm: str) -> Tensor:
    return flat_norm(d, norm)


def within(dist: Tensor, eps: Tensor) -> Tensor:
    """An adversarial was found (finite distance) inside the eps-ball."""
    return torch.isfinite(dist) & (dist <= eps)


def _closest_boundary(s: Setup, xa: Tensor, ya: Tensor, norm: str) -> tuple[Tensor, Tensor, Tensor]:
    """Untargeted FAB's linearization: logits at ``xa``, and per sample ``f = z_j - z_y``
    and its input gradient (N, d) for the class ``j != y`` whose linearized boundary is
    closest in ``norm`` (distance ``|f_j| / ||grad f_j||_dual``)."""
    m = xa.shape[0]
    xa = xa.detach().requires_grad_(True)
    with torch.enable_grad():
        z = s.forward(xa)
        k = z.shape[1]
        grads = []
        for c in range(k):   # the Jacobian, one backward per class
            s.counter.add_backward(m)
            (gc,) = torch.autograd.grad(z[:, c].sum(), xa, retain_graph=c + 1 < k)
            grads.append(gc.reshape(m, -1))
    z = z.detach()
    jac = torch.stack(grads, 1)                                   # (N, K, d)
    rows = torch.arange(m, device=xa.device)
    fs = z - z[rows, ya][:, None]                                 # (N, K)
    gs = jac - jac[rows, ya][:, None]
    dual = gs.abs().sum(2) if norm == "linf" else gs.norm(dim=2)
    dist = fs.abs() / (dual + 1e-12)
    dist[rows, ya] = math.inf
    j = dist.argmin(1)
    return z, fs[rows, j], gs[rows, j]


def _linearize(s: Setup, xa: Tensor, ya: Tensor, ta: Tensor | None,
               need_grad: bool, norm: str = "linf") -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Logits at ``xa``, ``f = z_t - z_y`` and (with ``need_grad``) its input gradient,
    flattened to (N, d); ``ta=None``: the closest boundary's (untargeted FAB)."""
    m = xa.shape[0]
    rows = torch.arange(m, device=xa.device)
    if ta is None:
        if not need_grad:
            return s.forward(xa).detach(), None, None
        return _closest_boundary(s, xa, ya, norm)
    if not need_grad:
        with torch.no_grad():
            z = s.forward(xa)
        return z, z[rows, ta] - z[rows, ya], None
    xa = xa.detach().requires_grad_(True)
    with torch.enable_grad():
        z = s.forward(xa)
        f = z[rows, ta] - z[rows, ya]
        g = input_grad(f, xa, s.counter).reshape(m, -1)
    return z.detach(), f.detach(), g


def _fab_run(s: Setup, x0: Tensor, y: Tensor, t: Tensor | None, eps: Tensor, *, norm: str,
             steps: int, alpha_max: float, eta: float, beta: float, random_init: bool,
             early_stop: bool) -> tuple[Tensor, Tensor]:
    """One FAB-T run toward targets ``t`` (``None``: untargeted FAB, the closest
    boundary at each iterate); returns (closest adversarial, its distance).

    The forward that tests an iterate also linearizes there for the next iteration
    (one forward-backward per iteration; a second one only for the iterates that were
    adversarial and step back toward the clean point). The active samples are kept
    gathered and regathered only when early stop drops some."""
    n = x0.shape[0]
    x1 = x0.clone()
    if random_init:  # official restart: a random point at distance eps/2 (finite eps)
        radius = torch.where(torch.isfinite(eps), eps, torch.zeros_like(eps)) * 0.5
        u = rand(tuple(x0.shape), s.generator, x0, normal=norm == "l2")
        if norm == "linf":
            u = u.mul_(2.0).sub_(1.0)
        u = u / bview(_size(u, norm) + 1e-12, u)
        x1 = (x0 + u * bview(radius, u)).clamp_(0.0, 1.0)
    best = x0.clone()   # the closest margin success (returned)
    dist = torch.full((n,), math.inf, dtype=x0.dtype, device=x0.device)
    act = torch.arange(n, device=x0.device)
    rows = torch.arange(n, device=x0.device)
    xa0, ya, ta, ea = x0, y, t, eps                 # the active samples, gathered
    flat0 = xa0.reshape(n, -1)
    xk = x1
    untargeted = t is None
    _, f, g = _linearize(s, xk, ya, ta, steps > 0, norm)
    for k in range(steps):
        m, last = act.numel(), k + 1 == steps
        with torch.no_grad():
            xf = xk.reshape(m, -1)
            # hyperplane f + <g, u - x_k> = 0: displacement r along g from x_k and from x_0
            r1 = -f
            r0 = r1 - (g * (flat0 - xf)).sum(1)
            d = project_to_hyperplane(torch.stack([xf, flat0]), g, torch.stack([r1, r0]), norm)
            d1, d0 = d[0], d[1]
            sz = _size(d.view(2 * m, -1), norm).clamp_min_(1e-8)
            a1, a0 = sz[:m], sz[m:]
            alpha = (a1 / (a1 + a0)).clamp_(0.0, alpha_max)[:, None]
            # (x_k + eta d_k)(1 - alpha) + (x_0 + eta d_0) alpha
            new = torch.lerp(xf, flat0, alpha).add_(torch.lerp(d1, d0, alpha), alpha=eta)
            new = new.clamp_(0.0, 1.0).view_as(xa0)
        # test the new iterate; its forward keeps the graph for the next linearization
        # (FAB-T; untargeted FAB linearizes every class afresh below)
        reuse = not last and not untargeted
        xg = new.requires_grad_(reuse)
        with torch.enable_grad() if reuse else torch.no_grad():
            z = s.forward(xg)
            f_new = None if untargeted else z[rows[:m], ta] - z[rows[:m], ya]
        with torch.no_grad():
            adv = z.argmax(1) != ya        # the reference's rule for the search
            hit = adv.nonzero().squeeze(1)
            h = hit.numel()
            if reuse and 2 * h <= m:  # the gradient at `new` serves the non-adversarial rows
                with torch.enable_grad():
                    g = input_grad(f_new, xg, s.counter).reshape(m, -1)
            new = new.detach()
            f, xk = (f if untargeted else f_new.detach()), new
            got = False      # some distance shrank (early stop can only drop those rows)
            if h:
                nd = _size(new - xa0, norm)
                closer = (adv & (nd < dist[act]) & success(z, ya, False)).nonzero().squeeze(1)
                if closer.numel():
                    best[act[closer]], dist[act[closer]] = new[closer], nd[closer]
                    got = True
                # the adversarial rows step back toward x0: x0 + beta (new - x0)
                back = adv.to(new.dtype).mul_(1.0 - beta)
                xk = torch.lerp(new, xa0, bview(back, new))
            if untargeted and not last:
                _, f, g = _linearize(s, xk, ya, None, True, norm)
            elif not last and 2 * h > m:  # most rows stepped back: linearize all of them again
                _, f, g = _linearize(s, xk, ya, ta, True)
            elif not last and h:
                _, f[hit], g[hit] = _linearize(s, xk[hit], ya[hit], ta[hit], True)
            if got and early_stop:
                keep = ~(within(dist[act], ea) & torch.isfinite(ea))
                if not bool(keep.all()):
                    ta = None if untargeted else ta[keep]
                    act, xk, xa0, ya, ea, f = (v[keep] for v in (act, xk, xa0, ya, ea, f))
                    g, flat0 = (None if g is None else g[keep]), flat0[keep]
                    if act.numel() == 0:
                        break
    return best, dist


@register("attack", "fab")
@describe(norms=("linf", "l2"), losses=(), min_norm=True, targeted=False, uses_loss=False,
          ranges={"steps": count(1, "0 would run no FAB iteration"),
                  "step_size": UNUSED, "num_targets": count(0, "0 = untargeted FAB"),
                  "alpha_max": number(0.0, 1.0), "eta": number(1.0, why="the overshoot"),
                  "beta": number(0.0, 1.0, open_high=True, why="the backward step")})
def fab(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any, norm: str = "linf",
        steps: int = 100, step_size: float | None = None, restarts: int = 1,
        targeted: bool = False, loss: str | None = None,
        generator: torch.Generator | None = None, num_targets: int = 9,
        alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9, early_stop: bool = True,
        counter: PassCounter | None = None) -> Tensor:
    """FAB-T (Croce & Hein 2020): ``steps`` boundary-projection iterations toward each
    of the ``num_targets`` most likely wrong classes, ``restarts`` starts per target;
    the closest adversarial found, inside the eps-ball (``eps=inf``: minimum-norm).
    ``num_targets=0``: untargeted FAB (the closest linearized boundary at each
    iterate), ``restarts`` starts.

    ``alpha_max``: the largest bias toward the clean point in each step (in [0, 1]);
    ``eta``: the overshoot of the projection onto the linearized boundary (> 1 crosses
    it); ``beta``: the backward step toward the clean input after a success (in [0, 1])."""
    refuse_unused("fab", step_size=(step_size, None), loss=(loss, None), targeted=(targeted, False))
    s = prepare(model, inputs, labels, info=fab.info, eps=eps, norm=norm, loss=None,
                targeted=False, steps=steps, restarts=restarts, counter=counter,
                generator=generator)
    fab.info.check("num_targets", num_targets, attack="fab")
    alpha_max = fab.info.check("alpha_max", alpha_max, attack="fab")
    eta = fab.info.check("eta", eta, attack="fab")
    beta = fab.info.check("beta", beta, attack="fab")
    check_bool("early_stop", early_stop)
    x, y, e = s.x, s.y, s.eps
    with torch.no_grad():
        z0 = s.forward(x)
    best = x.clone()
    dist = torch.where(z0.argmax(1) != y, torch.zeros_like(e), torch.full_like(e, math.inf))
    k = min(int(num_targets), s.num_classes - 1)
    order = z0.scatter(1, y[:, None], -math.inf).topk(k, dim=1).indices if k else None
    for j in range(max(k, 1)):
        for r in range(restarts):
            idx = (~within(dist, e)).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            targets = None if order is None else order[idx, j]
            pts, d = _fab_run(s, x[idx], y[idx], targets, e[idx], norm=norm, steps=steps,
                              alpha_max=alpha_max, eta=eta, beta=beta, random_init=r > 0,
                              early_stop=early_stop)
            closer = d < dist[idx]
            best[idx] = torch.where(bview(closer, pts), pts, best[idx])
            dist[idx] = torch.where(closer, d, dist[idx])
    return finalize(x, best, e, norm)
