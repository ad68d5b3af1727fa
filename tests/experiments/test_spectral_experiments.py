"""Experiments spectral-mnist / spectral-cifar: registration, the eps rule, figure data and plots."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from advgeom.errors import AdvgeomError
from advgeom.experiments import _spectral_figures as SF
from advgeom.experiments import spectral as S
from advgeom.experiments.base import Context
from advgeom.registry import get, names
from advgeom.results import ResultStore


def _Curve(acc: dict[float, int]) -> dict[float, float]:
    return {e: a / 100 for e, a in acc.items()}   # percent of 100 points, as fractions


def test_registered_with_reference():
    assert {"spectral-mnist", "spectral-cifar"} <= set(names("experiment"))
    assert get("experiment", "spectral-cifar").reference == "spectral.cifar10_cnn7"


def test_eps_rule_picks_the_smallest_eps_that_breaks_almost_all():
    grid = (0.5, 1.0, 2.0, 3.0)
    assert S.choose_eps(_Curve({0.5: 60, 1.0: 6, 2.0: 4, 3.0: 0}), grid, 0.05) == 2.0
    assert S.choose_eps(_Curve({0.5: 5, 1.0: 0, 2.0: 0, 3.0: 0}), grid, 0.05) == 0.5
    assert S.choose_eps(_Curve({0.5: 90, 1.0: 80, 2.0: 70, 3.0: 60}), grid, 0.05) == 3.0


def test_eps_rule_note_says_when_the_rule_falls_back():
    grid = (0.5, 1.0, 2.0)
    met = S.eps_rule_note(_Curve({0.5: 60, 1.0: 4, 2.0: 0}), grid, 0.05, 100)
    assert met.endswith("chosen eps 1 (first with <= 5% accuracy)") and "0.5: 60.0%" in met
    missed = S.eps_rule_note(_Curve({0.5: 60, 1.0: 20, 2.0: 6}), grid, 0.05, 100)
    assert "chosen eps 2 (no eps of the grid leaves <= 5% accuracy" in missed
    assert "falls back to the grid's largest, where 6.0% of the points resist" in missed
    assert "cross-entropy" not in missed
    sat = S.eps_rule_note(_Curve({0.5: 60, 1.0: 20, 2.0: 6}), grid, 0.05, 100, saturated=0.125)
    assert sat.startswith(missed) and sat.endswith("is exactly 0 on 12.5% of these points (its gradient "
                                                   "there lacks the label's term)")


def test_saturated_share_counts_points_whose_loss_is_exactly_zero():
    from advgeom.data.base import TensorData

    net = nn.Sequential(nn.Flatten(), nn.Linear(3, 3, bias=False)).eval()
    with torch.no_grad():
        net[1].weight.copy_(60 * torch.eye(3))
    x = torch.tensor([[0.9, 0.5, 0.1], [0.4, 0.5, 0.1], [0.9, 0.5, 0.1], [0.1, 0.5, 0.9]]).view(4, 1, 1, 3)
    y = torch.tensor([0, 1, 0, 2])   # gaps 24 / 6 / 24 / 24: three saturated in float32
    data = TensorData(x, y, 3, "toy", "test")
    assert S.saturated_share(net, data, 4, torch.device("cpu")) == 0.75
    assert S.saturated_share(net, data, 2, torch.device("cpu")) == 0.5
    assert S.saturated_share(net, data, 4, torch.device("cpu"), batch=3) == 0.75   # counted across batches


def test_profiles_and_configs():
    q = S.settings("spectral-mnist", "quick")
    assert S.settings("spectral-cifar", "paper")["model"] == "cnn7"
    assert S.settings("spectral-cifar", "paper")["global_lams"] == (3e-4,)
    cfg = S.finetune_config(q, "data_snr", {"lam": 0.1, "eps": 2.0, "iters": 5})
    assert cfg.objective == "data_snr" and cfg.iterations == q["finetune_iters"]
    assert S.natural_config(q).iterations == q["natural_iters"]


def test_spectral_cifar_refuses_the_quick_profile(tmp_path: Path):
    ctx = Context("spectral-cifar", "quick", tmp_path, ResultStore(tmp_path / "r.sqlite"), show_progress=False)
    with pytest.raises(AdvgeomError, match="paper profile"):
        get("experiment", "spectral-cifar").fn(ctx)


def _tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)).eval()
    g = torch.Generator().manual_seed(0)
    return net, torch.rand(6, 1, 4, 4, generator=g), torch.randint(0, 3, (6,), generator=g)


def test_figure_data_shapes_and_plots(tmp_path: Path):
    net, x, y = _tiny()
    g = torch.Generator().manual_seed(1)
    f1 = SF.spectrum_data(net, x, y, 0.5, "l2", g)
    assert len(f1["sv"]) == 3 and f1["sv"] == sorted(f1["sv"], reverse=True)
    assert all(0 <= a <= 1 for a in f1["align"] + f1["align_random"])
    f2 = SF.linearity_data(net, x, y, 0.5, "l2", [0.0, 0.5, 1.0], g)
    assert f2["dev_random"][0] == 0.0 and f2["dev_adversarial"][0] == 0.0
    f3 = SF.alignment_data(net, x, y, [0.1, 0.5], "linf", g)
    assert len(f3["align"]) == 2
    data = {"standard": f1, "random net": f1}
    paths = [SF.figure1(tmp_path / "f1.png", data, "t"),
             SF.figure_linearity(tmp_path / "f2.png", {"standard": f2}, 0.5, "t"),
             SF.figure_accuracy(tmp_path / "f3.png", [0.1, 0.5], {"standard": [50.0, 10.0]},
                                {"standard": f3}, None, "eps", "t")]
    theorem = SF.theorem1_data((1e-5, 1.0), (1.0, 1e6), iters=3)
    paths.append(SF.figure_theorem1(tmp_path / "t1.png", theorem))
    assert all(p.is_file() and p.stat().st_size > 1000 for p in paths)
    small = theorem["gaps"]["1e-05"]
    assert small[-1] < small[0] and small[-1] < 1e-4


# ---------------------------------------------------------------------------
# the cpu profile (issue 26)


def test_cpu_profile_keeps_the_paper_network_schedule_and_threat_model():
    cpu, pap = S.settings("spectral-mnist", "cpu"), S.settings("spectral-mnist", "paper")
    assert "cpu" in get("experiment", "spectral-mnist").profiles
    assert "cpu" in get("experiment", "spectral-mnist").expected
    same = ("dataset", "model", "model_kwargs", "optimizer", "lr", "batch_size", "natural_iters", "finetune_iters",
            "finetune_lr", "eps_grid", "linf_grid", "almost_all", "power_iters", "linf_eval_eps", "rule_n",
            "global_lams", "square", "n_curve", "n_fig")
    assert {k: cpu[k] for k in same} == {k: pap[k] for k in same}
    assert cpu["model"] == "madry_mnist_cnn" and cpu["model_kwargs"] == {}      # the full Madry CNN
    assert cpu["n_eval"] >= 1000 and cpu["suite_n"] >= 200 and cpu["apgd_t_targets"] == 3
    # the paper profile's constant grids, walked from the quick pilot's choices
    assert (cpu["data_lams"], cpu["lam_start"]) == (pap["data_lams"], pap["lam_start"])
    assert all(cpu["lam_start"][k] in cpu[g] for k, g in (("global_snr", "global_lams"), ("data_snr", "data_lams")))


class _Ctx:
    """What _regularized touches of a Context: fit, evaluation of clean accuracy, walk."""

    def __init__(self, acc: dict[float, float]) -> None:
        self.acc, self.trained = acc, []

    def fit(self, cfg, init):   # noqa: ANN001, ANN201
        lam = cfg.objective_kwargs["lam"]
        self.trained.append(lam)
        net = nn.Linear(1, 1)
        net.lam = lam
        return type("Run", (), {"model": net, "history": [{"step": 1, "loss": 1.0}]})()

    walk = Context.walk


@pytest.mark.parametrize("target, start, trained, chosen, flag", [
    (92.0, 0.3, [0.3, 1.0], 0.3, None),            # 92.5 above, 91.0 below: bracketed in two
    (91.5, 0.3, [0.3, 1.0], 1.0, None),
    (94.0, 0.3, [0.3, 0.1], 0.1, None),            # walks down
    (99.9, 0.3, [0.3, 0.1, 0.03], 0.03, "start"),  # the target lies below the grid's smallest constant
    (80.0, 0.3, [0.3, 1.0, 3.0], 3.0, "end"),
])
def test_the_constant_search_brackets_the_target_like_a_full_sweep(monkeypatch, target, start, trained,
                                                                   chosen, flag):
    acc = {0.03: 97.0, 0.1: 95.0, 0.3: 92.5, 1.0: 91.0, 3.0: 89.0}
    ctx = _Ctx(acc)
    monkeypatch.setattr(S, "_clean", lambda c, model, *a: acc[model.lam])
    s = dict(S.settings("spectral-mnist", "quick"), lam_start={"data_snr": start})
    notes, hist = [], {}
    model = S._regularized(ctx, s, "data_snr", tuple(acc), target, {"eps": 1.0, "iters": 2}, None, None, notes,
                           1.0, hist)
    assert ctx.trained == trained and model.lam == chosen
    full_sweep = min(acc, key=lambda lam: abs(acc[lam] - target))
    assert chosen == full_sweep
    assert set(hist) == {f"data_snr {lam:g}" for lam in trained}
    assert (f"beyond the grid's {flag}" in notes[0]) if flag else ("beyond" not in notes[0])


def test_walk_visits_until_the_turn_is_bracketed():
    ctx = _Ctx({})
    assert Context.walk(ctx, [1, 2, 3, 4, 5], 3, lambda v: v < 4) == [3, 4]
    assert Context.walk(ctx, [1, 2, 3, 4, 5], 3, lambda v: v < 2) == [3, 2, 1]
    assert Context.walk(ctx, [1, 2, 3, 4, 5], 1, lambda v: True) == [1, 2, 3, 4, 5]
    assert Context.walk(ctx, [1, 2, 3], 2, lambda v: False) == [2, 1]
    with pytest.raises(AdvgeomError, match="not one of"):
        Context.walk(ctx, [1, 2], 3, lambda v: True)


def test_cpu_configs_differ_from_the_paper_ones_by_the_monitor_only():
    cpu, pap = S.settings("spectral-mnist", "cpu"), S.settings("spectral-mnist", "paper")
    nat = S.natural_config(cpu)
    assert replace(nat, monitor={}) == S.natural_config(pap)
    assert (nat.monitor.every, nat.monitor.size, nat.monitor.eps, nat.monitor.norm) == (500, 1000, 1.0, "l2")
    assert nat.monitor.attack == "pgd:steps=10,step_size=0.2" and not nat.monitor.keep_best
    for objective, kw in (("pga_at", {"eps": 2.5, "iters": 10}), ("global_snr", {"lam": 0.01}),
                          ("data_snr", {"lam": 0.3, "eps": 2.5, "iters": 10})):
        ft = S.finetune_config(cpu, objective, kw, 2.5)
        assert replace(ft, monitor={}) == S.finetune_config(pap, objective, kw, 2.5)
        assert (ft.monitor.every, ft.monitor.eps, ft.monitor.norm) == (300, 2.5, "l2")
        assert ft.monitor.attack == "pgd:steps=10,step_size=0.5"          # the paper's PGA-10: 2 eps / 10
    # profiles without a monitor keep their configs (and cached runs) as they were
    assert S.finetune_config(pap, "pga_at", {"eps": 2.5}, 2.5).monitor.every == 0
    assert S.natural_config(S.settings("spectral-mnist", "quick")).monitor.every == 0


@pytest.mark.slow   # the plan runs the experiment under --smoke: ~15 s of CPU
@pytest.mark.filterwarnings("ignore")
def test_cpu_plan_attacks_every_model_as_the_profile_requires():
    """What the cpu run would really evaluate (recorded by --plan, nothing trained): per model
    the paper's PGA-10, APGD-CE and APGD-T on 1,000 points at the rule's l2 eps, and the
    standard suite on 200 points in l2 (with FAB-T) and linf (with FAB-T and Square)."""
    from advgeom.experiments.plan import make_plan

    plan = make_plan("spectral-mnist", "cpu")
    assert all(t.config.model == "madry_mnist_cnn" and t.config.model_kwargs == {} for t in plan.trainings)
    # standard, AT, and the plan's worst case of the constant searches: every constant of both grids
    assert [t.steps for t in plan.trainings] == [6000] + [3000] * 13
    assert all(t.config.monitor.every > 0 and t.config.monitor.norm == "l2" for t in plan.trainings)
    defenses = ("standard", "adversarial_training", "global_snr", "data_snr")
    for d in defenses:
        evals = [e for e in plan.evaluations if e.model.endswith("/" + d)]
        paper_attacks = [e for e in evals if not e.cascade and e.norm == "l2" and len(e.attacks) > 1]
        curve = [e for e in evals if not e.cascade and e.norm == "l2" and len(e.attacks) == 1]
        # the eps curve: PGA-10 with the paper's step 2 eps / 10 at each eps of the grid
        assert {e.eps[0] for e in curve if e.n == 2000} == set(S.settings("spectral-mnist", "cpu")["eps_grid"])
        assert all(e.attacks[0][0].call_kwargs()["step_size"] == pytest.approx(e.eps[0] / 5) for e in curve)
        assert len(paper_attacks) == 1 and paper_attacks[0].n >= 1000
        names = [s.name for s, _, _ in paper_attacks[0].attacks]
        assert names == ["pgd", "apgd-ce", "apgd-t"]
        pga = paper_attacks[0].attacks[0][0].call_kwargs()
        assert pga["steps"] == 10 and pga["step_size"] == pytest.approx(2 * paper_attacks[0].eps[0] / 10)
        suites = {e.norm: e for e in evals if e.cascade}
        assert set(suites) == {"l2", "linf"} and all(e.n >= 200 for e in suites.values())
        assert suites["l2"].eps == paper_attacks[0].eps
        assert {"apgd-ce", "apgd-t", "fab-t"} <= {s.label for s, _, _ in suites["l2"].attacks}
        assert {"apgd-ce", "apgd-t", "fab-t", "square"} <= {s.label for s, _, _ in suites["linf"].attacks}


def test_training_summary_and_curves(tmp_path: Path):
    hist = [{"step": 100 * (i + 1), "loss": 2.0 / (i + 1)} for i in range(20)]
    line = S.training_summary("standard", hist)
    # last tenth (records 19, 20) against the tenth before (17, 18): means 0.1026 and 0.1144
    a, b = (2 / 17 + 2 / 18) / 2, (2 / 19 + 2 / 20) / 2
    assert line == (f"training curve standard: loss 2 at step 100 -> 0.1 at step 2000; mean of the last tenth "
                    f"of the records {100 * (b - a) / a:+.1f}% against the tenth before")
    monitored = [dict(h, monitor_clean=0.9, monitor_robust=0.1 * i / 20) for i, h in enumerate(hist)]
    line = S.training_summary("at", monitored)
    assert line.endswith("at steps 1800: 90.0 / 8.5%, 1900: 90.0 / 9.0%, 2000: 90.0 / 9.5%")
    assert S.training_summary("x", []) == "x: no training history recorded"
    for name, h in (("plain", {"standard": hist}), ("mon", {"standard": hist, "at": monitored})):
        p = SF.figure_training(tmp_path / f"{name}.png", h, "t")
        assert p.is_file() and p.stat().st_size > 1000


def test_pga_spec_uses_the_figures_step():
    assert S.pga_spec(1.5, "l2") == "pgd:steps=10,step_size=0.3" and SF.pga_step(1.5, "l2") == 0.3
    assert S.pga_spec(0.1, "linf") == "pgd:steps=10" and SF.pga_step(0.1, "linf") is None


# ---------------------------------------------------------------------------
# the paper's claim, measured


def _masks(at: int, data: int, glob: int, n: int = 1000) -> dict[str, dict[str, torch.Tensor]]:
    """Worst-case outcomes on n points: each model robust on its first k points (nested, as
    robust points of similar models mostly are), in both norms."""
    def m(k: int) -> torch.Tensor:
        return torch.arange(n) < k
    return {"adversarial_training": {"l2": m(at), "linf": m(at)}, "data_snr": {"l2": m(data), "linf": m(data)},
            "global_snr": {"l2": m(glob), "linf": m(glob)}}


def _fig(at: float, data: float, glob: float, se: float) -> dict[str, dict[str, list[float]]]:
    out = {}
    for name, v in (("adversarial_training", at), ("data_snr", data), ("global_snr", glob)):
        out[name] = {k: [v] * 7 for k in ("sv", "dev_adversarial", "dev_random", "sigma_adversarial", "align")}
        out[name].update({k + "_se": [se] * 7 for k in ("sv", "dev_adversarial", "dev_random",
                                                           "sigma_adversarial", "align")})
    return {"fig1": out, "fig2": out, "fig3": out}


def test_claims_judge_each_quantity_on_its_intervals():
    s = S.settings("spectral-mnist", "cpu")
    rows = S.claims(s, 4.0, 0.1, _masks(600, 590, 100), _fig(1.0, 0.9, 5.0, 0.02))
    assert len(rows) == 7   # two norms, sigma_max, three Figure-2 quantities, alignment
    acc = rows[0]
    assert "l2 eps 4, n 1000" in acc.label and acc.unit == "points"
    assert acc.measured == pytest.approx(50.0 - 1.0)   # |100 - 600| - |590 - 600| points of 1,000, in points
    assert "AT 60.0%" in acc.note and "data SNR - AT -1.0 [" in acc.note and "supported at 95%" in acc.note
    assert all("supported at 95%" in r.note for r in rows)
    # the other order is a contradiction, and overlapping intervals stay unresolved
    rows = S.claims(s, 4.0, 0.1, _masks(600, 100, 590), _fig(1.0, 5.0, 0.9, 0.02))
    assert all("contradicted at 95%" in r.note and r.measured < 0 for r in rows)
    rows = S.claims(s, 4.0, 0.1, _masks(600, 580, 575), _fig(1.0, 1.1, 1.12, 0.05))
    assert all("not resolved at 95%" in r.note for r in rows)


def test_claims_leave_out_what_has_no_interval_or_no_model():
    s = S.settings("spectral-mnist", "cpu")
    one_point = S.claims({**s, "n_fig": 1}, 4.0, 0.1, _masks(600, 590, 100), _fig(1.0, 0.9, 5.0, 0.0))
    assert len(one_point) == 2 and all("robust accuracy" in r.label for r in one_point)
    no_radius = S.claims({**s, "radii_factors": (0.0,)}, 4.0, 0.1, _masks(600, 590, 100), _fig(1.0, 0.9, 5.0, 0.02))
    assert not any("linearity" in r.label or "x + z" in r.label for r in no_radius) and len(no_radius) == 4
    masks = _masks(600, 590, 100)
    del masks["global_snr"]
    assert S.claims(s, 4.0, 0.1, masks, _fig(1.0, 0.9, 5.0, 0.02)) == []
