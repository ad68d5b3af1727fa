"""SphereCorr layers (hyperspherical-defense.txt Section 4.1): each operator against a
direct per-patch computation with unfold, bounds, finite gradients at theta = 0, pi and
x = 0, the heads' logits by hand, the orthogonality regularizer by hand, bad configs."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from advgeom.errors import ConfigError
from advgeom.nn.sphere import (NORM_EPS, OPERATORS, SphereConv2d, SphereHead, SphereLinear,
                               orthogonality, orthogonality_penalty)


def g_by_hand(cos: torch.Tensor, norm: torch.Tensor, op: str, a: float = 1.0, k: float = 0.3):
    theta = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
    if op == "cosine":
        return cos
    if op == "linear":
        return 1 - 2 * theta / math.pi
    if op == "sigmoid":
        c = math.pi / (2 * k)
        return ((1 + math.exp(-c)) / (1 - math.exp(-c))) * (1 - torch.exp(theta / k - c)) \
            / (1 + torch.exp(theta / k - c))
    if op == "quadratic":
        return 1 - a * (1 - cos) ** 2
    return torch.minimum(norm, torch.ones_like(norm)) * cos


@pytest.mark.parametrize("op", OPERATORS)
def test_conv_matches_explicit_patches(op):
    torch.manual_seed(0)
    layer = SphereConv2d(2, 3, 3, stride=2, padding=1, operator=op, a=0.7)
    x = torch.rand(2, 2, 7, 7) * 0.6
    out = layer(x)
    patches = F.unfold(x, 3, padding=1, stride=2).transpose(1, 2)          # (N, L, 18)
    w = layer.weight.flatten(1)                                            # (3, 18)
    pn = (patches.pow(2).sum(-1, keepdim=True) + NORM_EPS).sqrt()
    wn = (w.pow(2).sum(-1) + NORM_EPS).sqrt()
    cos = patches @ w.T / (pn * wn)
    expect = g_by_hand(cos, pn, op, a=0.7).transpose(1, 2).reshape(2, 3, 4, 4)
    torch.testing.assert_close(out, expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", OPERATORS)
def test_linear_matches_formula_and_is_bounded(op):
    torch.manual_seed(1)
    layer = SphereLinear(5, 4, operator=op)
    x = torch.randn(8, 5) * 3
    xn = (x.pow(2).sum(1, keepdim=True) + NORM_EPS).sqrt()
    wn = (layer.weight.pow(2).sum(1) + NORM_EPS).sqrt()
    cos = x @ layer.weight.T / (xn * wn)
    out = layer(x)
    torch.testing.assert_close(out, g_by_hand(cos, xn, op))
    low = -3.0 if op == "quadratic" else -1.0  # quadratic: 1 - a (1 - cos)^2 >= 1 - 4a
    assert out.max() <= 1.0 + 1e-6 and out.min() >= low - 1e-6


def test_operator_values_at_key_angles():
    cos = torch.tensor([1.0, 0.0, -1.0])
    one = torch.ones(3)
    lin = g_by_hand(cos, one, "linear")
    torch.testing.assert_close(lin, torch.tensor([1.0, 0.0, -1.0]), atol=2e-3, rtol=0)
    sig = SphereLinear(2, 1, operator="sigmoid")._g(cos, one)
    assert abs(float(sig[0]) - 1) < 1e-2 and abs(float(sig[1])) < 1e-6 and sig[2] < 0
    quad = SphereLinear(2, 1, operator="quadratic")._g(cos, one)
    torch.testing.assert_close(quad, torch.tensor([1.0, 0.0, -3.0]))
    trunc = SphereLinear(2, 1, operator="truncated")._g(cos, torch.tensor([0.5, 2.0, 0.25]))
    torch.testing.assert_close(trunc, torch.tensor([0.5, 0.0, -0.25]))


@pytest.mark.parametrize("op", OPERATORS)
def test_gradients_finite_at_theta_0_pi_and_zero_input(op):
    layer = SphereLinear(3, 2, operator=op, learn_k=True)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    x = torch.tensor([[2.0, 0.0, 0.0], [-2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    layer(x).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(layer.weight.grad).all()
    conv = SphereConv2d(1, 2, 3, padding=1, operator=op)
    z = torch.zeros(1, 1, 5, 5, requires_grad=True)
    conv(z).sum().backward()
    assert torch.isfinite(z.grad).all() and torch.isfinite(conv.weight.grad).all()


def test_learnable_k_is_a_parameter_only_when_asked():
    assert isinstance(SphereLinear(2, 2, operator="sigmoid", learn_k=True).k, torch.nn.Parameter)
    assert not isinstance(SphereLinear(2, 2, operator="sigmoid").k, torch.nn.Parameter)


def test_head_logits_by_hand():
    torch.manual_seed(2)
    x = torch.randn(4, 6)
    w_soft = SphereHead(6, 3, scale="norm")
    w = w_soft.weight.detach()
    unit = w / w.norm(dim=1, keepdim=True)
    # W-Softmax (eq. 4): ||x|| cos(theta) = x . W_j / ||W_j||
    torch.testing.assert_close(w_soft(x), x @ unit.T, rtol=1e-4, atol=1e-5)
    wm = SphereHead(6, 3, scale="multiplier", alpha=2.5)
    with torch.no_grad():
        wm.weight.copy_(w)
        wm.alpha.fill_(-2.5)  # eq. 6 uses |alpha|
    cos = (x @ unit.T) / x.norm(dim=1, keepdim=True)
    torch.testing.assert_close(wm(x), 2.5 * cos, rtol=1e-4, atol=1e-5)
    assert wm.penalty().item() == 2.5 and w_soft.penalty().item() == 0.0
    none = SphereHead(6, 3, scale="none")
    with torch.no_grad():
        none.weight.copy_(w)
    torch.testing.assert_close(none(x), cos, rtol=1e-4, atol=1e-5)


def test_orthogonality_by_hand():
    w = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    # gram = [[1,1,0],[1,2,2],[0,2,4]] - I -> [[0,1,0],[1,1,2],[0,2,3]]: 1+1+1+4+4+9 = 20
    assert float(orthogonality(w)) == pytest.approx(20.0)
    conv = SphereConv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 0.0]).view(2, 1, 1, 1))
    # kernels (1) and (0): gram [[1,0],[0,0]] - I -> one -1 entry
    assert float(orthogonality(conv.weight.detach())) == pytest.approx(1.0)
    model = torch.nn.Sequential(conv, torch.nn.Linear(2, 2), SphereLinear(2, 2))
    lin = model[2].weight.detach()
    expect = 1.0 + float(((lin @ lin.T) - torch.eye(2)).pow(2).sum())
    assert orthogonality_penalty(model).item() == pytest.approx(expect, rel=1e-5)
    assert float(orthogonality_penalty(torch.nn.Linear(2, 2))) == 0.0


@pytest.mark.parametrize("kwargs,match", [({"operator": "cubic"}, "operator"), ({"a": 0.0}, "a must"),
                                          ({"a": -1.0}, "a must"), ({"k": 0}, "k must")])
def test_bad_configs_are_one_clear_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SphereLinear(3, 2, **kwargs)


def test_head_rejects_bad_scale_and_annealing_without_norm():
    with pytest.raises(ConfigError, match="scale"):
        SphereHead(3, 2, scale="huge")
    with pytest.raises(ConfigError, match="annealing"):
        SphereHead(3, 2, scale="multiplier", annealed=True)


@pytest.mark.parametrize("operator", ["linear", "sigmoid"])
def test_aligned_inputs_keep_a_finite_nonzero_gradient(operator):
    """An input parallel to the kernel (cos = 1, theta under 1.4e-3 rad) gets the gradient
    of the clamp's limit, not zero (issue 28: a plain clamp zeroed it)."""
    from advgeom.nn.sphere import COS_LIMIT, sphere_corr

    cos = torch.tensor([1.0, COS_LIMIT, 0.5, -1.0], dtype=torch.float64, requires_grad=True)
    sphere_corr(cos, torch.ones(4, dtype=torch.float64), operator).sum().backward()
    g = cos.grad
    assert torch.isfinite(g).all() and (g != 0).all()
    assert g[0] == g[1]                       # the clamp's limit, passed straight through
    assert sphere_corr(torch.tensor([1.0], dtype=torch.float64), torch.ones(1), operator) == \
        sphere_corr(torch.tensor([COS_LIMIT], dtype=torch.float64), torch.ones(1), operator)
