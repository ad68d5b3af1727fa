"""Fixtures of the evaluation tests (helpers live in eval_fakes.py)."""
import pytest

from eval_fakes import ThresholdModel


@pytest.fixture
def threshold_model() -> ThresholdModel:
    return ThresholdModel().eval()


@pytest.fixture(scope="session")
def blobs_mlp():
    """A small MLP trained (seeded, 200 Adam steps) on 3 Gaussian blobs in [0,1]^20:
    ``(model in eval mode, x, y)`` with 384 points."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(0)
    centers = 0.25 + 0.5 * torch.rand(3, 20, generator=g)
    y = torch.arange(384) % 3
    x = (centers[y] + 0.12 * torch.randn(384, 20, generator=g)).clamp(0, 1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), x, y

