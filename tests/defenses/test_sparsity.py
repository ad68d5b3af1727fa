"""Sparsity defenses: the l1 objective and the sparse_frontend model
(sparsification-robustness.txt, Sec. 2, 4, 5)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advgeom.analysis.layer_bounds import layer_gammas
from advgeom.defenses.sparsity import l1_penalty, weight_sparsity
from advgeom.models.sparse_frontend import SparseFrontendModel
from advgeom.errors import ConfigError
from advgeom.models import create_model
from advgeom.registry import create


def _fc2(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model("fc2")


def test_l1_objective_value() -> None:
    model = _fc2()
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 2, (8,), generator=torch.Generator().manual_seed(1))
    obj = create("defense", "l1", lam=0.01)
    w1, w2 = model.body.fc1.weight, model.head.weight
    expected = F.cross_entropy(model(x), y) + 0.01 * (w1.abs().sum() + w2.abs().sum())
    torch.testing.assert_close(obj(model, x, y, generator=None), expected)
    torch.testing.assert_close(l1_penalty(model), w1.abs().sum() + w2.abs().sum())
    with pytest.raises(ConfigError):
        create("defense", "l1", lam=-1.0)


def test_l1_training_shrinks_gamma_and_weights() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(256, 1, 28, 28, generator=gen)
    y = (x[:, 0, :14].mean((1, 2)) > x[:, 0, 14:].mean((1, 2))).long()
    result = {}
    for lam in (0.0, 0.01):
        model, obj = _fc2(3), create("defense", "l1", lam=lam)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        for _ in range(100):
            opt.zero_grad()
            obj(model, x, y, generator=None).backward()
            opt.step()
        result[lam] = ([g for _, g in layer_gammas(model)], weight_sparsity(model))
    assert result[0.01][0][1] < 0.5 * result[0.0][0][1]   # gamma of fc1 (after normalize)
    assert result[0.01][1][0] < result[0.0][1][0]          # fewer non-negligible weights


def test_sparse_frontend_model_forward_and_state() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        model = create_model("sparse_frontend", base="fc2", rho=0.05).eval()
    assert isinstance(model, SparseFrontendModel) and model.num_classes == 2
    assert model.front_end.k == 39
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(model(x), model.base(model.front_end(x)))
    torch.testing.assert_close(model.head(model.features(x)), model(x))
    assert set(model.state_dict()) == {"normalize.1." + k for k in model.base.normalize.state_dict()} | {
        f"{part}.{k}" for part in ("body", "head") for k in getattr(model.base, part).state_dict()}
    assert model.normalize[0] is model.front_end and model.base.body is model.body
    bp = model.with_bpda()
    assert bp.front_end.bpda and not model.front_end.bpda and bp.base is model.base
    torch.testing.assert_close(bp(x), model(x))
    xr = x.clone().requires_grad_(True)
    (g_exact,) = torch.autograd.grad(model(xr)[:, 1].sum(), xr)
    (g_bpda,) = torch.autograd.grad(bp(xr)[:, 1].sum(), xr)
    h = model.front_end(x).requires_grad_(True)
    (g_at_h,) = torch.autograd.grad(model.base(h)[:, 1].sum(), h)
    torch.testing.assert_close(g_bpda, g_at_h)  # BPDA: base gradient at the sparsified input
    fe = model.front_end
    pre = fe.transform.synthesis(fe.mask(x) * fe.transform.analysis(x))  # before clipping
    inside = ((pre >= 0) & (pre <= 1)).float()
    torch.testing.assert_close(g_exact, fe.project(g_at_h * inside, x, adjoint=True))
    assert not torch.allclose(g_exact, g_bpda)


def test_sparse_frontend_bad_args() -> None:
    with pytest.raises(ConfigError):
        create_model("sparse_frontend", base="fc2", rhoo=0.1)
    with pytest.raises(ConfigError):
        create_model("sparse_frontend", base="sparse_frontend")
    with pytest.raises(ConfigError):
        create_model("sparse_frontend", base="fc2", level=3)
