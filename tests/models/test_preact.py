"""PreAct ResNets (advgeom.models.preact): sizes, layout, the two shortcut forms and
argument errors. Full-size models are built on the meta device (no memory, no forward)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advgeom.errors import ConfigError
from advgeom.models import create_model
from advgeom.models._layers import count_parameters
from advgeom.models.resnet import WideBasicBlock


def meta_model(name, **kw):
    with torch.device("meta"):
        return create_model(name, **kw)


def test_preact_resnet18_size_and_layout():
    plain = meta_model("preact_resnet18", final_bn=False)
    # the 11.17M of the PreActResNet18 in Wong et al.'s and Rice et al.'s code
    assert count_parameters(plain) == 11_171_146
    assert count_parameters(meta_model("preact_resnet18")) == 11_171_146 + 2 * 512
    stages = [getattr(plain.body, f"stage{k}") for k in (1, 2, 3, 4)]
    assert [len(s) for s in stages] == [2, 2, 2, 2]
    assert [s[0].conv1.stride for s in stages] == [(1, 1), (2, 2), (2, 2), (2, 2)]
    assert [s[-1].conv2.out_channels for s in stages] == [64, 128, 256, 512]
    # stem + 16 block convolutions + 3 projections; the first block of stage 1 has none
    assert sum(isinstance(m, nn.Conv2d) for m in plain.modules()) == 20
    assert stages[0][0].shortcut is None and plain.feature_dim == 512


def test_depth_34_adds_blocks():
    extra_blocks = {64: 1, 128: 2, 256: 4, 512: 1}   # (3, 4, 6, 3) - (2, 2, 2, 2)
    per_block = {c: 2 * 9 * c * c + 2 * 2 * c for c in extra_blocks}   # two 3x3 convs, two BNs
    extra = sum(n * per_block[c] for c, n in extra_blocks.items())
    assert (count_parameters(meta_model("preact_resnet", depth=34))
            - count_parameters(meta_model("preact_resnet", depth=18))) == extra
    assert [len(getattr(meta_model("preact_resnet", depth=34).body, f"stage{k}")) for k in (1, 2, 3, 4)] \
        == [3, 4, 6, 3]


@pytest.mark.parametrize("raw", [False, True])
def test_projection_shortcut_reads_the_raw_or_the_activated_input(raw):
    torch.manual_seed(0)
    block = WideBasicBlock(4, 8, 2, 0.0, raw_shortcut=raw).eval()
    with torch.no_grad():
        block.bn1.running_mean.uniform_(-0.5, 0.5)
        x = torch.randn(2, 4, 8, 8)
        pre = F.relu(block.bn1(x))
        main = block.conv2(F.relu(block.bn2(block.conv1(pre))))
        expected = main + block.shortcut(x if raw else pre)
        assert torch.allclose(block(x), expected, atol=1e-6)
        assert not torch.allclose(block.shortcut(x), block.shortcut(pre), atol=1e-3)


def test_the_shortcut_choice_reaches_every_projection():
    net = create_model("preact_resnet18", base_width=4, shortcut="input", final_bn=False)
    projecting = [b for k in (1, 2, 3, 4) for b in getattr(net.body, f"stage{k}") if b.shortcut is not None]
    assert len(projecting) == 3 and all(b.raw_shortcut for b in projecting)
    assert not hasattr(net.body, "bn")


@pytest.mark.parametrize("kw,message", [
    ({"depth": 20}, "depth must be one of 18, 34"),
    ({"shortcut": "raw"}, "shortcut must be one of 'activated', 'input'"),
    ({"final_bn": "yes"}, "final_bn must be true or false"),
    ({"base_width": 0}, "base_width must be a positive integer"),
])
def test_bad_arguments_are_clear_errors(kw, message):
    with pytest.raises(ConfigError, match=message):
        create_model("preact_resnet", **kw)
