"""``advgeom reproduce NAME --profile P --plan`` (issue 27): every profile of every
experiment planned in seconds, nothing written; the FLOP count and the pass counts exact."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from advgeom.cli import app
from advgeom.experiments import at_mnist as AT
from advgeom.experiments.cost import (CPU_UTILISATION, GRAD_PASS, Passes, attack_passes, cpu_rate,
                                      forward_flops, training_passes)
from advgeom.experiments import plan as P
from advgeom.experiments.plan import make_plan
from advgeom.registry import get, names
from test_smoke import SLOW, write_cifar_like   # tests/experiments/test_smoke.py

CASES = [(name, profile) for name in names("experiment") if not name.startswith("_")
         for profile in get("experiment", name).profiles]
runner = CliRunner()


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cifar-plan")
    write_cifar_like(d)
    return d


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name,profile", [pytest.param(n, p, id=f"{n}-{p}", marks=[pytest.mark.slow] if n in SLOW
                                                       else []) for n, p in CASES])
def test_plan_of_every_profile(name, profile, tmp_path, cifar_dir, monkeypatch):
    monkeypatch.setenv("ADVGEOM_DATA", str(cifar_dir))
    monkeypatch.chdir(tmp_path)
    seen = []
    monkeypatch.setattr(P, "make_plan", lambda *a, **kw: seen.append(make_plan(*a, **kw)) or seen[-1])
    root = tmp_path / "runs"
    res = runner.invoke(app, ["reproduce", name, "--profile", profile, "--plan", "--root", str(root)])
    assert res.exit_code == 0, res.output
    assert list(tmp_path.iterdir()) == []                  # nothing written, not even the root
    out = res.output
    assert f"advgeom reproduce {name} --profile {profile}" in out and "nothing written" in out
    plan, = seen                                              # what the command printed
    assert f"Training: {len(plan.trainings)} model(s)" in out and f"Evaluations: {len(plan.evaluations)}" in out
    for t in plan.trainings:
        assert t.steps > 0 and f"{t.config.model} " in out and f"{t.steps} steps" in out
        assert f"batch {t.config.batch_size}," in out
    for e in plan.evaluations:
        assert f"{e.n} test points" in out and all(f"    {s.label}: " in out for s, _, _ in e.attacks)
        assert all(f"    check: unbounded {c} on {m} points" in out for c, m, _ in e.checks)
    if name == "hyper-mnist":   # rejecting evaluations add the unbounded check of their adaptive attack
        assert any([c for c, _, _ in e.checks][1:] == ["geodesic_adaptive:guides=20,steps=50"]
                   for e in plan.evaluations)
    assert "A100-class GPU" in out and "this CPU" in out and "Rule: 1 gradient pass" in out


def test_plan_records_the_real_run_and_smoke_the_smoke_run():
    real, smoke = make_plan("at-mnist", "paper"), make_plan("at-mnist", "paper", smoke=True)
    cfgs = AT.at_configs("paper")
    assert [t.config for t in real.trainings] == list(cfgs.values())
    pgd = real.trainings[list(cfgs).index("pgd_at")]
    assert (pgd.steps, pgd.config.batch_size) == (100_000, 50)
    assert pgd.per_example == Passes(grad=41, forward=1)               # PGD-40 + the training pass
    assert pgd.flops == pgd.forward_flops * 100_000 * 50 * (41 * GRAD_PASS + 1)
    trades = real.trainings[list(cfgs).index("trades")]
    assert trades.steps == 100 * trades.per_epoch and trades.per_example == Passes(grad=42, forward=1)
    assert {e.n for e in real.evaluations} == {10_000}
    assert all(t.steps == 1 for t in smoke.trainings) and {e.n for e in smoke.evaluations} == {1}
    assert max(p.grad for e in smoke.evaluations for _, _, p in e.attacks) <= 2 * 2   # steps 2 x targets 2


def test_forward_flops_exact():
    assert forward_flops(nn.Linear(7, 5), torch.zeros(7)) == 2 * 7 * 5
    net = nn.Sequential(nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, 3))
    assert forward_flops(net, torch.zeros(7)) == 2 * (7 * 5 + 5 * 3)
    assert net.training                                                # mode restored


@pytest.mark.parametrize("k", [1, 7, 40])
def test_pass_counts_of_training(k):
    pgd = f"pgd:steps={k},step_size=0.01,early_stop=false"
    assert training_passes("pgd_at", {"attack": pgd}) == Passes(grad=k + 1, forward=1)
    assert training_passes("trades", {"steps": k}) == Passes(grad=k + 2, forward=1)
    assert training_passes("mmc", {"adversarial": True, "attack": pgd}) == Passes(grad=k + 1, forward=1)
    assert training_passes("mmc", {}) == Passes(grad=1)                 # not adversarial
    assert training_passes("ce", {}).forwards == GRAD_PASS              # natural: 1 fwd + bwd
    assert training_passes("fgsm_at", {}) == Passes(grad=2, forward=1)
    # a clean branch beside the adversarial one costs a second training pass
    assert training_passes("pgd_at", {"attack": pgd, "mix": 0.5}) == Passes(grad=k + 2, forward=1)
    assert training_passes("fgsm_at", {"attack": "fgsm", "mix": 0.5}) == Passes(grad=3, forward=1)
    assert training_passes("dsphere", {"base": "pgd_at", "base_kwargs": {"attack": pgd, "mix": 0.5}}) == \
        Passes(grad=k + 2, forward=1)
    assert training_passes("pga_at", {"iters": k}) == Passes(grad=k + 1)              # CE on x* alone
    assert training_passes("pga_at", {"iters": k, "loss": "sos"}) == Passes(grad=k + 2)


def test_pass_counts_of_attacks():
    assert attack_passes("apgd-t") == Passes(grad=100 * 9, forward=1)
    assert attack_passes("apgd-t", num_classes=4) == Passes(grad=100 * 3, forward=1)
    assert attack_passes("pgd:steps=10,restarts=3") == Passes(grad=30, forward=1)
    # guided runs follow the restarts: 50 steps x (2 restarts + 20 guides)
    assert attack_passes("geodesic_adaptive:steps=50,restarts=2,guides=20") == Passes(grad=50 * 22, forward=1)
    # so do its targeted runs, one per target (APGD-T's targets multiply its restarts)
    assert attack_passes("geodesic_adaptive:steps=50,guides=20,num_targets=9") == Passes(grad=50 * 30, forward=1)
    assert attack_passes("geodesic_adaptive:steps=50,num_targets=20") == Passes(grad=50 * 10, forward=1)
    assert attack_passes("geodesic_adaptive:steps=50") == Passes(grad=50, forward=1)
    assert attack_passes("square:steps=5000") == Passes(forward=5001)
    assert attack_passes("fgsm") == Passes(grad=1, forward=1)


def test_cpu_rate_reads_the_floor_record(tmp_path):
    rec = tmp_path / "train_speed.md"
    rec.write_text("  floor: plain natural step 20.0 GFLOP/s = 0.40 of the 80.0 GFLOP/s matmul floor on "
                   "1 threads (2.50x the floor's time)\n")
    rate, why = cpu_rate((rec,))
    assert rate == 80e9 * CPU_UTILISATION and str(rec) in why


def test_plan_bad_input_is_one_line(tmp_path):
    res = runner.invoke(app, ["reproduce", "hyper-cifar", "--profile", "quick", "--plan", "--root",
                              str(tmp_path / "r")])
    assert res.exit_code == 2 and "no profile 'quick'" in res.output and "Traceback" not in res.output


def test_plan_runs_its_smoke_execution_on_one_thread_and_restores_the_count(monkeypatch):
    seen, fit = [], P.PlanContext.fit
    monkeypatch.setattr(P.PlanContext, "fit", lambda self, *a, **kw: seen.append(torch.get_num_threads())
                        or fit(self, *a, **kw))
    before = torch.get_num_threads()
    torch.set_num_threads(2)              # a count the plan must not keep at 1
    try:
        plan = make_plan("demo", "quick")
        assert seen == [1] and len(plan.trainings) == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.filterwarnings("ignore")
def test_plan_says_where_each_model_stands_in_the_root(tmp_path):
    plan = make_plan("at-mnist", "quick", smoke=True)
    root, n = tmp_path / "runs", len(plan.trainings)
    args = ["reproduce", "at-mnist", "--profile", "quick", "--smoke", "--root", str(root)]
    before = runner.invoke(app, args + ["--plan"])
    assert before.exit_code == 0 and "In " not in before.output   # no run yet: nothing said, nothing written
    assert not root.exists() and before.output.strip() == P.render(plan).strip()
    # the real smoke run trains every model; the plan then finds each of them in the cache
    assert runner.invoke(app, args + ["--no-progress"]).exit_code == 0
    written = sorted((p, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file())
    after = runner.invoke(app, args + ["--plan"])
    assert after.exit_code == 0, after.output
    lines = [ln.strip() for ln in after.output.splitlines() if ln.strip().startswith(f"in {root / 'smoke'}: ")]
    assert len(lines) == n and all(ln.split(": ", 1)[1].startswith("cached: ") for ln in lines)
    assert f"{n} model(s) cached, 0 resumable, 0 to train" in after.output
    assert "training left: 0 FLOP of " in after.output
    assert sorted((p, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()) == written   # read only
    stand = P.standing(plan, root / "smoke")
    assert [p.state for p in stand] == ["cached"] * n and P.left_flops(plan, stand) == (0.0, 0.0)


def test_left_flops_counts_what_is_left():
    plan = make_plan("at-mnist", "quick", smoke=True)
    long = dataclasses.replace(plan.trainings[0], steps=400)
    path = Path("runs/train/x")

    def at(state, done=0, steps=400):
        return P.TrainPreview(model="m", key="k", path=path, state=state, steps=steps, epochs=0, done=done)

    one = P.Plan(plan.experiment, "quick", True, [long])
    assert P.left_flops(one, [at("resume", 100)]) == pytest.approx((0.75 * long.flops,) * 2) and long.flops > 0
    assert P.left_flops(one, [at("resume", 100, steps=200)]) == pytest.approx((0.5 * long.flops,) * 2)
    assert P.left_flops(one, [at("train")]) == (long.flops, long.flops)
    assert P.left_flops(one, [at("cached")]) == (0.0, 0.0)
    assert P.left_flops(one, [None]) == (0.0, long.flops)        # fine-tuned: only in the upper end
    twice = P.Plan(plan.experiment, "quick", True, [long, long])
    assert P.left_flops(twice, [at("train"), at("train")]) == (long.flops, long.flops)   # one directory


def test_plan_marks_fine_tuned_models():
    plan = make_plan("spectral-mnist", "quick", smoke=True)
    assert not plan.trainings[0].fine_tuned and all(t.fine_tuned for t in plan.trainings[1:])
