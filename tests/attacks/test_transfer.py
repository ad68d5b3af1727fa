"""Transfer attack: crafted on the source model exactly as the named attack would,
validated against the target model."""
from __future__ import annotations

import pytest
import torch

from advgeom.attacks.base import PassCounter
from advgeom.errors import AdvgeomError
from advgeom.registry import get
from advgeom.seeding import make_generator

transfer = get("attack", "transfer")


def test_equals_attack_on_source(tiny):
    model, source, x, y = tiny
    kw = dict(eps=0.1, steps=5)
    a = transfer(model, x, y, source_model=source, generator=make_generator(2), **kw)
    b = get("attack", "pgd")(source, x, y, generator=make_generator(2), early_stop=False, **kw)
    assert torch.equal(a, b)  # crafting keeps attacking past the source's boundary
    c = transfer(model, x, y, source_model=source, attack="fgsm", eps=0.1)
    assert torch.equal(c, get("attack", "fgsm")(source, x, y, eps=0.1))


def test_counts_source_passes_and_validates(tiny):
    model, source, x, y = tiny
    c = PassCounter()
    transfer(model, x, y, source_model=source, eps=0.1, steps=3, counter=c)
    assert c.backwards == 3 * x.shape[0]
    with pytest.raises(AdvgeomError, match="source_model"):
        transfer(model, x, y, eps=0.1)
    with pytest.raises(AdvgeomError):
        transfer(model, x, y, source_model=source, eps=0.1, attack="no-such-attack")
    with pytest.raises(AdvgeomError):
        transfer(model, x, y, source_model=source, eps=0.1, attack="transfer")


def test_transfer_weaker_than_white_box(mnist_cnn, racc):
    """A different, independently initialised copy of the architecture as source."""
    m, x, y = mnist_cnn.model, mnist_cnn.x[:100], mnist_cnn.y[:100]
    src = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    white = racc(m, x, get("attack", "pgd")(m, x, y, eps=0.1, steps=10), y)
    black = racc(m, x, transfer(m, x, y, source_model=src, eps=0.1, steps=10), y)
    assert white < black
