"""Theory of adversarial-spheres.txt: Proposition 4.1 (CLT) against Monte Carlo and
Imhof's exact formula, Figure 4's k/d model against its exact Beta law, and the cap
bound of Theorem 5.1 against direct numerical integration at small d."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from advgeom.analysis import spheres_theory as T
from advgeom.errors import AdvgeomError


# ---------------------------------------------------------------------------
# Proposition 4.1

# Stated tolerance of the CLT estimate where errors are frequent enough to count
# (rates 5e-3..0.5, d >= 200): within 0.1 in probit units (z-scores) of Monte Carlo and
# within 30% relative (the CLT overestimates the tail a little: X is skewed).
MC_N, CLT_REL_TOL, CLT_PROBIT_TOL = 50_000, 0.3, 0.1


def _alphas(d: int, mean: float, sd: float, seed: int) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).normal(mean, sd, d), 0.0, None)


@pytest.mark.parametrize("d,mean,sd,sphere,R", [
    (300, 0.97, 0.3, "inner", 1.3),
    (200, 0.97, 0.3, "inner", 1.3),
    (400, 0.62, 0.2, "outer", 1.3),
    (300, 0.75, 0.3, "outer", 1.2),
])
def test_clt_matches_monte_carlo_where_errors_are_frequent(d, mean, sd, sphere, R):
    a = _alphas(d, mean, sd, seed=d)
    clt = T.clt_error_rate(a, sphere, R)
    mc, count = T.monte_carlo_error_rate(a, sphere, R, n=MC_N,
                                         generator=torch.Generator().manual_seed(d))
    assert 5e-3 < mc < 0.5, "test setting must be in the frequent-error regime"
    assert abs(clt - mc) / mc < CLT_REL_TOL
    assert abs(stats.norm.ppf(clt) - stats.norm.ppf(mc)) < CLT_PROBIT_TOL
    # Imhof's exact value agrees with Monte Carlo within 4 standard errors
    exact = T.imhof_error_rate(a, sphere, R)
    se = math.sqrt(mc * (1 - mc) / MC_N)
    assert abs(exact - mc) < 4 * se


def test_clt_formula_by_hand():
    a = np.array([2.0, 0.5, 0.5, 1.0])
    lam = a - 1
    mu, sigma = lam.sum(), math.sqrt(2 * (lam ** 2).sum())
    assert T.clt_error_rate(a) == pytest.approx(1 - special.ndtr(-mu / sigma), rel=1e-12)
    lam_o = 1 / 1.3 ** 2 - a
    mu_o, s_o = lam_o.sum(), math.sqrt(2 * (lam_o ** 2).sum())
    assert T.clt_error_rate(a, "outer") == pytest.approx(special.ndtr(mu_o / s_o), rel=1e-12)
    # degenerate: all alpha = 1 gives X = 0, never an error; tiny rates stay positive
    assert T.clt_error_rate(np.ones(5)) == 0.0
    assert 0 < T.clt_error_rate(np.full(500, 0.8)) < 1e-30
    with pytest.raises(AdvgeomError):
        T.clt_error_rate(np.ones(3), "middle")


def test_imhof_exact_cases():
    # one coefficient > 0 among d: P(u_1^2 > c sum_{i>1} u_i^2) is a Beta tail
    d = 6
    lam = np.array([1.0] + [-0.5] * (d - 1))
    alpha = lam + 1
    # u_1^2 / sum u^2 ~ Beta(1/2, (d-1)/2); event: u_1^2 > 0.5 (sum - u_1^2) <=> ratio > 1/3
    assert T.imhof_error_rate(alpha) == pytest.approx(special.betaincc(0.5, (d - 1) / 2, 1 / 3), abs=1e-8)


# ---------------------------------------------------------------------------
# Figure 4


def test_k_coordinate_model_exact_law_matches_monte_carlo():
    d, k, R = 20, 10, 1.3
    b, err = T.best_threshold_error(k, d, R, "exact")
    assert k / d < b < R * R * k / d
    g = torch.Generator().manual_seed(0)
    n = 400_000
    u = torch.randn(n, d, generator=g, dtype=torch.float64)
    s = (u[:, :k] ** 2).sum(1) / (u ** 2).sum(1)
    mc = 0.5 * float((s > b).double().mean()) + 0.5 * float((s * R * R <= b).double().mean())
    assert abs(mc - err) < 4 * math.sqrt(err / n)
    # the CLT version is close for this moderate error
    assert T.best_threshold_error(k, d, R, "clt")[1] == pytest.approx(err, rel=0.5)


def test_fraction_needed_decreases_with_d():
    fr = [T.fraction_needed(d, 1e-6) for d in (100, 400, 1600)]
    assert fr[0] > fr[1] > fr[2] > 0
    k = round(fr[1] * 400)
    assert T.best_threshold_error(k, 400)[1] <= 1e-6 < T.best_threshold_error(k - 1, 400)[1]
    assert T.fraction_needed(10, 1e-12) == 1.0  # unreachable at d = 10


# ---------------------------------------------------------------------------
# Theorem 5.1: cap measure and cap mean distance


def test_cap_measure_closed_forms():
    for t in (-0.7, -0.1, 0.0, 0.3, 0.9):
        assert T.cap_measure(t, 2) == pytest.approx(math.acos(t) / math.pi, abs=1e-12)
        assert T.cap_measure(t, 3) == pytest.approx((1 - t) / 2, abs=1e-12)  # Archimedes
    # d = 50 against integrating the density of x_1
    from scipy import integrate
    d, t = 50, 0.2
    c = math.exp(special.gammaln(d / 2) - special.gammaln((d - 1) / 2)) / math.sqrt(math.pi)
    val = integrate.quad(lambda s: c * (1 - s * s) ** ((d - 3) / 2), t, 1)[0]
    assert T.cap_measure(t, d) == pytest.approx(val, rel=1e-9)
    for d in (3, 10, 500):
        for mu in (0.9, 0.5, 0.01, 1e-9):
            assert T.cap_measure(T.cap_threshold(mu, d), d) == pytest.approx(mu, rel=1e-6)


def test_cap_mean_distance_d2_closed_form():
    for t in (-0.5, 0.0, 0.6):
        th = math.acos(t)
        exact = 4 / math.pi * (1 - math.cos((math.pi - th) / 2))
        assert T.cap_mean_distance(t, 2) == pytest.approx(exact, rel=1e-9)


def test_cap_bound_d3_by_direct_surface_integration():
    """Integrate over the 2-sphere in (theta, phi) the brute-force distance from each
    point to the cap (nearest of 900 points of the cap's rim, 0 inside)."""
    mu = 0.1
    t = T.cap_threshold(mu, 3)
    nth, nph = 80, 160
    th = (np.arange(nth) + 0.5) * math.pi / nth
    ph = (np.arange(nph) + 0.5) * 2 * math.pi / nph
    TH, PH = np.meshgrid(th, ph, indexing="ij")
    pts = np.stack([np.cos(TH), np.sin(TH) * np.cos(PH), np.sin(TH) * np.sin(PH)], -1).reshape(-1, 3)
    psi = np.linspace(0, 2 * math.pi, 900, endpoint=False)
    rim = np.stack([np.full_like(psi, t), math.sqrt(1 - t * t) * np.cos(psi),
                    math.sqrt(1 - t * t) * np.sin(psi)], -1)
    dist = np.sqrt(np.maximum(((pts[:, None, :] - rim[None]) ** 2).sum(-1), 0)).min(1)
    dist[pts[:, 0] >= t] = 0.0
    w = (np.sin(TH) * (math.pi / nth) * (2 * math.pi / nph)).reshape(-1)
    integral = float((dist * w).sum() / (4 * math.pi))
    assert T.cap_bound(mu, 3) == pytest.approx(integral, abs=5e-4)


@pytest.mark.parametrize("d,mu", [(5, 0.05), (5, 0.3), (12, 0.01)])
def test_cap_bound_by_monte_carlo_with_explicit_nearest_points(d, mu):
    t = T.cap_threshold(mu, d)
    g = torch.Generator().manual_seed(d)
    n = 400_000
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True)
    perp = x.clone()
    perp[:, 0] = 0
    y = perp / perp.norm(dim=1, keepdim=True) * math.sqrt(1 - t * t)
    y[:, 0] = t
    dist = torch.where(x[:, 0] >= t, torch.zeros(n, dtype=torch.float64), (x - y).norm(dim=1))
    se = float(dist.std()) / math.sqrt(n)
    assert abs(float(dist.mean()) - T.cap_bound(mu, d)) < 4 * se
    assert abs(float((x[:, 0] >= t).double().mean()) - mu) < 4 * math.sqrt(mu * (1 - mu) / n)


def test_cap_bound_properties_and_gaussian_limit():
    # decreasing in mu, scales with the radius, O(1/sqrt(d)) at fixed mu
    vals = [T.cap_bound(m, 500) for m in (1e-8, 1e-4, 1e-2, 0.5)]
    assert vals == sorted(vals, reverse=True)
    assert T.cap_bound(0.01, 500, radius=1.3) == pytest.approx(1.3 * vals[2])
    assert T.cap_bound(0.01, 2000) == pytest.approx(vals[2] / 2, rel=0.02)
    for m in (0.3, 0.01, 1e-4):
        assert T.cap_bound_gaussian(m, 20000) == pytest.approx(T.cap_bound(m, 20000), rel=0.01)
    with pytest.raises(AdvgeomError):
        T.cap_threshold(0.0, 10)
