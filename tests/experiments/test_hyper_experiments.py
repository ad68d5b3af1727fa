"""The hyperspherical-defense experiments: registered, their configs are the paper's
(Section 7.1) in the paper profile and a stated subset in the quick one, attack lists
validate, one table cell evaluates end to end on a tiny model, and hyper-cifar refuses
clearly without CIFAR-10."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from advgeom.errors import AdvgeomError
from advgeom.attacks.spec import parse_attacks
from advgeom.experiments import hyper_blackbox as HB
from advgeom.experiments import hyper_cifar as HC
from advgeom.experiments import hyper_mnist as HM
from advgeom.experiments.base import Context
from advgeom.registry import get, names
from advgeom.results import ResultStore
from advgeom.train.build import build_model


def test_registered():
    for name in ("hyper-mnist", "hyper-cifar", "hyper-blackbox"):
        assert name in names("experiment")
        assert get("experiment", name).paper == "hyperspherical-defense.txt"


def test_paper_profile_is_section_7_1():
    cfgs = HM.hyper_configs("paper")
    assert len(cfgs) == 18
    for label, cfg in cfgs.items():
        arch, training = label.split("/")
        assert cfg.model == HM.ARCHS[arch] and cfg.model_kwargs == {}
        assert (cfg.optimizer, cfg.lr, cfg.iterations, cfg.milestones) == ("adam", 1e-3, 30_000, (10_000, 20_000))
        base, kw = (cfg.objective, cfg.objective_kwargs) if arch == "baseline" else \
            (cfg.objective_kwargs["base"], cfg.objective_kwargs["base_kwargs"])
        assert (arch == "baseline") == (cfg.objective != "dsphere")
        assert base == {"natural": "ce", "fgsm": "fgsm_at", "pgd": "pgd_at"}[training]
        if training != "natural":
            assert kw["eps"] == 0.3 and kw["warmup"] == 0.0
        if training == "pgd":
            assert kw["attack"] == "pgd:steps=10,step_size=0.75,early_stop=false"
        if training == "fgsm":
            assert kw["attack"] == "fgsm"


def test_quick_profile_is_a_stated_subset():
    quick, paper = HM.cells("quick"), HM.cells("paper")
    assert set(quick) < set(paper) and len(quick) >= 12
    note = HM.profile_note("quick")
    for arch, training in quick:
        assert f"{arch}/{training}" in note
    for arch in HM.ARCHS:  # every architecture with natural and FGSM training
        assert (arch, "natural") in quick and (arch, "fgsm") in quick


def test_variant_models_are_built():
    heads = {}
    for label, cfg in HM.hyper_configs("quick").items():
        if label.endswith("/natural"):
            heads[label.split("/")[0]] = build_model(cfg).head
    assert isinstance(heads["baseline"], torch.nn.Linear)
    assert heads["dsphere"].scale == "norm" and not heads["dsphere"].annealed
    assert heads["dsphere_wm"].scale == "multiplier"
    assert heads["dsphere_wm_quadratic"].operator == "quadratic"
    assert heads["dsphere_annealing"].annealed
    assert heads["dsphere_wm_truncated"].operator == "truncated"


@pytest.mark.parametrize("profile", ["QUICK", "CPU", "PAPER"])
@pytest.mark.parametrize("rejecting", [False, True])
def test_attack_lists_validate(rejecting, profile):
    specs = parse_attacks(HM.attack_specs(getattr(HM, profile), rejecting))
    labels = [s.label for s in specs]
    assert len(set(labels)) == len(labels)
    assert ("geodesic_adaptive" in {s.name for s in specs}) == rejecting
    assert specs[0].name == "fgsm" and specs[1].kwargs == {"steps": 100, "step_size": 0.01}
    margin = [s for s in specs if s.label == HM.FGSM_MARGIN]   # the label evaluate_cell looks up
    assert len(margin) == 1 and margin[0].name == "fgsm" and margin[0].kwargs == {"loss": "margin"}
    assert (specs[-1].name == "geodesic_adaptive") == rejecting   # the calibrated run's adaptive attack


def test_one_cell_end_to_end(tmp_path):
    torch.manual_seed(0)
    cfg = HM.hyper_config("dsphere_wm", "natural", "quick")
    model = build_model(cfg).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 1, 28, 28, generator=g), torch.randint(0, 10, (40,), generator=g)
    from advgeom.data.base import TensorData
    train = TensorData(x, y, 10, "mnist", "train")
    data = dict(name="mnist", train=train, test=TensorData(x[:8], y[:8], 10, "mnist", "test"),
                held_out=x[30:])
    s = dict(HM.QUICK, n=8, apgd_steps=2, square=4, stats_n=30, target_rejection=0.2)
    ctx = Context("hyper-test", "quick", tmp_path, ResultStore(tmp_path / "r.sqlite"), show_progress=False)
    outcomes: dict = {}
    comps, notes = HM.evaluate_cell(ctx, "dsphere_wm/natural", model, data, s, (99.0, 80.0, 10.0),
                                    "dsphere_mnist_wm", "natural_training", rejecting=True, outcomes=outcomes)
    by = {c.label: c for c in comps}
    assert by["dsphere_wm/natural: clean"].paper == 99.0
    # the per-point outcomes behind the FGSM and worst-case rows
    assert len(outcomes["fgsm"]) == len(outcomes["worst"]) == len(outcomes["fgsm_margin"]) == 8
    assert 100.0 * sum(outcomes["fgsm"]) / 8 == by["dsphere_wm/natural: FGSM"].measured
    margin = by["dsphere_wm/natural: FGSM on the margin loss (not saturated in float32)"]
    assert 100.0 * sum(outcomes["fgsm_margin"]) / 8 == margin.measured and margin.paper is None
    assert 100.0 * sum(outcomes["worst"]) / 8 == by["dsphere_wm/natural: worst case (no rejection)"].measured
    assert "dsphere_wm/natural: worst case, robust with rejection (p=1)" in by
    assert any("geodesic_adaptive, robust with rejection (p=" in c.label and "p=1)" not in c.label
               for c in comps)
    assert any("p calibrated" in n for n in notes)


def test_hyper_cifar_refuses_clearly(tmp_path, monkeypatch):
    ctx = Context("hyper-cifar", "quick", tmp_path, ResultStore(tmp_path / "r.sqlite"), show_progress=False)
    with pytest.raises(AdvgeomError, match="only a paper profile"):
        get("experiment", "hyper-cifar").fn(ctx)
    monkeypatch.setenv("ADVGEOM_DATA", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ctx = Context("hyper-cifar", "paper", tmp_path, ResultStore(tmp_path / "r.sqlite"), show_progress=False)
    with pytest.raises(AdvgeomError, match="needs CIFAR-10"):
        get("experiment", "hyper-cifar").fn(ctx)
    assert len(HC.cifar_configs("paper")) == 12 and HC.cifar_configs("quick") == {}
    cfg = HC.cifar_configs("paper")["dsphere_wm/fgsm"]
    assert cfg.iterations == 64_000 and cfg.milestones == (34_000, 54_000)
    assert cfg.objective_kwargs["base_kwargs"]["eps"] == pytest.approx(8 / 255)


def test_blackbox_substitutes_are_independent_copies():
    cfgs = HB.blackbox_configs("quick")
    for key, cfg in cfgs.items():
        if key.startswith("substitute:"):
            twin = cfgs["target:" + key.split(":", 1)[1]]
            assert cfg.seed == 1 and twin.seed == 0
            assert (cfg.model, cfg.objective_kwargs, cfg.iterations) == \
                (twin.model, twin.objective_kwargs, twin.iterations)
    assert HB.blackbox_configs("paper")["target:dsphere/natural"].dataset == "cifar10"


def test_blackbox_cpu_targets_are_hyper_mnist_cpu_models():
    """Issue 26: the cpu targets are hyper-mnist cpu's own models of Table 3's six cells
    (same configs, so the same cache key), the substitutes the same recipe with seed 1."""
    from advgeom.config import config_hash

    cfgs = HB.blackbox_configs("cpu")
    hm = HM.hyper_configs("cpu")
    targets = {k.split(":", 1)[1]: c for k, c in cfgs.items() if k.startswith("target:")}
    assert set(targets) == {f"{a}/{t}" for a in HB.ARCHS for t in HB.TRAININGS}
    for cell, cfg in targets.items():
        assert cfg == hm[cell] and config_hash(cfg) == config_hash(hm[cell])
        sub = cfgs[f"substitute:{cell}"]
        assert sub.seed == 1 and sub == dataclasses.replace(cfg, seed=1)
        assert config_hash(sub) != config_hash(cfg)
    assert targets["dsphere_wm/fgsm"].iterations == 4300 and targets["dsphere_wm/fgsm"].schedule == "piecewise"


def test_blackbox_cpu_points_attacks_and_assumptions():
    s, dataset, _ = HB._recipe("cpu")
    assert dataset == "mnist" and s["n"] >= 1000 and s is HM.CPU
    crafts = {"fgsm": {"attack": "fgsm"}, "pgd": {"attack": "pgd", "steps": 100, "step_size": 0.01}}
    assert list(HB._white_box(s, crafts)) == ["FGSM", "PGD", "APGD-DLR"]
    assert list(HB._white_box(HB._recipe("quick")[0], crafts)) == ["FGSM", "PGD"]   # the quick report's attacks
    src = HB.blackbox_sources("cpu")
    assert {src[k].kind for k in ("dataset", "iterations", "schedule", "batch_size")} == {"assumption"}
    assert "CIFAR-10" in src["dataset"].where and src["substitute:dsphere/fgsm.objective"].kind == "assumption"
    assert src["target:dsphere/fgsm.objective"].kind == "paper"
    assert HB._points_source("cpu", 1000).kind == "assumption" and "1,000" in HB._points_source("cpu", 1000).where
    exp = get("experiment", "hyper-blackbox")
    assert exp.profiles == ("quick", "cpu", "paper") and "hours" in exp.expected["cpu"]


def test_failed_note_names_the_failed_checks_of_the_row_with_rejection():
    from advgeom.eval.checks import CheckReport
    from advgeom.eval.runner import EvalResult
    from advgeom.results.rows import Row

    def row(metric, eps, failed):
        return Row("hyper-mnist", "m", "d", "worst_case", eps, 0, metric, 50.0,
                   extra={"failed_checks": failed} if failed else {})
    res = EvalResult(rows=[row("robust_accuracy_with_rejection", 0.3, ["unbounded_rejection"]),
                           row("robust_accuracy", 0.3, ["gradient_masking"]),
                           row("robust_accuracy_with_rejection", 0.1, [])],
                     checks=CheckReport(), specs=[], eps=[0.1, 0.3], norm="linf", n=2,
                     clean_correct=torch.ones(2, dtype=torch.bool), robust={})
    assert HM.failed_note(res, "worst_case", 0.3) == "FAILED check: unbounded_rejection (see Notes)"
    assert HM.failed_note(res, "worst_case", 0.1) == ""
    assert HM.failed_note(res, "pgd", 0.3) == ""          # no such row


def test_cpu_cell_runs_both_adaptive_attacks_on_a_subset_judged_together(tmp_path):
    """The cpu profile adds ADAPTIVE_STRONG beside ADAPTIVE on the first
    ``strong_adaptive_n`` points; the rows name each by its spec (they share a name) and
    the unbounded check of that evaluation judges the two together."""
    assert HM.CPU["strong_adaptive_n"] == 200 and "strong_adaptive_n" not in HM.QUICK
    assert {"num_targets": 9, "step_schedule": "cosine", "steps": 500}.items() \
        <= parse_attacks([HM.ADAPTIVE_STRONG])[0].kwargs.items()
    torch.manual_seed(0)
    model = build_model(HM.hyper_config("dsphere_wm", "natural", "quick")).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 1, 28, 28, generator=g), torch.randint(0, 10, (40,), generator=g)
    from advgeom.data.base import TensorData
    train = TensorData(x, y, 10, "mnist", "train")
    data = dict(name="mnist", train=train, test=TensorData(x[:8], y[:8], 10, "mnist", "test"),
                held_out=x[30:])
    s = dict(HM.CPU, n=8, suite_n=4, strong_adaptive_n=6, apgd_steps=2, stats_n=30, target_rejection=0.2)
    ctx = Context("hyper-test", "cpu", tmp_path, ResultStore(tmp_path / "r.sqlite"), show_progress=False,
                  smoke=True)
    comps, notes = HM.evaluate_cell(ctx, "dsphere_wm/natural", model, data, s, (99.0, 80.0, 10.0),
                                    "dsphere_mnist_wm", "natural_training", rejecting=True)
    labels = [c.label for c in comps]
    assert len(set(labels)) == len(labels)
    sub = {c.label: c for c in comps if "(p=1, first " in c.label}
    k = sub["dsphere_wm/natural: worst case, robust with rejection (p=1, first 1 points)"].n  # --smoke: 1 point
    assert k == 1
    cell = "dsphere_wm/natural: "
    assert set(sub) == {cell + f"{name} (p=1, first {k} points)" for name in (
        "clean rejection rate", "clean accuracy on accepted",
        "geodesic_adaptive:guides=20,steps=50, robust with rejection",
        "geodesic_adaptive:num_targets=9,step_schedule=cosine,steps=500, robust with rejection",
        "worst case, robust with rejection")}
    assert any(n.startswith(f"dsphere_wm/natural (adaptive, first {k}): Checks") for n in notes)


def test_advantage_over_the_baseline_is_a_paired_difference():
    ref = {f"{a}/fgsm": [f, 0.0, 0.0] for a, f in (("baseline", 29.42), ("dsphere", 84.70))}
    n = 1000
    base = {"fgsm": [i < 300 for i in range(n)], "worst": [i < 10 for i in range(n)],
            "fgsm_margin": [i < 70 for i in range(n)]}
    sphere = {"fgsm": [i < 800 for i in range(n)], "worst": [i < 12 for i in range(n)],
              "fgsm_margin": [i < 750 for i in range(n)]}
    rows = HM.advantage_comparisons({"baseline/natural": base, "dsphere/natural": sphere,
                                     "dsphere/fgsm": {k: [True] * n for k in base}}, ref)
    assert [r.label for r in rows] == ["dsphere/natural: advantage over baseline/natural, FGSM (points, paired)",
                                       "dsphere/natural: advantage over baseline/natural, FGSM on the margin loss "
                                       "(points, paired)",
                                       "dsphere/natural: advantage over baseline/natural, worst case (no rejection) "
                                       "(points, paired)"]   # no baseline/fgsm cell: no row for dsphere/fgsm
    fgsm, margin, worst = rows
    assert margin.measured == pytest.approx(68.0) and margin.paper is None
    assert fgsm.measured == pytest.approx(50.0) and fgsm.paper == pytest.approx(84.70 - 29.42)
    assert worst.measured == pytest.approx(0.2) and worst.paper is None
    low, high = (float(v) for v in worst.note.split("[")[1].split("]")[0].split(", "))
    assert low < 0.0 < high   # 2 discordant points of 1,000: no advantage resolved
    low, high = (float(v) for v in fgsm.note.split("[")[1].split("]")[0].split(", "))
    assert 46.0 < low < 50.0 < high < 54.0


def test_rejector_statistics_are_cached_and_key_evaluations_as_a_fresh_fit(tmp_path, monkeypatch):
    from advgeom.data.base import TensorData
    from advgeom.hashing import state_hash
    from advgeom.inference import GeodesicRejector

    torch.manual_seed(0)
    model = build_model(HM.hyper_config("dsphere", "natural", "quick")).eval()
    g = torch.Generator().manual_seed(1)
    train = TensorData(torch.rand(60, 1, 28, 28, generator=g), torch.arange(60) % 10, 10, "mnist", "train")
    s = dict(HM.QUICK, stats_n=50)
    ctx = Context("hyper-test", "quick", tmp_path, ResultStore(tmp_path / "r.sqlite"), show_progress=False)
    first = HM.rejector(ctx, model, train, s)
    fresh = GeodesicRejector.fit(model, train.images[:50], train.labels[:50]).eval()
    assert torch.equal(first.mean, fresh.mean) and torch.equal(first.std, fresh.std)
    assert state_hash(first) == state_hash(fresh)   # the evaluation units it keys are a fresh fit's
    monkeypatch.setattr(GeodesicRejector, "fit", lambda *a, **k: pytest.fail("measured again"))
    again = HM.rejector(ctx, model, train, s)
    assert state_hash(again) == state_hash(fresh)
    with pytest.raises(BaseException, match="measured again"):   # other points: a new unit
        HM.rejector(ctx, model, train, dict(s, stats_n=40))
