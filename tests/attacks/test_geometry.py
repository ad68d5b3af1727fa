"""Projections, steepest-ascent directions and random starts."""
from __future__ import annotations

import torch

from advgeom.attacks._geometry import (ascent_direction, flat_norm, project, random_start)
from advgeom.seeding import make_generator

G = make_generator(0)


def test_l2_projection_is_exact_inside_box():
    x = torch.full((3, 5), 0.5, dtype=torch.float64)
    d = torch.randn(3, 5, generator=G, dtype=torch.float64) * 0.1
    eps = torch.tensor([0.01, 0.05, 10.0], dtype=torch.float64)
    out = project(x, x + d, eps, "l2")
    n = flat_norm(out - x, "l2")
    assert torch.allclose(n[:2], eps[:2])
    assert torch.allclose(out[2], x[2] + d[2])                       # inside: unchanged
    cos = torch.nn.functional.cosine_similarity(out - x, d, dim=1)  # direction kept
    assert torch.allclose(cos, torch.ones(3, dtype=torch.float64))


def test_projections_respect_box_and_ball():
    x = torch.rand(50, 1, 4, 4, generator=G)
    far = x + torch.randn(x.shape, generator=G) * 3
    eps = torch.rand(50, generator=G) * 0.3
    for norm in ("linf", "l2"):
        out = project(x, far, eps, norm)
        assert out.min() >= 0 and out.max() <= 1
        assert (flat_norm(out - x, norm) <= eps + 1e-6).all()
    lin = project(x, far, eps, "linf")
    expect = torch.minimum(torch.maximum(far, x - eps.view(-1, 1, 1, 1)), x + eps.view(-1, 1, 1, 1))
    assert torch.equal(lin, expect.clamp(0, 1))


def test_ascent_directions():
    g = torch.tensor([[3.0, -4.0, 0.0]])
    assert torch.equal(ascent_direction(g.clone(), "linf"), torch.tensor([[1.0, -1.0, 0.0]]))
    assert torch.allclose(ascent_direction(g.clone(), "l2"), torch.tensor([[0.6, -0.8, 0.0]]))


def test_random_starts_inside_ball_and_reproducible():
    x = torch.rand(200, 8, generator=G) * 0.5 + 0.25
    eps = torch.full((200,), 0.2)
    for norm in ("linf", "l2"):
        a = random_start(x, eps, norm, make_generator(5))
        b = random_start(x, eps, norm, make_generator(5))
        assert torch.equal(a, b)
        n = flat_norm(a - x, norm)
        assert (n <= 0.2 + 1e-6).all() and n.mean() > 0.05
    s = random_start(x, eps, "l2", make_generator(5), l2_radius="sphere")
    assert torch.allclose(flat_norm(s - x, "l2"), eps, atol=1e-6)
    # clip=False: the same draw, not clipped to [0,1] (x at 0: half the linf start is negative)
    zero = torch.zeros(200, 8)
    for norm in ("linf", "l2"):
        raw = random_start(zero, eps, norm, make_generator(5), clip=False)
        assert float(raw.min()) < 0.0
        assert torch.equal(raw.clamp(0.0, 1.0), random_start(zero, eps, norm, make_generator(5)))
        assert (flat_norm(raw, norm) <= 0.2 + 1e-6).all()
