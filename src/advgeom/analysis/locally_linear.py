"""The locally linear model of a ReLU network (sparsification-robustness.txt, Sections
3.1-3.6); the attacks built on it are in :mod:`advgeom.attacks.locally_linear`.

A ReLU/max-pool network is piecewise linear: every logit is
``y_i(x) = w_eq^{i}(x)^T x - b_eq^{i}(x)`` with ``w_eq^{i}(x)`` the input Jacobian of
logit ``i`` (:func:`equivalent_weights`). :func:`linear_attenuation` gives the
distortions of a linear classifier behind a projection ``P_K`` (Sec. 3.1).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from advgeom.logits import two_logits


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
