"""The ``bce`` objective: sigmoid cross-entropy of single-logit models
(adversarial-spheres.txt Section 3)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advgeom.errors import AdvgeomError
from advgeom.registry import create


class Fixed(nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[:, None]


def test_bce_matches_the_formula_and_backpropagates():
    obj = create("defense", "bce")
    logits = torch.tensor([2.0, -1.0, 0.5])
    y = torch.tensor([1, 0, 0])
    model = Fixed(logits.clone())
    loss = obj(model, torch.zeros(3, 4), y, generator=torch.Generator())
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0)) + math.log1p(math.exp(0.5))) / 3
    assert abs(float(loss.detach()) - expected) < 1e-6
    loss.backward()
    # d/dl mean BCE = (sigmoid(l) - y) / n
    torch.testing.assert_close(model.logits.grad, (torch.sigmoid(logits) - y.float()) / 3)


def test_bce_rejects_bad_labels_and_multi_logit_models():
    obj = create("defense", "bce")
    with pytest.raises(AdvgeomError, match="labels"):
        obj(Fixed(torch.zeros(2)), torch.zeros(2, 1), torch.tensor([0, 2]), generator=None)
    two = nn.Linear(3, 2)
    with pytest.raises(AdvgeomError, match="single-logit"):
        obj(two, torch.zeros(2, 3), torch.tensor([0, 1]), generator=None)
