"""The manifold attack of adversarial-spheres.txt (Section 3.1) and the off-manifold
search for the nearest point between the spheres classified as the other class
(Section 3).

These attacks act on sphere coordinates, which are NOT in [0,1]: they never clip to
[0,1], and they are not registered as generic ``attack`` entries (the generic attack
contract requires [0,1] outputs inside an eps-ball). Like every advgeom attack they
differentiate with respect to the input only (``torch.autograd.grad``), never change
``model.training`` (they warn if the model is in training mode), and draw randomness
only from ``generator``.

Models may return one binary logit (N, 1) (prediction = logit > 0, 1 = outer) or two
class logits (N, 2).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advgeom.errors import AdvgeomError
from advgeom.logits import predicted_class

# ---------------------------------------------------------------------------
# margins and predictions


def correct_margin(model: nn.Module, x: Tensor, labels: Tensor) -> Tensor:
    """Signed margin, > 0 where the prediction is right: (2y-1) * logit for one logit,
    logit_y - logit_other for two."""
    out = model(x)
    if out.dim() == 1 or out.shape[-1] == 1:
        return (2.0 * labels.to(out.dtype) - 1.0) * out.reshape(-1)
    if out.shape[-1] == 2:
        other = 1 - labels
        return out.gather(1, labels[:, None]).squeeze(1) - out.gather(1, other[:, None]).squeeze(1)
    raise AdvgeomError(f"sphere attacks need 1 or 2 logits, got output shape {tuple(out.shape)}")


def predict(model: nn.Module, x: Tensor) -> Tensor:
    """Class predictions (int64): logit > 0 for one logit, argmax for two."""
    return predicted_class(model(x))


def _check(model: nn.Module, inputs: Tensor, labels: Tensor) -> None:
    if model.training:
        warnings.warn("sphere attack on a model in training mode (batch norm / dropout "
                      "act per batch); call model.eval() first", stacklevel=3)
    if inputs.dim() != 2 or labels.shape != inputs.shape[:1]:
        raise AdvgeomError(f"need inputs (N, d) and labels (N,), got {tuple(inputs.shape)} "
                           f"and {tuple(labels.shape)}")
    if not torch.isfinite(inputs).all():
        raise AdvgeomError("inputs contain NaN or infinite values")


def _margin_and_grad(model: nn.Module, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    x = x.detach().requires_grad_(True)
    m = correct_margin(model, x, labels)
    (g,) = torch.autograd.grad(m.sum(), x)
    return m.detach(), g.detach()


def _tangent_unit(g: Tensor, x: Tensor) -> Tensor:
    """Component of g tangent to the sphere at x, scaled to unit l2 norm."""
    xh = x / x.norm(dim=1, keepdim=True)
    t = g - (g * xh).sum(dim=1, keepdim=True) * xh
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-30)


# ---------------------------------------------------------------------------
# the manifold attack


@dataclass
class ManifoldResult:
    """adv: the returned points (nearest mode: the first error found, else the last
    iterate; worst mode: the lowest-margin iterate); success: misclassified;
    distance: ||adv - x|| (l2); steps: steps taken to the first error (-1 if none);
    margin: the correct-class margin at adv (< 0 means an error)."""

    adv: Tensor
    success: Tensor
    distance: Tensor
    steps: Tensor
    margin: Tensor


def manifold_attack(model: nn.Module, inputs: Tensor, labels: Tensor, *, steps: int = 1000,
                    step_size: float = 0.001, mode: str = "nearest", min_step: float = 1e-7,
                    generator: torch.Generator | None = None) -> ManifoldResult:
    """Projected gradient descent on the correct-class margin that keeps ||x_adv|| = ||x||
    (Section 3.1): each step moves ``step_size`` (l2) along the negative margin gradient
    projected onto the sphere's tangent space, then renormalizes to the starting norm.

    ``mode="nearest"``: stop each point at its first misclassification and report its
    l2 distance from the start (the paper's nearest-neighbour errors, Figure 5 uses
    1000 steps of 0.001). ``mode="worst"``: iterate with no locality constraint, halving
    a point's step whenever its margin would rise, until ``steps`` or its step is below
    ``min_step``; returns the most confidently wrong point (the worst-case errors).
    ``generator`` is unused (the attack is deterministic) and kept for the shared vocabulary.
    """
    _check(model, inputs, labels)
    if mode not in ("nearest", "worst"):
        raise AdvgeomError(f"mode must be 'nearest' or 'worst', got {mode!r}")
    if steps < 0 or not step_size > 0:
        raise AdvgeomError("need steps >= 0 and step_size > 0")
    x0 = inputs.detach()
    r0 = x0.norm(dim=1, keepdim=True)
    if bool((r0 == 0).any()):
        raise AdvgeomError("the manifold attack needs nonzero inputs (points on a sphere)")
    n = x0.shape[0]
    x = x0.clone()
    m, g = _margin_and_grad(model, x, labels)
    wrong = predict_wrong(model, x, labels)
    first = torch.where(wrong, 0, -1).to(torch.int64)
    best_x, best_m = x.clone(), m.clone()
    active = ~wrong if mode == "nearest" else torch.ones(n, dtype=torch.bool, device=x0.device)
    lr = torch.full((n, 1), float(step_size), dtype=x0.dtype, device=x0.device)

    for k in range(1, steps + 1):
        if not bool(active.any()):
            break
        cand = x - lr * _tangent_unit(g, x)
        cand = cand * (r0 / cand.norm(dim=1, keepdim=True))
        cm, cg = _margin_and_grad(model, cand, labels)
        if mode == "worst":
            accept = active & (cm <= m)
            lr[active & ~accept] *= 0.5
            active = active & (lr.squeeze(1) >= min_step)
        else:
            accept = active
        x = torch.where(accept[:, None], cand, x)
        m = torch.where(accept, cm, m)
        g = torch.where(accept[:, None], cg, g)
        now_wrong = predict_wrong(model, x, labels) & accept
        newly = now_wrong & (first < 0)
        first[newly] = k
        if mode == "nearest":
            best_x[accept] = x[accept]
            best_m[accept] = m[accept]
            active = active & ~now_wrong
        else:
            better = m < best_m
            best_x[better], best_m[better] = x[better], m[better]

    success = predict_wrong(model, best_x, labels)
    return ManifoldResult(best_x, success, (best_x - x0).norm(dim=1), first, best_m)


@torch.no_grad()
def predict_wrong(model: nn.Module, x: Tensor, labels: Tensor) -> Tensor:
    """Boolean mask of misclassified points."""
    return predict(model, x) != labels
