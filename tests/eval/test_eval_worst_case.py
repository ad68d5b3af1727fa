"""Per-sample worst case over attacks (advgeom.eval.runner)."""
import pytest

from advgeom.eval import CheckConfig, evaluate

from eval_fakes import N, fake_attack, spec, threshold_data

NO_UNBOUNDED = CheckConfig(unbounded_subset=0)


def test_worst_case_is_per_sample(threshold_model):
    x, y = threshold_data()
    a = spec("fake_a", fake_attack(flip={0, 1, 2, 3}))
    b = spec("fake_b", fake_attack(flip={2, 3, 4, 5}))
    r = evaluate(threshold_model, (x, y), [a, b], [0.1], progress=False, check_config=NO_UNBOUNDED)
    assert r.accuracy("none") == 1.0
    assert r.accuracy("fake_a", 0.1) == 0.5
    assert r.accuracy("fake_b", 0.1) == 0.5
    # only samples 6 and 7 survive both attacks: 2/8, less than either attack alone
    assert r.accuracy("worst_case", 0.1) == 0.25
    assert r.robust[("worst_case", 0.1)].tolist() == [False] * 6 + [True] * 2


def test_disjoint_attacks_give_zero_worst_case(threshold_model):
    x, y = threshold_data()
    a = spec("even", fake_attack(flip={0, 2, 4, 6}))
    b = spec("odd", fake_attack(flip={1, 3, 5, 7}))
    r = evaluate(threshold_model, (x, y), [a, b], [0.02, 0.1], progress=False,
                 check_config=NO_UNBOUNDED)
    # eps=0.02 cannot cross the threshold (0.04 away): nothing broken
    assert r.accuracy("worst_case", 0.02) == 1.0
    assert r.accuracy("even", 0.1) == r.accuracy("odd", 0.1) == 0.5
    assert r.accuracy("worst_case", 0.1) == 0.0


def test_misclassified_samples_are_not_attacked_and_not_robust(threshold_model):
    x, y = threshold_data(wrong={7})
    calls = []
    a = spec("fake", fake_attack(flip={0}, calls=calls))
    r = evaluate(threshold_model, (x, y), [a], [0.1], progress=False, check_config=NO_UNBOUNDED,
                 batch_size=3)
    assert r.accuracy("none") == 7 / 8 and r.percent("none") == 87.5
    assert r.accuracy("fake", 0.1) == 6 / 8 == r.value("robust_accuracy", "fake", 0.1) / 100
    assert sorted(i for c in calls for i in c) == list(range(7))   # 7 never attacked
    assert [len(c) for c in calls] == [3, 3, 1]                     # batches of 3


def test_rows_are_tidy(threshold_model):
    x, y = threshold_data()
    a = spec("fake", fake_attack(flip={0}))
    r = evaluate(threshold_model, (x, y), [a], [0.05, 0.1], progress=False, check_config=NO_UNBOUNDED,
                 experiment="exp", model_name="thr", defense="none", dataset="toy")
    keys = [row.key() for row in r.rows]
    assert len(keys) == len(set(keys))
    assert all(row.n == N and row.experiment == "exp" and row.model == "thr" and row.dataset == "toy"
               for row in r.rows)
    attacks = {(row.attack, row.eps) for row in r.rows if row.metric == "robust_accuracy"}
    assert attacks == {("fake", 0.05), ("fake", 0.1), ("worst_case", 0.05), ("worst_case", 0.1)}


def test_bad_inputs_raise_clear_errors(threshold_model):
    from advgeom.errors import AdvgeomError

    x, y = threshold_data()
    a = spec("fake", fake_attack())
    with pytest.raises(AdvgeomError, match="norm"):
        evaluate(threshold_model, (x, y), [a], [0.1], norm="l3", progress=False)
    with pytest.raises(AdvgeomError, match=r"\[0,1\]"):
        evaluate(threshold_model, (x * 3, y), [a], [0.1], progress=False)
    with pytest.raises(AdvgeomError, match="training mode"):
        evaluate(threshold_model.train(), (x, y), [a], [0.1], progress=False)
    with pytest.raises(AdvgeomError, match="eps"):
        evaluate(threshold_model.eval(), (x, y), [a], [-0.1], progress=False)
    with pytest.raises(AdvgeomError, match="data must be"):
        evaluate(threshold_model.eval(), x, [a], [0.1], progress=False)


def test_class_count_mismatch_is_one_error_before_attacking(threshold_model):
    """Issue 29: a 2-class model on 10-class data ended in "index out of bounds" inside
    the evaluation; now one clear error comes before any attack runs."""
    from advgeom.data.base import TensorData
    from advgeom.errors import AdvgeomError
    from advgeom.eval.minnorm import minimal_perturbations

    calls: list = []
    x, y = threshold_data()
    a = spec("fake", fake_attack(calls=calls))
    ten = TensorData(x, y, 10, "ten")
    with pytest.raises(AdvgeomError, match="the model scores 2 classes but the data set 'ten' has 10"):
        evaluate(threshold_model, ten, [a], [0.1], progress=False)
    y9 = y.clone()
    y9[-1] = 9
    with pytest.raises(AdvgeomError, match="the data has label 9 but the model scores 2 classes"):
        evaluate(threshold_model, (x, y9), [a], [0.1], progress=False)
    with pytest.raises(AdvgeomError, match="scores 2 classes"):
        minimal_perturbations(threshold_model, ten, "deepfool", progress=False)
    assert calls == []
