"""RobustBench model-zoo WideResNet files loaded into advgeom's wrn (advgeom.models.zoo,
through advgeom.load_model): identical logits to a module shaped and named like the zoo's."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import advgeom
from advgeom.errors import CheckpointError


class _ZooBlock(nn.Module):
    """A pre-activation block with the zoo's parameter names (bn1, conv1, bn2, conv2,
    convShortcut), computed as the zoo's forward does."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.equal = c_in == c_out
        self.convShortcut = None if self.equal else nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False)

    def forward(self, x):
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return out + (x if self.equal else self.convShortcut(act))


class _Stage(nn.Module):
    def __init__(self, n: int, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[_ZooBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1)
                                     for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class ZooWRN(nn.Module):
    """WRN-depth-k as the zoo names it (conv1, block1-3, sub_block1, bn1, fc; mu/sigma)."""

    def __init__(self, depth: int = 10, k: int = 1, classes: int = 10, sub_block1: bool = False,
                 bias_last: bool = True, mu=None, sigma=None) -> None:
        super().__init__()
        n, w = (depth - 4) // 6, [16, 16 * k, 32 * k, 64 * k]
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.block1 = _Stage(n, w[0], w[1], 1)
        if sub_block1:
            self.sub_block1 = _Stage(n, w[0], w[1], 1)
        self.block2, self.block3 = _Stage(n, w[1], w[2], 2), _Stage(n, w[2], w[3], 2)
        self.bn1, self.fc = nn.BatchNorm2d(w[3]), nn.Linear(w[3], classes, bias=bias_last)
        if mu is not None:
            self.register_buffer("mu", torch.tensor(mu).view(1, 3, 1, 1))
            self.register_buffer("sigma", torch.tensor(sigma).view(1, 3, 1, 1))

    def forward(self, x):
        if hasattr(self, "mu"):
            x = (x - self.mu) / self.sigma
        out = F.relu(self.bn1(self.block3(self.block2(self.block1(self.conv1(x))))))
        return self.fc(F.avg_pool2d(out, 8).flatten(1))


def _trained_looking(net: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded weights and non-trivial batch-norm affines and statistics (eval mode uses them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if not t.is_floating_point() or name in ("mu", "sigma"):
                continue
            if name.endswith(("running_var", "bn1.weight", "bn2.weight")):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith(("running_mean", "bias")):
                t.copy_(0.2 * torch.rand(t.shape, generator=g) - 0.1)
            else:   # convolutions and the head: He-like scale
                t.copy_(torch.randn(t.shape, generator=g) * (2.0 / t[0].numel()) ** 0.5)
    return net.eval()


X = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "module"])
def test_zoo_file_gives_identical_logits(tmp_path, wrap):
    ref = _trained_looking(ZooWRN(depth=10, k=2, classes=7, sub_block1=True))
    state = ref.state_dict()
    obj = {"plain": state, "state_dict": {"state_dict": state, "epoch": 3},
           "module": {f"module.{k}": v for k, v in state.items()}}[wrap]
    torch.save(obj, tmp_path / "zoo.pt")
    net = advgeom.load_model(tmp_path / "zoo.pt")
    assert not net.training and net.num_classes == 7
    with torch.no_grad():
        assert torch.allclose(net(X), ref(X), rtol=0, atol=1e-5)


def test_normalization_from_the_file_or_the_user(tmp_path):
    mu, sigma = [0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616]
    ref = _trained_looking(ZooWRN(depth=16, k=1, bias_last=False, mu=mu, sigma=sigma))
    torch.save(ref.state_dict(), tmp_path / "with_mu.pth")
    with torch.no_grad():
        assert torch.allclose(advgeom.load_model(tmp_path / "with_mu.pth")(X), ref(X), atol=1e-5)
        plain = {k: v for k, v in ref.state_dict().items() if k not in ("mu", "sigma")}
        torch.save(plain, tmp_path / "plain.pth")
        given = advgeom.load_model(tmp_path / "plain.pth", mean=mu, std=sigma)
        assert torch.allclose(given(X), ref(X), atol=1e-5)
        bare = advgeom.load_model(tmp_path / "plain.pth")   # no normalization: another model
        assert not torch.allclose(bare(X), ref(X), atol=1e-3)


def test_a_mismatched_file_is_one_clear_error(tmp_path):
    torch.save(nn.Sequential(nn.Linear(4, 2)).state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a RobustBench WideResNet state dict"):
        advgeom.load_model(tmp_path / "other.pt")
    state = _trained_looking(ZooWRN(depth=10, k=1)).state_dict()
    state["block2.layer.0.conv2.weight"] = torch.zeros(32, 32, 1, 1)   # a corrupted layer
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="do not match a WRN-10-1 .*shape"):
        advgeom.load_model(tmp_path / "bad.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="not a readable"):
        advgeom.load_model(tmp_path / "junk.pt")
