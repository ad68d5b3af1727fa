"""Sanity checks: each one catches the violation it exists for (advgeom.eval.checks)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advgeom.eval import CheckConfig, CheckError, evaluate
from advgeom.eval.checks import (check_gradients, check_iterative_vs_single_step, check_monotone,
                                 check_saturated_loss, check_softmax_outputs, check_threat_model,
                                 threat_model_stats)
from advgeom.eval.masking import check_gradient_masking
from advgeom.results import Row

from eval_fakes import ThresholdModel, fake_attack, spec, threshold_data

NO_UNBOUNDED = CheckConfig(unbounded_subset=0)


def _row(attack, eps, value, metric="robust_accuracy", **extra):
    return Row("e", "m", "none", attack, eps, 0, metric, value, norm="linf", extra=extra)


def _run(model, attacks, eps=(0.1,), **kw):
    x, y = threshold_data()
    kw.setdefault("check_config", NO_UNBOUNDED)
    return evaluate(model, (x, y), attacks, list(eps), progress=False, **kw)


# -- monotonicity ------------------------------------------------------------------------


def test_monotone_catches_increase():
    rows = [_row("none", 0.0, 90.0, "clean_accuracy"), _row("pgd", 0.1, 50.0), _row("pgd", 0.2, 55.0),
            _row("worst_case", 0.1, 40.0), _row("worst_case", 0.2, 30.0)]
    r = check_monotone(rows)
    assert r.status == "fail" and "pgd" in r.message and "worst_case" not in r.message
    assert check_monotone(rows, tol=5.0).status == "pass"


def test_monotone_uses_clean_accuracy_as_eps_zero():
    rows = [_row("none", 0.0, 80.0, "clean_accuracy"), _row("pgd", 0.1, 85.0)]
    assert check_monotone(rows).status == "fail"
    assert check_monotone([_row("none", 0.0, 90.0, "clean_accuracy"), _row("pgd", 0.1, 85.0)]).status == "pass"


def test_monotone_worst_case_with_rejection():
    rows = [_row("worst_case", 0.1, 40.0, "robust_accuracy_with_rejection"),
            _row("worst_case", 0.3, 41.0, "robust_accuracy_with_rejection")]
    assert check_monotone(rows).status == "fail"


def test_monotone_violation_found_in_a_real_evaluation(threshold_model):
    # an attack that breaks more samples at the small eps than at the large one
    def weird(model, inputs, labels, *, eps, norm="linf", generator=None, **kw):
        flip = fake_attack(flip={0, 1, 2, 3} if eps < 0.2 else {0})
        return flip(model, inputs, labels, eps=eps)

    res = _run(threshold_model, [spec("weird", weird)], eps=(0.1, 0.2))
    # per sample, the adversarials found at 0.1 count at 0.2 too: monotone by construction,
    # and the erratic attack is reported
    assert res.accuracy("weird", 0.2) == res.accuracy("weird", 0.1)
    assert torch.equal(res.robust[("weird", 0.2)], res.robust[("weird", 0.1)])
    assert res.checks.get("monotone_in_eps").status == "pass"
    check = res.checks.get("per_sample_monotone")
    assert check.status == "warn" and "3 sample(s)" in check.message
    row = next(r for r in res.rows if r.attack == "weird" and r.eps == 0.2
               and r.metric == "robust_accuracy")
    assert row.extra["counted_from_smaller_eps"] == 3


# -- iterative vs single step, gradient masking -------------------------------------------


def test_iterative_weaker_than_single_step_fails():
    rows = [_row("fgsm", 0.1, 40.0, kind="single_step"), _row("pgd:steps=2", 0.1, 45.0, kind="iterative")]
    assert check_iterative_vs_single_step(rows).status == "fail"
    rows[1] = _row("pgd:steps=2", 0.1, 30.0, kind="iterative")
    assert check_iterative_vs_single_step(rows).status == "pass"
    assert check_iterative_vs_single_step(rows[:1]).status == "skip"
    # different losses are not compared; the same loss is
    rows = [_row("fgsm", 0.1, 40.0, kind="single_step", loss="ce"),
            _row("apgd-dlr", 0.1, 45.0, kind="iterative", loss="dlr")]
    assert check_iterative_vs_single_step(rows).status == "skip"
    rows.append(_row("pgd", 0.1, 41.0, kind="iterative", loss="ce"))
    r = check_iterative_vs_single_step(rows)
    assert r.status == "fail" and "pgd" in r.message and "apgd-dlr" not in r.message
    # kind from the attack name when the row does not carry one
    assert check_iterative_vs_single_step([_row("fgsm", 0.1, 40.0), _row("pgd", 0.1, 41.0)]).status == "fail"
    # an attack steering a rejecting model's acceptance is not held to a plain single-step one
    rows = [_row("fgsm:loss=margin", 0.1, 40.0, kind="single_step", loss="margin"),
            _row("geodesic_adaptive", 0.1, 45.0, kind="iterative", loss="margin", steers_rejection=True)]
    assert check_iterative_vs_single_step(rows).status == "skip"
    rows[1].extra.pop("steers_rejection")   # the same attack on a model that cannot reject is compared
    assert check_iterative_vs_single_step(rows).status == "fail"


def test_gradient_masking_flag_from_rows():
    rows = [_row("pgd", 0.1, 50.0, kind="iterative"), _row("fgsm", 0.1, 60.0, kind="single_step"),
            _row("square", 0.1, 30.0, kind="black_box")]
    r = check_gradient_masking(rows)
    assert r.status == "fail" and "square" in r.message and "gradient masking" in r.message
    rows[2] = _row("square", 0.1, 55.0, kind="black_box")
    assert check_gradient_masking(rows).status == "pass"


def test_gradient_masking_flag_from_fake_attacks(threshold_model):
    white = spec("white", fake_attack(flip={0, 1}, kind="iterative"))
    black = spec("black", fake_attack(flip={0, 1, 2, 3}, kind="black_box"))
    transfer = spec("transfer_fake", fake_attack(flip={0}, kind="transfer"))
    res = _run(threshold_model, [white, black, transfer])
    c = res.checks.get("gradient_masking")
    assert c.status == "fail" and "black" in c.message
    res = _run(threshold_model, [spec("white", fake_attack(flip={0, 1, 2})), transfer])
    assert res.checks.get("gradient_masking").status == "pass"


def _outcomes(n, white_only, black_only, both):
    """Per-sample robust masks (True = robust) of a white-box and a black-box attack on
    ``n`` points: ``white_only`` points only the white-box one breaks, ``black_only``
    only the black-box one, ``both`` broken by both."""
    w, b = torch.ones(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)
    w[:white_only] = False
    b[white_only:white_only + black_only] = False
    w[white_only + black_only:white_only + black_only + both] = False
    b[white_only + black_only:white_only + black_only + both] = False
    return w, b


def _paired_rows(n, white_only, black_only, both, eps=0.1):
    w, b = _outcomes(n, white_only, black_only, both)
    rows = [_row("apgd-ce", eps, 100.0 * float(w.float().mean()), kind="iterative"),
            _row("square", eps, 100.0 * float(b.float().mean()), kind="black_box")]
    return rows, {("apgd-ce", eps): w, ("square", eps): b}


@pytest.mark.parametrize("b,c", [(0, 0), (1, 0), (5, 0), (4, 0), (12, 3), (40, 28), (30, 5),
                                 (9, 0), (29, 20), (100, 70), (500, 440), (3, 9)])
def test_exact_mcnemar_matches_scipy_binomtest(b, c):
    from scipy.stats import binomtest

    from advgeom.eval.masking import mcnemar_one_sided

    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5, alternative="greater").pvalue
    assert mcnemar_one_sided(b, c) == pytest.approx(expected, rel=1e-12, abs=0)


def test_gradient_masking_noise_passes_when_paired():
    """Issue 29: on 1,000 points Square ahead of APGD-CE by 1.2 points is noise when the
    points each alone breaks are 40 vs 28 (p = 0.09): pass. The rows alone (1.2 points)
    pass too (below 5 points); tolerance 0 on the aggregates failed it."""
    rows, robust = _paired_rows(1000, white_only=28, black_only=40, both=200)
    r = check_gradient_masking(rows, robust)
    assert r.status == "pass", r.message
    (t,) = r.details["tests"]
    assert (t["b"], t["c"], t["n"]) == (40, 28, 1000) and t["lead"] == pytest.approx(1.2)
    assert 0.05 < t["p"] < 0.1
    assert check_gradient_masking(rows).status == "pass"


def test_gradient_masking_significant_lead_fails_below_5_points():
    """A 4.5-point lead on 200 points: the pairing decides. Discordant points 29 vs 20
    (p = 0.13) pass; 9 vs 0 (p = 0.002) fail, with the same aggregate rows."""
    rows, robust = _paired_rows(200, white_only=20, black_only=29, both=50)
    assert check_gradient_masking(rows, robust).status == "pass"
    rows2, robust2 = _paired_rows(200, white_only=0, black_only=9, both=70)
    assert [r.value for r in rows2] == [r.value for r in rows]   # the same aggregate rows
    r = check_gradient_masking(rows2, robust2)
    assert r.status == "fail" and "McNemar p = 0.002" in r.message and "square" in r.message
    assert r.details["cells"] == [("apgd-ce", 0.1)]


def test_gradient_masking_small_samples_fail_on_5_points():
    """On 20 points no test is significant (b 2, c 0: p = 0.25), but a 10-point lead is
    masking whatever n; 4 points of lead (b 4, c 3 on 25) is not."""
    rows, robust = _paired_rows(20, white_only=0, black_only=2, both=5)
    r = check_gradient_masking(rows, robust)
    assert r.status == "fail" and r.details["tests"][0]["p"] == pytest.approx(0.25)
    rows, robust = _paired_rows(25, white_only=3, black_only=4, both=5)
    assert check_gradient_masking(rows, robust).status == "pass"


def test_gradient_masking_paired_in_a_real_evaluation():
    """The evaluator hands its per-sample outcomes to the check: on 200 points a
    black-box lead of 4.5 points fails when one-sided (9 vs 0) and passes when it is
    29 vs 20 (the aggregate rows are the same)."""
    x, y = threshold_data(200)

    def run(white, black):
        w = spec("white", fake_attack(flip=white, kind="iterative", n=200))
        b = spec("black", fake_attack(flip=black, kind="black_box", n=200))
        return evaluate(ThresholdModel().eval(), (x, y), [w, b], [0.1], progress=False,
                        check_config=NO_UNBOUNDED)

    one_sided = run(set(range(70)), set(range(79)))
    split = run(set(range(50)) | set(range(100, 120)), set(range(50)) | set(range(120, 149)))
    for res in (one_sided, split):
        assert res.accuracy("black", 0.1) == 121 / 200
        assert res.accuracy("white", 0.1) == 130 / 200
    assert one_sided.checks.get("gradient_masking").status == "fail"
    assert split.checks.get("gradient_masking").status == "pass"


def test_cascade_black_box_stage_exact_test():
    """In a cascade the black-box stage attacks only what the white-box stages left, so
    c = 0: 5 more points broken is significant (2^-5 < 0.05), 4 are not (the old rule,
    0.5 percentage points, failed 4 of 200)."""
    x, y = threshold_data(200)

    def run(extra):
        w = spec("white", fake_attack(flip=set(range(100)), kind="iterative", n=200))
        b = spec("black", fake_attack(flip=set(range(100 + extra)), kind="black_box", n=200))
        return evaluate(ThresholdModel().eval(), (x, y), [w, b], [0.1], progress=False, cascade=True,
                        check_config=NO_UNBOUNDED)

    four, five = run(4), run(5)
    assert four.checks.get("gradient_masking").status == "pass"
    c = five.checks.get("gradient_masking")
    assert c.status == "fail" and "black" in c.message
    assert (c.details["tests"][0]["b"], c.details["tests"][0]["c"]) == (5, 0)


# -- threat model ----------------------------------------------------------------------


@pytest.mark.parametrize("overstep", [1.5, 3.0])
def test_threat_model_catches_overstepping_attack(threshold_model, overstep):
    bad = spec("bad", fake_attack(flip={0, 1}, overstep=overstep))
    res = _run(threshold_model, [bad], eps=(0.05, 0.1))
    c = res.checks.get("threat_model")
    assert c.status == "fail" and "bad @ eps=0.1" in c.message
    with pytest.raises(CheckError, match="threat_model"):
        _run(threshold_model, [bad], strict=True)


def test_threat_model_catches_range_and_nan():
    x = torch.full((2, 3), 0.5)
    assert check_threat_model([{"attack": "a", "eps": 0.1, **threat_model_stats(x, x + 0.1, 0.1, "linf")}],
                              "linf").status == "pass"
    out = x.clone()
    out[0, 0] = 1.05
    s = threat_model_stats(x * 1.9, out, 1.0, "linf")     # inside the ball, outside [0,1]
    assert check_threat_model([{"attack": "a", "eps": 1.0, **s}], "linf").status == "fail"
    out[0, 0] = float("nan")
    s = threat_model_stats(x, out, 1.0, "linf")
    r = check_threat_model([{"attack": "a", "eps": 1.0, **s}], "linf")
    assert r.status == "fail" and "NaN" in r.message
    # l2 ball: a perturbation of l2 norm 0.2 breaks eps=0.15 but not eps=0.25
    d = torch.zeros(1, 4)
    d[0, :] = 0.1
    s = threat_model_stats(torch.full((1, 4), 0.5), 0.5 + d, 0.15, "l2")
    assert check_threat_model([{"attack": "a", "eps": 0.15, **s}], "l2").status == "fail"
    assert check_threat_model([{"attack": "a", "eps": 0.25, **s}], "l2").status == "pass"


# -- model checks ------------------------------------------------------------------------


class SoftmaxModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x).softmax(1)


class QuantizedModel(nn.Module):
    """Rounds its input first: the input gradient is exactly zero everywhere."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x):
        return self.lin(torch.round(x * 4) / 4)


class StepModel(ThresholdModel):
    """Class 1 iff x0 > 0.5 through a hard step: no input gradient anywhere."""

    def forward(self, x):
        z = self.k * ((x[:, 0] > 0.5).float() - 0.5)
        return torch.stack([torch.zeros_like(z), z], dim=1)


def test_softmax_outputs_flagged():
    x, y = threshold_data()
    torch.manual_seed(0)
    assert check_softmax_outputs(SoftmaxModel()(x)).status == "warn"
    assert check_softmax_outputs(SoftmaxModel().lin(x)).status == "pass"


def test_zero_gradients_flagged():
    x, y = threshold_data()
    torch.manual_seed(0)
    r = check_gradients(QuantizedModel().eval(), x, y)
    assert r.status == "warn" and r.details["fraction"] == 1.0
    r = check_gradients(ThresholdModel().eval(), x, y)
    assert r.status == "pass" and r.details["fraction"] == 0.0


class ScaledModel(nn.Module):
    """Logits ``s * x[:, :3]``: on x = (0.9, 0.5, 0.1) class 0 leads by 0.4 s and 0.8 s."""

    def __init__(self, s: float) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.tensor(float(s)))

    def forward(self, x):
        return self.s * x[:, :3]


def test_saturated_cross_entropy_flagged_and_its_gradient_loses_the_label_term():
    x = torch.tensor([[0.9, 0.5, 0.1, 0.0]]).repeat(8, 1)
    y = torch.zeros(8, dtype=torch.long)
    with torch.no_grad():
        r = check_saturated_loss(ScaledModel(1.0)(x), y)
        assert r.status == "pass" and r.details == {"fraction": 0.0, "n": 8}
        # gaps 24 and 48: the float32 loss is exactly 0, the float64 one is not
        r = check_saturated_loss(ScaledModel(60.0)(x), y)
        assert r.status == "warn" and r.details == {"fraction": 1.0, "n": 8} and "float32" in r.message
        assert check_saturated_loss(ScaledModel(60.0).double()(x.double()), y).status == "pass"
        # a lead of 15 over both others: exp(-15) * 2 = 6e-7 > 2^-24, not saturated; half the points at 60
        mixed = torch.cat([ScaledModel(37.5)(x[:4]), ScaledModel(60.0)(x[4:])])
        r = check_saturated_loss(mixed, y, max_fraction=0.5)
        assert r.status == "pass" and r.details["fraction"] == 0.5
        assert check_saturated_loss(mixed, y, max_fraction=0.49).status == "warn"
        assert check_saturated_loss(torch.full((8, 1), 40.0), y).status == "skip"   # a single logit
    # the saturated points' input gradient is not zero, so zero_gradients passes: only this check sees them
    assert check_gradients(ScaledModel(60.0).eval(), x, y).status == "pass"
    # what the warning means: float32 drops d loss / d x0 = -(1 - p_0) s, float64 keeps it
    grads = {}
    for dtype in (torch.float32, torch.float64):
        xx = x[:1].to(dtype).requires_grad_(True)
        F.cross_entropy(ScaledModel(60.0).to(dtype)(xx), y[:1]).backward()
        grads[dtype] = xx.grad[0]
    p = torch.tensor([0.9, 0.5, 0.1], dtype=torch.float64).mul(60).softmax(0)
    assert grads[torch.float32][0] == 0 and grads[torch.float32][1] > 0
    assert torch.allclose(grads[torch.float64][:3], 60 * (p - torch.tensor([1.0, 0, 0], dtype=torch.float64)),
                          rtol=1e-4, atol=0)   # exp(log p_0) - 1 rounds at ~1e-16 / 4e-11


def test_model_flags_in_the_report():
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="zero_gradients"):
        res = _run(QuantizedModel().eval(), [spec("f", fake_attack())])
    assert res.checks.get("zero_gradients").status == "warn"
    with pytest.warns(UserWarning, match="softmax"):
        res = _run(SoftmaxModel().eval(), [spec("f", fake_attack())])
    assert res.checks.get("softmax_outputs").status == "warn"
    assert res.ok   # warnings are not failures


def test_model_modified_or_switched_to_training_is_caught(threshold_model):
    def evil(model, inputs, labels, *, eps, norm="linf", generator=None, **kw):
        with torch.no_grad():
            model.k.add_(1.0)
        return inputs.clone()

    def trains(model, inputs, labels, *, eps, norm="linf", generator=None, **kw):
        model.train()
        return inputs.clone()

    res = _run(threshold_model, [spec("evil", evil)])
    assert res.checks.get("model_unchanged").status == "fail"
    assert res.checks.get("model_eval_mode").status == "pass"
    res = _run(ThresholdModel().eval(), [spec("trains", trains)])
    assert res.checks.get("model_eval_mode").status == "fail"


def test_clean_evaluation_passes_every_check(threshold_model):
    res = _run(threshold_model, [spec("f", fake_attack(flip={0}))], eps=(0.05, 0.1), strict=True)
    assert res.ok
    assert {c.status for c in res.checks.results} <= {"pass", "skip"}
    stored = [r for r in res.rows if r.metric.startswith("check:")]
    assert stored and all(r.value == 1.0 for r in stored)


def test_unbounded_attack_check():
    x, y = threshold_data()
    # real pgd with eps covering the box breaks the threshold model completely
    res = evaluate(ThresholdModel().eval(), (x, y), [spec("f", fake_attack())], [0.1], progress=False)
    c = res.checks.get("unbounded_attack")
    assert c.status == "pass" and c.details["accuracy"] == 0.0
    # a step-function model has no input gradient at all: pgd without random start cannot
    # move, accuracy stays 100% at an eps covering the whole box -> flagged
    with pytest.warns(UserWarning, match="unbounded_attack"):
        res = evaluate(StepModel().eval(), (x, y), [spec("f", fake_attack())], [0.1], progress=False,
                       check_config=CheckConfig(unbounded_attack="pgd:steps=5,random_start=false"))
    c = res.checks.get("unbounded_attack")
    assert c.status == "fail" and c.details["accuracy"] == 100.0
    assert res.checks.get("zero_gradients").details["fraction"] == 1.0
    with pytest.raises(CheckError, match="unbounded_attack"):
        evaluate(StepModel().eval(), (x, y), [spec("f", fake_attack())], [0.1], progress=False, strict=True,
                 check_config=CheckConfig(unbounded_attack="pgd:steps=5,random_start=false"))


def test_two_evaluations_on_one_point_set_keep_both_sets_of_checks(tmp_path):
    """A failed check of one evaluation is not overwritten by a later evaluation of the
    same model on the same points; rerunning an evaluation replaces its own checks."""
    from advgeom.results import ResultStore
    from advgeom.results.pivot import verdict
    store = ResultStore(tmp_path / "r.sqlite")
    bad = spec("bad", fake_attack(flip={0, 1}, overstep=1.5))   # leaves the eps-ball
    good = spec("good", fake_attack(flip={0, 1}))
    first = _run(ThresholdModel().eval(), [bad], store=store)
    assert first.checks.get("threat_model").status == "fail"
    _run(ThresholdModel().eval(), [good], store=store)
    _run(ThresholdModel().eval(), [good], store=store)
    rows = store.query()
    checks = [r for r in rows if r.metric == "check:threat_model"]
    assert sorted(r.value for r in checks) == [0.0, 1.0]
    assert len({r.attack for r in checks}) == 2 and all(r.attack.startswith("check[") for r in checks)
    assert {r.extra["evaluation"] for r in checks} == {"bad at linf eps 0.1", "good at linf eps 0.1"}
    v = verdict(rows)
    assert v.status == "fail" and "threat_model" in v.failed
