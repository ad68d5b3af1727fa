"""Rejection-aware metrics on a hand-made abstaining model with known accept masks."""
import contextlib

import pytest

from advgeom.attacks.base import AttackInfo
from advgeom.eval import AttackSpec, CheckConfig, can_reject, evaluate
from advgeom.eval.rejection import (adversarial_rejection_metrics, clean_rejection_metrics,
                                    defended, scores)

from eval_fakes import RejectingThresholdModel, ThresholdModel, fake_attack, spec, threshold_data

# sample: clean correct / clean accepted / attack effect
# 0: T T  flipped, stays accepted     -> accepted & wrong: not defended
# 1: T T  flipped and rejected        -> defended (rejected)
# 2: T T  rejected only               -> defended
# 3: T T  untouched                   -> defended
# 4: T T  untouched                   -> defended
# 5: T F  flipped and now accepted    -> not robust (clean rejected, and adversarial accepted & wrong)
# 6: F T  not attacked (accepted & wrong) -> not robust
# 7: F F  not attacked (clean wrong)    -> not robust (rejected clean inputs never count)


@pytest.fixture
def result():
    x, y = threshold_data(wrong={6, 7}, rejected={5, 7})
    atk = spec("joint", fake_attack(flip={0, 1, 5}, toggle_accept={1, 2, 5}))
    return evaluate(RejectingThresholdModel().eval(), (x, y), [atk], [0.1], progress=False,
                    check_config=CheckConfig(unbounded_subset=0))


def test_protocol_detection():
    assert can_reject(RejectingThresholdModel())
    assert not can_reject(ThresholdModel())


def test_clean_rejection_metrics(result):
    assert result.value("clean_accuracy", "none") == 75.0                 # plain, mask ignored
    assert result.value("clean_accuracy_accepted", "none") == pytest.approx(500 / 6)
    assert result.value("clean_rejection_rate", "none") == 25.0


def test_adversarial_rejection_metrics(result):
    assert result.value("robust_accuracy", "joint", 0.1) == 37.5          # plain: {2, 3, 4}
    assert result.value("adv_rejection_rate", "joint", 0.1) == 37.5       # {1, 2, 7}
    # clean accepted and correct, adversarial rejected or correct: {1, 2, 3, 4}
    assert result.value("robust_accuracy_with_rejection", "joint", 0.1) == 50.0
    assert result.value("robust_accuracy_with_rejection", "worst_case", 0.1) == 50.0
    row = next(r for r in result.rows if r.metric == "robust_accuracy_with_rejection")
    assert row.extra["clean_rejection_rate"] == 25.0        # stated beside the number
    # rejection never leaks into plain accuracy rows
    assert result.value("robust_accuracy", "worst_case", 0.1) == 37.5


def test_plain_models_get_no_rejection_rows():
    x, y = threshold_data()
    r = evaluate(ThresholdModel().eval(), (x, y), [spec("f", fake_attack(flip={0}))], [0.1],
                 progress=False, check_config=CheckConfig(unbounded_subset=0))
    assert not [row for row in r.rows if "rejection" in row.metric or "accepted" in row.metric]


def test_metric_functions_exact():
    import torch

    t = lambda *v: torch.tensor(v, dtype=torch.bool)  # noqa: E731
    assert clean_rejection_metrics(t(1, 1, 0, 0), t(1, 0, 1, 0)) == {
        "clean_accuracy_accepted": 50.0, "clean_rejection_rate": 50.0}
    assert clean_rejection_metrics(t(1, 1), t(0, 0))["clean_accuracy_accepted"] == 0.0
    adv_ok = defended(t(0, 1, 0, 0), t(1, 1, 0, 1))           # rejected or correct
    m = adversarial_rejection_metrics(t(1, 1, 1, 0), t(1, 1, 1, 1), adv_ok, t(1, 1, 0, 1))
    assert m == {"adv_rejection_rate": 25.0, "robust_accuracy_with_rejection": 50.0}
    # a model that rejects everything is robust on nothing
    m = adversarial_rejection_metrics(t(1, 1), t(0, 0), defended(t(0, 0), t(0, 0)), t(0, 0))
    assert m["robust_accuracy_with_rejection"] == 0.0


# ----------------------------------------------------------------------------- the unbounded check with rejection


def plane_rejector(flat: bool):
    """Plane model: features 4 (x - 0.5) (``flat``: with no input gradient), class weights
    (1, 0), (0, 1), (-1, 0), acceptance cones of 0.05 rad (flat) or 0.3 rad; 12 points of
    class 0 and 4 of class 1, all accepted and correct, and 2 that are clean-rejected."""
    import torch
    from torch import nn
    from advgeom.inference import GeodesicRejector
    from advgeom.models.base import Classifier
    from advgeom.nn.sphere import SphereHead

    class Features(nn.Module):
        def forward(self, x):
            f = 4.0 * (x - 0.5)
            return f.detach() if flat else f

    head = SphereHead(2, 3, scale="norm")
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    net = Classifier(Features(), head, num_classes=3, input_shape=(2,), feature_dim=2).eval()
    g = torch.Generator().manual_seed(0)
    a = torch.stack([0.6 + 0.3 * torch.rand(12, generator=g), torch.full((12,), 0.5)], 1)
    b = torch.stack([torch.full((4,), 0.5), 0.6 + 0.3 * torch.rand(4, generator=g)], 1)
    off = torch.tensor([[0.8, 0.8], [0.7, 0.75]])          # 45 degrees from W_0: rejected
    mean, std = (0.04, 0.01) if flat else (0.2, 0.1)
    model = GeodesicRejector(net, torch.full((3,), mean), torch.full((3,), std)).eval()
    return model, torch.cat([a, b, off]), torch.tensor([0] * 12 + [1] * 4 + [0, 0])


@pytest.mark.parametrize("flat, attack, verdict", [
    (True, "geodesic_adaptive:steps=50", "fail"),
    (True, "geodesic_adaptive:steps=50,guides=2", "fail"),    # run without its guides: they win by construction
    (True, "pgd:steps=5", "fail"),                              # no rejection-aware attack: the configured one
    (False, "geodesic_adaptive:steps=50,guides=2", "pass"),
    (False, "pgd:steps=5", "pass")])
def test_unbounded_check_with_rejection(flat, attack, verdict):
    model, x, y = plane_rejector(flat)
    _, accept = model.predict_with_rejection(x)
    assert accept.tolist() == [True] * 16 + [False] * 2
    with pytest.warns(UserWarning) if flat else contextlib.nullcontext():
        r = evaluate(model, (x, y), [attack], [0.05], progress=False)
    c, = [c for c in r.checks.results if c.name == "unbounded_rejection"]
    assert c.status == verdict
    assert "without guided starts, on the 16 accepted and correct points of 18" in c.message
    assert "guides" not in c.details["attack"]
    assert c.details["attack"].startswith("geodesic_adaptive")
    steers = {row.attack: row.extra.get("steers_rejection", False) for row in r.rows if row.metric == "robust_accuracy"
              and row.attack != "worst_case"}
    assert list(steers.values()) == [attack.startswith("geodesic_adaptive")]   # kept apart by iterative_vs_single_step
    if flat:   # ascent cannot move; only a lucky random start lands in a 0.05 rad cone
        assert c.details["accuracy"] >= 75.0
        worst = next(row for row in r.rows if row.metric == "robust_accuracy_with_rejection"
                     and row.attack == "worst_case")
        assert "unbounded_rejection" in worst.extra["failed_checks"]
        plain = next(row for row in r.rows if row.metric == "robust_accuracy" and row.attack == "worst_case")
        assert "unbounded_rejection" not in plain.extra.get("failed_checks", [])   # plain robustness not concerned
        assert "unbounded_rejection" in r.failed_checks("robust_accuracy_with_rejection", "worst_case", 0.05)
        assert r.failed_checks("robust_accuracy", "worst_case", 0.05) == plain.extra.get("failed_checks", [])
        assert r.failed_checks("robust_accuracy_with_rejection", "worst_case", 0.5) == []   # no such row
    else:
        assert r.failed_checks("robust_accuracy_with_rejection", "worst_case", 0.05) == []
        assert c.details["accuracy"] == 0.0


def test_rejection_check_warns_without_angle_excess_and_is_absent_without_rejection():
    x, y = threshold_data()
    with pytest.warns(UserWarning, match="unbounded_rejection warn"):
        r = evaluate(RejectingThresholdModel().eval(), (x, y), [spec("f", fake_attack())], [0.1], progress=False)
    assert r.checks.get("unbounded_rejection").status == "warn"
    r = evaluate(ThresholdModel().eval(), (x, y), [spec("f", fake_attack())], [0.1], progress=False)
    assert "unbounded_rejection" not in [c.name for c in r.checks.results]


class SteerableRejector(RejectingThresholdModel):
    """RejectingThresholdModel with the ``angle_excess`` a rejection-aware attack steers by."""

    def angle_excess(self, x):
        return 0.5 - x[:, 2]


def aware(name: str, flip: set[int]) -> AttackSpec:
    fn = fake_attack(flip=flip, overstep=0.1)       # at the check's eps 1: x0 moves 0.1 > 0.04
    fn.info = AttackInfo(rejection_aware=True)
    return spec(name, fn)


@pytest.mark.parametrize("halves, verdict, left", [
    (({0, 1, 2, 3}, {4, 5, 6, 7}), "pass", 0.0),    # each alone leaves half; together none
    (({0, 1, 2, 3}, {0, 1, 2, 3}), "fail", 50.0),   # the same half twice
    (({0, 1, 2, 3, 4, 5, 6, 7},), "pass", 0.0)])
def test_unbounded_rejection_judges_the_per_sample_union(halves, verdict, left):
    x, y = threshold_data()
    attacks = [aware(f"aware{i}", h) for i, h in enumerate(halves)]
    with pytest.warns(UserWarning) if verdict == "fail" else contextlib.nullcontext():
        r = evaluate(SteerableRejector().eval(), (x, y), attacks, [0.01], progress=False)
    c, = [c for c in r.checks.results if c.name == "unbounded_rejection"]
    assert (c.status, c.details["accuracy"]) == (verdict, left)
    if len(halves) == 2:
        assert c.details["each"] == {"aware0": 50.0, "aware1": 50.0}
        assert "per-sample worst case over aware0 + aware1" in c.message
        assert "each alone: aware0 50.00%, aware1 50.00%" in c.message
    else:
        assert "each" not in c.details and c.details["attack"].startswith("aware0 at eps=1")


def test_scores_build_no_graph():
    import torch

    model, x, _ = plane_rejector(False)
    logits, accept = scores(model, x)
    assert not logits.requires_grad and accept is not None
    plain = torch.nn.Linear(2, 3)
    assert not scores(plain, x)[0].requires_grad
