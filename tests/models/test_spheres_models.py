"""Models of adversarial-spheres.txt: the ReLU MLPs and the quadratic network (eq. 1)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advgeom.errors import AdvgeomError
from advgeom.models import create_model
from advgeom.models.spheres import MaxMarginSphere, QuadraticNet


def test_relu_mlp_structure_and_shapes():
    torch.manual_seed(0)
    m = create_model("relu_mlp", input_dim=12, width=16, depth=3)
    bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm1d)]
    lins = [mod for mod in m.modules() if isinstance(mod, nn.Linear)]
    assert len(bns) == 3 and len(lins) == 4  # batch norm on hidden layers, not on the readout
    assert isinstance(m.head, nn.Linear) and m.head.out_features == 1
    assert m.num_classes == 2 and m.num_outputs == 1 and m.input_shape == (12,)
    x = torch.randn(5, 12) * 1.3  # sphere coordinates are not in [0,1]
    assert m.eval()(x).shape == (5, 1)
    n_params = sum(p.numel() for p in m.parameters())
    assert n_params == (12 * 16 + 16) + 2 * (16 * 16 + 16) + 3 * 2 * 16 + (16 + 1)
    plain = create_model("relu_mlp", input_dim=4, width=8, depth=2, batch_norm=False, num_outputs=2)
    assert not any(isinstance(mod, nn.BatchNorm1d) for mod in plain.modules())
    assert plain(torch.randn(3, 4)).shape == (3, 2)


def test_large_relu_parameter_count_matches_paper():
    """Relu-h2000-d8 at d = 500 has "over 29 million parameters" (Section 5); counted
    from the layer shapes without building it."""
    d, w, depth = 500, 2000, 8
    count = (d * w + w) + (depth - 1) * (w * w + w) + depth * 2 * w + (w + 1)
    assert 29_000_000 < count < 30_000_000


def test_quadratic_net_is_eq1():
    torch.manual_seed(1)
    m = create_model("quadratic_net", input_dim=7, hidden=11)
    assert isinstance(m, QuadraticNet)
    assert sum(p.numel() for p in m.parameters()) == 7 * 11 + 2
    assert m.W1.shape == (11, 7) and m.body[0].bias is None
    with torch.no_grad():
        m.w.fill_(0.7)
        m.b.fill_(-0.3)
    x = torch.randn(6, 7, dtype=torch.float32)
    expected = 0.7 * ((x @ m.W1.T) ** 2).sum(1) - 0.3
    torch.testing.assert_close(m(x).squeeze(-1), expected)
    torch.testing.assert_close(m.features(x), (x @ m.W1.T) ** 2)


def test_quadratic_default_init_puts_boundary_near_max_margin():
    torch.manual_seed(0)
    m = create_model("quadratic_net", input_dim=200, hidden=400)
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2000, 200, generator=g)
    u = u / u.norm(dim=1, keepdim=True)
    with torch.no_grad():
        inner, outer = m(u).mean(), m(1.3 * u).mean()
    assert inner < 0 < outer


def test_bad_arguments():
    with pytest.raises(AdvgeomError, match="width"):
        create_model("relu_mlp", width=0)
    with pytest.raises(AdvgeomError, match="hidden"):
        create_model("quadratic_net", hidden=-2)
    with pytest.raises(AdvgeomError, match="init_radius"):
        create_model("quadratic_net", init_radius=0.0)
    with pytest.raises(AdvgeomError, match="batch_norm"):
        create_model("relu_mlp", batch_norm="yes")


def test_max_margin_reference():
    m = MaxMarginSphere(R=1.3)
    assert not m.training
    x = torch.randn(4, 9)
    x = x / x.norm(dim=1, keepdim=True)
    r = torch.tensor([1.0, 1.14, 1.16, 1.3])[:, None]
    assert ((m(x * r).squeeze(-1) > 0).long()).tolist() == [0, 0, 1, 1]
