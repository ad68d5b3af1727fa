"""The locally linear model of a ReLU network and the attacks built on it
(sparsification-robustness.txt, Sections 3.1-3.6).

A ReLU/max-pool network is piecewise linear: every logit is
``y_i(x) = w_eq^{i}(x)^T x - b_eq^{i}(x)`` with ``w_eq^{i}(x)`` the input Jacobian of
logit ``i``. For a true class ``t`` the attacks work on the pairs ``w = w_eq^{i} - w_eq^{t}``:

- semi-white box  ``A_SW(x1, eps) = eps * sgn(w_eq(x1))`` (front end unknown),
- white box       ``A_W(x1, eps)  = eps * sgn(P_K(w_eq(x1), x1))`` (front end known),
- iterative       ``e_{k+1} = clip_eps(e_k + A(x + e_k, delta))`` (and into [0,1]),
- multiclass      the budget goes to the worst pair ``max_i y_i(x+e_i) - y_t(x+e_i)``.

For a model with a sparsifying front end (attributes ``front_end`` and ``base``, see
:mod:`advgeom.defenses.sparsity`), ``w_eq`` is the Jacobian of the *base* network taken
at the raw input, as in the paper's code; ``P_K`` is the front end's projection onto
the support of the current point. ``projection="adjoint"`` uses ``P_K^T`` (the exact
maximizer of ``w^T P_K e`` over the l_inf ball); ``"paper"`` applies ``P_K`` itself as
the paper's code does; both coincide for orthonormal wavelets. ``mode="exact"`` takes
the Jacobian of the whole defended model (autograd through the kept support).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from advgeom.errors import AdvgeomError
from advgeom.logits import two_logits  # noqa: F401 (re-exported for callers)

MODES = ("semi_white", "white", "exact")
PROJECTIONS = ("adjoint", "paper")


# --------------------------------------------------------------------------- model
def equivalent_weights(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(w_eq, b_eq)`` at ``x``: ``w_eq`` (B, L, *x.shape[1:]) the input Jacobian of each
    logit and ``b_eq`` (B, L) with ``y_i(x) = <w_eq^i, x> - b_eq^i`` (paper Fig. 4)."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        logits = two_logits(model(xr))
        rows = [torch.autograd.grad(logits[:, i].sum(), xr, retain_graph=i + 1 < logits.shape[1])[0]
                for i in range(logits.shape[1])]
    w = torch.stack(rows, dim=1)
    b = (w * x.detach().unsqueeze(1)).flatten(2).sum(-1) - logits.detach()
    return w, b


def _split(model: nn.Module, mode: str) -> tuple[nn.Module, nn.Module | None]:
    """(network whose Jacobian is w_eq, front end used for the projection or None)."""
    fe = getattr(model, "front_end", None)
    base = getattr(model, "base", None)
    if mode == "exact" or fe is None or base is None:
        return model, None
    return base, (fe if mode == "white" else None)


def pair_gradients(net: nn.Module, points: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
    """Gradient of ``y_target - y_label`` of ``net`` at each row of ``points``."""
    with torch.enable_grad():
        xr = points.detach().requires_grad_(True)
        logits = two_logits(net(xr))
        diff = logits.gather(1, targets[:, None]) - logits.gather(1, labels[:, None])
        (g,) = torch.autograd.grad(diff.sum(), xr)
    return g


def _project(front_end: nn.Module, g: Tensor, at: Tensor, projection: str) -> Tensor:
    return front_end.project(g, at, adjoint=(projection == "adjoint"))


# --------------------------------------------------------------------------- attack
def _eps_view(eps: float | Tensor, x: Tensor) -> Tensor:
    e = torch.as_tensor(eps, dtype=x.dtype, device=x.device).reshape(-1)
    if e.numel() == 1:
        e = e.expand(x.shape[0])
    return e.reshape(-1, *([1] * (x.dim() - 1)))


@torch.no_grad()
def locally_linear_attack(model: nn.Module, x: Tensor, labels: Tensor, *, eps: float | Tensor,
                          steps: int = 1, step_size: float | None = None,
                          mode: str = "semi_white", projection: str = "adjoint",
                          counter: Any = None) -> Tensor:
    """Locally linear attack on every pair (i, t), budget to the worst pair (Sec. 3.5-3.6).

    ``steps == 1`` is the single-step ``A_SW`` / ``A_W`` with ``x1 = x2 = x``; ``steps > 1``
    iterates with ``delta = step_size`` (default ``eps/20`` for >= 20 steps, else
    ``eps/steps``). Returns, per sample, the candidate with the largest
    ``max_{i != t} y_i - y_t`` of the full ``model`` seen over all pairs and iterations.
    ``counter`` (optional, with ``add_forward(n)``/``add_backward(n)``) tallies passes.
    """
    if mode not in MODES:
        raise AdvgeomError(f"locally linear attack: mode must be one of {MODES}, got {mode!r}")
    if projection not in PROJECTIONS:
        raise AdvgeomError(f"locally linear attack: projection must be one of {PROJECTIONS}")
    if steps < 1:
        raise AdvgeomError(f"locally linear attack: steps must be >= 1, got {steps}")
    net, front_end = _split(model, mode)
    eps_v = _eps_view(eps, x)
    if steps == 1:
        delta = eps_v
    elif step_size is not None:
        delta = torch.full_like(eps_v, float(step_size))
    else:
        delta = eps_v / min(steps, 20)

    num_classes = two_logits(model(x[:1])).shape[1]
    b = x.shape[0]
    # one copy of every sample per wrong class i != t: (B*(L-1), ...)
    others = torch.arange(num_classes, device=x.device).expand(b, -1)
    keep = others != labels[:, None]
    targets = others[keep]
    rep = keep.sum(1)
    x0 = x.repeat_interleave(rep, dim=0)
    lab = labels.repeat_interleave(rep)
    lo = (x0 - eps_v.repeat_interleave(rep, dim=0)).clamp(0, 1)
    hi = (x0 + eps_v.repeat_interleave(rep, dim=0)).clamp(0, 1)
    d = delta.repeat_interleave(rep, dim=0)
    owner = torch.arange(b, device=x.device).repeat_interleave(rep)

    best = x.clone()
    best_score = torch.full((b,), -math.inf, dtype=x.dtype, device=x.device)
    cur = x0.clone()
    for _ in range(steps):
        g = pair_gradients(net, cur, lab, targets)
        if counter is not None:
            counter.add_forward(len(cur))
            counter.add_backward(len(cur))
            counter.add_forward(len(cur))
        if front_end is not None:
            g = _project(front_end, g, cur, projection)
        cur = torch.minimum(torch.maximum(cur + d * g.sign(), lo), hi)
        logits = two_logits(model(cur))
        score = logits.gather(1, targets[:, None])[:, 0] - logits.gather(1, lab[:, None])[:, 0]
        # per sample: best candidate of this iteration, kept if it beats the best so far
        top = torch.full((b,), -math.inf, dtype=x.dtype, device=x.device)
        top = top.scatter_reduce(0, owner, score, reduce="amax")
        is_top = score == top[owner]
        pick = torch.zeros(b, dtype=torch.long, device=x.device)
        pick.scatter_reduce_(0, owner, torch.arange(len(score), device=x.device) * is_top,
                             reduce="amax", include_self=False)
        better = top > best_score
        best[better] = cur[pick[better]]
        best_score = torch.where(better, top, best_score)
    return best


# --------------------------------------------------------------------------- linear case
def linear_attenuation(project, w: Tensor, *, adjoint_project=None) -> dict[str, Tensor]:
    """Distortions of a linear classifier ``y = w^T x`` behind a projection (Sec. 3.1).

    ``project(v)`` applies ``P_K`` to a batch ``v`` shaped like ``w``; ``adjoint_project``
    its adjoint (defaults to ``project``: orthogonal case). Returns, per row of ``w``,
    the ratios to the undefended distortion ``eps*||w||_1`` of the semi-white box
    ``|w^T P_K sgn(w)|`` and the white box ``||P_K^T w||_1`` (eps cancels).
    Ensemble averages: ``E[sw] ~ K/N`` for any K-dimensional support.
    """
    adj = adjoint_project or project
    base = w.flatten(1).abs().sum(1)
    sw = (w * project(w.sign())).flatten(1).sum(1).abs()
    white = adj(w).flatten(1).abs().sum(1)
    return {"semi_white": sw / base, "white": white / base}
