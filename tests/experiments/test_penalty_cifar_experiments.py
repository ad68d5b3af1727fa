"""The CIFAR weight-penalty experiments (weight-penalization-classification-layer.txt Tables 3
and 5, Figures 4 and 7): listed with their profile, their configs the paper's settings, the
curves read from the monitor, and --smoke end to end with the report's rows and figures."""
from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from advgeom.attacks.spec import parse_attack_spec
from advgeom.cli import app
from advgeom.config import config_hash
from advgeom.experiments import penalty_activations as PA
from advgeom.experiments import penalty_cifar as PC
from advgeom.experiments import penalty_cifar_small as PS
from advgeom.experiments.base import reference
from advgeom.experiments.plan import make_plan
from advgeom.experiments.runner import reproduce
from advgeom.experiments.smoke import SMOKE
from advgeom.registry import get
from advgeom.results import ResultStore
from advgeom.train.build import SMOKE_MONITOR, build_model
from test_smoke import write_cifar_like   # tests/experiments/test_smoke.py

NEW = ("penalty-cifar-small", "penalty-cifar-activations", "penalty-cifar100")


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cifar-penalty")
    write_cifar_like(d)
    return d


def test_listed_with_their_paper_profile():
    out = CliRunner().invoke(app, ["list", "experiments"])
    assert out.exit_code == 0, out.output
    for name in NEW:
        line, = [x for x in out.output.splitlines() if x.startswith(name + " ")]
        assert "[paper]" in line
        assert get("experiment", name).paper == "weight-penalization-classification-layer.txt"
    res = CliRunner().invoke(app, ["reproduce", "penalty-cifar-small", "--profile", "quick", "--plan"])
    assert res.exit_code == 2 and "no profile 'quick'" in res.output and "Traceback" not in res.output


def test_table5_configs_are_the_papers():
    cfgs = PS.table5_configs("paper")
    assert list(cfgs) == list(PS.ROWS) == list(reference("weight_penalty.cifar10_small")["rows"])
    pen, at, mmc = cfgs["penalty"], cfgs["adv_training"], cfgs["mmc"]
    # Section 4.2: Adam 0.01, 400 epochs; Section 4: alpha 100, s 0.1; tanh features
    assert (pen.model, pen.optimizer, pen.lr, pen.epochs, pen.iterations) == ("cw_cifar_cnn", "adam", 0.01, 400, 0)
    assert pen.objective == "weight_penalty" and pen.objective_kwargs == {"alpha": 100.0, "s": 0.1,
                                                                          "matrix_norm": "fro"}
    assert pen.model_kwargs == {"feature_activation": "tanh"} and not pen.milestones
    # Madry et al.'s CIFAR-10 recipe: eps 8/255, PGD-7 of 2/255, SGD 0.1, 80k steps of 128, drops at 40k/60k
    craft = parse_attack_spec(at.objective_kwargs["attack"])
    assert at.objective == "pgd_at" and at.objective_kwargs["eps"] == pytest.approx(8 / 255)
    assert craft.kwargs["steps"] == 7 and craft.kwargs["step_size"] == pytest.approx(2 / 255, abs=1e-6)
    assert (at.optimizer, at.lr, at.momentum, at.weight_decay, at.batch_size, at.iterations) == \
        ("sgd", 0.1, 0.9, 2e-4, 128, 80_000)
    assert at.milestones == (40_000, 60_000) and at.gamma == 0.1 and at.schedule_unit == "iteration"
    assert mmc.model == "mmc" and mmc.model_kwargs["base"] == "cw_cifar_cnn" and mmc.objective == "mmc"
    assert not mmc.objective_kwargs.get("adversarial", False)
    assert (mmc.lr, mmc.batch_size, mmc.epochs, mmc.milestones) == (0.001, 50, 180, (81, 121))
    for label, cfg in cfgs.items():   # Figure 4: PGD-20 (Table 1) every epoch on 1,000 train + 1,000 test points
        m = cfg.monitor
        assert m.every == 50_000 // cfg.batch_size and m.size == 0
        assert (m.train_points, m.test_points, m.eps) == (1000, 1000, pytest.approx(8 / 255))
        assert parse_attack_spec(m.attack).kwargs == {"steps": 20, "step_size": 0.0031}
        net = build_model(cfg)
        assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert isinstance(build_model(pen).body.feature_act, torch.nn.Tanh)


def test_figure7_configs_share_table5s_penalty_and_vary_the_activation():
    cfgs = PS.activation_configs("paper")
    assert tuple(cfgs) == PA.ACTIVATIONS == ("relu", "prelu", "leaky_relu", "tanh")
    for act, cfg in cfgs.items():
        assert cfg.model_kwargs == {"feature_activation": act}
        assert cfg.objective_kwargs["alpha"] == 100.0 and cfg.objective_kwargs["s"] == 0.1   # Figure 7's caption
    assert config_hash(cfgs["tanh"]) == config_hash(PS.table5_configs("paper")["penalty"])   # one training run
    assert isinstance(build_model(cfgs["prelu"]).body.feature_act, torch.nn.PReLU)


def test_cifar100_shares_the_wrn_recipe():
    c10, c100 = PC.cifar_configs("paper")["penalty"], PC.cifar100_configs("paper")["penalty"]
    assert c100.dataset == "cifar100" and c100.model_kwargs["num_classes"] == 100
    assert c100.model_kwargs["mean"] == list(PC.CIFAR100_MEAN)
    same = ("model", "objective", "objective_kwargs", "optimizer", "lr", "batch_size", "epochs", "milestones",
            "gamma", "schedule_unit")
    assert all(getattr(c10, k) == getattr(c100, k) for k in same)
    assert {k: v for k, v in c100.model_kwargs.items() if k in c10.model_kwargs} == c10.model_kwargs
    assert set(reference("weight_penalty.cifar100_wrn")["penalty"]) == {"clean", "pgd20", "pgd100", "deepfool", "cw"}
    assert "no CIFAR-100 loader" not in (PC.__doc__ or "")


def test_curves_are_read_from_the_monitor_history():
    hist = [{"step": 10, "loss": 1.0}, {"step": 390, "monitor_train_clean": 0.5, "monitor_train_robust": 0.25,
                                        "monitor_test_clean": 0.4, "monitor_test_robust": 0.2},
            {"step": 780, "monitor_train_clean": 0.75, "monitor_train_robust": 0.5,
             "monitor_test_clean": 0.5, "monitor_test_robust": 0.1}]
    curves = PS.curves_of(hist, 390)
    assert curves["train_robust"] == [(1.0, 25.0), (2.0, 50.0)] and curves["test_robust"] == [(1.0, 20.0), (2.0, 10.0)]
    comps = {c.label: c for c in PS.curve_comparisons("x", curves, 1000)}
    assert comps["x: [curve] test PGD-20, best epoch (1)"].measured == 20.0
    last = comps["x: [curve] test PGD-20, last epoch (2)"]
    assert last.measured == 10.0 and last.note == "-10.0 from the best" and last.n == 1000
    assert PS.curve_comparisons("x", PS.curves_of([], 390), 1000) == []


def test_plan_counts_the_curve_points(cifar_dir, monkeypatch):
    monkeypatch.setenv("ADVGEOM_DATA", str(cifar_dir))
    plan = make_plan("penalty-cifar-small", "paper")
    at = plan.trainings[0]
    assert at.config == PS.table5_configs("paper")["adv_training"] and at.steps == 80_000
    assert at.monitor_points == (80_000 // 390) * 2000
    assert [e.norm for e in plan.evaluations] == ["linf", "l2"] * 3        # each row: linf attacks, then l2


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name, figure, rows", [
    ("penalty-cifar-small", "fig4_training_curves.png", PS.ROWS),
    ("penalty-cifar-activations", "fig7_activation_curves.png", PA.ACTIVATIONS)])
def test_smoke_writes_the_comparisons_and_the_figure(name, figure, rows, tmp_path, cifar_dir, monkeypatch):
    monkeypatch.setenv("ADVGEOM_DATA", str(cifar_dir))
    rep = reproduce(name, "paper", root=tmp_path, progress=False, log=lambda m: None, smoke=True)
    text = rep.path.read_text()
    labels = [c.label for c in rep.outcome.comparisons]
    for row in rows:
        assert f"{row}: clean" in labels and f"{row}: [curve] training PGD-20, last epoch" in labels
        assert f"{row}: PGD-20" in labels and f"{row}: PGD-20" in text
    if name == "penalty-cifar-small":
        published = {c.label: c.paper for c in rep.outcome.comparisons}
        assert published["adv_training: MTA-100"] == 57.15 and published["penalty: C&W L2 within radius 1"] == 59.11
        assert published["mmc: PGD-100"] == 38.96
    assert [f.name for f in rep.outcome.figures] == [figure] and rep.outcome.figures[0].is_file()
    curve = ResultStore(tmp_path / SMOKE / "results.sqlite").query(experiment=name, metric="curve_test_robust")
    assert len(curve) == len(rows) and {r.n for r in curve} == {SMOKE_MONITOR}     # the smoke run's points
    assert "on 1000 first training points, 1000 first test points |" in text   # the settings table names them
