"""A small results database written by the tests: three evaluations on MNIST linf (one
with a failed check and a row labelled `standard`, one of the standard suite's cascade),
one on spheres, and one stored report."""
from types import SimpleNamespace

import pytest

from advgeom.results import ResultStore, Row
from advgeom.results.plots import plot_curves
from advgeom.results.site import record_report


def _eval_rows(model, defense, clean, attacks, checks, experiment="demo"):
    common = dict(experiment=experiment, model=model, defense=defense, seed=0, dataset="mnist",
                  norm="linf", profile="quick", n=300)
    rows = [Row(attack="none", eps=0.0, metric="clean_accuracy", value=clean, **common)]
    for (attack, kind), values in attacks.items():
        for eps, v in values.items():
            extra = {"kind": kind} if kind else {"attacks": ["x"]}
            rows.append(Row(attack=attack, eps=eps, metric="robust_accuracy", value=v, extra=extra, **common))
            rows.append(Row(attack=attack, eps=eps, metric="forward_passes", value=101.0, **common))
    for name, value in checks.items():
        rows.append(Row(attack="check", eps=0.0, metric=f"check:{name}", value=value,
                        extra={"status": {1.0: "pass", 0.0: "fail"}[value], "message": f"{name} msg"}, **common))
    return rows


@pytest.fixture
def results_db(tmp_path):
    """Path of a results database holding known numbers (see the module docstring)."""
    store = ResultStore(tmp_path / "results.sqlite")
    store.start_run("advgeom evaluate --experiment demo", {"git_sha": "abc123def456", "torch": "2.13.0",
                                                          "device": "cpu:test"})
    store.add(_eval_rows("hyper_mnist_cnn", "natural", 97.67,
                         {("fgsm", "single_step"): {0.1: 71.25, 0.3: 15.67},
                          ("pgd", "iterative"): {0.1: 40.5, 0.3: 0.0},
                          ("worst_case", None): {0.1: 40.5, 0.3: 0.0}},
                         {"monotone": 1.0, "threat_model": 1.0}))
    front = _eval_rows("nielsen_cnn4", "front_end", 99.33,
                       {("fgsm", "single_step"): {0.3: 80.0}, ("pgd", "iterative"): {0.3: 43.33},
                        ("square", "black_box"): {0.3: 17.33},
                        ("standard", "iterative"): {0.3: 16.5},
                        ("worst_case", None): {0.3: 14.67}},
                       {"monotone": 1.0, "gradient_masking": 0.0}, experiment="sparsity-table1")
    for r in front:  # the evaluation names the numbers its failed check concerns
        if r.attack in ("square", "pgd", "worst_case") and r.metric == "robust_accuracy":
            r.extra["failed_checks"] = ["gradient_masking"]
    store.add(front)
    # the standard suite as `advgeom evaluate --suite standard` stores it: a cascade of stages
    suite = _eval_rows("madry_mnist_cnn", "pgd_at", 98.5,
                       {("apgd-ce", "cascade"): {0.3: 91.0}, ("apgd-t", "cascade"): {0.3: 89.5},
                        ("fab-t", "cascade"): {0.3: 89.5}, ("square", "cascade"): {0.3: 89.0},
                        ("worst_case", None): {0.3: 89.0}},
                       {"monotone": 1.0}, experiment="at-mnist")
    for r in suite:
        if r.extra.get("kind") == "cascade":
            r.extra["stage"] = ["apgd-ce", "apgd-t", "fab-t", "square"].index(r.attack) + 1
    store.add(suite)
    store.start_run("advgeom reproduce spheres-relu --profile quick", {"git_sha": "fedcba987654"})
    store.add([Row("spheres-relu", "relu_mlp", "none", "none", 0.0, 0, "random_errors", 5.0,
                   profile="quick", n=200000)])
    fig = plot_curves([0.1, 0.3], {"pgd": [40.5, 0.0]}, tmp_path / "figs" / "accuracy_vs_eps.png")
    rep = SimpleNamespace(
        experiment=SimpleNamespace(name="spheres-relu", title="Rare random errors", paper="adversarial-spheres.txt",
                                   reference="spheres.relu", description="Section 3."),
        outcome=SimpleNamespace(
            comparisons=[SimpleNamespace(label="nearest error l2", measured=0.31, paper=0.18, unit="", note="d=100"),
                         SimpleNamespace(label="random errors", measured=5.0, paper=None, unit="count", note="")],
            figures=[fig, tmp_path / "figs" / "gone.png"], notes=["200k random samples <b>escaped</b>"]),
        path=tmp_path / "report.md", seconds=12.0)
    record_report(store, rep, profile="quick", seed=0)
    return store.path
