"""The adaptive attack on geodesic rejection beats the non-adaptive one on a model built
to reject: on a plane model whose decision boundary lies far outside every class's
acceptance cone, PGD's first misclassified points are rejected; the adaptive attack
reaches points that are misclassified AND accepted."""
from __future__ import annotations

import torch
from torch import nn

from advgeom.attacks import geodesic_adaptive, pgd
from advgeom.inference import GeodesicRejector
from advgeom.models.base import Classifier
from advgeom.nn.sphere import SphereHead


class Affine(nn.Module):
    """Features 4 (x - 0.5): inputs in [0,1]^2 map to [-2, 2]^2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 4.0 * (x - 0.5)


def rejecting_model() -> GeodesicRejector:
    head = SphereHead(2, 3, scale="norm")
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    net = Classifier(Affine(), head, num_classes=3, input_shape=(2,), feature_dim=2).eval()
    # acceptance cones of 0.3 rad around each W_j; boundaries at 45 degrees from them
    return GeodesicRejector(net, torch.full((3,), 0.2), torch.full((3,), 0.1))


def points() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    # features (1, d) with |d| <= 0.2: class 0, accepted
    x = torch.stack([torch.full((16,), 0.75), 0.5 + (torch.rand(16, generator=g) - 0.5) * 0.1], 1)
    return x, torch.zeros(16, dtype=torch.long)


def fooled(model: GeodesicRejector, adv: torch.Tensor, y: torch.Tensor) -> float:
    logits, accept = model.predict_with_rejection(adv)
    return float(((logits.argmax(1) != y) & accept).float().mean())


def test_clean_points_are_accepted_and_correct():
    model = rejecting_model()
    x, y = points()
    logits, accept = model.predict_with_rejection(x)
    assert accept.all() and (logits.argmax(1) == y).all()


def test_adaptive_beats_non_adaptive():
    model = rejecting_model()
    x, y = points()
    kw = dict(eps=0.5, steps=100, step_size=0.02, loss="margin")
    plain = pgd(model, x, y, generator=torch.Generator().manual_seed(1), **kw)
    adaptive = geodesic_adaptive(model, x, y, generator=torch.Generator().manual_seed(1), **kw)
    assert float((model(plain).argmax(1) != y).float().mean()) == 1.0  # PGD misclassifies all...
    assert fooled(model, plain, y) <= 0.25                              # ...but gets rejected
    assert fooled(model, adaptive, y) >= 0.9
    assert float((adaptive - x).abs().max()) <= 0.5 + 1e-6


def test_without_penalty_or_rejection_it_is_a_class_attack():
    model = rejecting_model()
    x, y = points()
    adv = geodesic_adaptive(model.model, x, y, eps=0.5, steps=50, step_size=0.01,
                            generator=torch.Generator().manual_seed(1))
    assert (model.model(adv).argmax(1) != y).all()
