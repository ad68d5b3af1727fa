"""End to end: a small trained MLP evaluated with real registered attacks
(pgd, fgsm, apgd-dlr, square), rows stored, report and plot written."""
import pytest

from advgeom.eval import format_report, run_evaluation
from advgeom.results import ResultStore

EPS = [0.05, 0.1, 0.2]


@pytest.fixture(scope="module")
def result(blobs_mlp, tmp_path_factory):
    model, x, y = blobs_mlp
    tmp = tmp_path_factory.mktemp("e2e")
    store = ResultStore(tmp / "results.sqlite")
    res = run_evaluation(model, (x, y), "pgd:steps=20,fgsm,apgd-dlr:steps=20,square:steps=300",
                         "0.05,0.1,0.2", n=192, batch_size=96, store=store, experiment="e2e",
                         model_name="mlp", dataset="blobs", seed=0, progress=False,
                         plot_dir=str(tmp), strict=True)
    return res, store


def test_all_checks_pass(result):
    res, _ = result
    assert res.ok, [c.message for c in res.checks.failed]
    names = {c.name for c in res.checks.results if c.status == "pass"}
    assert names >= {"threat_model", "monotone_in_eps", "iterative_vs_single_step", "gradient_masking",
                     "unbounded_attack", "zero_gradients", "saturated_loss", "softmax_outputs", "model_eval_mode",
                     "model_unchanged"}


def test_accuracies_are_consistent(result):
    res, _ = result
    clean = res.accuracy("none")
    assert clean > 0.9
    labels = ["pgd:steps=20", "fgsm", "apgd-dlr:steps=20", "square:steps=300"]
    for e in EPS:
        worst = res.accuracy("worst_case", e)
        assert all(worst <= res.accuracy(a, e) <= clean for a in labels)
        assert res.accuracy("pgd:steps=20", e) <= res.accuracy("fgsm", e)
        # the worst case is the per-sample AND over attacks
        per_sample = res.robust[("pgd:steps=20", e)]
        for a in labels[1:]:
            per_sample = per_sample & res.robust[(a, e)]
        assert per_sample.equal(res.robust[("worst_case", e)])
    assert res.accuracy("worst_case", EPS[-1]) < clean          # eps=0.2 does break something


def test_pass_counts(result):
    res, _ = result
    fwd = {r.attack: r.value for r in res.rows if r.metric == "forward_passes" and r.eps == 0.1}
    bwd = {r.attack: r.value for r in res.rows if r.metric == "backward_passes" and r.eps == 0.1}
    assert bwd["fgsm"] == 1.0 and 1.0 <= fwd["fgsm"] <= 2.0
    assert 1.0 < bwd["pgd:steps=20"] <= 20.0
    assert bwd["square:steps=300"] == 0.0 and fwd["square:steps=300"] > 1.0


def test_rows_stored_report_and_plot(result):
    res, store = result
    stored = store.query(experiment="e2e")
    assert sorted(r.key() for r in stored) == sorted(r.key() for r in res.rows)
    assert store.runs() and store.runs()[0]["env"]["torch"]
    text = format_report(res)
    for needle in ("Robust accuracy", "worst_case", "eps=0.2", "PASS threat_model", "Figures"):
        assert needle in text
    (png,) = res.figures
    with open(png, "rb") as f:
        assert f.read(4) == b"\x89PNG"
