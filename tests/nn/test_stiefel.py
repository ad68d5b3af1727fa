"""The Stiefel constraint (hyperspherical-defense.txt, footnote 4; issue 28): the QR
retraction gives orthonormal rows (no more outputs than fan-in) or columns (more), leaves
an orthonormal weight unchanged, and training with ``stiefel = true`` keeps every
SphereCorr layer on the manifold to 1e-5 after many steps."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advgeom.config import config_hash
from advgeom.errors import ConfigError
from advgeom.nn.sphere import (SphereConv2d, SphereHead, SphereLinear, retract_to_stiefel, sphere_layers,
                               stiefel_deviation, stiefel_retract)
from advgeom.train import TrainConfig, fit


@pytest.mark.parametrize("shape", [(32, 1, 3, 3), (10, 64), (16, 8, 3, 3), (7, 7)])
def test_retraction_is_orthonormal_on_the_right_side_and_idempotent(shape):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    q = stiefel_retract(w)
    m = q.flatten(1).double()
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    assert torch.allclose(gram, torch.eye(gram.shape[0], dtype=gram.dtype), atol=1e-6)
    assert stiefel_deviation(q) < 1e-6 < stiefel_deviation(w)
    assert torch.allclose(stiefel_retract(q), q, atol=1e-6)   # a point of the manifold stays


def test_retraction_keeps_the_span():
    """Orthonormal rows spanning the same space as the original rows (QR of W^T)."""
    w = torch.randn(4, 9, generator=torch.Generator().manual_seed(1)).double()
    q = stiefel_retract(w)
    proj = q.T @ q                       # projector onto the row space of q
    assert torch.allclose(proj @ w.T, w.T, atol=1e-10)


class Sphereish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = SphereConv2d(1, 12, 3)       # 12 kernels of 9 weights: columns
        self.fc = SphereLinear(12 * 2 * 2, 6)    # 6 <= 48: rows
        self.head = SphereHead(6, 2)
        self.num_classes = 2

    def forward(self, x):
        x = self.conv(x.view(-1, 1, 4, 4))
        return self.head(self.fc(x.flatten(1)))


def test_retract_to_stiefel_counts_every_sphere_layer():
    net = Sphereish()
    assert retract_to_stiefel(net) == len(sphere_layers(net)) == 3
    assert max(stiefel_deviation(m.weight) for m in sphere_layers(net)) < 1e-5


CFG = dict(dataset="spheres", dataset_kwargs={"d": 16, "n": 256, "R": 1.3}, objective="ce", optimizer="adam",
           lr=1e-2, batch_size=32, iterations=60, checkpoint_every=1000)


def test_training_keeps_the_layers_on_the_manifold(tmp_path):
    torch.manual_seed(0)
    run = fit(TrainConfig(**CFG, stiefel=True), model=Sphereish(), root=tmp_path, progress=False)
    devs = [stiefel_deviation(m.weight) for m in sphere_layers(run.model)]
    assert max(devs) < 1e-5
    torch.manual_seed(0)
    free = fit(TrainConfig(**CFG), model=Sphereish(), root=tmp_path, progress=False)
    assert max(stiefel_deviation(m.weight) for m in sphere_layers(free.model)) > 1e-2   # what it prevents


def test_stiefel_needs_sphere_layers_and_keeps_old_hashes(tmp_path):
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with pytest.raises(ConfigError, match="SphereCorr"):
        fit(TrainConfig(**CFG, stiefel=True), model=plain, root=tmp_path, progress=False)
    assert config_hash(TrainConfig(**CFG)) == config_hash(TrainConfig(**CFG, stiefel=False))
    assert config_hash(TrainConfig(**CFG)) != config_hash(TrainConfig(**CFG, stiefel=True))
