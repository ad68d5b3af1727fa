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
