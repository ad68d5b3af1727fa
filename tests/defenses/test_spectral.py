"""Spectral norm regularizers and l2 PGA training (spectral-norm-adversarial-training.txt)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advgeom.analysis.jacobian import jacobians, power_method, spectrum
from advgeom.defenses.base import Loss
from advgeom.defenses.spectral import (LayerOperator, data_penalty, input_shapes, operator_sigma, pga,
                                       theorem1_gap)
from advgeom.errors import AdvgeomError, ConfigError
from advgeom.registry import create

torch.set_default_dtype(torch.float32)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mlp(seed: int = 0, dims: tuple[int, ...] = (12, 16, 16, 4)) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers += [nn.Linear(dims[i], dims[i + 1]), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).double()


@pytest.mark.parametrize("shape", [(5, 7), (20, 3), (9, 9)])
def test_power_method_matches_svdvals_on_random_matrices(shape):
    lin = nn.Linear(shape[1], shape[0]).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(shape, generator=_gen(1), dtype=torch.float64))
    op = LayerOperator(lin, "reshape", None)
    v = torch.randn(shape[1], generator=_gen(2), dtype=torch.float64)
    sigma, _ = operator_sigma(op, lin.weight.detach(), v / v.norm(), iters=500)
    ref = torch.linalg.svdvals(lin.weight.detach())[0]
    assert abs(float(sigma) - float(ref)) / float(ref) < 1e-3


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (1, 0)])
def test_conv_operator_norm_matches_dense_matrix(stride, padding):
    torch.manual_seed(3)
    conv = nn.Conv2d(2, 3, 3, stride=stride, padding=padding).double()
    shape = (2, 7, 7)
    op = LayerOperator(conv, "operator", shape)
    w = conv.weight.detach()
    dense = torch.stack([op.forward(w, e) for e in torch.eye(98, dtype=torch.float64)], 1)
    # the adjoint really is the transpose
    a, b = torch.randn(98, dtype=torch.float64), torch.randn(dense.shape[0], dtype=torch.float64)
    assert torch.allclose(op.adjoint(w, b), dense.T @ b, atol=1e-10)
    assert torch.allclose(op.forward(w, a) @ b, a @ op.adjoint(w, b), atol=1e-10)  # <Aa, b> = <a, A*b>
    v = torch.randn(98, generator=_gen(4), dtype=torch.float64)
    sigma, _ = operator_sigma(op, w, v / v.norm(), iters=500)
    ref = torch.linalg.svdvals(dense)[0]
    assert abs(float(sigma) - float(ref)) / float(ref) < 1e-3
    # the reshaped kernel is a different (Yoshida & Miyato) quantity
    reshaped = torch.linalg.svdvals(w.reshape(3, -1))[0]
    assert not torch.isclose(reshaped, ref, rtol=1e-3)


def test_input_shapes_records_each_conv():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 3, 3))
    shapes = input_shapes(net, torch.rand(2, 1, 8, 8))
    assert list(shapes.values()) == [(1, 8, 8), (2, 4, 4)]


def test_global_snr_penalty_is_half_sum_of_squared_sigmas_and_state_persists():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    obj = create("defense", "global_snr", lam=0.5, init_iters=300)
    x, y = torch.rand(4, 1, 2, 4), torch.tensor([0, 1, 2, 0])
    out = obj(net, x, y, generator=_gen())
    assert isinstance(out, Loss)
    ref = 0.5 * sum(float(torch.linalg.svdvals(m.weight.detach())[0]) ** 2
                    for m in net if isinstance(m, nn.Linear))
    assert abs(float(out.terms["sum_sigma2_half"]) - ref) / ref < 1e-3
    first = [v.clone() for _, v in obj.state.values()]
    obj(net, x, y, generator=_gen(9))  # a later step continues from the stored vectors
    assert all(torch.allclose(a, v, atol=1e-4) for a, (_, v) in zip(first, obj.state.values()))
    # its gradient is lam * sigma * u v^T per layer (the paper's remark after Eq. 6)
    net.zero_grad()
    obj.lam = 1.0
    sig = obj.sigmas(net, x)
    (0.5 * sum(s * s for s in sig)).backward()
    w = net[1].weight
    u_, s_, vh = torch.linalg.svd(w.detach())
    expected = s_[0] * torch.outer(u_[:, 0], vh[0])
    assert torch.allclose(w.grad, expected, atol=1e-3)


def test_global_snr_operator_mode_on_conv_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
    obj = create("defense", "global_snr", conv="operator", init_iters=300)
    out = obj(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), generator=_gen())
    out.total.backward()
    assert net[0].weight.grad is not None and torch.isfinite(out.total)


def test_data_snr_variants_agree_in_the_linear_regime():
    net = _mlp()
    x = torch.randn(5, 12, generator=_gen(5), dtype=torch.float64)
    params = list(net.parameters())
    grads, values = [], []
    for variant in ("sos", "jacobian"):
        pen, sigma = data_penalty(net, x, eps=1e-5, iters=30, variant=variant, generator=_gen(6))
        g = torch.autograd.grad(pen.mean(), params, allow_unused=True)
        grads.append(torch.cat([(t if t is not None else torch.zeros_like(p)).reshape(-1)
                                for t, p in zip(g, params)]))
        values.append(pen)
    assert torch.allclose(values[0], values[1], rtol=1e-6)
    assert float((grads[0] - grads[1]).norm() / grads[1].norm()) < 1e-5
    # and the penalty is eps^2 sigma_max^2 once the power method has converged
    s = spectrum(jacobians(net, x))[:, 0]
    assert torch.allclose(values[1], (1e-5 * s) ** 2, rtol=1e-3)


def _certified_net() -> tuple[nn.Module, torch.Tensor, float]:
    """A one-hidden-layer ReLU net and points whose eps-balls stay in one activation
    region for eps below the returned radius (min |pre-activation| / ||row||)."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(10, 24), nn.ReLU(), nn.Linear(24, 4)).double()
    x = torch.randn(6, 10, generator=_gen(7), dtype=torch.float64)
    pre = net[0](x)
    radius = float((pre.detach().abs() / net[0].weight.detach().norm(dim=1)).min())
    return net, x, radius


def test_theorem1_pga_gradient_converges_to_data_snr_gradient():
    net, x, radius = _certified_net()
    eps = 0.5 * radius
    gaps = [theorem1_gap(net, x, eps=eps, alpha=f * eps, iters=10, generator=_gen(8))
            for f in (1.0, 10.0, 1e3, 1e6)]
    assert all(a > b for a, b in zip(gaps, gaps[1:]))
    assert gaps[-1] < 1e-5
    # far outside the activation region the equivalence fails
    assert theorem1_gap(net, x, eps=200 * radius, alpha=1e6, iters=10, generator=_gen(8)) > 1e-2


def test_pga_stays_in_the_l2_ball_and_box():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    for loss in ("ce", "sos"):
        adv = pga(net, x, y, eps=0.7, iters=5, alpha=0.3, loss=loss, generator=_gen())
        assert float((adv - x).flatten(1).norm(dim=1).max()) <= 0.7 + 1e-5
        assert adv.min() >= 0 and adv.max() <= 1


@pytest.mark.parametrize("name,kw", [("pga_at", {"eps": 0.5, "iters": 2}),
                                     ("pga_at", {"eps": 0.5, "iters": 2, "loss": "sos"}),
                                     ("data_snr", {"eps": 0.5, "iters": 2}),
                                     ("data_snr", {"eps": 0.5, "iters": 2, "variant": "jacobian"}),
                                     ("global_snr", {})])
def test_objectives_with_train_mode_batch_norm_are_handled(name, kw):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(64, 3)).train()
    x, y = torch.rand(6, 1, 4, 4), torch.randint(0, 3, (6,))
    out = create("defense", name, **kw)(net, x, y, generator=_gen())
    out.total.backward()
    assert net.training and net[1].training  # the model's mode is given back
    # power steps, penalty and crafting ran with running statistics: the only
    # batch-norm update is the training forward of the step itself
    assert int(net[1].num_batches_tracked) == 1


def test_jacobian_of_train_mode_batch_norm_is_refused():
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).train()
    with pytest.raises(AdvgeomError, match="eval mode"):
        power_method(net, torch.rand(3, 4))


@pytest.mark.parametrize("name,kw", [("data_snr", {"variant": "x"}), ("data_snr", {"iters": 0}),
                                     ("pga_at", {"loss": "kl"}), ("global_snr", {"conv": "fft"}),
                                     ("global_snr", {"lam": -1.0}),
                                     # issue 29: values that would train a natural model
                                     ("data_snr", {"eps": 0.0}), ("pga_at", {"eps": 0.0}),
                                     ("pga_at", {"alpha": 0.0}), ("pga_at", {"iters": 0}),
                                     ("pga_at", {"loss": "sos", "lam": 0.0}),
                                     ("pga_at", {"eps": float("nan")})])
def test_bad_options_are_config_errors(name, kw):
    with pytest.raises(ConfigError) as err:
        create("defense", name, **kw)
    assert "\n" not in str(err.value)


def test_zero_lam_is_the_unregularized_baseline():
    """A regularizer weight of 0 is the paper's baseline (allowed); with pga_at's "ce"
    loss lam is not used."""
    create("defense", "data_snr", lam=0.0)
    create("defense", "global_snr", lam=0.0)
    create("defense", "pga_at", lam=0.0)


def test_global_snr_vectors_do_not_depend_on_the_step_generator():
    """Two ranks draw different step generators; their power-iteration vectors must
    still agree (advgeom.distributed: module state stays consistent across ranks)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x, y = torch.rand(4, 6), torch.tensor([0, 1, 2, 0])
    a, b = create("defense", "global_snr"), create("defense", "global_snr")
    a(net, x, y, generator=_gen(1))
    b(net, x[:2], y[:2], generator=_gen(2))
    assert all(torch.equal(va, vb) for (_, va), (_, vb) in zip(a.state.values(), b.state.values()))
