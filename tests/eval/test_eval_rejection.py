"""Rejection-aware metrics on a hand-made abstaining model with known accept masks."""
import pytest

from advgeom.eval import CheckConfig, can_reject, evaluate
from advgeom.eval.rejection import (adversarial_rejection_metrics, clean_rejection_metrics,
                                    defended)

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


def flat_rejector():
    """Plane model: features 4 (x - 0.5) with no input gradient, class weights (1, 0),
    (0, 1), (-1, 0), acceptance cones of 0.05 rad: ascent cannot reach an accepted wrong
    class, a guided start (another accepted input of the batch) can."""
    import torch
    from torch import nn
    from advgeom.inference import GeodesicRejector
    from advgeom.models.base import Classifier
    from advgeom.nn.sphere import SphereHead

    class Flat(nn.Module):
        def forward(self, x):
            return (4.0 * (x - 0.5)).detach()

    head = SphereHead(2, 3, scale="norm")
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    net = Classifier(Flat(), head, num_classes=3, input_shape=(2,), feature_dim=2).eval()
    g = torch.Generator().manual_seed(0)
    a = torch.stack([0.6 + 0.3 * torch.rand(12, generator=g), torch.full((12,), 0.5)], 1)
    b = torch.stack([torch.full((4,), 0.5), 0.6 + 0.3 * torch.rand(4, generator=g)], 1)
    model = GeodesicRejector(net, torch.full((3,), 0.04), torch.full((3,), 0.01)).eval()
    return model, torch.cat([a, b]), torch.tensor([0] * 12 + [1] * 4)


@pytest.mark.parametrize("attack, verdict", [("geodesic_adaptive:steps=5", "fail"),
                                             ("geodesic_adaptive:steps=5,guides=2", "pass"),
                                             ("pgd:steps=5", "pass")])
def test_unbounded_check_with_rejection(attack, verdict):
    model, x, y = flat_rejector()
    with pytest.warns(UserWarning, match="unbounded_attack fail"):   # every case: see the last line
        r = evaluate(model, (x, y), [attack], [0.05], progress=False)
    checks = [c for c in r.checks.results if c.name == "unbounded_rejection"]
    assert len(checks) == 1 and checks[0].status == verdict
    # without a rejection-aware attack the default one (guided) runs
    assert checks[0].details["attack"].startswith("geodesic_adaptive" if "geodesic" in attack
                                                  else CheckConfig().unbounded_rejection_attack.split(":")[0])
    if verdict == "fail":
        assert checks[0].details["accuracy"] >= 75.0
        assert "unbounded_rejection" in next(row for row in r.rows if row.metric == "robust_accuracy_with_rejection"
                                             and row.attack == "worst_case").extra["failed_checks"]
    assert r.checks.get("unbounded_attack").status == "fail"   # plain PGD: no gradient, no misclassification


def test_no_rejection_check_without_rejection():
    x, y = threshold_data()
    r = evaluate(ThresholdModel().eval(), (x, y), [spec("f", fake_attack())], [0.1], progress=False)
    assert "unbounded_rejection" not in [c.name for c in r.checks.results]
