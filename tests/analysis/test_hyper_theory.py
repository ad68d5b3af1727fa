"""advgeom.analysis.hyper_theory: the quadrature, the exact population estimators, the
minimizers of (10) and (11) and Theorem 5's sides, each against an independent
computation (a closed form, a generic solver, a brute-force grid, an exact
trapezoid rule on the circle, or Monte Carlo)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize

from advgeom.analysis import hyper_theory as H
from advgeom.errors import AdvgeomError

C = math.sqrt(2 / math.pi)


def circle(w_star: np.ndarray, delta: float, fn, points: int = 20_000) -> float:
    """``E fn(x, u, a)`` on S^1 with sign(eps) = a = +-1 by the trapezoid rule in the angle,
    exact to rounding for the smooth periodic integrands here."""
    th = np.linspace(0, 2 * np.pi, points, endpoint=False)
    x = np.stack([np.cos(th), np.sin(th)], 1)
    out = 0.0
    for a in (1.0, -1.0):
        xt = H.fgsm(x, np.full(points, a), w_star, delta)
        out += 0.5 * float(np.mean(fn(x, xt, a)))
    return out


@pytest.mark.parametrize("p", [2, 3, 10, 500])
def test_sphere_mean_gives_the_moments_of_a_coordinate(p: int) -> None:
    assert H.sphere_mean(lambda s: s ** 2, p) == pytest.approx(1 / p, rel=1e-12)
    assert H.sphere_mean(lambda s: s ** 4, p) == pytest.approx(3 / (p * (p + 2)), rel=1e-11)
    assert H.sphere_mean(lambda s: s ** 3, p) == pytest.approx(0, abs=1e-15)


def test_unprojected_minimizer_two_derivations_and_objective_16() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal(7)
    delta, sigma = 0.03, 0.2
    w1 = H.plain_minimizer(w, delta, sigma)
    np.testing.assert_allclose(H.population_minimizer(w, delta, sigma, projected=False), w1, atol=1e-13)
    b = np.sign(w)
    for v in (w1, w, rng.standard_normal(7)):   # (16) is exact
        eq16 = np.sum((v - w) ** 2) / 7 + (delta * b @ v + C * sigma) ** 2 + (1 - 2 / math.pi) * sigma ** 2
        assert H.population_risk(v, w, delta, sigma, projected=False) == pytest.approx(eq16, rel=1e-12)
    assert all(H.population_risk(w1 + 1e-3 * rng.standard_normal(7), w, delta, sigma, False)
               > H.population_risk(w1, w, delta, sigma, False) for _ in range(20))


def test_projected_risk_exact_on_the_circle() -> None:
    w_star, delta, sigma = np.array([0.7, -1.3]), 0.08, 0.3
    for w in (w_star, np.array([0.1, 0.4])):
        def sq(x, xt, a, w=w):
            u = xt / np.linalg.norm(xt, axis=1, keepdims=True)
            return (x @ w_star - u @ w) ** 2 + 2 * a * sigma * C * (x @ w_star - u @ w)
        exact = circle(w_star, delta, sq) + sigma ** 2
        assert H.population_risk(w, w_star, delta, sigma, projected=True) == pytest.approx(exact, rel=1e-10)
    w2 = H.population_minimizer(w_star, delta, sigma, True)
    res = minimize(lambda v: H.population_risk(v, w_star, delta, sigma, True), w_star, method="BFGS",
                   options={"gtol": 1e-12})
    np.testing.assert_allclose(w2, res.x, atol=1e-6)


def test_projected_minimizer_matches_least_squares_on_many_samples() -> None:
    rng = np.random.default_rng(1)
    p, delta, sigma = 6, 0.1 / math.sqrt(6), 0.1
    w = rng.standard_normal(p)
    w1, w2 = H.plain_minimizer(w, delta, sigma), H.population_minimizer(w, delta, sigma, True)
    n1, n2 = H.empirical_estimators(w, delta, sigma, 400_000, rng)
    # sampling error ~ 1e-3 here; the biases are ~ 5e-2 and differ by ~ 1e-2
    assert np.linalg.norm(n1 - w1) < 3e-3 and np.linalg.norm(n2 - w2) < 3e-3
    assert np.linalg.norm(w1 - w2) > 5 * 3e-3


def l1_solver(obj, w_star: np.ndarray) -> np.ndarray:
    """A generic solver: ``w = u - v`` with ``u, v >= 0`` (then ``||w||_1 = sum(u + v)`` at
    the optimum), L-BFGS-B on the smooth problem."""
    p = w_star.size

    def f(z):
        u, v = z[:p], z[p:]
        w = u - v
        l1 = float(np.sum(u + v))
        return obj(w, l1)

    z0 = np.concatenate([np.maximum(w_star, 0), np.maximum(-w_star, 0)])
    res = minimize(f, z0, method="L-BFGS-B", bounds=[(0, None)] * (2 * p), options={"ftol": 1e-15, "gtol": 1e-12})
    return res.x[:p] - res.x[p:]


@pytest.mark.parametrize("delta,sigma", [(0.02, 0.1), (0.2, 0.01), (0.5, 0.5)])
def test_estimators_10_11_against_a_solver(delta: float, sigma: float) -> None:
    w = np.random.default_rng(2).standard_normal(8)
    p = w.size
    def obj10(v, l1):
        return np.sum((v - w) ** 2) / p + (delta * l1 + C * sigma) ** 2
    def obj11(v, l1):
        return (np.sum((v - w) ** 2) / p + (p - 2) / p * (delta * l1 + C * sigma) ** 2
                + delta ** 2 * (v @ v / (p + 2) + 2 * l1 ** 2 / (p * (p + 2))))
    for est, obj, exact_obj in ((H.estimator_10, obj10, H.objective_10), (H.estimator_11, obj11, H.objective_11)):
        mine, ref = est(w, delta, sigma), l1_solver(obj, w)
        np.testing.assert_allclose(mine, ref, atol=1e-5)
        assert exact_obj(mine, w, delta, sigma) <= exact_obj(ref, w, delta, sigma) + 1e-14
    assert np.count_nonzero(H.estimator_10(w, 0.5, 0.5)) < p   # the last case thresholds coordinates


def test_estimator_10_brute_force_in_two_dimensions() -> None:
    w, delta, sigma = np.array([0.9, -0.15]), 0.3, 0.2
    g = np.linspace(-0.2, 1.0, 1201)
    a, b = np.meshgrid(g, np.linspace(-0.4, 0.2, 601), indexing="ij")
    vals = (a - w[0]) ** 2 / 2 + (b - w[1]) ** 2 / 2 + (delta * (np.abs(a) + np.abs(b)) + C * sigma) ** 2
    best = H.estimator_10(w, delta, sigma)
    assert H.objective_10(best, w, delta, sigma) <= vals.min() + 1e-15
    i, j = np.unravel_index(np.argmin(vals), vals.shape)
    np.testing.assert_allclose(best, [a[i, j], b[i, j]], atol=2e-3)
    assert best[1] == 0.0   # the small coordinate is thresholded


def test_shrink_level_solves_its_equation() -> None:
    m = np.abs(np.random.default_rng(3).standard_normal(30))
    for a, b in ((0.0, 0.0), (0.3, 0.0), (0.1, 0.05), (0.0, 2.0), (5.0, 1.0)):
        mu = H.shrink_level(m, a, b)
        assert mu == pytest.approx(a + b * np.maximum(m - mu, 0).sum(), abs=1e-12)


def test_estimator_10_is_the_exact_minimizer_until_it_thresholds() -> None:
    w = np.random.default_rng(4).choice([-1, 1], 20) * (1 + np.random.default_rng(5).random(20))
    np.testing.assert_allclose(H.estimator_10(w, 0.001, 0.05), H.plain_minimizer(w, 0.001, 0.05), atol=1e-14)
    assert np.linalg.norm(H.estimator_10(w, 0.2, 0.05) - H.plain_minimizer(w, 0.2, 0.05)) > 0.1


def test_inequality_13_as_printed_and_with_the_square() -> None:
    w = np.random.default_rng(6).standard_normal(50)
    r = H.inequality_13(w, 0.01, 0.1)
    assert r["left"] > r["middle"]                            # as printed: fails
    assert r["left"] <= r["middle_squared"] <= r["right"]     # with ||w||_1^2: holds


def test_theorem5_sides_exact_and_sampled() -> None:
    w, delta = np.array([0.6, -1.1]), 0.05
    t = H.theorem5(w, delta)
    assert t["plain"] == pytest.approx(delta ** 2 * np.abs(w).sum() ** 2, rel=1e-14)
    proj = circle(w, delta, lambda x, xt, a: (xt @ w / np.linalg.norm(xt, axis=1) - x @ w) ** 2)
    assert t["projected"] == pytest.approx(proj, rel=1e-10)
    w = np.random.default_rng(7).standard_normal(20)
    t = H.theorem5(w, 0.3 / math.sqrt(20))
    mc = H.theorem5_sampled(w, 0.3 / math.sqrt(20), 200_000, np.random.default_rng(8))
    assert abs(mc["projected"] - t["projected"]) < 4 * mc["projected_se"]
    assert mc["plain"] == pytest.approx(t["plain"], rel=1e-12)


def test_theorem5_first_order_slack_and_limit() -> None:
    w = np.random.default_rng(9).standard_normal(15)
    p, l1, l2 = 15, np.abs(w).sum(), w @ w
    for delta in (1e-4, 1e-2):
        t = H.theorem5(w, delta)
        assert t["bound"] - t["first_order"] == pytest.approx(delta ** 2 * (l1 ** 2 - l2) / (p + 2), rel=1e-10)
    t = H.theorem5(w, 1e-5)
    assert t["projected"] == pytest.approx(t["first_order"], rel=1e-4)


def test_theorems_hold_on_a_gaussian_w_and_fail_where_reported() -> None:
    w = np.random.default_rng(0).standard_normal(50)
    delta, sigma = 0.1 / math.sqrt(50), 0.1
    t = H.theorem5(w, delta)
    assert t["projected"] < t["bound"]
    def err(v):
        return np.linalg.norm(v - w)
    assert err(H.estimator_10(w, delta, sigma)) > err(H.estimator_11(w, delta, sigma))
    assert err(H.plain_minimizer(w, delta, sigma)) > err(H.population_minimizer(w, delta, sigma, True))
    # Corollary 4 for the estimators as defined fails at d = 0.5 (same w*)
    delta = 0.5 / math.sqrt(50)
    assert err(H.population_minimizer(w, delta, 0.01, True)) > err(H.plain_minimizer(w, delta, 0.01)) + 0.03
    # Theorem 5 fails at p = 2 for the dense w* = (1, 1e-6); the exact circle rule agrees
    w, delta = np.array([1.0, 1e-6]), 0.01 / math.sqrt(2)
    t = H.theorem5(w, delta)
    proj = circle(w, delta, lambda x, xt, a: (xt @ w / np.linalg.norm(xt, axis=1) - x @ w) ** 2)
    assert proj == pytest.approx(t["projected"], rel=1e-10)
    assert proj > t["bound"] * (1 + 1e-5)


def test_bad_input_is_one_clear_error() -> None:
    with pytest.raises(AdvgeomError, match="p >= 2"):
        H.theorem5(np.array([1.0]), 0.1)
    with pytest.raises(AdvgeomError, match=">= 0"):
        H.estimator_10(np.ones(3), -0.1, 0.1)
