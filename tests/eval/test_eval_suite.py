"""The standard suite: its attacks and order, the cascade (each attack only on the points
still robust, early exit when none is left), re-verification of boundary points, the
marking of numbers a failed check concerns, and the CLI's strict exit status."""
import pytest
import torch

from advgeom.errors import AdvgeomError
from advgeom.eval import CheckConfig, evaluate, format_report, suite_specs
from advgeom.eval.checks import CheckError

from eval_fakes import ThresholdModel, fake_attack, spec, threshold_data

CFG = CheckConfig(unbounded_subset=0)


def test_suite_versions_and_order():
    std = suite_specs("standard")
    assert [s.label for s in std] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert std[1].kwargs["num_targets"] == 9 and std[2].kwargs["num_targets"] == 9
    assert std[3].kwargs["steps"] == 5000 and std[0].kwargs["steps"] == 100
    plus = suite_specs("plus")
    assert [s.label for s in plus] == ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
    assert plus[2].kwargs == {"steps": 100, "num_targets": 0, "restarts": 5}   # untargeted FAB
    assert plus[0].kwargs["restarts"] == 5
    assert [s.label for s in suite_specs("rand")] == ["apgd-ce-eot", "apgd-dlr-eot"]
    with pytest.raises(AdvgeomError):
        suite_specs("nope")
    with pytest.raises(AdvgeomError, match="4 classes"):
        suite_specs("standard", num_classes=2)


def test_cascade_attacks_only_points_still_robust():
    x, y = threshold_data()
    calls = {"a": [], "b": [], "c": []}
    atks = [spec("a", fake_attack(flip={0, 1}, calls=calls["a"])),
            spec("b", fake_attack(flip={2}, calls=calls["b"])),
            spec("c", fake_attack(flip={3}, calls=calls["c"]))]
    res = evaluate(ThresholdModel().eval(), (x, y), atks, [0.1], cascade=True, progress=False,
                   check_config=CFG)
    assert calls["a"] == [list(range(8))]
    assert calls["b"] == [[2, 3, 4, 5, 6, 7]]          # a's successes are not attacked again
    assert calls["c"] == [[3, 4, 5, 6, 7]]
    assert [res.accuracy(s, 0.1) for s in ("a", "b", "c")] == [0.75, 0.625, 0.5]  # cumulative
    assert res.accuracy("worst_case", 0.1) == 0.5
    # early exit: nothing left, nothing attacked
    calls2: list = []
    res = evaluate(ThresholdModel().eval(), (x, y), [spec("all", fake_attack(flip=range(8))),
                   spec("late", fake_attack(calls=calls2))], [0.1], cascade=True,
                   progress=False, check_config=CFG)
    assert calls2 == [] and res.accuracy("worst_case", 0.1) == 0.0


def test_boundary_point_is_caught_and_marked():
    x, y = threshold_data()

    def onto_boundary(model, inputs, labels, *, eps, norm="linf", generator=None, **kw):
        adv = inputs.clone()
        adv[:2, 0] = 0.5 + (adv[:2, 0] - 0.5).sign() * -1e-9  # logit margin ~2e-8: a tie
        return adv

    onto_boundary.attack_kind = "iterative"
    res = evaluate(ThresholdModel().eval(), (x, y), [spec("edge", onto_boundary)], [0.1],
                   progress=False, check_config=CFG)
    check = res.checks.get("boundary_points")
    assert check.status == "fail" and "edge at eps=0.1: 2" in check.message
    row = next(r for r in res.rows if r.attack == "edge" and r.metric == "robust_accuracy")
    assert "boundary_points" in row.extra["failed_checks"]
    text = format_report(res)
    assert "!" in text and "failed check(s) boundary_points" in text
    with pytest.raises(CheckError):
        evaluate(ThresholdModel().eval(), (x, y), [spec("edge", onto_boundary)], [0.1],
                 progress=False, check_config=CFG, strict=True)


def test_real_attacks_leave_no_boundary_points():
    """The attacks push past the success margin: nothing the evaluator scores is fragile."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5)).eval()
    x = torch.rand(40, 4)
    with torch.no_grad():
        y = net(x).argmax(1)
    res = evaluate(net, (x, y), ["pgd:steps=20", "fab:steps=20,num_targets=2", "square:steps=200"],
                   [0.05, 0.1], progress=False, check_config=CFG)
    assert res.checks.get("boundary_points").status == "pass"
