"""RobustBench model-zoo files (WideResNet and PreAct ResNet) loaded into advgeom's wrn and
preact_resnet (advgeom.models.zoo, through advgeom.load_model): identical logits to a
module shaped, named and computed like the zoo's, the known entries' normalization,
architecture detection and one clear error for a malformed file."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import advgeom
from advgeom.errors import CheckpointError, ConfigError
from advgeom.models import create_model
from advgeom.models.zoo import from_released, zoo_family
from advgeom.models.zoo_entries import ZOO_ENTRIES


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


class _Normalizing(nn.Module):
    """RobustBench's zoo models keep their normalization as ``mu``/``sigma`` buffers."""

    def normalize_with(self, mu, sigma) -> None:
        if mu is not None:
            self.register_buffer("mu", torch.tensor(mu).view(1, 3, 1, 1))
            self.register_buffer("sigma", torch.tensor(sigma).view(1, 3, 1, 1))

    def normalized(self, x):
        return (x - self.mu) / self.sigma if hasattr(self, "mu") else x


class ZooWRN(_Normalizing):
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
        self.normalize_with(mu, sigma)

    def forward(self, x):
        x = self.normalized(x)
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


# ---------------------------------------------------------------------------
# PreAct ResNet (RobustBench's model_zoo/architectures/resnet.py names and forward pass)


class _ZooPreActBlock(nn.Module):
    """PreActBlock (shortcut of the raw input) or PreActBlockV2 (of the activated one)
    as the zoo names them: bn1, conv1, bn2, conv2, shortcut.0 only when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, activated_shortcut: bool) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.activated = activated_shortcut
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out if self.activated else x) if hasattr(self, "shortcut") else x
        return self.conv2(F.relu(self.bn2(self.conv1(out)))) + skip


class ZooPreAct(_Normalizing):
    """PreActResNet(block, blocks, bn_before_fc) at base width ``width`` (the zoo's is 64);
    ``bn_before_fc`` networks use PreActBlockV2, the others PreActBlock, as in the zoo."""

    def __init__(self, blocks=(2, 2, 2, 2), width: int = 8, classes: int = 10,
                 bn_before_fc: bool = False, mu=None, sigma=None) -> None:
        super().__init__()
        self.bn_before_fc = bn_before_fc
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        c_in = width
        for k, n in enumerate(blocks):
            c_out = width * 2 ** k
            setattr(self, f"layer{k + 1}", nn.Sequential(*[
                _ZooPreActBlock(c_in if i == 0 else c_out, c_out, (2 if k else 1) if i == 0 else 1,
                                bn_before_fc) for i in range(n)]))
            c_in = c_out
        if bn_before_fc:
            self.bn = nn.BatchNorm2d(c_in)
        self.linear = nn.Linear(c_in, classes)
        self.normalize_with(mu, sigma)

    def forward(self, x):
        x = self.normalized(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        if self.bn_before_fc:
            out = F.relu(self.bn(out))
        return self.linear(F.avg_pool2d(out, 4).flatten(1))


def _close(ours: torch.Tensor, ref: torch.Tensor, rel: float = 1e-5) -> bool:
    """Agreement within ``rel`` of the reference's largest logit."""
    return bool((ours - ref).abs().max() <= rel * ref.abs().max())


X2 = X[:2]


@pytest.mark.parametrize("bn_before_fc", [False, True])
@pytest.mark.parametrize("blocks,wrap", [((2, 2, 2, 2), "last"), ((3, 4, 6, 3), "prefixed")])
def test_preact_zoo_file_gives_identical_logits(tmp_path, bn_before_fc, blocks, wrap):
    ref = _trained_looking(ZooPreAct(blocks, width=4, classes=6, bn_before_fc=bn_before_fc))
    state = ref.state_dict()
    obj = {"last": {"last": state, "best": state},   # Kireev's and Andriushchenko's files
           "prefixed": {f"module.model.{k}": v for k, v in state.items()}}[wrap]
    torch.save(obj, tmp_path / "preact.pth")
    net = advgeom.load_model(tmp_path / "preact.pth")
    depth = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 34}[blocks]
    assert [len(getattr(net.body, f"stage{k}")) for k in (1, 2, 3, 4)] == list(blocks)
    assert hasattr(net.body, "bn") == bn_before_fc and net.num_classes == 6 and not net.training
    with torch.no_grad():
        ref_logits = ref(X2)
        assert _close(net(X2), ref_logits)
        # the shortcut's input is not in the shapes; the other choice is another network
        other = create_model("preact_resnet", depth=depth, base_width=4, num_classes=6,
                             mean=[0.0], std=[1.0], final_bn=bn_before_fc,
                             shortcut="input" if bn_before_fc else "activated")
        other.load_state_dict(net.state_dict())
        assert not _close(other.eval()(X2), ref_logits, rel=1e-3)


def test_architecture_detection():
    wrn_state = ZooWRN(depth=10, k=1).state_dict()
    preact_state = ZooPreAct(width=4).state_dict()
    assert zoo_family(wrn_state) == "WideResNet" and zoo_family(preact_state) == "PreAct ResNet"
    assert hasattr(from_released(wrn_state).body, "stage3")
    net = from_released(preact_state)
    assert hasattr(net.body, "stage4") and net.body.conv1.out_channels == 4
    with pytest.raises(CheckpointError, match="not a RobustBench WideResNet .* a PreAct ResNet .* nor Wong et al.'s MNIST net"):
        zoo_family({"features.0.weight": torch.zeros(3), "classifier.weight": torch.zeros(2, 3)})


C10 = ([0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616])   # Wong2020FastNet's mu/sigma


def test_a_zoo_entry_puts_its_normalization_inside(tmp_path):
    # Wong2020Fast at full size; its file does not store mu/sigma
    ref = _trained_looking(ZooPreAct(width=64, mu=C10[0], sigma=C10[1]))
    torch.save({k: v for k, v in ref.state_dict().items() if k not in ("mu", "sigma")},
               tmp_path / "wong.pt")
    with torch.no_grad():
        ref_logits = ref(X2)
        assert _close(advgeom.load_model(tmp_path / "wong.pt", zoo_entry="Wong2020Fast")(X2), ref_logits)
        assert not _close(advgeom.load_model(tmp_path / "wong.pt")(X2), ref_logits, rel=1e-2)
    # Hendrycks2020AugMix_WRN (WRN-40-2) computes 2x - 1 before the network
    wrn = _trained_looking(ZooWRN(depth=40, k=2))
    torch.save(wrn.state_dict(), tmp_path / "augmix.pt")
    net = advgeom.load_model(tmp_path / "augmix.pt", zoo_entry="corruptions/Hendrycks2020AugMix_WRN")
    with torch.no_grad():
        assert _close(net(X2), wrn(2 * X2 - 1))


def test_zoo_entry_errors(tmp_path):
    torch.save(_trained_looking(ZooWRN(depth=10, k=1)).state_dict(), tmp_path / "wrn.pt")
    with pytest.raises(ConfigError, match=r"unknown model-zoo entry 'Wong2020Fats'; did you mean "
                                          r"'Wong2020Fast'\? \(known: Andriushchenko2020Understanding, "):
        advgeom.load_model(tmp_path / "wrn.pt", zoo_entry="Wong2020Fats")
    with pytest.raises(CheckpointError, match="holds a WRN-10-1, but zoo entry 'Linf/Wong2020Fast' is a "
                                              "PreAct ResNet-18 without final BN"):
        advgeom.load_model(tmp_path / "wrn.pt", zoo_entry="Linf/Wong2020Fast")
    with pytest.raises(CheckpointError, match="zoo entry or mean/std, not both"):
        advgeom.load_model(tmp_path / "wrn.pt", zoo_entry="Carmon2019Unlabeled", mean=[0.5], std=[0.5])
    with pytest.raises(CheckpointError, match="mean/std/zoo_entry apply to model-zoo files"):
        advgeom.load_model(tmp_path / "run.safetensors", zoo_entry="Carmon2019Unlabeled")


def test_entry_table_is_well_formed():
    archs = re.compile(r"WRN-\d+-\d+|PreAct ResNet-(18|34)( without final BN)?")
    assert len(ZOO_ENTRIES) >= 10
    for name, entry in ZOO_ENTRIES.items():
        assert archs.fullmatch(entry.arch), name
        assert (entry.mean is None) == (entry.std is None), name
        assert entry.mean is None or (len(entry.mean) == len(entry.std) == 3 and min(entry.std) > 0), name


def test_a_malformed_preact_file_is_one_clear_error(tmp_path):
    state = _trained_looking(ZooPreAct(width=4)).state_dict()
    cases = {
        "bottleneck": ({**state, "layer1.0.conv3.weight": torch.zeros(4, 4, 1, 1)},
                       "layer1.0.conv3.weight do not belong to a RobustBench PreAct ResNet"),
        "depth": (_trained_looking(ZooPreAct((3, 3, 3, 3), width=4)).state_dict(),
                  r"\(3, 3, 3, 3\) blocks per stage; advgeom builds depths 18"),
        "shape": ({**state, "layer3.1.conv1.weight": torch.zeros(16, 16, 1, 1)},
                  r"do not match a PreAct ResNet-18 \(base width 4\) without final BN \(shape of "
                  r"body.stage3.1.conv1.weight\)"),
        "missing": ({k: v for k, v in state.items() if k != "layer2.0.shortcut.0.weight"},
                    "missing body.stage2.0.shortcut.weight"),
        "no stem": ({k: v for k, v in state.items() if not k.startswith("conv1.")},
                    "PreAct ResNet state dict without conv1.weight"),
    }
    for name, (bad, message) in cases.items():
        torch.save(bad, tmp_path / f"{name}.pt")
        with pytest.raises(CheckpointError, match=message):
            advgeom.load_model(tmp_path / f"{name}.pt")


# ---- Wong et al.'s released MNIST network ----------------------------------------------

def _wong_mnist_net(widths=(16, 32), fc_dim=100) -> nn.Sequential:
    """A module named and computed like the MNIST network of Wong et al.'s code (a positional
    nn.Sequential: conv, ReLU, conv, ReLU, flatten, FC, ReLU, classifier), written here
    from the paper's description."""
    return nn.Sequential(nn.Conv2d(1, widths[0], 4, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(widths[0], widths[1], 4, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(widths[1] * 7 * 7, fc_dim), nn.ReLU(),
                         nn.Linear(fc_dim, 10))


@pytest.mark.parametrize("widths,fc_dim", [((16, 32), 100), ((8, 12), 20)])
def test_a_released_fast_at_mnist_file_gives_the_same_logits(tmp_path, widths, fc_dim):
    torch.manual_seed(0)
    theirs = _wong_mnist_net(widths, fc_dim).eval()
    path = tmp_path / "fgsm.pth"
    torch.save(theirs.state_dict(), path)
    assert zoo_family(theirs.state_dict()) == "fast-AT MNIST net"
    ours = advgeom.load_model(path)
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-6)
    assert not ours.training
    assert [m.out_channels for m in ours.modules() if isinstance(m, nn.Conv2d)] == list(widths)
    # the registered builder with the same sizes holds the same parameter names
    assert set(ours.state_dict()) == set(create_model("fast_at_mnist_net", widths=widths,
                                                       fc_dim=fc_dim).state_dict())


def test_a_released_fast_at_mnist_file_refuses_normalization_and_a_wrong_size():
    state = _wong_mnist_net().state_dict()
    with pytest.raises(CheckpointError, match="raw \\[0,1\\] pixels"):
        from_released(state, mean=[0.1307], std=[0.3081])
    with pytest.raises(CheckpointError, match="raw \\[0,1\\] pixels"):
        from_released(state, entry="Wong2020Fast")
    bad = dict(state, **{"5.weight": torch.zeros(100, 32 * 8 * 8)})
    with pytest.raises(CheckpointError, match="FC input 2048 is not 32 x 7 x 7"):
        from_released(bad)
