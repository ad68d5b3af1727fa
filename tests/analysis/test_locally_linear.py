"""Locally linear model and attacks (sparsification-robustness.txt, Sec. 3)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advgeom.analysis.locally_linear import equivalent_weights, linear_attenuation
from advgeom.attacks.locally_linear import locally_linear_attack
from advgeom.analysis.switches import count_flips
from advgeom.models.sparse_frontend import wrap_front_end
from advgeom.errors import AdvgeomError
from advgeom.models import create_model
from advgeom.nn.wavelet import SparsifyingFrontEnd
from advgeom.registry import get, names


def _seeded(name: str, seed: int, **kw) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(name, **kw).double().eval()


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    return _seeded("nielsen_cnn4", 0, fc_dim=64)


@pytest.fixture(scope="module")
def binary() -> nn.Module:
    return _seeded("fc2", 1)


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_equivalent_weights_reproduce_logits_and_local_linearity(cnn: nn.Module) -> None:
    x = _images(4, 0)
    w, b = equivalent_weights(cnn, x)
    assert w.shape == (4, 10, 1, 28, 28) and b.shape == (4, 10)
    y = cnn(x)
    torch.testing.assert_close((w * x[:, None]).flatten(2).sum(-1) - b, y)
    # a perturbation too small to flip any switch moves the logits exactly linearly
    e = 1e-7 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    assert all(int(f.sum()) == 0 for f in count_flips(cnn, x, x + e).flipped)
    torch.testing.assert_close(cnn(x + e) - y, (w * e[:, None]).flatten(2).sum(-1),
                               atol=1e-12, rtol=1e-6)


def test_multiclass_fgsm_gradient_formula(cnn: nn.Module) -> None:
    """grad CE = w_t (p_t - 1) + sum_{k != t} p_k w_k (the paper's Sec. 3.6 expression)."""
    x, t = _images(3, 2), torch.tensor([0, 4, 9])
    w, _ = equivalent_weights(cnn, x)
    p = cnn(x).softmax(1)
    coef = p - F.one_hot(t, 10).to(p)
    expected = (coef[:, :, None, None, None] * w).sum(1)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(cnn(xr), t, reduction="sum"), xr)
    torch.testing.assert_close(g, expected)


def _fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
    return (x + eps * g.sign()).clamp(0, 1)


def test_semi_white_equals_fgsm_on_binary_models(binary: nn.Module) -> None:
    x = _images(16, 3)
    y = torch.randint(0, 2, (16,), generator=torch.Generator().manual_seed(4))
    adv = locally_linear_attack(binary, x, y, eps=0.1)
    torch.testing.assert_close(adv, _fgsm(binary, x, y, 0.1), atol=0, rtol=0)
    if "fgsm" in names("attack"):
        ref = get("attack", "fgsm")(binary, x, y, eps=0.1)
        torch.testing.assert_close(adv, ref, atol=1e-6, rtol=0)  # same signs (fgsm rounds eps)
    # a single-logit binary model ([0, z] lifting) gives the same attack
    single = nn.Sequential(binary, nn.Linear(2, 1, bias=False).double())
    with torch.no_grad():
        single[1].weight.copy_(torch.tensor([[-1.0, 1.0]]))
    adv1 = locally_linear_attack(single, x, y, eps=0.1)
    torch.testing.assert_close(adv1, adv, atol=0, rtol=0)


def test_single_step_picks_the_worst_pair(cnn: nn.Module) -> None:
    x, y = _images(6, 5), torch.tensor([1, 2, 3, 4, 5, 6])
    eps = 0.05
    adv = locally_linear_attack(cnn, x, y, eps=eps)
    w, _ = equivalent_weights(cnn, x)
    for b in range(6):
        cands, scores = [], []
        for i in range(10):
            if i == y[b]:
                continue
            c = (x[b] + eps * (w[b, i] - w[b, y[b]]).sign()).clamp(0, 1)
            with torch.no_grad():
                z = cnn(c[None])[0]
            cands.append(c)
            scores.append(float(z[i] - z[y[b]]))
        best = max(range(len(scores)), key=scores.__getitem__)
        torch.testing.assert_close(adv[b], cands[best], atol=0, rtol=0)


def test_iterative_on_linear_model_and_ball(cnn: nn.Module) -> None:
    lin = nn.Sequential(nn.Flatten(), nn.Linear(784, 3)).double().eval()
    x, y = _images(5, 6), torch.tensor([0, 1, 2, 0, 1])
    one = locally_linear_attack(lin, x, y, eps=0.1)
    many = locally_linear_attack(lin, x, y, eps=0.1, steps=10, step_size=0.02)
    torch.testing.assert_close(many, one, atol=1e-12, rtol=0)  # constant sign: same point
    adv = locally_linear_attack(cnn, x, y, eps=0.07, steps=8, step_size=0.01)
    assert float((adv - x).abs().max()) <= 0.07 + 1e-12
    assert 0 <= float(adv.min()) and float(adv.max()) <= 1


def test_white_box_uses_adjoint_projection() -> None:
    torch.manual_seed(7)
    base = nn.Sequential(nn.Flatten(), nn.Linear(784, 2)).double().eval()
    base.num_classes, base.input_shape = 2, (1, 28, 28)
    model = wrap_front_end(base, wavelet="bior4.4", rho=0.2).double()
    x, y = _images(3, 8) * 0.5 + 0.25, torch.tensor([0, 1, 1])
    fe: SparsifyingFrontEnd = model.front_end
    w = base[1].weight.detach()
    sign = torch.where(y == 0, 1.0, -1.0).double()[:, None, None, None]
    direction = sign * (w[1] - w[0]).view(1, 1, 28, 28).expand_as(x)
    for projection, adjoint in (("adjoint", True), ("paper", False)):
        adv = locally_linear_attack(model, x, y, eps=0.05, mode="white", projection=projection)
        expected = (x + 0.05 * fe.project(direction, x, adjoint=adjoint).sign()).clamp(0, 1)
        torch.testing.assert_close(adv, expected, atol=0, rtol=0)
    semi = locally_linear_attack(model, x, y, eps=0.05)
    torch.testing.assert_close(semi, (x + 0.05 * direction.sign()).clamp(0, 1), atol=0, rtol=0)


def test_bad_arguments() -> None:
    lin = nn.Sequential(nn.Flatten(), nn.Linear(784, 3)).eval()
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([0, 1])
    with pytest.raises(AdvgeomError, match="mode"):
        locally_linear_attack(lin, x, y, eps=0.1, mode="black")
    attack = get("attack", "locally_linear")
    with pytest.raises(AdvgeomError):
        attack(lin, x, y, eps=0.1, norm="l2")
    with pytest.raises(AdvgeomError):
        attack(lin, x, y, eps=0.1, targeted=True)
    with pytest.raises(AdvgeomError):
        get("attack", "locally_linear_iterative")(lin, x, y, eps=0.1, steps=0)


def test_registered_wrappers_match_the_analysis_function() -> None:
    lin = nn.Sequential(nn.Flatten(), nn.Linear(784, 3), nn.ReLU(), nn.Linear(3, 3)).eval()
    x, y = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0])
    one = get("attack", "locally_linear")(lin, x, y, eps=0.1)
    torch.testing.assert_close(one, locally_linear_attack(lin, x, y, eps=0.1), atol=0, rtol=0)
    with pytest.raises(AdvgeomError, match="does not use steps"):  # single step: refused, not ignored
        get("attack", "locally_linear")(lin, x, y, eps=0.1, steps=7)
    it = get("attack", "locally_linear_iterative")(lin, x, y, eps=0.1, steps=5, step_size=0.03)
    torch.testing.assert_close(it, locally_linear_attack(lin, x, y, eps=0.1, steps=5, step_size=0.03),
                               atol=0, rtol=0)


@pytest.mark.parametrize("wavelet", ["db4", "bior4.4"])
def test_linear_classifier_attenuation_is_k_over_n(wavelet: str) -> None:
    """Sec. 3.1: E[Delta_SW] / E[eps ||w||_1] = K/N behind a K-term projection."""
    gen = torch.Generator().manual_seed(9)
    fe = SparsifyingFrontEnd(wavelet, 1, 0.1, (28, 28))
    support_of = _images(1, 10)  # a fixed K-dimensional support
    w = torch.randn(4000, 1, 28, 28, generator=gen, dtype=torch.float64)
    at = support_of.expand_as(w)
    r = linear_attenuation(lambda v: fe.project(v, at), w,
                           adjoint_project=lambda v: fe.project(v, at, adjoint=True))
    k_over_n = fe.k / fe.n
    assert abs(float(r["semi_white"].mean()) / k_over_n - 1) < 0.1
    assert float(r["white"].mean()) > float(r["semi_white"].mean())
