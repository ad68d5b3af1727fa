"""Shared fixtures of the attack tests: tiny models for the contract tests, linear
models with exact minimal distances (oracle tests), and a small MNIST CNN trained
once per session for the peer tests against torchattacks / pyautoattack."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advgeom.seeding import make_generator


def seeded(seed: int, build):
    """Build a module with torch's global RNG forked and seeded (state restored after)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


# ----------------------------------------------------------------------------- tiny models


class TinyCNN(nn.Module):
    """Conv -> ReLU -> linear on 1x8x8 images; ``classes`` logits (1 = binary logit)."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture(scope="module")
def tiny():
    """(model, source_model, images, labels): 5 classes, 12 images 1x8x8 in [0.1, 0.9]."""
    model = seeded(0, lambda: TinyCNN(5)).eval()
    source = seeded(1, lambda: TinyCNN(5)).eval()
    g = make_generator(0)
    x = torch.rand(12, 1, 8, 8, generator=g) * 0.8 + 0.1
    y = torch.randint(0, 5, (12,), generator=g)
    return model, source, x, y


# ----------------------------------------------------------------------------- linear oracles


@dataclass
class LinearProblem:
    model: nn.Linear
    x: Tensor
    y: Tensor          # predicted (= correct) labels
    dist_l2: Tensor    # exact minimal l2 distance to a misclassified point
    dist_linf: Tensor  # exact minimal linf distance


def linear_problem(classes: int, dim: int = 20, n: int = 400, seed: int = 0,
                   dtype: torch.dtype = torch.float64) -> LinearProblem:
    """Random affine classifier and points in [0.35, 0.65]^dim; ``classes=1`` is a
    single-logit binary model. Distances are exact (union of half-spaces) when the
    optimal perturbation stays in the box, i.e. for every distance below 0.35 (the
    fixture's distances are all below 0.3; ``test_oracle_distances_inside_box``)."""
    g = make_generator(seed)
    out = 1 if classes == 1 else classes
    model = nn.Linear(dim, out).to(dtype)
    with torch.no_grad():
        model.weight.copy_(torch.randn(out, dim, generator=g, dtype=dtype))
        model.bias.copy_(torch.randn(out, generator=g, dtype=dtype) * 0.1)
        model.bias.sub_(model.weight.sum(1) * 0.5)  # boundaries pass near the box centre
    model.eval()
    x = 0.35 + 0.3 * torch.rand(n, dim, generator=g, dtype=dtype)
    with torch.no_grad():
        return _distances(model, x, out)


def _distances(model: nn.Linear, x: Tensor, out: int) -> LinearProblem:
    z = model(x)
    if out == 1:
        w = model.weight[0]
        y = (z[:, 0] > 0).long()
        marg = z[:, 0].abs()
        d2, dinf = marg / w.norm(), marg / w.abs().sum()
    else:
        y = z.argmax(1)
        wy = model.weight[y]                                   # (n, dim)
        diff = wy[:, None, :] - model.weight[None, :, :]      # (n, C, dim)
        marg = z.gather(1, y[:, None]) - z                     # (n, C)
        mask = torch.nn.functional.one_hot(y, out).bool()
        d2 = (marg / diff.norm(dim=2)).masked_fill(mask, float("inf")).amin(1)
        dinf = (marg / diff.abs().sum(dim=2)).masked_fill(mask, float("inf")).amin(1)
    return LinearProblem(model, x, y, d2, dinf)


# ----------------------------------------------------------------------------- MNIST peer model


@dataclass
class MnistSetup:
    model: nn.Module
    x: Tensor
    y: Tensor


def _mnist_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(16, 32, 5, stride=2, padding=2), nn.ReLU(), nn.Flatten(),
        nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))


@pytest.fixture(scope="session")
def mnist_cnn() -> MnistSetup:
    """Small CNN trained 400 Adam steps (seeded) on MNIST; 300 test points."""
    from advgeom.data import load

    train, test = load("mnist", "train"), load("mnist", "test")
    model = seeded(0, _mnist_cnn)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = make_generator(0)
    for _ in range(400):
        idx = torch.randint(0, len(train), (128,), generator=g)
        loss = F.cross_entropy(model(train.images[idx]), train.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    opt.zero_grad(set_to_none=True)
    return MnistSetup(model, test.images[5000:5300].clone(), test.labels[5000:5300].clone())


@pytest.fixture(scope="session")
def mnist_cnn64(mnist_cnn: MnistSetup) -> MnistSetup:
    """:func:`mnist_cnn` in float64, for the tests that compare trajectories with a peer:
    the peer orders its arithmetic differently (loss reduction, clipping), and in float32
    a one-ulp difference can flip the sign of a nearly-zero gradient or momentum component
    on some CPUs (CI's), which then steps elsewhere."""
    return MnistSetup(copy.deepcopy(mnist_cnn.model).double(), mnist_cnn.x.double(), mnist_cnn.y)


def robust_accuracy(model: nn.Module, x: Tensor, adv: Tensor, y: Tensor) -> float:
    """Percent of samples correct on both the clean and the adversarial input."""
    with torch.no_grad():
        ok = (model(x).argmax(1) == y) & (model(adv).argmax(1) == y)
    return 100.0 * ok.double().mean().item()


@pytest.fixture(scope="session")
def make_linear():
    """The :func:`linear_problem` factory (fixtures avoid importing conftest)."""
    return linear_problem


def is_broken(model: nn.Module, adv: Tensor, y: Tensor) -> Tensor:
    """Per sample: the model's prediction on ``adv`` differs from ``y`` (one logit:
    class 1 iff the logit is positive)."""
    with torch.no_grad():
        z = model(adv)
    pred = (z[:, 0] > 0).long() if z.shape[1] == 1 else z.argmax(1)
    return pred != y


@pytest.fixture(scope="session")
def broken():
    """The :func:`is_broken` helper."""
    return is_broken


@pytest.fixture(scope="session")
def racc():
    """The :func:`robust_accuracy` helper."""
    return robust_accuracy


@pytest.fixture(scope="module")
def tiny_binary():
    """{1: one-logit model, 2: two-logit model, "labels": 0/1 labels} on ``tiny``'s images."""
    g = make_generator(3)
    return {1: seeded(2, lambda: TinyCNN(1)).eval(), 2: seeded(4, lambda: TinyCNN(2)).eval(),
            "labels": torch.randint(0, 2, (12,), generator=g)}
