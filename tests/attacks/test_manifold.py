"""The manifold attack (adversarial-spheres.txt Section 3.1): norm preservation,
nearest vs worst-case modes, and the attack contract (input gradients only, model
mode untouched)."""
from __future__ import annotations


import pytest
import torch

from advgeom.attacks.manifold import correct_margin, manifold_attack, predict
from advgeom.data.spheres import sample_sphere
from advgeom.errors import AdvgeomError
from advgeom.models import create_model
from advgeom.models.spheres import MaxMarginSphere


@pytest.fixture(scope="module")
def relu():
    torch.manual_seed(0)
    return create_model("relu_mlp", input_dim=40, width=32, depth=2).eval()


def _points(n, d, r, seed=0):
    return sample_sphere(n, d, r, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", ["nearest", "worst"])
@pytest.mark.parametrize("r,y", [(1.0, 0), (1.3, 1)])
def test_norm_is_preserved_to_1e5(relu, mode, r, y):
    x = _points(32, 40, r)
    labels = torch.full((32,), y)
    res = manifold_attack(relu, x, labels, steps=150, step_size=0.05, mode=mode)
    assert (res.adv.norm(dim=1) - r).abs().max() < 1e-5
    assert res.distance.shape == (32,) and res.success.dtype == torch.bool
    # the reported success and margin agree with the model's predictions
    with torch.no_grad():
        assert torch.equal(res.success, predict(relu, res.adv) != labels)
        torch.testing.assert_close(res.margin, correct_margin(relu, res.adv, labels), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(res.distance, (res.adv - x).norm(dim=1))


def test_worst_mode_never_worse_than_start_and_nearest_stops_at_first_error(relu):
    x = _points(32, 40, 1.0, seed=1)
    y = torch.zeros(32, dtype=torch.int64)
    with torch.no_grad():
        m0 = correct_margin(relu, x, y)
    worst = manifold_attack(relu, x, y, steps=200, step_size=0.05, mode="worst")
    assert (worst.margin <= m0 + 1e-6).all()
    near = manifold_attack(relu, x, y, steps=200, step_size=0.01, mode="nearest")
    found = near.success
    assert (near.steps[found] >= 0).all() and (near.steps[~found] == -1).all()
    # a point found at step k lies within the path length k * step_size of its start
    assert (near.distance[found] <= near.steps[found].float() * 0.01 + 1e-5).all()
    # worst-case mode goes at least as deep as nearest mode
    assert (worst.margin <= near.margin + 1e-5).all()


def test_already_misclassified_points_have_distance_zero(relu):
    x = _points(8, 40, 1.0, seed=2)
    with torch.no_grad():
        y = 1 - predict(relu, x)  # every label wrong
    res = manifold_attack(relu, x, y, steps=10, step_size=0.05)
    assert res.success.all() and (res.distance == 0).all() and (res.steps == 0).all()


def test_max_margin_model_has_no_errors_on_the_spheres():
    m = MaxMarginSphere(1.3)
    for r, y in ((1.0, 0), (1.3, 1)):
        res = manifold_attack(m, _points(16, 10, r), torch.full((16,), y), steps=100,
                              step_size=0.1, mode="worst")
        assert not res.success.any()


def test_contract_input_gradients_only_and_mode_untouched(relu):
    relu.zero_grad(set_to_none=True)
    x = _points(4, 40, 1.0)
    y = torch.zeros(4, dtype=torch.int64)
    manifold_attack(relu, x, y, steps=5, step_size=0.01)
    assert all(p.grad is None for p in relu.parameters())
    assert not relu.training and not x.requires_grad
    relu.train()
    try:
        with pytest.warns(UserWarning, match="training mode"):
            manifold_attack(relu, x, y, steps=2, step_size=0.01)
        assert relu.training
    finally:
        relu.eval()
    a = manifold_attack(relu, x, y, steps=20, step_size=0.02, mode="worst")
    b = manifold_attack(relu, x, y, steps=20, step_size=0.02, mode="worst")
    assert torch.equal(a.adv, b.adv)


def test_two_logit_models_and_bad_input():
    torch.manual_seed(1)
    m = create_model("relu_mlp", input_dim=6, width=8, depth=1, num_outputs=2).eval()
    x = _points(5, 6, 1.0)
    res = manifold_attack(m, x, torch.zeros(5, dtype=torch.int64), steps=20, step_size=0.05)
    assert (res.adv.norm(dim=1) - 1).abs().max() < 1e-5
    with pytest.raises(AdvgeomError, match="mode"):
        manifold_attack(m, x, torch.zeros(5, dtype=torch.int64), mode="best")
    with pytest.raises(AdvgeomError):
        manifold_attack(m, x, torch.zeros(4, dtype=torch.int64))
    with pytest.raises(AdvgeomError, match="nonzero"):
        manifold_attack(m, torch.zeros(2, 6), torch.zeros(2, dtype=torch.int64))
