"""Max-Mahalanobis centers, the MMC head and loss (Pang et al. 2020)."""
import pytest
import torch

from advgeom.defenses.base import StepContext
from advgeom.defenses.mmc import mmc_loss
from advgeom.models.mmc import MMCHead, mmc_centers
from advgeom.errors import ConfigError
from advgeom.models import create_model
from advgeom.registry import create


def _gram(c):
    return c.double() @ c.double().T


def test_centers_256_10_are_the_max_mahalanobis_simplex():
    c = mmc_centers(256, 10, scale=10.0)
    g = _gram(c)
    assert c.shape == (10, 256)
    torch.testing.assert_close(g.diagonal(), torch.full((10,), 100.0, dtype=torch.float64),
                               rtol=1e-5, atol=1e-4)
    off = g[~torch.eye(10, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, -100.0 / 9), rtol=1e-5, atol=1e-4)
    assert float(c[:, 9:].abs().max()) < 1e-5  # 10 points span 9 dimensions


def test_centers_64_100_fall_back_to_a_packing():
    """D < L - 1: no simplex exists; the fallback keeps norms exact and spreads the
    centers far better than random directions (whose largest inner product is ~0.45)."""
    c = mmc_centers(64, 100, scale=10.0)
    assert c.shape == (100, 64)
    torch.testing.assert_close(c.norm(dim=1), torch.full((100,), 10.0), rtol=1e-5, atol=1e-5)
    g = _gram(c / 10.0)
    g.fill_diagonal_(-1.0)
    assert float(g.max()) < 0.1
    assert torch.equal(c, mmc_centers(64, 100, scale=10.0))  # deterministic


def test_head_logits_loss_and_prediction_by_hand():
    centers = torch.tensor([[1.0, 0.0], [-0.5, 0.8], [-0.5, -0.8]])
    z = torch.tensor([[0.9, 0.1], [0.0, -1.0]])
    y = torch.tensor([0, 1])
    logits = MMCHead(centers)(z)
    expected = torch.tensor([[-(0.01 + 0.01), -(1.96 + 0.49), -(1.96 + 0.81)],
                             [-(1.0 + 1.0), -(0.25 + 3.24), -(0.25 + 0.04)]])
    torch.testing.assert_close(logits, expected)
    assert logits.argmax(1).tolist() == [0, 2]  # nearest center
    assert float(mmc_loss(z, centers, y)) == pytest.approx((0.02 + 3.49) / 2)


def test_mmc_model_and_objective():
    torch.manual_seed(0)
    model = create_model("mmc", base="relu_mlp",
                         base_kwargs={"input_dim": 2, "width": 8, "depth": 1, "num_outputs": 3},
                         dim=4)
    x, y = torch.rand(5, 2), torch.tensor([0, 1, 2, 0, 1])
    feats = model.features(x)
    torch.testing.assert_close(model(x), -torch.cdist(feats, model.head.centers).pow(2),
                               rtol=1e-4, atol=1e-4)
    for adversarial in (False, True):
        obj = create("defense", "mmc", adversarial=adversarial, eps=0.1,
                     attack="pgd:steps=2,early_stop=false")
        out = obj(model.train(), x, y, generator=torch.Generator(), context=StepContext())
        assert float(out.total.detach()) > 0 and "mmc" in out.terms
    assert not any(p is model.head.centers for p in model.parameters())


def test_mmc_needs_an_mmc_model_and_valid_options():
    model = create_model("relu_mlp", input_dim=2, width=4, depth=1, num_outputs=2)
    with pytest.raises(ConfigError, match="MMC model"):
        create("defense", "mmc")(model, torch.rand(2, 2), torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match="adversarial"):
        create("defense", "mmc", adversarial="yes")
    with pytest.raises(ConfigError, match=">= 2 classes"):
        mmc_centers(4, 1)
