"""Per-sample Jacobians, their spectra, the power method and linearity (advgeom.analysis.jacobian)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advgeom.analysis import jacobian as JA
from advgeom.errors import AdvgeomError


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 5)).double().eval()


def test_jacobians_match_rowwise_autograd():
    net, x = _cnn(), torch.rand(3, 1, 6, 6, generator=_gen(), dtype=torch.float64)
    jac = JA.jacobians(net, x, chunk=2)
    assert jac.shape == (3, 5, 36)
    for i in range(3):
        xi = x[i:i + 1].clone().requires_grad_(True)
        out = net(xi)[0]
        for c in range(5):
            (g,) = torch.autograd.grad(out[c], xi, retain_graph=True)
            assert torch.allclose(jac[i, c], g.reshape(-1), atol=1e-12)


@pytest.mark.parametrize("engine", ["autograd", "func"])
def test_power_method_matches_jacrev_svd(engine):
    net, x = _cnn(1), torch.rand(4, 1, 6, 6, generator=_gen(1), dtype=torch.float64)
    s, vh = JA.spectrum(JA.jacobians(net, x), vectors=True)
    sigma, u, v = JA.power_method(net, x, iters=200, generator=_gen(2), engine=engine)
    assert torch.allclose(sigma, s[:, 0], rtol=1e-3)
    assert (JA.alignment(v, vh[:, :1])[:, 0] > 1 - 1e-3).all()
    assert torch.allclose(s, JA.spectrum(JA.jacobians(net, x)), atol=0)  # deterministic


def test_regression_estimator_recovers_the_jacobian():
    net, x = _cnn(2), torch.rand(2, 1, 6, 6, generator=_gen(3), dtype=torch.float64)
    est = JA.regression_jacobians(net, x, generator=_gen(4))
    assert torch.allclose(est, JA.jacobians(net, x), atol=1e-8)


def test_linearity_deviation_is_zero_for_a_linear_model_and_not_for_relu():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(36, 7)).double()
    x = torch.rand(5, 1, 6, 6, generator=_gen(), dtype=torch.float64)
    z = 3.0 * JA.random_directions(x, _gen(1))
    dev = JA.linearity_deviation(lin, x, z)
    assert float(dev.max()) <= 1e-12  # zero up to float64 round-off
    assert float(JA.linearity_deviation(lin, x, torch.zeros_like(x)).max()) == 0.0
    relu = _cnn()
    assert float(JA.linearity_deviation(relu, x, z).max()) > 1e-3
    # and zero inside the activation region of x
    assert float(JA.linearity_deviation(relu, x, 1e-9 * z).max()) < 1e-15


def test_top_singular_along_starts_at_the_spectrum():
    net, x = _cnn(), torch.rand(3, 1, 6, 6, generator=_gen(5), dtype=torch.float64)
    d = JA.random_directions(x, _gen(6))
    sig = JA.top_singular_along(net, x, d, [0.0, 0.5, 2.0])
    assert sig.shape == (3, 3)
    assert torch.allclose(sig[0], JA.spectrum(JA.jacobians(net, x))[:, 0])
    approx = JA.top_singular_along(net, x, d, [0.5], exact=False, iters=200, generator=_gen(7))
    assert torch.allclose(approx[0], sig[1], rtol=1e-3)


def test_alignment_of_singular_vectors_with_themselves():
    net, x = _cnn(), torch.rand(2, 1, 6, 6, generator=_gen(8), dtype=torch.float64)
    _, vh = JA.spectrum(JA.jacobians(net, x), vectors=True)
    a = JA.alignment(-vh[:, 2].reshape(x.shape), vh)
    assert torch.allclose(a[:, 2], torch.ones(2, dtype=torch.float64))
    assert float(a[:, [0, 1, 3, 4]].max()) < 1e-10


def test_train_mode_batch_norm_is_refused_everywhere():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(32, 3)).train()
    x = torch.rand(2, 1, 6, 6)
    for call in (lambda: JA.jacobians(net, x), lambda: JA.power_method(net, x),
                 lambda: JA.linearity_deviation(net, x, x), lambda: JA.regression_jacobians(net, x)):
        with pytest.raises(AdvgeomError, match="batch norm in eval mode"):
            call()
    net.eval()
    assert JA.jacobians(net, x).shape == (2, 3, 36)


@pytest.mark.parametrize("kw, match", [({"samples": 0}, "samples must be an integer >= 2"),
                                       ({"samples": -5}, "samples must be"),
                                       ({"scale": 0.0}, "scale must be a finite number > 0")])
def test_regression_jacobians_refuse_degenerate_settings(kw, match):
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    with pytest.raises(AdvgeomError, match=match):
        JA.regression_jacobians(net, torch.rand(2, 4), **kw)


def test_directions_of_another_shape_are_refused():
    """A direction, start vector or perturbation of another shape than the inputs is one
    clear error (it broadcast, or failed deep in torch.func)."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.rand(2, 4)
    with pytest.raises(AdvgeomError, match=r"power method: v0 must be a tensor of the inputs' shape \(2, 4\)"):
        JA.power_method(net, x, v0=torch.rand(1, 4))
    with pytest.raises(AdvgeomError, match=r"linearity deviation: z must be .* got \(4,\)"):
        JA.linearity_deviation(net, x, torch.rand(4))
    for delta, vectors in ((torch.rand(2, 5), torch.rand(2, 3, 4)), (torch.rand(3, 4), torch.rand(2, 3, 4)),
                           (torch.rand(2, 4), torch.rand(2, 4))):
        with pytest.raises(AdvgeomError, match="alignment: delta"):
            JA.alignment(delta, vectors)
    assert JA.alignment(torch.rand(2, 2, 2), torch.rand(2, 3, 4)).shape == (2, 3)
