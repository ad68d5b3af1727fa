"""The weight-penalty experiments (weight-penalization-classification-layer.txt): registered,
Table 1's attack settings mapped onto advgeom's attack vocabulary, the configs build the
paper's models, the verdict reads the numbers, the figures draw (running them: `advgeom
reproduce penalty-mnist`)."""
import re

import pytest
import torch

from advgeom.errors import AdvgeomError
from advgeom.attacks.spec import parse_attacks
from advgeom.experiments import penalty_activations as PA
from advgeom.experiments import penalty_cifar as PC
from advgeom.experiments import penalty_mnist as PM
from advgeom.experiments.base import Comparison, reference
from advgeom.registry import get, names
from advgeom.train.build import build_model


def test_experiments_registered():
    for name in ("penalty-mnist", "penalty-activations", "penalty-cifar"):
        assert name in names("experiment")
        assert get("experiment", name).paper == "weight-penalization-classification-layer.txt"
    ref = reference("weight_penalty.mnist_small")
    assert set(ref["rows"]) == set(PM.ROWS) and "mta200" in ref["columns"]


def _table1(text: str) -> dict[str, float]:
    """``{"PGD40": 0.01, ...}`` from a settings string of reference_results.toml."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"([A-Z]+\d+) step ([\d.]+)", text)}


def test_table1_settings_map_onto_the_attack_specs():
    st = reference("weight_penalty.settings")
    pgd, mta = _table1(st["pgd"]), _table1(st["mta"])
    specs = PM.paper_specs("paper")
    for col, key in (("pgd40", "PGD40"), ("pgd200", "PGD200")):
        assert specs[col].name == "pgd"
        assert specs[col].kwargs == {"steps": int(key[3:]), "step_size": pgd[key]}
    assert specs["mta200"].base_name == "multi_target"
    assert specs["mta200"].call_kwargs()["steps"] == 200 and specs["mta200"].kwargs["step_size"] == mta["MTA200"]
    assert specs["mta200"].call_kwargs().get("targeted", False) is False   # untargeted as a whole
    assert specs["deepfool"].kwargs == {"steps": 50, "overshoot": 0.02} and "50 iterations, overshoot 0.02" in st["deepfool"]
    cw = specs["cw"]
    assert cw.base_name == "cw_l2" and cw.kind == "min_norm"
    assert cw.kwargs["steps"] == 1000 and cw.kwargs["step_size"] == 0.01 and st["cw"] == "1000 iterations, step 0.01"
    assert PM.CW_EPS == st["eps_l2_cw"]["mnist"] and PM.EPS == st["eps_linf"]["mnist"]
    # CIFAR (Tables 2-3): PGD20 / PGD100 / MTA100 of step 0.0031, C&W at radius 1
    paper, audit, l2 = PC.cifar_specs()
    assert paper[0].kwargs == {"steps": 20, "step_size": pgd["PGD20"]}
    assert paper[1].kwargs == {"steps": 100, "step_size": pgd["PGD100"]}
    assert paper[3].base_name == "multi_target" and paper[3].kwargs["step_size"] == mta["MTA100"]
    assert l2[0].base_name == "cw_l2" and PC.CW_EPS == st["eps_l2_cw"]["cifar10"]
    assert PC.EPS == pytest.approx(st["eps_linf"]["cifar10"], abs=1e-6)
    assert {"apgd-ce", "apgd-t", "square"} <= {s.name for s in audit}
    assert audit[-1].kwargs["steps"] == 5000


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_attack_lists_validate_and_include_the_audit(profile):
    linf = [PM.paper_specs(profile)[k] for k in ("pgd40", "pgd200", "deepfool", "mta200")] + PM.audit_specs(profile)
    labels = [s.label for s in parse_attacks(linf)]
    assert len(labels) == len(set(labels))
    kinds = {s.kind for s in linf}
    assert {"iterative", "black_box", "min_norm"} <= kinds
    assert any(s.loss == "margin" for s in linf) and any(s.loss == "dlr" for s in linf)
    parse_attacks([PM.paper_specs(profile)["cw"]] + PM.audit_specs(profile, "l2"))
    square = [s for s in linf if s.name == "square"][0]
    assert square.kwargs["steps"] == (5000 if profile == "paper" else PM.QUICK["square"])


def test_cpu_penalty_peaks_at_a_tenth_of_the_papers_rate_and_says_why():
    pen = PM.table4_configs("cpu")["penalty"]
    assert (pen.lr, pen.schedule, pen.lr_factors, pen.epochs) == (0.001, "piecewise", (0.0, 1.0, 0.0), 50)
    src = PM.penalty_sources("cpu")
    assert src["penalty.lr"].kind == "assumption" and "ln 10" in src["penalty.lr"].where
    assert "0.001" in src["penalty.lr_factors"].where


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_table4_configs_build_the_small_network(profile):
    cfgs = PM.table4_configs(profile)
    assert list(cfgs) == list(PM.ROWS)
    pen = cfgs["penalty"]
    assert pen.objective == "weight_penalty" and pen.objective_kwargs["alpha"] == 100.0
    assert pen.objective_kwargs["s"] == 0.1 and pen.lr == 0.01 and pen.optimizer == "adam"
    assert pen.model_kwargs["feature_activation"] == "tanh"
    assert cfgs["adv_training"].objective == "pgd_at" and cfgs["mmc"].objective == "mmc"
    assert not cfgs["mmc"].objective_kwargs.get("adversarial", False)
    if profile == "paper":
        assert pen.epochs == 400 and pen.iterations == 0
        assert cfgs["adv_training"].objective_kwargs["attack"].startswith("pgd:steps=40,step_size=0.01")
    for label, cfg in cfgs.items():
        model = build_model(cfg)
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
        assert cfg.model == ("mmc" if label == "mmc" else "cw_mnist_cnn")
    assert isinstance(build_model(pen).body.feature_act, torch.nn.Tanh)


def test_activation_and_cifar_configs():
    cfgs = PA.activation_configs("quick")
    assert len(cfgs) == len(PA.ACTIVATIONS) * len(PA.QUICK["s"]) + 1
    assert cfgs["prelu/s=0.1"].model_kwargs["feature_activation"] == "prelu"
    assert cfgs["tanh/s=1"].objective_kwargs["s"] == 1.0
    assert cfgs["softmax/relu"].objective == "ce"
    assert isinstance(build_model(cfgs["leaky_relu/s=0.01"]).body.feature_act, torch.nn.LeakyReLU)
    with pytest.raises(AdvgeomError, match="paper profile"):
        PC.cifar_configs("quick")
    cfg = PC.cifar_configs("paper")["penalty"]
    assert cfg.model == "wrn" and cfg.model_kwargs == {"depth": 34, "widen_factor": 10, "feature_activation": "tanh"}
    assert cfg.milestones == (60, 120, 180, 240, 300, 360) and cfg.gamma == 0.9 and cfg.epochs == 400
    assert cfg.objective_kwargs["augment"] == "crop_flip"


def _comps(pgd: float, worst: float) -> list[Comparison]:
    return [Comparison("penalty: PGD-40", pgd, 81.90), Comparison("penalty: C&W L2 within radius 3", 90.0, 97.95),
            Comparison("penalty: [audit] worst case, all linf attacks", worst, 81.90),
            Comparison("penalty: [audit] l2 worst case at 3", 80.0, 97.95)]


def test_verdict_reads_the_numbers():
    bad = " ".join(PM.verdict_notes(_comps(80.0, 10.0)))
    assert "does NOT hold" in bad and "70.0 points below PGD-40" in bad
    good = " ".join(PM.verdict_notes(_comps(83.0, 80.0)))
    assert "does NOT hold" not in good and "holds" in good
    assert PM.verdict_notes([]) == []


def test_figures_draw(tmp_path):
    hist = [{"step": 100 * i, "gram_gap": 1.0 / i, "min_angle": 90 + i} for i in range(1, 5)]
    assert PM.plot_training_geometry(hist, tmp_path / "g.png", 96.4).exists()
    assert PA.plot_vs_s([0.1, 1.0], {"pgd40": {"tanh": [50.0, 60.0]}, "worst": {"tanh": [10.0, 20.0]}},
                        tmp_path / "s.png").exists()
    g = torch.Generator().manual_seed(0)
    panels = {"(a)": (torch.randn(30, 5, generator=g), torch.randn(10, 5, generator=g))}
    assert PA.plot_features(panels, torch.arange(30) % 10, tmp_path / "f.png").exists()


def test_model_geometry_of_a_penalty_net_and_an_mmc_net():
    cfgs = PM.table4_configs("quick")
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    geo = PM.model_geometry(build_model(cfgs["penalty"]).eval(), x, 0.1)
    assert geo["min_angle"] < geo["theorem1_angle"] and geo["gram_gap"] > 0
    mmc = PM.model_geometry(build_model(cfgs["mmc"]).eval(), x)
    assert mmc["min_angle"] == pytest.approx(mmc["theorem1_angle"], abs=1e-2)   # fixed MM centers


def test_report_names_of_the_audit_attacks():
    shown = [PM.display(s) for s in PM.audit_specs("paper") + PM.audit_specs("paper", "l2")]
    assert shown == ["APGD-CE", "APGD-T (9 targets)", "PGD-100 (margin loss)", "Square (5000 queries)",
                     "APGD-CE through straight-through tanh", "APGD-DLR through straight-through tanh",
                     "APGD-CE", "APGD-DLR", "APGD-CE through straight-through tanh",
                     "APGD-DLR through straight-through tanh"]


def test_straight_through_tanh_attack_gets_gradients_through_saturated_features():
    """Saturated tanh features zero the input gradient (the masking the audit found); the
    adaptive attack's proxy passes it straight through and breaks the model, which it leaves
    unchanged."""
    torch.manual_seed(0)
    model = build_model(PM.penalty_config("quick")).eval()
    with torch.no_grad():
        model.body.fc2.weight.mul_(1e6)             # drive tanh into float32 saturation
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xg), y), xg)
    assert float(g.abs().max()) == 0.0
    spec = [s for s in PM.audit_specs("quick") if s.label == "bpda-apgd-ce"][0]
    assert spec.kind == "iterative"
    adv = spec.fn(model, x, y, eps=0.3, norm="linf", generator=torch.Generator().manual_seed(2),
                  **spec.call_kwargs())
    assert float((adv - x).abs().max()) <= 0.3 + 1e-6 and float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert float((model(adv).argmax(1) != y).float().mean()) > 0.5
    assert isinstance(model.body.feature_act, torch.nn.Tanh)


@pytest.mark.parametrize("profile, queries", [("quick", 1000), ("paper", 5000)])
def test_activation_attacks_include_a_black_box(profile, queries):
    specs = PA.attack_specs(profile)
    assert specs[0].kwargs == {"steps": 40, "step_size": 0.01}          # Figure 6's PGD-40
    assert [s.kind for s in specs].count("black_box") == 1 and specs[3].kwargs["steps"] == queries
    assert [s.label for s in specs[-2:]] == ["bpda-apgd-ce", "bpda-apgd-dlr"]
    parse_attacks(specs)
