"""Locally linear attacks (Gopalakrishnan, Marzi, Madhow & Pedarsani 2018, "Toward Robust
Neural Networks via Sparsification"; sparsification-robustness.txt, Sections 3.5-3.6),
registered with the shared attack vocabulary: the algorithm
(:func:`locally_linear_attack`) and its wrappers. The locally linear model itself
(``w_eq``, ``b_eq``, the linear case) is analysis: :mod:`advgeom.analysis.locally_linear`.

A ReLU network's logits are locally ``y_i(x) = w_eq^{i}(x)^T x - b_eq^{i}(x)``; for a true
class ``t`` the attacks work on the pairs ``w = w_eq^{i} - w_eq^{t}``. For a model with a
sparsifying front end (attributes ``front_end`` and ``base``, see
:mod:`advgeom.models.sparse_frontend`), ``w_eq`` is the Jacobian of the *base* network
taken at the raw input, as in the paper's code, and ``P_K`` is the front end's projection
onto the support of the current point: ``projection="adjoint"`` uses ``P_K^T`` (the exact
maximizer of ``w^T P_K e`` over the l_inf ball), ``"paper"`` applies ``P_K`` itself as the
paper's code does; both coincide for orthonormal wavelets. ``mode="exact"`` takes the
Jacobian of the whole defended model (autograd through the kept support).

Single step (``steps`` other than 1 and ``step_size`` are refused, like ``fgsm``):

- ``locally_linear``: ``mode="semi_white"`` (default; ``A_SW = eps sgn(w_eq)``),
  ``"white"`` (``A_W = eps sgn(P_K w_eq)``, projecting with the model's front end) or
  ``"exact"`` (Jacobian of the whole defended model, through the kept support);
- ``locally_linear_white``: the same with ``mode="white"``.

Iterative (``e <- clip_eps(e + A(x + e, delta))``, ``delta = step_size``, default
``eps/20`` from 20 steps on, else ``eps/steps``): ``locally_linear_iterative`` and
``locally_linear_white_iterative`` (default 80 steps, as Table 1's iterative attacks).

All return, per sample, the candidate with the largest worst-pair logit difference
``max_{i != t} y_i - y_t`` seen. The attack is deterministic: ``restarts`` other than 1
is refused and ``generator`` is unused. l_inf only, untargeted; the objective is
always that worst-pair difference, so ``loss`` is refused.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from advgeom.attacks._common import frozen_norm_stats, prepare, refuse_unused
from advgeom.attacks.base import UNUSED, PassCounter, describe
from advgeom.errors import AdvgeomError
from advgeom.logits import two_logits
from advgeom.registry import register

INFO = dict(norms=("linf",), losses=(), targeted=False, uses_loss=False)
SINGLE_RANGES = {"steps": UNUSED, "step_size": UNUSED, "restarts": UNUSED}
MODES = ("semi_white", "white", "exact")
PROJECTIONS = ("adjoint", "paper")


# --------------------------------------------------------------------------- the algorithm
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


# --------------------------------------------------------------------------- registered attacks


def _run(fn: Any, model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any, norm: str,
         steps: int, step_size: float | None, restarts: int, targeted: bool, loss: str | None,
         generator: torch.Generator | None, counter: PassCounter | None, mode: str,
         projection: str, iterative: bool) -> Tensor:
    name = fn.__name__
    refuse_unused(name, loss=(loss, None), restarts=(restarts, 1))
    if not iterative:
        refuse_unused(name, steps=(steps, 1), step_size=(step_size, None))
    s = prepare(model, inputs, labels, info=fn.info, eps=eps, norm=norm, loss=None,
                targeted=targeted, steps=steps, restarts=restarts, step_size=step_size,
                counter=counter, generator=generator)
    with frozen_norm_stats(model):  # the algorithm calls the model directly
        return locally_linear_attack(model, s.x, s.y, eps=s.eps, steps=steps if iterative else 1,
                                     step_size=step_size if iterative else None, mode=mode,
                                     projection=projection, counter=s.counter)


@register("attack", "locally_linear")
@describe(**INFO, single_step=True, ranges=SINGLE_RANGES)
def locally_linear(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any,
                   norm: str = "linf", steps: int = 1, step_size: float | None = None,
                   restarts: int = 1, targeted: bool = False, loss: str | None = None,
                   generator: torch.Generator | None = None, counter: PassCounter | None = None,
                   mode: str = "semi_white", projection: str = "adjoint") -> Tensor:
    """Single-step locally linear attack on the worst class pair (semi-white box by default).

    ``mode``: "semi_white", "white" or "exact" (see the text); ``projection``: "adjoint"
    (``P_K^T``, the exact maximizer) or "paper" (``P_K`` as the paper's code)."""
    return _run(locally_linear, model, inputs, labels, eps=eps, norm=norm, steps=steps,
                step_size=step_size, restarts=restarts, targeted=targeted, loss=loss,
                generator=generator, counter=counter, mode=mode, projection=projection,
                iterative=False)


@register("attack", "locally_linear_white")
@describe(**INFO, single_step=True, ranges=SINGLE_RANGES)
def locally_linear_white(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any,
                         norm: str = "linf", steps: int = 1, step_size: float | None = None,
                         restarts: int = 1, targeted: bool = False, loss: str | None = None,
                         generator: torch.Generator | None = None,
                         counter: PassCounter | None = None, projection: str = "adjoint") -> Tensor:
    """Single-step white-box locally linear attack ``eps * sgn(P_K(w_eq))``.

    ``projection``: "adjoint" (``P_K^T``, the exact maximizer) or "paper" (``P_K`` as the
    paper's code)."""
    return _run(locally_linear_white, model, inputs, labels, eps=eps, norm=norm, steps=steps,
                step_size=step_size, restarts=restarts, targeted=targeted, loss=loss,
                generator=generator, counter=counter, mode="white", projection=projection,
                iterative=False)


@register("attack", "locally_linear_iterative")
@describe(**INFO, ranges={"restarts": UNUSED})
def locally_linear_iterative(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any,
                             norm: str = "linf", steps: int = 80, step_size: float | None = None,
                             restarts: int = 1, targeted: bool = False, loss: str | None = None,
                             generator: torch.Generator | None = None,
                             counter: PassCounter | None = None, mode: str = "semi_white",
                             projection: str = "adjoint") -> Tensor:
    """Iterative locally linear attack (step ``delta = step_size``, clipped to the eps-ball).

    ``mode``: "semi_white", "white" or "exact" (see the text); ``projection``: "adjoint"
    (``P_K^T``, the exact maximizer) or "paper" (``P_K`` as the paper's code)."""
    return _run(locally_linear_iterative, model, inputs, labels, eps=eps, norm=norm, steps=steps,
                step_size=step_size, restarts=restarts, targeted=targeted, loss=loss,
                generator=generator, counter=counter, mode=mode, projection=projection,
                iterative=True)


@register("attack", "locally_linear_white_iterative")
@describe(**INFO, ranges={"restarts": UNUSED})
def locally_linear_white_iterative(model: nn.Module, inputs: Tensor, labels: Tensor, *,
                                   eps: Any, norm: str = "linf", steps: int = 80,
                                   step_size: float | None = None, restarts: int = 1,
                                   targeted: bool = False, loss: str | None = None,
                                   generator: torch.Generator | None = None,
                                   counter: PassCounter | None = None,
                                   projection: str = "adjoint") -> Tensor:
    """Iterative white-box locally linear attack (projected ``w_eq`` at every step).

    ``projection``: "adjoint" (``P_K^T``, the exact maximizer) or "paper" (``P_K`` as the
    paper's code)."""
    return _run(locally_linear_white_iterative, model, inputs, labels, eps=eps, norm=norm,
                steps=steps, step_size=step_size, restarts=restarts, targeted=targeted,
                loss=loss, generator=generator, counter=counter, mode="white",
                projection=projection, iterative=True)
