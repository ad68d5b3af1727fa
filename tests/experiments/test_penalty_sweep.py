"""penalty-sweep (Figure 5 of weight-penalization-classification-layer.txt): the grid of
models per profile, their sources, the spread and the claim's verdict, the figure (the
smoke run of every profile: tests/experiments/test_smoke.py)."""
import pytest

from advgeom.experiments import penalty_mnist as PM
from advgeom.experiments import penalty_sweep as PS
from advgeom.experiments.settings import missing_sources
from advgeom.registry import get
from advgeom.train.build import build_model


def test_registered_with_three_profiles():
    exp = get("experiment", "penalty-sweep")
    assert exp.profiles == ("quick", "cpu", "paper") and set(exp.expected) == {"quick", "cpu", "paper"}
    assert exp.paper == "weight-penalization-classification-layer.txt"
    assert "0.18 s" in exp.expected["cpu"]


@pytest.mark.parametrize("profile", ["quick", "cpu", "paper"])
def test_one_config_per_grid_cell(profile):
    st = PS.settings(profile)
    cfgs = PS.sweep_configs(profile)
    assert len(cfgs) == len(st["alphas"]) * len(st["s"])
    for s in st["s"]:
        for a in st["alphas"]:
            cfg = cfgs[f"alpha={a:g},s={s:g}"]
            assert cfg.objective == "weight_penalty" and cfg.model == "cw_mnist_cnn"
            assert cfg.objective_kwargs == {"alpha": a, "s": s, "matrix_norm": "fro"}
            assert cfg.model_kwargs["feature_activation"] == "tanh"
            assert cfg.optimizer == "adam" and cfg.lr == (0.001 if profile == "cpu" else 0.01)   # cpu: peak
    assert missing_sources(cfgs, PS.sweep_sources(profile)) == []


def test_grid_centres_on_the_papers_choice_and_reuses_table4():
    """alpha 100 and s 0.1 (Section 4) are cells of every profile; the paper cell at them
    is penalty-mnist's Table 4 model, and the quick one penalty-activations' tanh/s=0.1."""
    for profile in ("quick", "cpu", "paper"):
        assert "alpha=100,s=0.1" in PS.sweep_configs(profile)
    assert PS.sweep_configs("paper")["alpha=100,s=0.1"] == PM.penalty_config("paper")
    assert PS.cell_label(1000.0, 0.01) == "alpha=1000,s=0.01"
    paper, cpu = PS.sweep_configs("paper")["alpha=10,s=1"], PS.sweep_configs("cpu")["alpha=10,s=1"]
    assert paper.epochs == 400 and paper.schedule == "step" and not paper.milestones   # constant 0.01
    assert cpu.epochs == PS.CPU["epochs"] and cpu.schedule == "piecewise" and cpu.lr_factors == (0.0, 1.0, 0.0)
    assert (cpu.model_kwargs, cpu.batch_size) == (paper.model_kwargs, paper.batch_size)   # the paper's network
    # the cpu estimate: each model within 2 hours of training at the measured step time
    assert cpu.epochs * PS.STEPS_PER_EPOCH * PS.STEP_SECONDS < 2 * 3600
    assert PS.CPU["n"] >= 1000 and PS.CPU["suite_n"] >= 200
    model = build_model(PS.sweep_configs("quick")["alpha=1,s=1"])
    assert model.head.weight.shape == (10, 100)


def test_sources_name_the_grid_and_the_cpu_compression():
    src = PS.sweep_sources("cpu")
    assert src["objective_kwargs"].kind == "assumption" and "not in the text" in src["objective_kwargs"].where
    assert src["epochs"].kind == "assumption" and "20 epochs instead of 400" in src["epochs"].where
    assert PS.sweep_sources("paper")["epochs"].kind == "assumption"      # Table 4's recipe, not Figure 5's
    assert "400 epochs" in PS.sweep_sources("paper")["epochs"].where


def test_spread_finds_the_extremes_and_their_intervals():
    sp = PS.spread({"a": 99.0, "b": 97.5, "c": 98.0}, 1000)
    assert (sp.high, sp.low, sp.points) == ("a", "b", pytest.approx(1.5))
    # Wilson 95%: 990/1000 -> [98.17, 99.46], 975/1000 -> [96.32, 98.31]: they overlap
    assert not sp.separated and "intervals overlap" in sp.describe()
    wide = PS.spread({"x": 80.0, "y": 20.0}, 100)
    assert wide.separated and wide.points == pytest.approx(60.0)
    assert "x 80.0% [71.1, 86.7]" in wide.describe()
    close = PS.spread({"x": 52.0, "y": 48.0}, 100)          # 4 points on 100: inside the noise
    assert not close.separated
    with pytest.raises(ValueError):
        PS.spread({}, 10)


def test_claim_verdict_reads_the_spreads():
    clean_flat = PS.spread({"a": 99.0, "b": 98.0}, 1000)
    clean_steep = PS.spread({"a": 99.0, "b": 60.0}, 1000)
    adv_steep = PS.spread({"a": 80.0, "b": 20.0}, 1000)
    adv_flat = PS.spread({"a": 50.0, "b": 47.0}, 1000)
    holds = " ".join(PS.claim_verdict(clean_flat, adv_steep))
    assert "clean accuracy': HOLDS" in holds and "(PGD-40) accuracy': HOLDS" in holds
    fails = " ".join(PS.claim_verdict(clean_steep, adv_flat, adv_flat))
    assert "clean accuracy': does NOT hold" in fails and "(PGD-40) accuracy': does NOT hold" in fails
    assert "does NOT persist under strong evaluation" in fails
    assert "persists under" in PS.claim_verdict(clean_flat, adv_steep, adv_steep)[2]


def test_figure_draws_every_cell(tmp_path):
    alphas, s_values = [1.0, 100.0], [0.1, 1.0]
    acc = {k: {PS.cell_label(a, s): 50.0 + a / 10 + s for a in alphas for s in s_values}
           for k in ("clean", "pgd40", "worst")}
    path = PS.plot_sweep(alphas, s_values, acc, tmp_path / "fig.png")
    assert path.is_file() and path.stat().st_size > 1000
    del acc["worst"][PS.cell_label(100.0, 1.0)]
    with pytest.raises(KeyError):
        PS.plot_sweep(alphas, s_values, acc, tmp_path / "bad.png")
