"""Attack losses on hand-made logits: values, orientation (larger = stronger
attack), DLR invariances and class-count requirements."""
from __future__ import annotations

import pytest
import torch

from advgeom.attacks._losses import get_loss, success
from advgeom.errors import AdvgeomError

Z = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 5.0, 1.0]])
Y = torch.tensor([0, 1])


def test_values():
    ce = get_loss("ce", targeted=False, num_classes=4)(Z, Y)
    assert torch.allclose(ce, torch.nn.functional.cross_entropy(Z, Y, reduction="none"))
    margin = get_loss("margin", targeted=False, num_classes=4)(Z, Y)
    assert torch.equal(margin, torch.tensor([1.0 - 3.0, 5.0 - 2.0]))
    dlr = get_loss("dlr", targeted=False, num_classes=4)(Z, Y)
    assert torch.allclose(dlr, torch.tensor([-2.0 / 3.0, 3.0 / 4.0]))
    t = torch.tensor([2, 3])
    mt = get_loss("margin", targeted=True, num_classes=4)(Z, t)
    assert torch.equal(mt, torch.tensor([0.0 - 3.0, 1.0 - 5.0]))
    dt = get_loss("dlr", targeted=True, num_classes=4)(Z, t)
    assert torch.allclose(dt, torch.tensor([-3.0 / (3 - (0 - 1) / 2), -4.0 / (5 - (1 + 0) / 2)]))
    assert torch.allclose(get_loss("ce", targeted=True, num_classes=4)(Z, t),
                          -torch.nn.functional.cross_entropy(Z, t, reduction="none"))


def test_dlr_invariant_to_shift_and_scale():
    z = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    y = torch.arange(6)
    for targeted in (False, True):
        f = get_loss("dlr", targeted=targeted, num_classes=10)
        assert torch.allclose(f(z, y), f(3.0 * z + 7.0, y), atol=1e-5)


def test_class_requirements():
    with pytest.raises(AdvgeomError, match="3 classes"):
        get_loss("dlr", targeted=False, num_classes=2)
    with pytest.raises(AdvgeomError, match="4 classes"):
        get_loss("dlr", targeted=True, num_classes=3)
    with pytest.raises(AdvgeomError, match="unknown loss"):
        get_loss("hinge", targeted=False, num_classes=10)


def test_success():
    assert torch.equal(success(Z, Y, targeted=False), torch.tensor([False, True]))
    assert torch.equal(success(Z, torch.tensor([0, 2]), targeted=True),
                       torch.tensor([True, True]))
