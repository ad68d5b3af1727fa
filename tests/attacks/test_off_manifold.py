"""Off-manifold search (adversarial-spheres.txt Section 3): nearest point between the
spheres classified as the other class, checked on models whose answer is known."""
from __future__ import annotations

import math

import torch

from advgeom.attacks.manifold import predict
from advgeom.attacks.off_manifold import nearest_in_shell, project_ball_shell
from advgeom.data.spheres import sample_sphere
from advgeom.models.spheres import MaxMarginSphere, QuadraticNet


def test_max_margin_answer_is_the_margin():
    m = MaxMarginSphere(1.3)
    x = sample_sphere(6, 20, 1.0, generator=torch.Generator().manual_seed(0))
    res = nearest_in_shell(m, x, torch.zeros(6, dtype=torch.int64), r_min=1.0, r_max=1.3)
    assert res.found.all()
    torch.testing.assert_close(res.distance, torch.full((6,), 0.15), atol=2e-3, rtol=0)
    torch.testing.assert_close(res.norm, torch.full((6,), 1.15), atol=2e-3, rtol=0)
    out = nearest_in_shell(m, 1.3 * x, torch.ones(6, dtype=torch.int64), r_min=1.0, r_max=1.3)
    torch.testing.assert_close(out.distance, torch.full((6,), 0.15), atol=2e-3, rtol=0)
    torch.testing.assert_close(out.norm, torch.full((6,), 1.15), atol=2e-3, rtol=0)


def test_anisotropic_ellipsoid_found_closer_than_radially():
    """Boundary sum alpha_i z_i^2 = 1 with alpha_1 = 0.95 and the rest 0.65: moving
    toward axis 1 reaches the other class sooner than the radial point 1/sqrt(q)."""
    d = 10
    alpha = torch.full((d,), 0.65)
    alpha[0] = 0.95
    m = QuadraticNet(d, d, w=1.0, b=-1.0)
    with torch.no_grad():
        m.W1.copy_(torch.diag(alpha.sqrt()))
    m.eval()
    x = sample_sphere(8, d, 1.0, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(8, dtype=torch.int64)
    res = nearest_in_shell(m, x, y, r_min=1.0, r_max=1.3, bisection=12, steps=60)
    radial = ((x * x) @ alpha).rsqrt() - 1  # distance to the boundary along x
    assert res.found.all()
    assert (res.distance <= radial + 1e-4).all() and (res.distance < radial - 1e-3).any()
    with torch.no_grad():
        assert (predict(m, res.point) == 1).all()
    assert ((res.norm >= 1 - 1e-5) & (res.norm <= 1.3 + 1e-5)).all()
    # never closer than the exact lower bound: the boundary is outside the ball of radius
    # 1/sqrt(max alpha), so any outer point is at least 1/sqrt(0.95) - 1 away
    assert (res.distance >= 1 / math.sqrt(0.95) - 1 - 1e-4).all()


def test_nothing_found_when_the_model_is_always_inner():
    m = QuadraticNet(5, 5, w=1.0, b=-10.0)  # boundary far outside the shell
    with torch.no_grad():
        m.W1.copy_(torch.eye(5))
    x = sample_sphere(3, 5, 1.0, generator=torch.Generator().manual_seed(2))
    res = nearest_in_shell(m.eval(), x, torch.zeros(3, dtype=torch.int64), bisection=3, steps=10)
    assert not res.found.any() and torch.isinf(res.distance).all()


def test_projection_lands_in_the_intersection():
    g = torch.Generator().manual_seed(3)
    c = sample_sphere(50, 7, 1.0, generator=g)
    x = c + 0.5 * torch.randn(50, 7, generator=g)
    eps = torch.full((50,), 0.2)
    p = project_ball_shell(x, c, eps, 1.0, 1.3, rounds=20)
    r = p.norm(dim=1)
    assert ((r >= 1 - 1e-6) & (r <= 1.3 + 1e-6)).all()
    assert ((p - c).norm(dim=1) <= 0.2 + 1e-3).all()
