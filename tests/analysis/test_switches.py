"""ReLU / max-pool switch analysis and Theorem 1 (sparsification-robustness.txt, Sec. 3.4)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advgeom.analysis.switches import (count_flips, flips_linear_relu, high_snr,
                                       high_snr_worst_case, switch_states, theorem1_trial)
from advgeom.errors import AdvgeomError
from advgeom.models import create_model


def _seeded(name: str, seed: int, **kw) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(name, **kw).eval()


def test_counter_matches_direct_count_cnn() -> None:
    net = _seeded("nielsen_cnn4", 0, fc_dim=32)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 28, 28, generator=gen)
    xa = (x + 0.1 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    flips = count_flips(net, x, xa)
    assert flips.kinds == ["relu", "maxpool", "relu", "maxpool", "relu", "relu"]

    def direct(z: torch.Tensor) -> list[torch.Tensor]:
        b = net.body
        out = []
        h = b.conv1(z)
        out.append(h > 0)
        h = F.relu(h)
        out.append(F.max_pool2d(h, 2, return_indices=True)[1])
        h = F.max_pool2d(h, 2)
        h = b.conv2(h)
        out.append(h > 0)
        h = F.relu(h)
        out.append(F.max_pool2d(h, 2, return_indices=True)[1])
        h = F.max_pool2d(h, 2)
        h = b.fc1(h.flatten(1))
        out.append(h > 0)
        h = F.relu(h)
        h = b.fc2(h)
        out.append(h > 0)
        return [o.flatten(1) for o in out]

    with torch.no_grad():
        a, c = direct(x), direct(xa)
    for j, (sa, sc) in enumerate(zip(a, c)):
        torch.testing.assert_close(flips.flipped[j], (sa != sc).sum(1))
        assert flips.units[j] == sa.shape[1]
    relu_total = sum(int((sa != sc).sum()) for sa, sc, k in zip(a, c, flips.kinds) if k == "relu")
    relu_units = sum(u for u, k in zip(flips.units, flips.kinds) if k == "relu")
    assert abs(float(flips.fraction("relu").sum()) - relu_total / relu_units) < 1e-9
    assert relu_total > 0  # the perturbation does flip switches: the count is not vacuous


def test_fc2_switches_are_feature_signs() -> None:
    net = _seeded("fc2", 1)
    x = torch.rand(7, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    (s,) = switch_states(net, x)
    w, b = net.body.fc1.weight, net.body.fc1.bias
    torch.testing.assert_close(s, (x.flatten(1) @ w.T + b) > 0)
    e = 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(count_flips(net, x, x + e).flipped[0],
                               flips_linear_relu(w, b, x.flatten(1), e.flatten(1)).sum(1))


def test_no_relu_raises() -> None:
    with pytest.raises(AdvgeomError, match="ReLU"):
        switch_states(nn.Linear(3, 2), torch.rand(2, 3))


def test_high_snr_condition_is_sufficient() -> None:
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(200, 100, generator=gen, dtype=torch.float64)
    b = torch.randn(200, generator=gen, dtype=torch.float64)
    x = torch.rand(50, 100, generator=gen, dtype=torch.float64)
    e = 0.05 * (torch.rand(50, 100, generator=gen, dtype=torch.float64) * 2 - 1)
    snr, flips = high_snr(w, b, x, e), flips_linear_relu(w, b, x, e)
    assert not bool((snr & flips).any())
    assert bool(flips.any()) and bool(snr.any()) and bool((~snr & ~flips).any())
    assert bool((high_snr_worst_case(w, b, x, 0.05) <= snr).all())  # worst case implies it


def test_theorem1_flip_fraction_vanishes_with_dimension() -> None:
    gen = torch.Generator().manual_seed(5)
    small = theorem1_trial(16, 200, 0.05, bias_margin=0.02, samples=100, generator=gen)
    large = theorem1_trial(4096, 200, 0.05, bias_margin=0.02, samples=100, generator=gen)
    assert large["worst_case_high_snr_fraction"] == 1.0
    assert small["flip_fraction"] > large["flip_fraction"] == 0.0
    # outside Assumption 2 (O(1) biases) the worst-case attack flips many switches
    free = theorem1_trial(4096, 200, 0.05, bias_margin=None, samples=100, generator=gen)
    assert free["flip_fraction"] > 0.1
