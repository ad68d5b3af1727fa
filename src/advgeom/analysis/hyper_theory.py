"""Theory of hyperspherical-defense.txt, Section 5 and Appendix B, computed exactly.

Assumption 1: ``y = x^T w* + eps``, ``x ~ Unif(S^{p-1})``, ``eps ~ N(0, sigma^2)``; FGSM at
the true ``w*`` gives ``x~ = x - delta sign(eps) sign(w*)`` (eq. 9). The paper's estimators
are population least squares on ``x~`` (Theorem 2, ``w1``) and on ``x~ / ||x~||`` (Theorem 3,
``w2``), which it approximates by the penalised problems (10) and (11).

Everything here is exact up to one-dimensional Gauss-Jacobi quadrature: with
``b = sign(w*)``, ``e = b / ||b||``, ``d = delta ||b||`` (the perturbation's l2 size) and
``s = e^T x`` (density proportional to ``(1 - s^2)^((p-3)/2)``), the population moments of
the (projected) adversarial input split into the ``e`` direction and its orthogonal
complement, so both population minimizers and Theorem 5's two sides are 1-D integrals.
The minimizers of (10) and (11) are soft thresholds ``S_mu(w*)`` whose level solves a
monotone piecewise-linear equation, solved exactly (:func:`shrink_level`).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import roots_jacobi

from advgeom.errors import AdvgeomError

C = math.sqrt(2.0 / math.pi)   # E|eps| / sigma for Gaussian noise
NODES = 128                    # Gauss-Jacobi nodes: the integrands are analytic on [-1, 1] when d != 1


def _check(w_star: np.ndarray, delta: float, sigma: float) -> np.ndarray:
    w = np.asarray(w_star, dtype=np.float64)
    if w.ndim != 1 or w.size < 2 or not np.all(np.isfinite(w)):
        raise AdvgeomError("w* must be a 1-D array of at least 2 finite numbers (p >= 2)")
    if delta < 0 or sigma < 0:
        raise AdvgeomError(f"delta and sigma must be >= 0, got {delta}, {sigma}")
    return w


# ---------------------------------------------------------------------------
# sampling (Assumption 1, Proposition 1)


def sample_sphere(n: int, p: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points uniform on ``S^{p-1}`` (normalised Gaussians), shape ``(n, p)``."""
    z = rng.standard_normal((n, p))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def fgsm(x: np.ndarray, sign_eps: np.ndarray, w_star: np.ndarray, delta: float) -> np.ndarray:
    """Eq. (9): the FGSM sample of the square loss at ``w*``, ``x - delta sign(eps) sign(w*)``."""
    return x - delta * sign_eps[:, None] * np.sign(w_star)[None, :]


def project(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` projected onto the unit sphere."""
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def empirical_estimators(w_star: np.ndarray, delta: float, sigma: float, n: int,
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Least squares on ``n`` FGSM samples, without and with projection onto the sphere:
    the finite-sample versions of Theorem 2's ``w1`` and Theorem 3's ``w2`` (same draws)."""
    w = _check(w_star, delta, sigma)
    x = sample_sphere(n, w.size, rng)
    z = rng.standard_normal(n)   # eps = sigma z; sign(eps) = sign(z) (the limit sigma -> 0+ at 0)
    y = x @ w + sigma * z
    xt = fgsm(x, np.sign(z), w, delta)
    return _least_squares(xt, y), _least_squares(project(xt), y)


def _least_squares(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``argmin ||a w - y||`` by the normal equations (the designs here are well conditioned:
    rows near the unit sphere, ``a^T a`` close to ``n/p I``); an SVD is 15 times slower."""
    return np.linalg.solve(a.T @ a, a.T @ y)


# ---------------------------------------------------------------------------
# exact population quantities


@lru_cache(maxsize=64)
def _jacobi(p: int, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    a = (p - 3) / 2.0
    s, wt = roots_jacobi(nodes, a, a)
    return s, wt / wt.sum()


def sphere_mean(fn: Callable[[np.ndarray], np.ndarray], p: int, nodes: int = NODES) -> float:
    """``E fn(s)`` for ``s`` one coordinate of ``x ~ Unif(S^{p-1})`` (Gauss-Jacobi quadrature)."""
    s, wt = _jacobi(int(p), int(nodes))
    return float(np.sum(wt * fn(s)))


@dataclass(frozen=True)
class Moments:
    """``E[u u^T] = alpha e e^T + beta P``, ``E[u x^T] = gamma e e^T + eta P`` and
    ``E[u eps] = kappa e`` (``P = I - e e^T``) of the adversarial input ``u`` (``x~``, or
    ``x~ / ||x~||`` when projected)."""

    alpha: float
    beta: float
    gamma: float
    eta: float
    kappa: float


def moments(p: int, d: float, sigma: float, projected: bool) -> Moments:
    """The population moments for dimension ``p`` and perturbation size ``d = delta ||b||``.
    The sign pair (sign(eps), s) -> (-sign(eps), -s) leaves every moment unchanged, so
    sign(eps) = +1 is taken, and ``E[eps g(sign eps)] = sigma C (g(1) - g(-1)) / 2``."""
    if not projected:   # the closed forms (N = 1)
        return Moments(1 / p + d * d, 1 / p, 1 / p, 1 / p, -sigma * C * d)
    def inv(s):
        return 1.0 / np.sqrt(1.0 - 2.0 * d * s + d * d)
    return Moments(alpha=sphere_mean(lambda s: (s - d) ** 2 * inv(s) ** 2, p),
                   beta=sphere_mean(lambda s: (1 - s * s) * inv(s) ** 2, p) / (p - 1),
                   gamma=sphere_mean(lambda s: (s - d) * s * inv(s), p),
                   eta=sphere_mean(lambda s: (1 - s * s) * inv(s), p) / (p - 1),
                   kappa=sigma * C * sphere_mean(lambda s: (s - d) * inv(s), p))


def _split(w_star: np.ndarray) -> tuple[np.ndarray, float]:
    b = np.sign(w_star)
    nb = float(np.linalg.norm(b))
    return b / nb, nb


def population_minimizer(w_star: np.ndarray, delta: float, sigma: float, projected: bool) -> np.ndarray:
    """The exact ``argmin_w E (y - u^T w)^2``: Theorem 2's ``w1`` (``u = x~``) or Theorem 3's
    ``w2`` (``u = x~ / ||x~||``), as the paper defines them."""
    w = _check(w_star, delta, sigma)
    e, nb = _split(w)
    m = moments(w.size, delta * nb, sigma, projected)
    we = float(e @ w)
    return (m.gamma * we + m.kappa) / m.alpha * e + (m.eta / m.beta) * (w - we * e)


def population_risk(w: np.ndarray, w_star: np.ndarray, delta: float, sigma: float, projected: bool) -> float:
    """``E (y - u^T w)^2`` exactly (the objectives of Theorems 2 and 3)."""
    ws = _check(w_star, delta, sigma)
    e, nb = _split(ws)
    m = moments(ws.size, delta * nb, sigma, projected)
    we, se = float(e @ w), float(e @ ws)
    wp, sp = w - we * e, ws - se * e
    ey2 = float(ws @ ws) / ws.size + sigma ** 2
    return ey2 - 2 * ((m.gamma * se + m.kappa) * we + m.eta * float(wp @ sp)) + m.alpha * we ** 2 \
        + m.beta * float(wp @ wp)


def plain_minimizer(w_star: np.ndarray, delta: float, sigma: float) -> np.ndarray:
    """Theorem 2's exact ``w1`` in closed form (proof (16) is exact; Sherman-Morrison):
    ``w* - t b`` with ``t = p delta (delta b^T w* + C sigma) / (1 + p delta^2 ||b||^2)``."""
    w = _check(w_star, delta, sigma)
    b, p = np.sign(w), w.size
    return w - p * delta * (delta * float(b @ w) + C * sigma) / (1 + p * delta ** 2 * float(b @ b)) * b


# ---------------------------------------------------------------------------
# the penalised problems (10) and (11)


def shrink_level(m: np.ndarray, a: float, b: float) -> float:
    """The unique ``mu >= 0`` with ``mu = a + b sum_i max(m_i - mu, 0)`` (``m >= 0``, ``a, b >= 0``):
    the left side minus the right is increasing and linear between the sorted ``m_i``, so the
    root is ``(a + b S_k) / (1 + b k)`` for the ``k`` largest ``m_i`` (sum ``S_k``) above it."""
    v = np.sort(np.abs(np.asarray(m, np.float64)))[::-1]
    k = np.arange(v.size + 1)
    cand = (a + b * np.concatenate([[0.0], np.cumsum(v)])) / (1 + b * k)
    upper = np.concatenate([[np.inf], v])        # mu <= m_k (k active)
    lower = np.concatenate([v, [0.0]])           # mu >= m_{k+1}
    ok = (cand <= upper) & (cand >= lower)
    return float(cand[int(np.argmax(ok))])


def soft_threshold(w: np.ndarray, mu: float) -> np.ndarray:
    return np.sign(w) * np.maximum(np.abs(w) - mu, 0.0)


def estimator_10(w_star: np.ndarray, delta: float, sigma: float) -> np.ndarray:
    """The minimizer of (10), ``(1/p)||w - w*||^2 + (delta ||w||_1 + C sigma)^2``: ``S_mu(w*)``
    with ``mu = p delta (delta ||w||_1 + C sigma)``."""
    w = _check(w_star, delta, sigma)
    p = w.size
    return soft_threshold(w, shrink_level(w, p * delta * C * sigma, p * delta ** 2))


def estimator_11(w_star: np.ndarray, delta: float, sigma: float) -> np.ndarray:
    """The minimizer of (11): ``S_mu(w*) / rho`` with ``rho = 1 + p delta^2 / (p + 2)`` and
    ``mu = (p-2) delta (delta L + C sigma) + 2 delta^2 L / (p + 2)``, ``L = ||w||_1``."""
    w = _check(w_star, delta, sigma)
    p = w.size
    rho = 1 + p * delta ** 2 / (p + 2)
    mu = shrink_level(w, (p - 2) * delta * C * sigma, delta ** 2 * ((p - 2) + 2 / (p + 2)) / rho)
    return soft_threshold(w, mu) / rho


def objective_10(w: np.ndarray, w_star: np.ndarray, delta: float, sigma: float) -> float:
    """The objective of (10)."""
    p = w_star.size
    return float(np.sum((w - w_star) ** 2)) / p + (delta * np.abs(w).sum() + C * sigma) ** 2


def objective_11(w: np.ndarray, w_star: np.ndarray, delta: float, sigma: float) -> float:
    """The objective of (11)."""
    p, l1 = w_star.size, float(np.abs(w).sum())
    return (float(np.sum((w - w_star) ** 2)) / p + (p - 2) / p * (delta * l1 + C * sigma) ** 2
            + delta ** 2 * (float(w @ w) / (p + 2) + 2 * l1 ** 2 / (p * (p + 2))))


def inequality_13(w: np.ndarray, delta: float, sigma: float) -> dict[str, float]:
    """The three members of (13) at ``w``: ``left`` (the penalty of (11)), ``middle`` as printed
    (``delta^2/p ||w||_1``), ``middle_squared`` (with ``||w||_1^2``, what the next step uses)
    and ``right`` (``(p-1)/p`` times the penalty of (10))."""
    p, l1 = w.size, float(np.abs(w).sum())
    base = (p - 2) / p * (delta * l1 + C * sigma) ** 2
    return {"left": base + delta ** 2 * (float(w @ w) / (p + 2) + 2 * l1 ** 2 / (p * (p + 2))),
            "middle": base + delta ** 2 * l1 / p, "middle_squared": base + delta ** 2 * l1 ** 2 / p,
            "right": (p - 1) / p * (delta * l1 + C * sigma) ** 2}


# ---------------------------------------------------------------------------
# Theorem 5


def theorem5(w_star: np.ndarray, delta: float) -> dict[str, float]:
    """Theorem 5's sides exactly: ``projected = E(u^T w* - x^T w*)^2`` with ``u = x~/||x~||``,
    ``plain = E(x~^T w* - x^T w*)^2 = delta^2 ||w*||_1^2``, ``bound = (p-1)/p * plain`` and the
    proof's first-order ``projected`` (B.3 with (9)'s delta: the proof writes delta/sqrt(p))."""
    w = _check(w_star, delta, 0.0)
    p = w.size
    e, nb = _split(w)
    d = delta * nb
    we = float(e @ w)
    wp2 = float(w @ w) - we ** 2
    def inv(s):
        return 1.0 / np.sqrt(1.0 - 2.0 * d * s + d * d)
    proj = (we ** 2 * sphere_mean(lambda s: ((s - d) * inv(s) - s) ** 2, p)
            + wp2 / (p - 1) * sphere_mean(lambda s: (1 - s * s) * (inv(s) - 1) ** 2, p))
    l1 = float(np.sign(w) @ w)
    plain = delta ** 2 * l1 ** 2
    first = delta ** 2 * (float(w @ w) / (p + 2) + 2 * l1 ** 2 / (p * (p + 2)) - 2 * l1 ** 2 / p + l1 ** 2)
    return {"projected": proj, "plain": plain, "bound": (p - 1) / p * plain, "first_order": first}


def theorem5_sampled(w_star: np.ndarray, delta: float, n: int, rng: np.random.Generator) -> dict[str, float]:
    """Monte Carlo of Theorem 5's sides on ``n`` fresh inputs (mean and standard error)."""
    w = _check(w_star, delta, 0.0)
    chunk = max(1, 2_000_000 // w.size)
    dp, dn = [], []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = sample_sphere(m, w.size, rng)
        xt = fgsm(x, rng.choice([-1.0, 1.0], m), w, delta)
        dp.append((project(xt) @ w - x @ w) ** 2)
        dn.append((xt @ w - x @ w) ** 2)
    p_, n_ = np.concatenate(dp), np.concatenate(dn)
    return {"projected": float(p_.mean()), "projected_se": float(p_.std(ddof=1) / math.sqrt(n)),
            "plain": float(n_.mean())}
