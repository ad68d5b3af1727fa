"""Input-output Jacobians of a network and their geometry
(spectral-norm-adversarial-training.txt, Sections 3-5 and Appendix A.5).

For a ReLU network in eval mode, ``f(x + z) = f(x) + J_f(x) z`` as long as ``x + z``
stays in the activation region of ``x``; the spectrum of ``J_f(x)`` says how far a
small input change can move the logits. Everything here works per sample:

- :func:`jacobians` -- exact ``(B, C, D)`` Jacobians (``torch.func.jacrev`` + ``vmap``);
  :func:`regression_jacobians` -- the paper's estimator (A.5): least squares on random
  perturbations through the network with its activation pattern frozen at ``x``.
- :func:`spectrum` -- singular values and right singular vectors of those Jacobians.
- :func:`power_method` -- the dominant singular triple by Eq. 7 (Jacobian-vector and
  vector-Jacobian products, batched: eval-mode Jacobians are block-diagonal across samples).
- :func:`linearity_deviation` -- ``||phi(x+z) - (phi(x) + J_phi(x) z)||`` (Figure 2, left).
- :func:`top_singular_along` -- ``sigma_max(J_f(x + r d))`` for radii ``r`` (Figure 2, right).
- :func:`alignment` -- ``|cos(delta, v_r)|`` per rank ``r`` (Figures 1 right, 3 right).

Batch norm in training mode mixes samples, so the per-sample Jacobian is not defined:
every function refuses such a model (:func:`check_jacobian_mode`).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import jacrev, jvp, vjp, vmap

from advgeom.errors import AdvgeomError

Fn = Callable[[Tensor], Tensor]
_TINY = 1e-12


def check_jacobian_mode(module: object) -> None:
    """Raise unless every batch-norm layer of ``module`` is in eval mode (a training-mode
    batch norm couples the samples of a batch: no per-sample Jacobian exists)."""
    mods = module.modules() if isinstance(module, nn.Module) else []
    owner = getattr(module, "__self__", None)  # a bound method such as model.features
    if isinstance(owner, nn.Module):
        mods = owner.modules()
    for m in mods:
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            raise AdvgeomError("per-sample Jacobians need batch norm in eval mode (training-mode "
                               "batch norm mixes the samples of a batch): call model.eval() or "
                               "compute inside advgeom.attacks._common.eval_mode(model)")


def _flat(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1)


def _unit(t: Tensor) -> Tensor:
    return t / (_flat(t).norm(dim=1).clamp_min(_TINY).reshape(-1, *([1] * (t.dim() - 1))))


# ---------------------------------------------------------------------------
# exact and estimated Jacobians


def jacobians(fn: Fn, x: Tensor, *, chunk: int = 64) -> Tensor:
    """Exact per-sample Jacobians ``(B, C, D)`` of ``fn`` (batch in, ``(B, C)`` out) at
    ``x``, by ``vmap(jacrev)`` in chunks of ``chunk`` samples (MNIST-sized inputs)."""
    check_jacobian_mode(fn)

    def single(xi: Tensor) -> Tensor:
        return fn(xi.unsqueeze(0)).reshape(-1)

    out = []
    with torch.enable_grad():
        for s in range(0, x.shape[0], chunk):
            xb = x[s:s + chunk].detach()
            out.append(vmap(jacrev(single))(xb).reshape(xb.shape[0], -1, xb[0].numel()).detach())
    return torch.cat(out)


def regression_jacobians(fn: Fn, x: Tensor, *, samples: int | None = None, scale: float = 1e-2,
                         generator: torch.Generator | None = None) -> Tensor:
    """The paper's estimator (Appendix A.5): push ``samples`` (default ``D + 10``) random
    perturbations of size ``scale`` through ``fn`` with its activation pattern frozen at
    ``x`` (the linearization: ``jvp`` at ``x``), then least squares ``W`` with
    ``out ~ W z + b``; returns ``(B, C, D)``. Exact up to round-off when ``samples > D``;
    costs ``samples`` Jacobian-vector products per point (exact :func:`jacobians` costs
    ``C`` vector-Jacobian products and is the better choice when C is small)."""
    check_jacobian_mode(fn)
    d = x[0].numel()
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 2):
        raise AdvgeomError(f"regression_jacobians: samples must be an integer >= 2 (or None for D + 10), "
                           f"got {samples!r}")
    if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and 0 < scale < float("inf")):
        raise AdvgeomError(f"regression_jacobians: scale must be a finite number > 0, got {scale!r}")
    m = d + 10 if samples is None else samples
    rows = []
    for i in range(x.shape[0]):
        z = torch.randn((m, *x.shape[1:]), generator=generator, dtype=x.dtype).to(x.device) * scale
        xi = x[i:i + 1].expand(m, *x.shape[1:]).clone()
        with torch.no_grad():
            base, dz = jvp(fn, (xi,), (z,))
        design = torch.cat([_flat(z), torch.ones(m, 1, dtype=x.dtype, device=x.device)], 1)
        sol = torch.linalg.lstsq(design.double(), (base + dz).double()).solution  # (D+1, C)
        rows.append(sol[:d].T.to(x.dtype))
    return torch.stack(rows)


def spectrum(jac: Tensor, vectors: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Singular values ``(B, min(C, D))`` of Jacobians ``(B, C, D)``, largest first
    (``torch.linalg.svdvals``); with ``vectors`` also the right singular vectors
    ``(B, min(C, D), D)``, row ``r`` the vector of rank ``r``."""
    if not vectors:
        return torch.linalg.svdvals(jac)
    _, s, vh = torch.linalg.svd(jac, full_matrices=False)
    return s, vh


def _check_like(t: object, x: Tensor, what: str) -> None:
    """``t`` must be a tensor of ``x``'s shape (a direction at ``x``)."""
    if not isinstance(t, Tensor) or t.shape != x.shape:
        raise AdvgeomError(f"{what} must be a tensor of the inputs' shape {tuple(x.shape)}, got "
                           f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}")


# ---------------------------------------------------------------------------
# the power method (Eq. 7)


def power_method(fn: Fn, x: Tensor, *, iters: int = 10, v0: Tensor | None = None,
                 generator: torch.Generator | None = None, engine: str = "autograd",
                 graph: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Dominant singular triple ``(sigma (B,), u (B, C), v like x)`` of ``J_fn(x)`` per
    sample (Eq. 7): ``u <- J v / ||J v||`` (forward), ``v <- J^T u / ||J^T u||``
    (backward), from ``v0`` or a random direction; ``sigma = u^T J v = ||J^T u||`` at the
    last pair. ``graph``: ``(x_leaf, fn(x_leaf))`` already computed with ``x_leaf``
    requiring grad (the autograd engine then reuses that forward).

    Both products are taken at ``x`` (activation pattern fixed there). ``engine="func"``
    uses ``torch.func.jvp`` / ``vjp``; ``"autograd"`` (default, faster on CPU, where
    forward-mode AD costs several forwards) builds the graph of ``g(w) = J^T w`` once
    and gets ``J v`` as the vector-Jacobian product of that linear map (the transpose
    of the transpose). Nothing returned is differentiable."""
    check_jacobian_mode(fn)
    if iters < 1:
        raise AdvgeomError(f"power method: iters must be >= 1, got {iters}")
    if engine not in ("autograd", "func"):
        raise AdvgeomError(f"power method: engine must be 'autograd' or 'func', got {engine!r}")
    x = x.detach()
    if v0 is not None:
        _check_like(v0, x, "power method: v0")
    else:
        v0 = torch.randn(x.shape, generator=generator, dtype=x.dtype,
                         device=generator.device if generator is not None else x.device).to(x.device)
    v = _unit(v0.detach())
    with torch.enable_grad():
        if engine == "func":
            _, pullback = vjp(fn, x)

            def forward(t: Tensor) -> Tensor:
                with torch.no_grad():
                    return jvp(fn, (x,), (t,))[1]
        else:
            xr, out = graph if graph is not None else (x.requires_grad_(True), None)
            out = fn(xr) if out is None else out
            dummy = torch.zeros_like(out, requires_grad=True)
            (g,) = torch.autograd.grad(out, xr, dummy, create_graph=True)

            def pullback(w: Tensor) -> tuple[Tensor]:
                return torch.autograd.grad(out, xr, w, retain_graph=True)

            def forward(t: Tensor) -> Tensor:
                return torch.autograd.grad(g, dummy, t, retain_graph=True)[0]
        for _ in range(iters):
            ju = forward(v)
            u = (ju / ju.norm(dim=1, keepdim=True).clamp_min(_TINY)).detach()
            (jtu,) = pullback(u)
            v = _unit(jtu.detach())
    return _flat(jtu.detach()).norm(dim=1), u, v.detach()


# ---------------------------------------------------------------------------
# geometry around a point


def linearity_deviation(fn: Fn, x: Tensor, z: Tensor) -> Tensor:
    """``||fn(x + z) - (fn(x) + J_fn(x) z)||_2`` per sample (Figure 2, left): 0 while
    ``x + z`` stays in the activation region of ``x``."""
    check_jacobian_mode(fn)
    _check_like(z, x, "linearity deviation: z")
    with torch.no_grad():
        base, jz = jvp(fn, (x.detach(),), (z.detach(),))
        return _flat(fn(x + z) - base - jz).norm(dim=1)


def top_singular_along(fn: Fn, x: Tensor, direction: Tensor, radii: list[float], *,
                       exact: bool = True, iters: int = 20,
                       generator: torch.Generator | None = None) -> Tensor:
    """``(len(radii), B)``: the largest singular value of ``J_fn`` at ``x + r d/||d||``
    for each radius ``r`` (Figure 2, right); exact SVD or ``iters`` power steps."""
    d = _unit(direction.detach())
    out = []
    for r in radii:
        at = x.detach() + r * d
        if exact:
            out.append(spectrum(jacobians(fn, at))[:, 0])
        else:
            out.append(power_method(fn, at, iters=iters, generator=generator)[0])
    return torch.stack(out)


def alignment(delta: Tensor, vectors: Tensor) -> Tensor:
    """``|cos(delta_i, v_{i,r})|`` ``(B, R)`` of perturbations ``(B, ...)`` with right
    singular vectors ``(B, R, D)`` (a singular vector's sign is arbitrary)."""
    if not isinstance(delta, Tensor) or not isinstance(vectors, Tensor) or vectors.dim() != 3 \
            or delta.dim() < 1 or delta.shape[0] != vectors.shape[0] or delta[0].numel() != vectors.shape[2]:
        raise AdvgeomError(f"alignment: delta (B, ...) and vectors (B, R, D) with D the size of one delta, got "
                           f"{tuple(getattr(delta, 'shape', ()))} and {tuple(getattr(vectors, 'shape', ()))}")
    dl = _unit(_flat(delta.detach()))
    return (vectors * dl.unsqueeze(1)).sum(-1).abs()


def random_directions(like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Unit-l2 Gaussian directions shaped like ``like`` (the random-perturbation baseline)."""
    g = torch.randn(like.shape, generator=generator, dtype=like.dtype,
                    device=generator.device if generator is not None else like.device)
    return _unit(g.to(like.device))
