"""The quadratic network of adversarial-spheres.txt, analysed exactly (Section 4,
Appendix B): the alpha_i, the "perfect" verdict, the ellipsoid decision boundary,
the worst-case loss, the perfect initialization and Figure 3 (right).

With W1 = U S V^T and z = V^T x, the logit w ||W1 x||^2 + b equals
-b (sum_i alpha_i z_i^2 - 1) with alpha_i = w s_i^2 / (-b) (i = 1..d; s_i = 0 for
i > h when h < d). For b < 0 the model predicts "outer" iff sum_i alpha_i z_i^2 > 1,
so it errs on the inner sphere iff some alpha_i > 1 and on the outer sphere iff some
alpha_i < 1/R^2: it is perfect iff every alpha_i is in [1/R^2, 1]. For b >= 0 no
setting is perfect (the rule is inverted or ignores the radius).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advgeom.analysis import spheres_theory as theory
from advgeom.errors import AdvgeomError

# ---------------------------------------------------------------------------
# alphas and the ellipsoid


@dataclass(frozen=True)
class QuadraticGeometry:
    """alpha (d,), descending; V (d, d) with column i the axis of alpha_i; w, b."""

    alpha: np.ndarray
    V: np.ndarray
    w: float
    b: float

    @property
    def d(self) -> int:
        return int(self.alpha.size)

    def logit(self, x: Tensor) -> Tensor:
        """-b (sum_i alpha_i (v_i . x)^2 - 1): equal to the network's logit (float64)."""
        z = x.double() @ torch.as_tensor(self.V, dtype=torch.float64, device=x.device)
        a = torch.as_tensor(self.alpha, dtype=torch.float64, device=x.device)
        return -self.b * ((z * z) @ a - 1.0)

    def boundary_norm(self, direction: Tensor) -> Tensor:
        """Norm at which the ray along ``direction`` (N, d) meets the ellipsoid
        sum alpha_i z_i^2 = 1 (inf where it never does)."""
        u = direction.double() / direction.double().norm(dim=-1, keepdim=True)
        z = u @ torch.as_tensor(self.V, dtype=torch.float64, device=u.device)
        q = (z * z) @ torch.as_tensor(self.alpha, dtype=torch.float64, device=u.device)
        return torch.where(q > 0, q.clamp_min(1e-300).rsqrt(), torch.full_like(q, math.inf))


def geometry_from_weights(W1: Tensor, w: float | Tensor, b: float | Tensor) -> QuadraticGeometry:
    """alpha_i = w s_i^2 / (-b) from the SVD of W1 (h x d), in float64 (Appendix B)."""
    W = W1.detach().cpu().double().numpy()
    if W.ndim != 2:
        raise AdvgeomError(f"W1 must be a matrix (h x d), got shape {W.shape}")
    w, b = float(torch.as_tensor(w).detach()), float(torch.as_tensor(b).detach())
    if b == 0.0:
        raise AdvgeomError("quadratic net with b = 0: alpha = w s^2/(-b) is undefined "
                           "(the decision does not depend on the radius; never perfect)")
    _, s, vt = np.linalg.svd(W, full_matrices=True)
    d = W.shape[1]
    s2 = np.zeros(d)
    s2[: s.size] = s ** 2
    alpha = w * s2 / (-b)
    order = np.argsort(-alpha, kind="stable")
    return QuadraticGeometry(alpha[order], vt.T[:, order], w, b)


def quadratic_geometry(model: nn.Module) -> QuadraticGeometry:
    """The geometry of an ``advgeom.models.spheres.QuadraticNet`` (or any module with
    ``W1``, ``w`` and ``b`` attributes)."""
    try:
        return geometry_from_weights(model.W1, model.w, model.b)
    except AttributeError as e:
        raise AdvgeomError(f"not a quadratic network (needs W1, w, b): {e}") from None


@dataclass(frozen=True)
class AlphaVerdict:
    perfect: bool
    n_incorrect: int       # alpha_i outside [1/R^2, 1]
    n_above: int           # alpha_i > 1: errors on the inner sphere
    n_below: int           # alpha_i < 1/R^2: errors on the outer sphere
    inner_errors: bool
    outer_errors: bool


def alpha_verdict(geom: QuadraticGeometry, R: float = 1.3, *, rtol: float = 1e-6) -> AlphaVerdict:
    """Perfect iff b < 0 and all alpha_i in [1/R^2, 1] (Section 4). Ends of the interval
    are widened by the relative tolerance ``rtol`` (float32 weights are exact to about
    1e-7, so alpha_i = 1 built in float32 may come out as 1 + 1e-7)."""
    a, lo, hi = geom.alpha, 1.0 / float(R) ** 2, 1.0
    n_above = int((a > hi * (1 + rtol)).sum())
    n_below = int((a < lo * (1 - rtol)).sum())
    if geom.b > 0:  # inverted rule: "outer" inside the ellipsoid; both spheres err
        return AlphaVerdict(False, int(((a > hi) | (a < lo)).sum()), n_above, n_below, True, True)
    return AlphaVerdict(n_above + n_below == 0, n_above + n_below, n_above, n_below,
                        n_above > 0, n_below > 0)


# ---------------------------------------------------------------------------
# worst cases and error rates


def worst_case_points(geom: QuadraticGeometry, R: float = 1.3) -> tuple[Tensor, Tensor]:
    """Exact worst-case points (b < 0): v_1 (max alpha) on the inner sphere and
    R v_d (min alpha) on the outer sphere, each of shape (d,)."""
    V = torch.as_tensor(geom.V, dtype=torch.float64)
    return V[:, 0].clone(), float(R) * V[:, -1].clone()


def worst_case_logits(geom: QuadraticGeometry, R: float = 1.3) -> tuple[float, float]:
    """(max logit on the inner sphere, min logit on the outer sphere), exactly."""
    a = geom.alpha
    if geom.b < 0:
        return -geom.b * (a[0] - 1.0), -geom.b * (a[-1] * R * R - 1.0)
    return -geom.b * (a[-1] - 1.0), -geom.b * (a[0] * R * R - 1.0)


def worst_case_loss(geom: QuadraticGeometry, R: float = 1.3) -> float:
    """Max over both spheres of the sigmoid cross-entropy of one point (Figure 3 right)."""
    li, lo = worst_case_logits(geom, R)
    return max(float(F.softplus(torch.tensor(li))), float(F.softplus(torch.tensor(-lo))))


def error_rates(geom: QuadraticGeometry, R: float = 1.3) -> dict[str, float]:
    """CLT estimates (Proposition 4.1) and Imhof's exact rates for both spheres (b < 0)."""
    if geom.b >= 0:
        raise AdvgeomError("error-rate formulas assume b < 0 (see alpha_verdict)")
    out: dict[str, float] = {}
    for sph in ("inner", "outer"):
        out[f"clt_{sph}"] = theory.clt_error_rate(geom.alpha, sph, R)
        out[f"imhof_{sph}"] = theory.imhof_error_rate(geom.alpha, sph, R)
    return out


# ---------------------------------------------------------------------------
# perfect initialization and Figure 3 (right)


def logit_of(p: float) -> float:
    return math.log(p) - math.log1p(-p)


@torch.no_grad()
def perfect_init(model: nn.Module, R: float = 1.3, *, p_inner: float = 0.0016,
                 p_outer: float = 0.9994, generator: torch.Generator | None = None) -> None:
    """Set a quadratic net (in place) to a perfect point: W1 = s Q with Q (h x d) having
    random orthonormal columns, w = 1, and s, b chosen so p(y=1) is ``p_inner`` on the
    inner and ``p_outer`` on the outer sphere (Section 4: .0016 and .9994). All alpha_i
    are then equal to s^2/(-b), inside [1/R^2, 1]."""
    h, d = model.W1.shape
    if h < d:
        raise AdvgeomError(f"perfect init needs h >= d (rank d), got h={h}, d={d}")
    l0, l1 = logit_of(p_inner), logit_of(p_outer)
    s2 = (l1 - l0) / (R * R - 1.0)
    b = l0 - s2
    alpha = s2 / -b
    if not (b < 0 and 1 / R**2 <= alpha <= 1):
        raise AdvgeomError(f"probabilities ({p_inner}, {p_outer}) give alpha={alpha:.4g}, "
                           f"not in [1/R^2, 1]")
    g = torch.randn(h, d, generator=generator, dtype=torch.float64,
                    device=generator.device if generator is not None else "cpu")
    q, _ = torch.linalg.qr(g)
    model.W1.copy_((math.sqrt(s2) * q).to(model.W1.dtype))
    model.w.fill_(1.0)
    model.b.fill_(b)


def track_training(model: nn.Module, *, R: float = 1.3, steps: int = 2000, lr: float = 1e-4,
                   batch_size: int = 50, eval_every: int = 100, n_eval: int = 10000,
                   generator: torch.Generator | None = None) -> list[dict[str, float]]:
    """Online training of a quadratic net with sigmoid cross-entropy and Adam, recording
    average loss (on ``n_eval`` fixed fresh points), exact worst-case loss and the number
    of incorrect alpha_i every ``eval_every`` steps (Figure 3 right). Trains in place."""
    from advgeom.data.spheres import sample_spheres

    d, dev = model.W1.shape[1], model.W1.device
    xe, ye = sample_spheres(n_eval, d, R, generator=generator, device=dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rows: list[dict[str, float]] = []

    def record(step: int) -> None:
        with torch.no_grad():
            avg = float(F.binary_cross_entropy_with_logits(model(xe).squeeze(-1), ye.float()))
        geom = quadratic_geometry(model)
        v = alpha_verdict(geom, R)
        rows.append({"step": step, "average_loss": avg, "worst_loss": worst_case_loss(geom, R),
                     "n_incorrect": v.n_incorrect, "perfect": float(v.perfect)})

    record(0)
    for step in range(1, steps + 1):
        x, y = sample_spheres(batch_size, d, R, generator=generator, device=dev)
        loss = F.binary_cross_entropy_with_logits(model(x).squeeze(-1), y.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            record(step)
    return rows
