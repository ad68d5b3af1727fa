"""BPDA and EOT wrappers: exact forward values, substituted/averaged gradients,
and PGD through BPDA breaks a quantized front end that masks gradients."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advgeom.attacks.wrappers import bpda, eot
from advgeom.errors import AdvgeomError
from advgeom.registry import get


def quantize(x):
    return torch.round(x * 7) / 7


def test_bpda_forward_exact_backward_identity(make_linear):
    p = make_linear(2, n=30, dtype=torch.float32)
    wrapped = bpda(p.model, quantize)
    assert not wrapped.training
    x = p.x.clone().requires_grad_(True)
    out = wrapped(x)
    assert torch.equal(out, p.model(quantize(p.x)))
    (g,) = torch.autograd.grad(out[:, 0].sum(), x)
    assert torch.allclose(g, p.model.weight[0].expand_as(g))  # identity backward


def test_bpda_custom_approx():
    model = nn.Identity()
    wrapped = bpda(model, lambda v: v.clamp(0, 0.5), approx=lambda v: 2 * v)
    x = torch.rand(4, 3, requires_grad=True)
    out = wrapped(x)
    assert torch.equal(out, x.detach().clamp(0, 0.5))
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.allclose(g, torch.full_like(g, 2.0))
    with pytest.raises(AdvgeomError):
        bpda(model, lambda v: v[:, :1], approx=None)(x)


def test_pgd_through_bpda_breaks_quantized_model(make_linear):
    p = make_linear(2, n=100, dtype=torch.float32)

    class Quantized(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = p.model

        def forward(self, x):
            return self.inner(quantize(x))

    model = Quantized().eval()
    with torch.no_grad():
        y = model(p.x).argmax(1)
    pgd = get("attack", "pgd")
    exact = pgd(model, p.x, y, eps=0.15, steps=10, random_start=False)
    through = pgd(bpda(p.model, quantize), p.x, y, eps=0.15, steps=10, random_start=False)
    with torch.no_grad():
        assert (model(exact).argmax(1) != y).double().mean() == 0.0
        assert (model(through).argmax(1) != y).double().mean() > 0.5


class Noisy(nn.Module):
    """Adds noise from its own generator to the logits (a randomized model)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.g = torch.Generator().manual_seed(0)

    def forward(self, x):
        z = self.inner(x)
        return z + torch.randn(z.shape, generator=self.g, dtype=z.dtype)


def test_eot_averages(make_linear):
    p = make_linear(5, n=20, dtype=torch.float32)
    noisy = Noisy(p.model).eval()
    wrapped = eot(noisy, samples=400)
    with torch.no_grad():
        avg = wrapped(p.x)
    assert (avg - p.model(p.x)).abs().max() < 0.25  # noise sd 1/sqrt(400) = 0.05
    with torch.no_grad():
        logp = eot(noisy, samples=5, average="probs")(p.x)
    assert torch.allclose(logp.exp().sum(1), torch.ones(20), atol=1e-5)
    with pytest.raises(AdvgeomError):
        eot(noisy, samples=0)
    with pytest.raises(AdvgeomError):
        eot(noisy, average="median")


def test_wrappers_keep_mode(make_linear):
    p = make_linear(2, n=5, dtype=torch.float32)
    p.model.train()
    try:
        assert bpda(p.model, quantize).training and eot(p.model).training
    finally:
        p.model.eval()
