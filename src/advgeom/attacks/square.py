"""Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020), linf: a
gradient-free random search, the black-box check for gradient masking in
AutoAttack and DESIGN.md "Evaluating robustness honestly".

Start from vertical stripes ``x + eps * (+-1)`` (one sign per channel and column);
each iteration redraws, for every still-unbroken sample, one square window of side
``s = round(sqrt(p * H * W))`` at a random position with one random sign per
channel (``+-eps``), and keeps it if the margin loss improves (a misclassified
candidate is always kept). ``p`` follows the paper's schedule: ``p_init`` (0.8)
halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of a
10000-query run, rescaled to ``steps``. Each iteration costs one forward on the
unbroken samples; ``steps`` is the query budget per restart.

Vectors (N, d) are treated as 1 x d images (windows are segments of length
``round(p * d)``).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from advgeom.attacks._common import Setup, prepare, success_of
from advgeom.attacks._geometry import bview, finalize, rand
from advgeom.attacks.base import PassCounter, describe
from advgeom.errors import AdvgeomError
from advgeom.registry import register

_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(p_init: float, it: int, steps: int) -> float:
    """Fraction of pixels changed at iteration ``it`` (paper schedule, rescaled)."""
    scaled = int(it / max(steps, 1) * 10000)
    return p_init / 2 ** sum(scaled > h for h in _HALVINGS)


def _as_image(x: Tensor) -> Tensor:
    if x.dim() == 2:
        return x.view(x.shape[0], 1, 1, x.shape[1])
    if x.dim() == 3:
        return x.unsqueeze(1)
    if x.dim() == 4:
        return x
    raise AdvgeomError(f"square attack needs (N,d), (N,H,W) or (N,C,H,W) inputs, got {tuple(x.shape)}")


def _window(p: float, h: int, w: int) -> tuple[int, int]:
    if h == 1:
        return 1, min(max(int(round(p * w)), 1), max(w - 1, 1))
    side = min(max(int(round(math.sqrt(p * h * w))), 1), max(min(h, w) - 1, 1))
    return side, side


def _signs(shape: tuple[int, ...], s: Setup, like: Tensor) -> Tensor:
    return rand(shape, s.generator, like).lt_(0.5).to(like.dtype).mul_(2.0).sub_(1.0)


def _propose(s: Setup, x: Tensor, delta: Tensor, e: Tensor, p: float) -> Tensor:
    """New perturbations: one redrawn square per sample that changes the image."""
    n, c, h, w = x.shape
    sh, sw = _window(p, h, w)
    rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    new = delta.clone()
    todo = torch.ones(n, dtype=torch.bool, device=x.device)
    for _ in range(10):  # redraw windows that would leave the clipped image unchanged
        r0 = (rand((n,), s.generator, x) * max(h - sh, 1)).long()
        c0 = (rand((n,), s.generator, x) * max(w - sw, 1)).long()
        mask = ((rows >= bview(r0, rows)) & (rows < bview(r0 + sh, rows))
                & (cols >= bview(c0, cols)) & (cols < bview(c0 + sw, cols)))
        mask = mask & bview(todo, mask)
        vals = _signs((n, c, 1, 1), s, x) * bview(e, x)
        new = torch.where(mask, vals.expand_as(x), new)
        moved = ((x + new).clamp(0, 1) - (x + delta).clamp(0, 1)).abs().gt(1e-7)
        todo = todo & ~moved.flatten(1).any(dim=1)
        if not bool(todo.any()):
            break
    return new


@torch.no_grad()
def _run(s: Setup, x: Tensor, y: Tensor, e: Tensor, *, steps: int, p_init: float,
         targeted: bool) -> tuple[Tensor, Tensor]:
    """One Square Attack run on image-shaped ``x``; returns (points, broken)."""
    n, c, h, w = x.shape
    ev = bview(e, x)
    delta = _signs((n, c, 1, w), s, x).expand(n, c, h, w) * ev
    x_cur = (x + delta).clamp(0, 1)
    z = s.forward(x_cur.view(n, *s.x.shape[1:]))
    f = s.loss_fn(z, y)
    broken = success_of(z, y, targeted)
    for it in range(steps):
        act = (~broken).nonzero().squeeze(1)
        if act.numel() == 0:
            break
        xa, da, ea = x[act], delta[act], e[act]
        cand = _propose(s, xa, da, ea, p_schedule(p_init, it, steps))
        xc = (xa + cand).clamp(0, 1)
        zc = s.forward(xc.view(act.numel(), *s.x.shape[1:]))
        fc = s.loss_fn(zc, y[act])
        sc = success_of(zc, y[act], targeted)
        take = (fc > f[act]) | sc
        delta[act] = torch.where(bview(take, da), cand, da)
        f[act] = torch.where(take, fc, f[act])
        broken[act] = sc
    return (x + delta).clamp(0, 1), broken


@register("attack", "square")
@describe(norms=("linf",), losses=("margin", "ce"), gradient_free=True)
def square(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any, norm: str = "linf",
           steps: int = 5000, step_size: float | None = None, restarts: int = 1,
           targeted: bool = False, loss: str = "margin",
           generator: torch.Generator | None = None, p_init: float = 0.8,
           counter: PassCounter | None = None) -> Tensor:
    """Square Attack, linf, with the margin loss (or "ce"); ``steps`` queries per
    restart, restarts only on unbroken samples. ``step_size`` is unused."""
    s = prepare(model, inputs, labels, info=square.info, eps=eps, norm=norm, loss=loss,
                targeted=targeted, steps=steps, restarts=restarts, counter=counter,
                generator=generator)
    if not 0.0 < float(p_init) <= 1.0:
        raise AdvgeomError(f"p_init must be in (0, 1], got {p_init!r}")
    x4 = _as_image(s.x)
    out = x4.clone()
    broken = torch.zeros(x4.shape[0], dtype=torch.bool, device=x4.device)
    for r in range(restarts):
        idx = (~broken).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        pts, br = _run(s, x4[idx], s.y[idx], s.eps[idx], steps=steps, p_init=float(p_init),
                       targeted=targeted)
        # keep the first run's points for unbroken samples; later runs only replace on success
        keep = br | torch.tensor(r == 0, device=br.device)
        out[idx] = torch.where(bview(keep, pts), pts, out[idx])
        broken[idx] = br
    return finalize(s.x, out.view_as(s.x), s.eps, norm)
