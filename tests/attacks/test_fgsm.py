"""FGSM / FGM: exact single steps on linear models and bit-identical agreement
with torchattacks' FGSM."""
from __future__ import annotations

import pytest
import torch

from advgeom.attacks.base import PassCounter
from advgeom.registry import get

fgsm, fgm = get("attack", "fgsm"), get("attack", "fgm")


def test_linear_steps_are_exact(make_linear):
    """For a one-logit affine model the CE gradient is parallel to +-w."""
    p = make_linear(1, n=50)
    w = p.model.weight[0].detach()
    sgn = (1 - 2 * p.y).double()[:, None]       # push class 1 down, class 0 up
    adv = fgsm(p.model, p.x, p.y, eps=0.05)
    assert torch.allclose(adv - p.x, 0.05 * sgn * w.sign(), atol=1e-12)
    adv2 = fgm(p.model, p.x, p.y, eps=0.2)
    assert torch.allclose(adv2 - p.x, 0.2 * sgn * w / w.norm(), atol=1e-12)


def test_one_gradient(tiny):
    model, _, x, y = tiny
    c = PassCounter()
    fgsm(model, x, y, eps=0.1, counter=c)
    assert c.backward_calls == 1 and c.backwards == x.shape[0]


def test_identical_to_torchattacks(mnist_cnn):
    torchattacks = pytest.importorskip("torchattacks")
    m, x, y = mnist_cnn.model, mnist_cnn.x, mnist_cnn.y
    for eps in (0.05, 0.2):
        assert torch.equal(fgsm(m, x, y, eps=eps), torchattacks.FGSM(m, eps=eps)(x, y))
