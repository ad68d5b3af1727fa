"""Sigma, the penalty's norm, Theorem 1's angle and the feature angles of
weight-penalization-classification-layer.txt (eqs. 3.3-3.8), by hand."""
import math
import warnings

import pytest
import torch

from advgeom.analysis.class_angles import (check_theorem, feature_angles, gram_gap, max_feature_angle,
                                           min_pairwise_angle, pairwise_angles, target_gram,
                                           theorem1_angle)
from advgeom.models.mmc import mmc_centers
from advgeom.errors import ConfigError


def test_sigma_by_hand_and_its_negative_off_diagonal():
    torch.testing.assert_close(target_gram(3, 0.5), torch.tensor([[0.25, -0.125, -0.125],
                                                                  [-0.125, 0.25, -0.125],
                                                                  [-0.125, -0.125, 0.25]]))
    for k in range(2, 8):
        sig = target_gram(k, 0.1, dtype=torch.float64)
        off = sig[~torch.eye(k, dtype=torch.bool)]
        assert bool((off < 0).all()) and float(off[0]) == pytest.approx(0.01 / (1 - k))
        # Sigma is PSD with rank K - 1 (the rows of an optimal W span K - 1 dimensions)
        ev = torch.linalg.eigvalsh(sig)
        assert float(ev.min()) == pytest.approx(0.0, abs=1e-12) and int((ev > 1e-9).sum()) == k - 1


def test_gram_gap_frobenius_and_spectral_by_hand():
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # W W^T - Sigma (s = 1, K = 3) = [[0, .5, 1.5], [.5, 0, 1.5], [1.5, 1.5, 1]]
    assert float(gram_gap(w, 1.0)) == pytest.approx(math.sqrt(0.25 * 2 + 2.25 * 4 + 1.0))
    s = 0.3
    w2 = torch.tensor([[s, 0.0], [0.0, s]])   # diff = [[0, s^2], [s^2, 0]]
    assert float(gram_gap(w2, s, "fro")) == pytest.approx(math.sqrt(2) * s * s)
    assert float(gram_gap(w2, s, "spectral")) == pytest.approx(s * s)
    with pytest.raises(ConfigError, match="matrix_norm"):
        gram_gap(w2, s, "nuclear")


def test_theorem1_angle_and_the_simplex_reaches_it():
    assert theorem1_angle(2) == pytest.approx(180.0)
    assert theorem1_angle(3) == pytest.approx(120.0)
    assert theorem1_angle(10) == pytest.approx(math.degrees(math.acos(-1 / 9)))
    simplex = mmc_centers(12, 10, scale=0.1).double()
    assert float(gram_gap(simplex, 0.1)) == pytest.approx(0.0, abs=1e-6)
    assert min_pairwise_angle(simplex) == pytest.approx(theorem1_angle(10), abs=1e-3)
    rnd = torch.randn(10, 12, generator=torch.Generator().manual_seed(0))
    assert min_pairwise_angle(rnd) < theorem1_angle(10) - 10
    a = pairwise_angles(rnd)
    assert torch.allclose(a, a.T) and float(a.diagonal().abs().max()) == 0.0


def test_theorem_applies_only_when_k_at_most_p_plus_one():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_theorem(10, 9)
    with pytest.warns(UserWarning, match="K > P \\+ 1"):
        assert not check_theorem(10, 5)
    with pytest.raises(ConfigError):
        check_theorem(1, 5)


def test_feature_angles_at_the_centre_of_a_region_by_hand():
    """K = 3 unit vectors 120 degrees apart; a feature along w_0 makes 30 = 90 - 120/2
    degrees with w_0 - w_j (the paper's centred approximation is exact there)."""
    ang = [math.radians(d) for d in (90, 210, 330)]
    w = torch.tensor([[math.cos(t), math.sin(t)] for t in ang])
    f = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    theta, region = feature_angles(f, w)
    assert region.tolist() == [0, 0]
    assert math.isnan(float(theta[0, 0]))
    torch.testing.assert_close(theta[0, 1:], torch.tensor([30.0, 30.0], dtype=torch.float64))
    # a feature off-centre (45 degrees) is closer to the boundary with class 2 (330 deg)
    m = max_feature_angle(f, w)
    assert float(m[0]) == pytest.approx(30.0) and float(m[1]) == pytest.approx(75.0)


def test_penalty_minimizers_reach_the_theorem1_angle():
    """Gradient descent on ||W W^T - Sigma||_F alone (K = 5, P = 8) lands on the
    Theorem 1 configuration: every angle arccos(-1/4), every row of length s."""
    g = torch.Generator().manual_seed(0)
    w = (0.3 * torch.randn(5, 8, generator=g, dtype=torch.float64)).requires_grad_(True)
    opt = torch.optim.Adam([w], lr=0.01)
    for _ in range(400):
        loss = gram_gap(w, 0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(gram_gap(w.detach(), 0.5)) < 1e-2
    assert min_pairwise_angle(w) == pytest.approx(theorem1_angle(5), abs=0.5)
    torch.testing.assert_close(w.detach().norm(dim=1), torch.full((5,), 0.5, dtype=torch.float64),
                               atol=5e-3, rtol=0)
