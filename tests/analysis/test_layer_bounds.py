"""Theorem 2: layer-wise l_inf growth bounded by eps * prod gamma_l
(sparsification-robustness.txt, Sec. 4)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advgeom.analysis.layer_bounds import (gamma_of, layer_gammas, random_relu_network,
                                           theorem2)
from advgeom.analysis.locally_linear import equivalent_weights
from advgeom.models.sparse_frontend import wrap_front_end
from advgeom.errors import AdvgeomError
from advgeom.models import create_model
from advgeom.models.base import Normalize


def test_gamma_is_max_row_l1() -> None:
    lin = nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2, 0, 0], [0.5, 0.5, 0.5, -0.5], [0, 0, 0, -3.5]]))
    assert gamma_of(lin) == 3.5
    conv = nn.Conv2d(2, 2, 3)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[1, 0, 0, 0], conv.weight[1, 1, 2, 2] = -2.0, 1.5
    assert gamma_of(conv) == 3.5
    assert gamma_of(Normalize([0.1, 0.2], [0.5, 0.25])) == 4.0


@pytest.mark.parametrize("keep", [1.0, 0.1])
def test_theorem2_holds_on_random_networks(keep: float) -> None:
    gen = torch.Generator().manual_seed(0)
    for trial in range(10):
        widths = [int(torch.randint(5, 60, (1,), generator=gen)) for _ in range(5)]
        net = random_relu_network(widths, generator=gen, keep=keep, scale=2.0).double()
        x = torch.rand(30, widths[0], generator=gen, dtype=torch.float64)
        eps = float(torch.rand((), generator=gen)) * 0.3
        w, _ = equivalent_weights(net, x)  # worst-case-like: follow the output's gradient
        perts = [eps * w[:, 0].sign(),
                 eps * (torch.rand(x.shape, generator=gen, dtype=torch.float64) * 2 - 1).sign()]
        for e in perts:
            rows = theorem2(net, x, x + e)
            assert [r.name for r in rows] == [n for n, _ in layer_gammas(net)]
            assert all(r.holds for r in rows), rows
            assert rows[0].measured > 0 or float(e.abs().max()) == 0


def test_bound_is_tight_for_one_layer() -> None:
    gen = torch.Generator().manual_seed(1)
    net = random_relu_network([20, 7], generator=gen).double()
    w = net[0].weight.detach()
    i = int(w.abs().sum(1).argmax())
    x = torch.rand(1, 20, generator=gen, dtype=torch.float64)
    (row,) = theorem2(net, x, x + 0.1 * w[i].sign())
    assert abs(row.ratio - 1.0) < 1e-12 and row.holds


def test_cnn_chain_and_sparse_weights_shrink_the_bound() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        net = create_model("nielsen_cnn4", fc_dim=32).double().eval()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    rows = theorem2(net, x, (x + 0.05).clamp(0, 1))
    assert [r.name for r in rows] == ["normalize", "body.conv1", "body.conv2", "body.fc1", "body.fc2", "head"]
    assert all(r.holds for r in rows)
    with torch.no_grad():
        net.body.fc1.weight.mul_(0.1)
    assert theorem2(net, x, (x + 0.05).clamp(0, 1))[3].bound < rows[3].bound


def test_unsupported_modules_raise() -> None:
    fe = wrap_front_end(create_model("fc2"), rho=0.05)
    with pytest.raises(AdvgeomError, match="not a supported"):
        layer_gammas(fe)
    with pytest.raises(AdvgeomError, match="not a supported"):
        layer_gammas(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)))
