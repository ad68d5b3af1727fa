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


# ----------------------------------------------------------------------------- guided starts


class FlatAffine(Affine):
    """Affine's features with no input gradient: ascent cannot move a point."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).detach()


def narrow_model(features: nn.Module) -> GeodesicRejector:
    """The plane model with acceptance cones of 0.05 rad: a random point is rarely accepted."""
    model = rejecting_model()
    model.model.body = features
    return GeodesicRejector(model.model, torch.full((3,), 0.04), torch.full((3,), 0.01))


def mixed_points() -> tuple[torch.Tensor, torch.Tensor]:
    """12 points of class 0 (features on W_0) and 4 of class 1 (on W_1), all accepted."""
    g = torch.Generator().manual_seed(0)
    a = torch.stack([0.6 + 0.15 * torch.rand(12, generator=g), torch.full((12,), 0.5)], 1)
    b = torch.stack([torch.full((4,), 0.5), 0.6 + 0.15 * torch.rand(4, generator=g)], 1)
    return torch.cat([a, b]), torch.tensor([0] * 12 + [1] * 4)


def test_guides_break_what_ascent_cannot():
    model = narrow_model(FlatAffine())
    x, y = mixed_points()
    _, accept = model.predict_with_rejection(x)
    assert accept.all() and (model(x).argmax(1) == y).all()
    kw = dict(eps=1.0, steps=20, loss="margin")
    plain = geodesic_adaptive(model, x, y, generator=torch.Generator().manual_seed(1), **kw)
    guided = geodesic_adaptive(model, x, y, generator=torch.Generator().manual_seed(1), guides=2, **kw)
    assert fooled(model, plain, y) <= 0.25     # no gradient: only a lucky random start wins
    assert fooled(model, guided, y) == 1.0     # the other class's accepted points are reachable
    # every guide lies within linf 0.25: at eps 0.3 the start is the guide itself
    guided = geodesic_adaptive(model, x, y, eps=0.3, steps=5, guides=1, generator=torch.Generator().manual_seed(1))
    assert fooled(model, guided, y) == 1.0
    assert float((guided - x).abs().max()) <= 0.3 + 1e-6 and guided.min() >= 0 and guided.max() <= 1


def test_guided_l2_stays_in_ball_and_a_lone_sample_has_no_guide():
    model = narrow_model(Affine())
    x, y = mixed_points()
    adv = geodesic_adaptive(model, x, y, eps=0.2, norm="l2", steps=10, guides=3,
                            generator=torch.Generator().manual_seed(0))
    assert float((adv - x).norm(dim=1).max()) <= 0.2 + 1e-5 and adv.min() >= 0 and adv.max() <= 1
    one = [geodesic_adaptive(model, x[:1], y[:1], eps=0.3, steps=10, guides=g,
                             generator=torch.Generator().manual_seed(0)) for g in (0, 4)]
    assert torch.equal(one[0], one[1])


def test_guide_order_round_robin_over_classes_nearest_first():
    # l2 distances: 0-2 0.412, 0-1 0.566, 0-5 0.8; 1-4 0.447, 1-0 0.566, 1-5 0.566
    from advgeom.attacks._common import prepare
    from advgeom.attacks.geodesic import guide_order
    model = narrow_model(Affine())
    x = torch.tensor([[0.9, 0.5], [0.5, 0.9], [0.5, 0.6], [0.5, 0.5], [0.7, 0.5], [0.1, 0.5]])
    y = torch.tensor([0, 1, 1, 0, 0, 2])        # point 3: features at the origin (not accepted)
    s = prepare(model, x, y, info=geodesic_adaptive.info, eps=0.1, norm="linf", loss="margin",
                targeted=False)
    order, valid, pred = guide_order(model, s, False, 5)
    assert pred.tolist()[:3] == [0, 1, 1] and pred[5] == 2
    # the nearest of class 1, the nearest of class 2, then class 1's second
    assert order[0, :3].tolist() == [2, 5, 1] and valid[0].tolist() == [True] * 3 + [False] * 2
    # class 0's nearest (4), then class 2's (5) before class 0's second (0), though 0 and 5
    # tie at 0.566: every class's nearest comes before any class's second
    assert order[1, :3].tolist() == [4, 5, 0] and valid[1].tolist() == [True] * 3 + [False] * 2
    assert guide_order(model, s, False, 1)[0][0].tolist() == [2]
    # targeted at class 1: only the accepted class-1 points guide, the sample itself excluded
    t = torch.ones(6, dtype=torch.long)
    s = prepare(model, x, t, info=geodesic_adaptive.info, eps=0.1, norm="linf", loss="margin", targeted=True)
    order, valid, _ = guide_order(model, s, True, 4)
    assert order[0, :2].tolist() == [2, 1] and valid[0].tolist() == [True, True, False, False]
    assert order[1, 0].item() == 2 and valid[1].tolist() == [True, False, False, False]


def test_guided_dlr_needs_four_classes_before_any_run():
    import pytest
    from advgeom.errors import AdvgeomError
    x, y = points()
    calls = []

    class Counting(GeodesicRejector):
        def angle_excess(self, inputs):
            calls.append(1)
            return super().angle_excess(inputs)

    m = rejecting_model()
    model = Counting(m.model, m.mean, m.std)
    with pytest.raises(AdvgeomError, match="4 classes"):
        geodesic_adaptive(model, x, y, eps=0.1, loss="dlr", guides=2)
    assert not calls                                  # refused before the random-start run
    geodesic_adaptive(model, x, y, eps=0.1, steps=2, loss="dlr")   # without guides: fine


def test_guides_must_be_a_count():
    import pytest
    from advgeom.errors import AdvgeomError
    x, y = points()
    with pytest.raises(AdvgeomError, match="guides"):
        geodesic_adaptive(rejecting_model(), x, y, eps=0.1, guides=-1)
    with pytest.raises(AdvgeomError, match="guides"):
        geodesic_adaptive(rejecting_model(), x, y, eps=0.1, guides=1.5)


# ----------------------------------------------------------------------------- targeted runs, cosine step


def dead_end_model() -> GeodesicRejector:
    """rejecting_model with class 1's cone closed (threshold below 0): from class 0 the
    strongest wrong class is 1, whose acceptance no point can reach; class 2's is open."""
    m = rejecting_model()
    return GeodesicRejector(m.model, torch.tensor([0.2, -1.0, 0.2]), torch.full((3,), 0.1))


def test_targeted_runs_reach_the_cone_the_strongest_class_hides():
    model = dead_end_model()
    x, y = points()
    assert (model.model(x).topk(2, dim=1).indices[:, 1] == 1).all()   # class 1 ranks first
    kw = dict(eps=1.0, steps=50)
    runs = [fooled(model, geodesic_adaptive(model, x, y, num_targets=n, generator=torch.Generator().manual_seed(1),
                                            **kw), y) for n in (0, 1, 2, 9)]
    assert runs[0] <= 0.25            # untargeted: only lucky random starts reach class 2
    assert runs[1] < 1.0              # the first target is the most likely class: the dead end
    assert runs[2] == 1.0 and runs[3] == 1.0   # the second is class 2; targets stop at the other classes
    adv = geodesic_adaptive(model, x, y, num_targets=2, step_schedule="cosine",
                            generator=torch.Generator().manual_seed(1), **kw)
    assert fooled(model, adv, y) == 1.0
    assert float((adv - x).abs().max()) <= 1.0 + 1e-6 and adv.min() >= 0 and adv.max() <= 1


class Line(nn.Module):
    """Logits (0.9, x): the margin x - 0.9 grows with x and stays below 0 on [0, 0.2]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.full_like(x, 0.9), x], 1)


def test_cosine_schedule_steps_follow_the_half_cosine():
    x, y = torch.zeros(1, 1), torch.zeros(1, dtype=torch.long)
    kw = dict(eps=1.0, steps=10, step_size=0.01, random_start=False, confidence=10.0)
    const = geodesic_adaptive(Line().eval(), x, y, **kw)
    cos = geodesic_adaptive(Line().eval(), x, y, step_schedule="cosine", **kw)
    # the margin only grows, so the last iterate is kept: the sum of the steps
    assert abs(float(const) - 0.1) < 1e-6
    # sum_{i<10} 0.01 (1 + cos(pi i / 10)) / 2 = 0.01 (10 + 1) / 2: the cosines cancel in pairs but for i = 0
    expect = sum(0.01 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * i / 10))) for i in range(10))
    assert abs(float(cos) - 0.055) < 1e-6 and abs(float(cos) - float(expect)) < 1e-6
    # the default peak is eps / 10
    peak = geodesic_adaptive(Line().eval(), x, y, eps=0.2, steps=2, random_start=False, confidence=10.0,
                             step_schedule="cosine")
    assert abs(float(peak) - 0.02 * (1 + 0.5)) < 1e-6          # 0.02 * (1 + cos(pi/2)) / 2 after it


def test_targets_and_schedule_refuse_bad_values():
    import pytest
    from advgeom.errors import AdvgeomError
    x, y = points()
    model = rejecting_model()
    for bad in (-1, 1.5, True):
        with pytest.raises(AdvgeomError, match="num_targets"):
            geodesic_adaptive(model, x, y, eps=0.1, num_targets=bad)
    with pytest.raises(AdvgeomError, match="step_schedule"):
        geodesic_adaptive(model, x, y, eps=0.1, step_schedule="linear")
    with pytest.raises(AdvgeomError, match="targeted=False"):
        geodesic_adaptive(model, x, torch.ones_like(y), eps=0.1, targeted=True, num_targets=2)
