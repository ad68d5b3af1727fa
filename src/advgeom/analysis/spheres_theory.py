"""Theory of adversarial-spheres.txt: error rates of ellipsoid classifiers
(Proposition 4.1, Appendix C), the fraction of dimensions needed (Figure 4) and the
cap bound of Theorem 5.1 (Appendix A).

Setting: a classifier whose inner-sphere decision rule is "outer iff
sum_i alpha_i z_i^2 > 1" in rotated coordinates z (the quadratic network, Section 4).
With u ~ N(0, I) and z = u/||u||, the inner-sphere error event is
X = sum_i (alpha_i - 1) u_i^2 > 0, and the outer-sphere error event (||x|| = R,
predicted inner) is X' = sum_i (1/R^2 - alpha_i) u_i^2 >= 0.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from scipy import integrate, optimize, special

from advgeom.errors import AdvgeomError

ArrayLike = Sequence[float] | np.ndarray | torch.Tensor

# ---------------------------------------------------------------------------
# error-rate coefficients


def _as_alpha(alpha: ArrayLike) -> np.ndarray:
    a = alpha.detach().cpu().double().numpy() if isinstance(alpha, torch.Tensor) else np.asarray(alpha, float)
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)):
        raise AdvgeomError("alpha must be a non-empty 1-D array of finite numbers")
    return a


def error_coefficients(alpha: ArrayLike, sphere: str = "inner", R: float = 1.3) -> np.ndarray:
    """lambda_i such that an error on ``sphere`` is the event sum_i lambda_i u_i^2 > 0:
    alpha_i - 1 on the inner sphere, 1/R^2 - alpha_i on the outer sphere."""
    a = _as_alpha(alpha)
    if sphere == "inner":
        return a - 1.0
    if sphere == "outer":
        return 1.0 / float(R) ** 2 - a
    raise AdvgeomError(f"sphere must be 'inner' or 'outer', got {sphere!r}")


# ---------------------------------------------------------------------------
# Proposition 4.1 (CLT), exact (Imhof) and Monte Carlo error rates


def clt_log_error_rate(alpha: ArrayLike, sphere: str = "inner", R: float = 1.3) -> float:
    """Natural log of the CLT estimate of :func:`clt_error_rate` (stable for tiny rates)."""
    lam = error_coefficients(alpha, sphere, R)
    mu, sigma = float(lam.sum()), math.sqrt(2.0 * float((lam ** 2).sum()))
    if sigma == 0.0:
        return 0.0 if mu > 0 else -math.inf
    return float(special.log_ndtr(mu / sigma))


def clt_error_rate(alpha: ArrayLike, sphere: str = "inner", R: float = 1.3) -> float:
    """CLT estimate of the error rate (Proposition 4.1, corrected form).

    With lambda = alpha - 1 (inner sphere) or 1/R^2 - alpha (outer sphere) and
    X = sum_i lambda_i u_i^2, u ~ N(0, I): mu = E[X] = sum_i lambda_i,
    sigma^2 = Var[X] = 2 sum_i lambda_i^2 (the paper's statement omits the square on
    sigma), and P(error) = P(X > 0) ~ 1 - Phi(-mu/sigma) = Phi(mu/sigma).
    """
    return math.exp(clt_log_error_rate(alpha, sphere, R))


def imhof_error_rate(alpha: ArrayLike, sphere: str = "inner", R: float = 1.3) -> float:
    """P(sum_i lambda_i u_i^2 > 0) by Imhof's (1961) inversion formula: exact up to
    quadrature error (about 1e-10 absolute), so useful where errors are not tiny.

    P(Q > 0) = 1/2 + (1/pi) int_0^inf sin(theta(t)) / (t rho(t)) dt,
    theta(t) = 1/2 sum atan(lambda_i t), rho(t) = prod (1 + lambda_i^2 t^2)^(1/4).
    """
    lam = error_coefficients(alpha, sphere, R)
    lam = lam[lam != 0.0]
    if lam.size == 0:
        return 0.0
    lam = lam / np.abs(lam).max()

    def integrand(t: float) -> float:
        if t == 0.0:
            return 0.5 * float(lam.sum())
        theta = 0.5 * float(np.arctan(lam * t).sum())
        log_rho = 0.25 * float(np.log1p((lam * t) ** 2).sum())
        return math.sin(theta) * math.exp(-log_rho) / t

    val, _err = integrate.quad(integrand, 0.0, np.inf, limit=1000, epsabs=1e-13, epsrel=1e-10)
    return float(min(max(0.5 + val / math.pi, 0.0), 1.0))


def monte_carlo_error_rate(alpha: ArrayLike, sphere: str = "inner", R: float = 1.3, *,
                           n: int = 1_000_000, generator: torch.Generator | None = None,
                           batch: int = 100_000) -> tuple[float, int]:
    """Monte Carlo error rate from ``n`` uniform sphere points (via u ~ N(0, I));
    returns (rate, number of errors)."""
    dev = generator.device if generator is not None else torch.device("cpu")
    lam = torch.as_tensor(error_coefficients(alpha, sphere, R), dtype=torch.float64, device=dev)
    errors, done = 0, 0
    while done < n:
        m = min(batch, n - done)
        u = torch.randn(m, lam.numel(), generator=generator, dtype=torch.float64, device=dev)
        q = (u * u) @ lam
        errors += int((q > 0).sum()) if sphere == "inner" else int((q >= 0).sum())
        done += m
    return errors / max(n, 1), errors


# ---------------------------------------------------------------------------
# Figure 4: fraction k/d of coordinates needed for a target error rate


def _log_error_k(k: int, d: int, b: float, R: float, method: str) -> float:
    """log of the balanced error of the rule "outer iff sum_{i<=k} x_i^2 > b"."""
    if method == "clt":
        alpha = np.zeros(d)
        alpha[:k] = 1.0 / b
        li, lo = clt_log_error_rate(alpha, "inner", R), clt_log_error_rate(alpha, "outer", R)
    elif method == "exact":  # sum_{i<=k} z_i^2 ~ Beta(k/2, (d-k)/2) on the unit sphere
        if k == d:
            return -math.inf if 1.0 < b < R * R else 0.0
        with np.errstate(divide="ignore"):
            li = float(np.log(special.betaincc(k / 2, (d - k) / 2, b)))
            lo = float(np.log(special.betainc(k / 2, (d - k) / 2, b / R ** 2)))
    else:
        raise AdvgeomError(f"method must be 'clt' or 'exact', got {method!r}")
    return float(np.logaddexp(li, lo) - math.log(2.0))


def best_threshold_error(k: int, d: int, R: float = 1.3, method: str = "clt") -> tuple[float, float]:
    """(b*, error) of the k-coordinate model with the threshold b chosen optimally;
    the error is the balanced (both spheres) error rate, from the CLT of Proposition 4.1
    (``method="clt"``, as in the paper) or exactly from the Beta law (``"exact"``)."""
    if not 1 <= k <= d:
        raise AdvgeomError(f"need 1 <= k <= d, got k={k}, d={d}")
    lo, hi = k / d, R * R * k / d
    res = optimize.minimize_scalar(lambda b: _log_error_k(k, d, b, R, method),
                                   bounds=(lo, hi), method="bounded",
                                   options={"xatol": 1e-10 * hi})
    return float(res.x), float(math.exp(res.fun))


def fraction_needed(d: int, target: float, R: float = 1.3, method: str = "clt") -> float:
    """Smallest k/d whose optimally thresholded k-coordinate model has balanced error
    <= ``target`` (Figure 4); 1.0 when even k = d does not reach it."""
    if not 0.0 < target < 0.5:
        raise AdvgeomError(f"target error must be in (0, 0.5), got {target}")
    if best_threshold_error(d, d, R, method)[1] > target:
        return 1.0
    lo, hi = 0, d  # error(lo) > target >= error(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if best_threshold_error(mid, d, R, method)[1] <= target:
            hi = mid
        else:
            lo = mid
    return hi / d


# ---------------------------------------------------------------------------
# Theorem 5.1: the spherical-cap bound


def cap_measure(t: float, d: int) -> float:
    """mu of the cap {x in S^{d-1}: x_1 >= t} (fraction of the unit sphere in R^d),
    exactly: x_1^2 ~ Beta(1/2, (d-1)/2), so for t >= 0 mu = 1/2 I_{1-t^2}((d-1)/2, 1/2)."""
    if d < 2:
        raise AdvgeomError(f"cap_measure needs d >= 2, got {d}")
    t = float(t)
    if t >= 1.0:
        return 0.0
    if t <= -1.0:
        return 1.0
    upper = 0.5 * float(special.betainc((d - 1) / 2, 0.5, 1.0 - t * t))
    return upper if t >= 0 else 1.0 - upper


def cap_threshold(mu: float, d: int) -> float:
    """The t with cap_measure(t, d) = mu (inverse via ``betaincinv``)."""
    if not 0.0 < mu < 1.0:
        raise AdvgeomError(f"error measure mu must be in (0, 1), got {mu}")
    if mu == 0.5:
        return 0.0
    m = mu if mu < 0.5 else 1.0 - mu
    a = (d - 1) / 2
    s = float(special.betaincinv(a, 0.5, 2.0 * m))  # s = 1 - t^2
    # polish in log space (betaincinv loses relative accuracy for tiny m at small d)
    def f(ls: float) -> float:
        return math.log(max(float(special.betainc(a, 0.5, math.exp(ls))), 1e-320)) - math.log(2 * m)

    lo, hi = math.log(max(s, 1e-300)) - 1.0, min(math.log(max(s, 1e-300)) + 1.0, 0.0)
    if s > 0 and f(lo) < 0 < f(hi):
        s = math.exp(optimize.brentq(f, lo, hi, xtol=1e-14, rtol=1e-14))
    t = math.sqrt(max(0.0, 1.0 - s))
    return t if mu < 0.5 else -t


def cap_mean_distance(t: float, d: int) -> float:
    """Average l2 distance from a uniform point of S^{d-1} to the cap {x_1 >= t}.

    A point at polar angle theta (x_1 = cos theta) outside the cap is at chordal
    distance 2 sin((theta - theta_t)/2) from it (theta_t = arccos t); theta has density
    sin^{d-2}(theta) / Z on [0, pi].
    """
    if d < 2:
        raise AdvgeomError(f"cap_mean_distance needs d >= 2, got {d}")
    th_t = math.acos(min(max(float(t), -1.0), 1.0))
    log_z = 0.5 * math.log(math.pi) + special.gammaln((d - 1) / 2) - special.gammaln(d / 2)

    def f(th: float) -> float:
        s = math.sin(th)
        if d == 2:
            w = math.exp(-log_z)
        else:
            w = math.exp((d - 2) * math.log(s) - log_z) if s > 0 else 0.0
        return 2.0 * math.sin((th - th_t) / 2.0) * w

    width = 1.0 / math.sqrt(d)
    pts = sorted({p for p in (math.pi / 2 + k * width for k in (-8, -3, -1, 0, 1, 3, 8))
                  if th_t < p < math.pi})
    val, _ = integrate.quad(f, th_t, math.pi, points=pts or None, limit=500,
                            epsabs=1e-13, epsrel=1e-10)
    return float(val)


def cap_bound(mu: float, d: int, radius: float = 1.0) -> float:
    """Theorem 5.1: the largest possible average distance d(E) to an error set of
    measure ``mu`` on the sphere of ``radius`` in R^d, attained by a cap (Figiel et al.)."""
    if mu >= 1.0:
        return 0.0
    return float(radius) * cap_mean_distance(cap_threshold(mu, d), d)


def cap_bound_gaussian(mu: float, d: int) -> float:
    """The large-d approximation of Appendix A, without its factor sqrt(2):
    x_1 ~ N(0, 1/d), t = a/sqrt(d) with a = Phi^{-1}(1 - mu), and
    d(E) ~ E max(t - x_1, 0) = (a Phi(a) + phi(a)) / sqrt(d).
    (Near the equator the distance to the cap is t - x_1, not sqrt(2)(t - x_1).)"""
    a = float(special.ndtri(1.0 - mu))
    return (a * special.ndtr(a) + math.exp(-a * a / 2) / math.sqrt(2 * math.pi)) / math.sqrt(d)
