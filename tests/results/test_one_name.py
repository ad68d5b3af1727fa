"""Issue 30: the same weights evaluated by an experiment and by ``advgeom evaluate
--checkpoint`` are one entry under the experiment's name in `advgeom results` and the
leaderboard; no stored row is lost, and experiments sharing a cached model keep theirs."""
from typer.testing import CliRunner

from advgeom.cli import app
from advgeom.results import ResultStore, Row
from advgeom.results.pivot import leaderboard, one_name, pivot


def _rows(experiment, model, profile, attack, value, weights="w1" * 8):
    common = dict(experiment=experiment, model=model, defense="natural", seed=0, dataset="mnist",
                  norm="linf", profile=profile, n=100, weights=weights, points="100:abc")
    return [Row(attack="none", eps=0.0, metric="clean_accuracy", value=98.0, **common),
            Row(attack=attack, eps=0.3, metric="robust_accuracy", value=value, extra={"kind": "iterative"},
                **common)]


def _store(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    store.add(_rows("demo", "hyper_mnist_cnn/natural", "quick", "fgsm", 40.0))
    store.add(_rows("evaluate", "hyper_mnist_cnn", "", "pgd", 10.0))                  # its checkpoint
    store.add(_rows("hyper-mnist", "baseline/natural", "quick", "fgsm", 40.0))       # a shared cached model
    store.add(_rows("evaluate", "cnn7", "", "pgd", 55.0, weights="w2" * 8))          # no experiment's
    return store


def test_one_entry_per_weights_under_the_experiments_name(tmp_path):
    store = _store(tmp_path)
    rows = store.query()
    assert len(rows) == 8 and len(one_name(rows)) == 8   # nothing dropped
    names = sorted({(p.key["experiment"], p.key["model"], p.key["profile"]) for p in pivot(rows)})
    assert names == [("demo", "hyper_mnist_cnn/natural", "quick"), ("evaluate", "cnn7", ""),
                     ("hyper-mnist", "baseline/natural", "quick")]
    demo = next(p for p in pivot(rows) if p.key["experiment"] == "demo")
    assert dict(demo.lines) == {"fgsm": [40.0], "pgd": [10.0]}
    (board,) = leaderboard(store.query_with_runs(), {})
    assert sorted((e.key["experiment"], e.worst.value) for e in board.entries) == [
        ("demo", 10.0), ("evaluate", 55.0), ("hyper-mnist", 40.0)]


def test_results_command_shows_the_checkpoint_under_the_experiment(tmp_path):
    _store(tmp_path)
    out = CliRunner().invoke(app, ["results", "--db", str(tmp_path / "r.sqlite"), "--experiment", "demo"])
    assert out.exit_code == 0, out.output
    assert out.output.count("demo · hyper_mnist_cnn/natural") == 1 and " pgd " in out.output
    assert "hyper_mnist_cnn ·" not in out.output.replace("hyper_mnist_cnn/natural", "")
