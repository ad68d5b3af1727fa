"""The experiment framework on a tiny registered experiment: report, rows, resumable units."""
import pytest

from advgeom.errors import AdvgeomError
from advgeom.experiments.base import Comparison, Context, Outcome, experiment, reference
from advgeom.experiments.runner import reproduce
from advgeom.results import ResultStore
from advgeom.train import TrainConfig

CALLS = {"n": 0}


@experiment("_test_tiny", title="tiny", paper="adversarial-spheres.txt", reference="spheres.setup")
def _tiny(ctx: Context) -> Outcome:
    """A tiny experiment used by the tests."""
    model = ctx.train(TrainConfig(dataset="spheres", dataset_kwargs={"d": 4, "n": 64},
                                  model="relu_mlp", model_kwargs={"input_dim": 4, "width": 8, "depth": 1},
                                  objective="bce", batch_size=16, iterations=5, checkpoint_every=5))

    def unit():
        CALLS["n"] += 1
        return {"d": float(ctx.reference("spheres.setup")["d"])}

    d = ctx.cached("dim", unit)["d"]
    ctx.record([ctx.row(model="relu_mlp", metric="d", value=d)])
    import matplotlib.pyplot as plt

    fig = ctx.figure_path("fig")
    plt.figure()
    plt.plot([0, 1])
    plt.savefig(fig)
    plt.close()
    assert not model.training
    return Outcome([Comparison("d", d, 500.0, unit="")], [fig], ["a note"])


def test_reproduce_writes_report_rows_and_skips_units(tmp_path):
    rep = reproduce("_test_tiny", "quick", root=tmp_path, progress=False, log=lambda m: None)
    text = rep.path.read_text()
    assert "| d | 500.00 | — | — | 500.00 | — | +0.00 |" in text and "Profile `quick`" in text and "fig.png" in text
    assert "scaled down" in text and "a note" in text and "torch" in text
    run = (rep.path.parent / "RUN.md").read_text()
    assert "| load average at start |" in run and "advgeom reproduce _test_tiny --profile quick" in run
    rows = ResultStore(tmp_path / "results.sqlite").query(experiment="_test_tiny")
    assert [(r.metric, r.value, r.profile) for r in rows] == [("d", 500.0, "quick")]
    n = CALLS["n"]
    reproduce("_test_tiny", "quick", root=tmp_path, progress=False, log=lambda m: None)
    assert CALLS["n"] == n  # the cached unit was not recomputed


@experiment("_test_timed", title="timed", paper="adversarial-spheres.txt", reference="spheres.setup")
def _timed(ctx: Context) -> Outcome:
    """Trains a tiny classifier and evaluates it once (RUN.md's time per model)."""
    from advgeom.data import load

    model = ctx.train(TrainConfig(dataset="robust_features_2d", model="relu_mlp",
                                  model_kwargs={"input_dim": 2, "width": 8, "depth": 1, "num_outputs": 2},
                                  batch_size=16, iterations=3, checkpoint_every=3))
    ctx.evaluate(model, load("robust_features_2d", "test", n=64), "fgsm", [0.1], n=16, batch_size=16,
                 model_name="relu_mlp", defense="natural")
    return Outcome([], [], [])


def test_run_md_gives_each_models_training_and_evaluation_time(tmp_path):
    """RUN.md's time per model: the training record's time and this run's status; the
    evaluation's units computed now and, on a rerun, the same units reused with the time
    they recorded when computed."""
    import re

    quiet = dict(root=tmp_path, progress=False, log=lambda m: None)
    run = (reproduce("_test_timed", "quick", **quiet).path.parent / "RUN.md").read_text()
    assert "## Time per model" in run
    assert re.search(r"\| relu_mlp \| [0-9a-f]{12} \| trained \| 3 \| [0-9.]+ s \|", run), run
    now = re.search(r"\| relu_mlp/natural \| 1 \| (\d+) \| ([0-9.]+) s \| 0 \| - \|", run)
    assert now and int(now.group(1)) >= 2, run              # the clean unit, FGSM, the checks' units
    again = (reproduce("_test_timed", "quick", **quiet).path.parent / "RUN.md").read_text()
    assert re.search(r"\| relu_mlp \| [0-9a-f]{12} \| cached \| 3 \|", again), again
    reused = re.search(r"\| relu_mlp/natural \| 1 \| 0 \| 0\.0 s \| (\d+) \| ([0-9.]+) s \|", again)
    assert reused and reused.group(1) == now.group(1), again   # the same units, now reused
    assert abs(float(reused.group(2)) - float(now.group(2))) <= 0.05, again


def test_a_code_change_recomputes_units_and_models_unless_reused(tmp_path, monkeypatch):
    import advgeom.results.env as env
    import advgeom.train.state as state

    quiet = dict(root=tmp_path, progress=False, log=lambda m: None)
    reproduce("_test_tiny", "quick", **quiet)
    n = CALLS["n"]
    monkeypatch.setattr(env, "code_fingerprint", lambda *a, **k: "edited-code")
    monkeypatch.setattr(state, "training_code", lambda: "edited-training-code")
    reproduce("_test_tiny", "quick", reuse=True, **quiet)
    assert CALLS["n"] == n                        # --reuse: old units accepted
    assert not list(tmp_path.glob("train/*/*.code-*"))
    reproduce("_test_tiny", "quick", **quiet)
    assert CALLS["n"] == n + 1                    # stale unit recomputed
    assert list(tmp_path.glob("train/*/final.code-*.safetensors"))  # stale model set aside, retrained
    runs = ResultStore(tmp_path / "results.sqlite").runs()
    assert runs[-2]["command"].endswith("--reuse") and runs[-1]["env"]["code"] == "edited-code"


def test_bad_profile_and_reference():
    with pytest.raises(AdvgeomError, match="has no profile 'fast'; its profiles: quick, paper"):
        reproduce("_test_tiny", "fast")
    with pytest.raises(AdvgeomError, match="has no profile 'cpu'; its profiles: quick, paper"):
        reproduce("_test_tiny", "cpu")
    with pytest.raises(AdvgeomError, match="profiles must be among quick, cpu, paper"):
        experiment("_bad", title="t", paper="p", profiles=("fast",))
    with pytest.raises(AdvgeomError, match="no reference table"):
        reference("spheres.nonexistent")
    with pytest.raises(AdvgeomError, match="unknown experiment"):
        reproduce("no-such-experiment")


def test_reference_copy_matches_shared():
    from pathlib import Path

    shared = Path(__file__).resolve().parents[3] / "shared" / "reference-results.toml"
    if not shared.is_file():
        pytest.skip("shared/ not beside the checkout")
    from importlib import resources

    packaged = resources.files("advgeom.experiments").joinpath("reference_results.toml").read_text()
    assert packaged == shared.read_text()


# ---------------------------------------------------------------------------
# check verdicts: collected from every evaluate() of the experiment, reported, strict exit


def _evaluating_experiment(leave_ball: bool):
    """A stub experiment that evaluates a two-logit threshold model with one attack that
    moves x0 by 0.5 eps, or (``leave_ball``) by 3 eps: outside the ball, so the
    threat-model check fails."""
    import torch
    from torch import nn

    from advgeom.eval import AttackSpec, CheckConfig, evaluate

    class Threshold(nn.Module):
        def __init__(self):
            super().__init__()
            self.k = nn.Parameter(torch.tensor(20.0))

        def forward(self, x):
            z = self.k * (x[:, 0] - 0.5)
            return torch.stack([torch.zeros_like(z), z], dim=1)

    def attack(model, inputs, labels, *, eps, norm="linf", steps=10, step_size=None, restarts=1,
               targeted=False, loss="ce", generator=None):
        adv = inputs.clone()
        adv[:, 0] += (3.0 if leave_ball else 0.5) * eps * (1 - 2 * labels.float())
        return adv.clamp(0, 1)

    def run(ctx: Context) -> Outcome:
        y = torch.tensor([0, 1] * 8)
        x = torch.full((16, 4), 0.5)
        x[:, 0] = 0.5 + 0.04 * (2 * y.float() - 1)
        res = evaluate(Threshold().eval(), (x, y), [AttackSpec("shift", {}, attack=attack)], [0.01],
                       store=ctx.store, experiment=ctx.name, model_name="threshold", progress=False,
                       check_config=CheckConfig(unbounded_subset=0))
        return Outcome([Comparison("robust", res.percent(), None)])

    return run


@pytest.fixture
def stub_experiment(monkeypatch):
    """Register ``_test_checks`` (failing or passing evaluation) for one test only."""
    from advgeom.experiments.base import Experiment
    from advgeom.registry import _REGISTRY

    def use(leave_ball: bool) -> str:
        exp = Experiment("_test_checks", "checks", "adversarial-spheres.txt", None,
                         _evaluating_experiment(leave_ball))
        monkeypatch.setitem(_REGISTRY["experiment"], "_test_checks", exp)
        return "_test_checks"

    return use


def test_outcome_carries_failed_checks_and_report_shows_them(tmp_path, stub_experiment):
    with pytest.warns(UserWarning, match="threat_model fail"):
        rep = reproduce(stub_experiment(True), "quick", root=tmp_path, progress=False)
    assert not rep.ok and [r.name for _, r in rep.outcome.failed_checks] == ["threat_model"]
    text = rep.path.read_text()
    assert "## Checks" in text and "FAILED: 1 check(s) failed" in text
    assert "| threshold: shift at linf eps 0.01 | fail | threat_model (fail)" in text


def test_outcome_checks_pass(tmp_path, stub_experiment):
    rep = reproduce(stub_experiment(False), "quick", root=tmp_path, progress=False)
    assert rep.ok and len(rep.outcome.checks) == 1
    assert "No check failed in the 1 evaluation(s) (0 warning(s))." in rep.path.read_text()


def test_experiment_may_add_its_own_reports(tmp_path, monkeypatch):
    from advgeom.eval.checks import CheckReport, CheckResult
    from advgeom.experiments.base import Experiment
    from advgeom.registry import _REGISTRY

    bad = CheckReport([CheckResult("custom", "fail", "made up")])
    exp = Experiment("_test_own", "own", "adversarial-spheres.txt", None,
                     lambda ctx: Outcome(checks=[("by hand", bad)]))
    monkeypatch.setitem(_REGISTRY["experiment"], "_test_own", exp)
    rep = reproduce("_test_own", "quick", root=tmp_path, progress=False)
    assert not rep.ok and "| by hand | fail | custom (fail): made up |" in rep.path.read_text()


@pytest.mark.filterwarnings("ignore:evaluation check")
@pytest.mark.parametrize("leave_ball,flags,code", [(True, [], 1), (True, ["--no-strict"], 0),
                                                   (False, [], 0)])
def test_cli_reproduce_exit_status(tmp_path, stub_experiment, leave_ball, flags, code):
    from typer.testing import CliRunner

    from advgeom.cli import app

    name = stub_experiment(leave_ball)
    out = CliRunner().invoke(app, ["reproduce", name, "--root", str(tmp_path), "--no-progress",
                                   *flags])
    assert out.exit_code == code, out.output
    assert (tmp_path / "reports" / name / "report.md").is_file()   # written before the exit
    rows = ResultStore(tmp_path / "results.sqlite").query(experiment=name)
    assert any(r.metric == "robust_accuracy" for r in rows)
    if leave_ball:
        assert "check failed: threat_model" in out.output
        assert ("sanity check(s) failed" in out.output) == (code == 1)
