"""Off-manifold search of adversarial-spheres.txt (Section 3): the nearest point
*between* the spheres (r_min <= ||x'|| <= r_max) that the model puts in the other
class, with its l2 distance from the start and its norm (paper: mean distance 0.0796,
mean norm 1.07 for inner-sphere points of the d=500 ReLU net).

Method: an upper bound from a radial scan (the first radius along x/||x|| where the
prediction flips), then bisection on the radius eps of an l2 ball around x; at each
eps, PGD on the correct-class margin inside ball(x, eps) intersected with the shell
(alternating projections, ending on the shell). Every misclassified feasible iterate
is a candidate; the closest one is kept. Coordinates are not clipped to [0,1] (sphere
data; see ``advgeom.data.spheres``). Gradients are taken w.r.t. the input only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advgeom.attacks.manifold import _check, _margin_and_grad, predict_wrong
from advgeom.errors import AdvgeomError


@dataclass
class ShellResult:
    """point: closest other-class point found (the input where none); found: bool;
    distance: ||point - x|| (inf where none); norm: ||point||."""

    point: Tensor
    found: Tensor
    distance: Tensor
    norm: Tensor


def project_ball_shell(x: Tensor, center: Tensor, eps: Tensor, r_min: float, r_max: float,
                       rounds: int = 4) -> Tensor:
    """Alternating projections onto ball(center, eps) and the shell r_min <= ||x|| <= r_max,
    ending on the shell (the hard constraint)."""
    for _ in range(rounds):
        delta = x - center
        scale = (eps[:, None] / delta.norm(dim=1, keepdim=True).clamp_min(1e-30)).clamp(max=1.0)
        x = center + delta * scale
        r = x.norm(dim=1, keepdim=True).clamp_min(1e-30)
        x = x * (r.clamp(r_min, r_max) / r)
    return x


def _keep_closest(cand: Tensor, ok: Tensor, x0: Tensor, best: Tensor, best_d: Tensor) -> None:
    dist = (cand - x0).norm(dim=1)
    better = ok & (dist < best_d)
    best[better] = cand[better]
    best_d[better] = dist[better]


def _radial_scan(model: nn.Module, x0: Tensor, labels: Tensor, r_min: float, r_max: float,
                 points: int, best: Tensor, best_d: Tensor) -> None:
    u = x0 / x0.norm(dim=1, keepdim=True)
    for r in torch.linspace(r_min, r_max, points).tolist():
        cand = u * r
        _keep_closest(cand, predict_wrong(model, cand, labels), x0, best, best_d)


def _pgd_in_ball(model: nn.Module, x0: Tensor, labels: Tensor, eps: Tensor, r_min: float,
                 r_max: float, steps: int, best: Tensor, best_d: Tensor) -> Tensor:
    """PGD on the margin inside ball(x0, eps) and the shell; records candidates,
    returns the per-sample found mask at this eps."""
    alpha = (2.5 * eps / max(steps, 1))[:, None]
    x = project_ball_shell(x0.clone(), x0, eps, r_min, r_max)
    found = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)
    for _ in range(steps):
        _m, g = _margin_and_grad(model, x, labels)
        x = x - alpha * g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)
        x = project_ball_shell(x, x0, eps, r_min, r_max)
        ok = predict_wrong(model, x, labels) & ((x - x0).norm(dim=1) <= eps * (1 + 1e-4))
        found |= ok
        _keep_closest(x, ok, x0, best, best_d)
    return found


def nearest_in_shell(model: nn.Module, inputs: Tensor, labels: Tensor, *, r_min: float = 1.0,
                     r_max: float = 1.3, eps_max: float | None = None, bisection: int = 10,
                     steps: int = 50, radial_points: int = 61,
                     generator: torch.Generator | None = None) -> ShellResult:
    """Nearest point in the shell r_min <= ||x'|| <= r_max classified unlike ``labels``.

    ``labels`` are the true classes of ``inputs`` (0 = inner sphere, 1 = outer); the
    search looks for the other class. ``eps_max`` (default r_max - r_min) caps the
    distance searched. ``generator`` is unused (deterministic) and kept for the shared
    vocabulary.
    """
    _check(model, inputs, labels)
    if not 0 <= r_min < r_max:
        raise AdvgeomError(f"need 0 <= r_min < r_max, got {r_min}, {r_max}")
    x0 = inputs.detach()
    n = x0.shape[0]
    eps_cap = float(r_max - r_min) if eps_max is None else float(eps_max)
    best = x0.clone()
    best_d = torch.full((n,), float("inf"), dtype=x0.dtype, device=x0.device)
    with torch.no_grad():
        _radial_scan(model, x0, labels, r_min, r_max, radial_points, best, best_d)
    lo = torch.zeros(n, dtype=x0.dtype, device=x0.device)
    hi = torch.minimum(best_d, torch.full_like(best_d, eps_cap))
    found = _pgd_in_ball(model, x0, labels, hi.clone(), r_min, r_max, steps, best, best_d)
    hi = torch.minimum(hi, best_d)
    for _ in range(bisection):
        mid = (lo + hi) / 2
        found = _pgd_in_ball(model, x0, labels, mid, r_min, r_max, steps, best, best_d)
        hi = torch.where(found, torch.minimum(mid, best_d), hi)
        lo = torch.where(found, lo, mid)
    ok = torch.isfinite(best_d)
    return ShellResult(best, ok, best_d, best.norm(dim=1))
