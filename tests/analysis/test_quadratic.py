"""Exact analysis of the quadratic network (adversarial-spheres.txt Section 4,
Appendix B) on constructed models with known alpha_i."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from advgeom.analysis import quadratic as Q
from advgeom.analysis import spheres_theory as T
from advgeom.attacks.manifold import manifold_attack
from advgeom.data.spheres import sample_sphere
from advgeom.errors import AdvgeomError
from advgeom.models.spheres import QuadraticNet


R = 1.3


def constructed(alpha, *, hidden: int | None = None, w: float = 0.5, b: float = -2.0,
                seed: int = 0) -> tuple[QuadraticNet, torch.Tensor]:
    """A quadratic net with the given alpha_i along random orthonormal axes V:
    W1 = U diag(s) V^T with s_i^2 = alpha_i (-b) / w (U has orthonormal columns)."""
    alpha = torch.as_tensor(alpha, dtype=torch.float64)
    d = alpha.numel()
    h = hidden or d
    g = torch.Generator().manual_seed(seed)
    V, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    U, _ = torch.linalg.qr(torch.randn(h, d, generator=g, dtype=torch.float64))
    s = (alpha * (-b) / w).sqrt()
    m = QuadraticNet(d, h, w=w, b=b)
    with torch.no_grad():
        m.W1.copy_((U * s) @ V.T)
    return m.eval(), V


def test_alpha_extraction_is_exact_and_perfect_model_is_perfect():
    d = 30
    alpha = np.linspace(1 / R**2 + 0.01, 0.99, d)
    m, V = constructed(alpha, hidden=45)
    geom = Q.quadratic_geometry(m)
    np.testing.assert_allclose(geom.alpha, np.sort(alpha)[::-1], rtol=1e-5)
    # axes: |v_i . V_j| = 1 for the matching axis
    match = np.abs(geom.V.T @ V.numpy())
    assert np.allclose(match.max(1), 1.0, atol=1e-3)
    v = Q.alpha_verdict(geom, R)
    assert v.perfect and v.n_incorrect == 0
    x = sample_sphere(50, d, 1.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(geom.logit(x).float(), m(x).squeeze(-1).detach(), rtol=1e-4, atol=1e-5)
    # the boundary along the i-th axis is at norm 1/sqrt(alpha_i)
    axes = torch.as_tensor(geom.V.T[:3])
    torch.testing.assert_close(geom.boundary_norm(axes), torch.as_tensor(geom.alpha[:3]) ** -0.5)
    # worst-case attack finds nothing on either sphere
    for r, y in ((1.0, 0), (R, 1)):
        res = manifold_attack(m, r * x[:10], torch.full((10,), y), steps=200, step_size=0.05, mode="worst")
        assert not res.success.any()


def test_interval_ends_count_as_correct():
    m, _ = constructed([1.0, 1 / R**2, 0.8, 0.7])
    v = Q.alpha_verdict(Q.quadratic_geometry(m), R)
    assert v.perfect


def test_one_alpha_above_one_gives_inner_errors_the_attack_finds():
    d = 20
    alpha = np.full(d, 0.8)
    alpha[7] = 1.3
    m, V = constructed(alpha, seed=3)
    geom = Q.quadratic_geometry(m)
    v = Q.alpha_verdict(geom, R)
    assert not v.perfect and v.n_incorrect == 1 and v.n_above == 1 and v.n_below == 0
    assert v.inner_errors and not v.outer_errors
    max_logit, _ = Q.worst_case_logits(geom, R)
    assert max_logit == pytest.approx(2.0 * 0.3, rel=1e-5)
    x = sample_sphere(16, d, 1.0, generator=torch.Generator().manual_seed(4))
    y = torch.zeros(16, dtype=torch.int64)
    res = manifold_attack(m, x, y, steps=400, step_size=0.05, mode="worst")
    assert res.success.all()
    # converges to the exact worst point +-v_1 with the exact worst logit
    v1 = torch.as_tensor(geom.V[:, 0], dtype=torch.float32)
    assert torch.allclose((res.adv @ v1).abs(), torch.ones(16), atol=1e-3)
    torch.testing.assert_close(-res.margin, torch.full((16,), max_logit, dtype=torch.float32), rtol=1e-3, atol=1e-4)
    # nearest errors: the error set is |z_7| >= tau; the exact distance is the cap distance
    tau = math.sqrt((1 - 0.8) / (1.3 - 0.8))
    near = manifold_attack(m, x, y, steps=3000, step_size=0.002, mode="nearest")
    assert near.success.all()
    zi = (x.double() @ V[:, 7]).abs().clamp(max=1)
    exact = 2 * torch.sin((torch.acos(zi) - math.acos(tau)) / 2)
    assert (near.distance.double() >= exact - 1e-4).all()
    assert (near.distance.double() <= exact + 2 * 0.002 + 1e-4).all()


def test_alpha_below_inverse_r_squared_gives_outer_errors():
    alpha = np.full(12, 0.8)
    alpha[0] = 0.5
    m, _ = constructed(alpha, seed=5)
    v = Q.alpha_verdict(Q.quadratic_geometry(m), R)
    assert v.n_below == 1 and v.outer_errors and not v.inner_errors
    x = R * sample_sphere(8, 12, 1.0, generator=torch.Generator().manual_seed(6))
    res = manifold_attack(m, x, torch.ones(8, dtype=torch.int64), steps=300, step_size=0.05, mode="worst")
    assert res.success.all()


def test_narrow_hidden_layer_pads_zero_alphas():
    d, h = 10, 4
    m = QuadraticNet(d, h, w=1.0, b=-1.0)
    geom = Q.quadratic_geometry(m)
    assert geom.alpha.shape == (d,) and (geom.alpha[h:] == 0).all()
    v = Q.alpha_verdict(geom, R)
    assert not v.perfect and v.n_below >= d - h and v.outer_errors


def test_sign_of_b():
    alpha = np.full(6, 0.8)
    m, _ = constructed(alpha)
    with torch.no_grad():
        m.b.fill_(2.0)  # positive bias: inverted rule, never perfect
    assert not Q.alpha_verdict(Q.quadratic_geometry(m), R).perfect
    with torch.no_grad():
        m.b.fill_(0.0)
    with pytest.raises(AdvgeomError, match="b = 0"):
        Q.quadratic_geometry(m)


def test_error_rates_match_monte_carlo_on_the_model():
    d = 200
    alpha = np.clip(np.random.default_rng(0).normal(0.97, 0.3, d), 0, None)
    m, _ = constructed(alpha, seed=7)
    geom = Q.quadratic_geometry(m)
    rates = Q.error_rates(geom, R)
    x = sample_sphere(20000, d, 1.0, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        mc = float((m(x).squeeze(-1) > 0).double().mean())
    assert abs(rates["imhof_inner"] - mc) < 4 * math.sqrt(mc / 20000)
    assert rates["clt_inner"] == pytest.approx(T.clt_error_rate(alpha, "inner", R), rel=1e-4)


def test_perfect_init_and_training_divergence():
    torch.manual_seed(0)
    m = QuadraticNet(20, 40)
    Q.perfect_init(m, R, generator=torch.Generator().manual_seed(0))
    geom = Q.quadratic_geometry(m)
    assert Q.alpha_verdict(geom, R).perfect
    x = sample_sphere(5, 20, 1.0, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(torch.sigmoid(m(x)).squeeze(-1), torch.full((5,), 0.0016), atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.sigmoid(m(R * x)).squeeze(-1), torch.full((5,), 0.9994), atol=1e-5, rtol=0)
    rows = Q.track_training(m, R=R, steps=40, lr=1e-3, eval_every=20, n_eval=500,
                            generator=torch.Generator().manual_seed(2))
    assert [r["step"] for r in rows] == [0, 20, 40]
    assert rows[0]["perfect"] == 1.0 and rows[0]["n_incorrect"] == 0
    for r in rows:
        assert r["worst_loss"] >= r["average_loss"] > 0
    with pytest.raises(AdvgeomError, match="h >= d"):
        Q.perfect_init(QuadraticNet(10, 5), R)
